// Filtered Search through gRPC, in-process, on sift5k (issue #15 parts 1, 2, 3 and 7): allow-
// lists (packed ids and bitmap) through the scan and, when small, scored exactly (the exact
// answer, distances included); deny-lists never return a denied id; SID-prefix search returns
// only items under the prefix (alone and with a deny-list); search by item leaves the item out
// unless include_self; every bad input is INVALID_ARGUMENT (NOT_FOUND for a missing like id,
// FAILED_PRECONDITION for a prefix without a tokenizer) naming the field and value.
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/ivf_pq.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "server/index.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

constexpr char kBase[] = "sift5k/sift5k_base.fvecs";
constexpr char kQueries[] = "sift5k/sift5k_query.fvecs";

class FilteredSearchTest : public ::quantd::testing::InProcessServerTest {
 protected:
  // sift5k uploaded as "sift" with an index (nlist 128 by the service default, nprobe 16 by
  // default); `tokenizer`: also a 2 x 8 RQ tokenizer.
  void Prepare(bool tokenizer) {
    const std::string path = ::quantd::testing::DataFile(kBase);
    ASSERT_FALSE(path.empty());
    auto base = ReadMatrix(path);
    ASSERT_TRUE(base.ok());
    base_ = *std::move(base);
    auto queries = ReadMatrix(::quantd::testing::DataFile(kQueries), 20);
    ASSERT_TRUE(queries.ok());
    queries_ = *std::move(queries);
    CreateAndUpload("sift", path, -1);
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection("sift");
    request.set_seed(7);
    v1::Job job;
    ASSERT_TRUE(stub_->TrainIndex(&context, request, &job).ok());
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
    if (tokenizer) {
      v1::TrainTokenizerRequest train;
      train.set_collection("sift");
      train.add_codebook_sizes(8);
      train.add_codebook_sizes(8);
      train.set_seed(3);
      ASSERT_EQ(TrainAndWait(train).state(), v1::JOB_STATE_SUCCEEDED);
    }
  }

  v1::SearchRequest Request() const {
    v1::SearchRequest request;
    request.set_collection("sift");
    request.mutable_queries()->Add(queries_.values.begin(), queries_.values.end());
    request.set_k(10);
    return request;
  }

  // The exact answer among `ids` (rows of sift5k) for every query.
  std::vector<std::vector<IvfPqNeighbor>> ExactAmong(const std::vector<uint64_t>& ids) const {
    std::vector<float> rows;
    for (uint64_t id : ids) {
      const auto row = static_cast<int64_t>(id) * base_.dim;
      rows.insert(rows.end(), base_.values.begin() + row, base_.values.begin() + row + base_.dim);
    }
    auto exact = ExactSearch(Metric::kL2, base_.dim, queries_.values, ids, rows, 10);
    EXPECT_TRUE(exact.ok()) << exact.status();
    return exact.ok() ? *std::move(exact) : std::vector<std::vector<IvfPqNeighbor>>{};
  }

  Matrix base_;
  Matrix queries_;
};

std::vector<uint64_t> EveryNth(int64_t n, int64_t step, int64_t first = 0) {
  std::vector<uint64_t> ids;
  for (int64_t i = first; i < n; i += step) ids.push_back(static_cast<uint64_t>(i));
  return ids;
}

TEST_F(FilteredSearchTest, AllowListsInTheScanAndExactWhenSmall) {
  Prepare(/*tokenizer=*/false);
  // Half the items (packed ids): through the scan, k results, all allowed.
  v1::SearchRequest half = Request();
  const std::vector<uint64_t> even = EveryNth(base_.rows, 2);
  half.mutable_allow()->mutable_ids()->Add(even.begin(), even.end());
  const v1::SearchResponse scanned = SearchOk(half);
  EXPECT_FALSE(scanned.exact());
  EXPECT_EQ(scanned.nprobe(), 16u);
  for (const v1::SearchResult& result : scanned.results()) {
    EXPECT_EQ(result.ids_size(), 10);
    for (uint64_t id : result.ids()) EXPECT_EQ(id % 2, 0u) << id;
  }
  // The same set as a bitmap gives the same answer.
  v1::SearchRequest bitmap = Request();
  std::string bits(static_cast<size_t>((base_.rows + 7) / 8), '\0');
  for (uint64_t id : even) bits[id / 8] = static_cast<char>(bits[id / 8] | (1 << (id % 8)));
  bitmap.mutable_allow()->set_bitmap(bits);
  const v1::SearchResponse from_bitmap = SearchOk(bitmap);
  ASSERT_EQ(from_bitmap.results_size(), scanned.results_size());
  for (int q = 0; q < scanned.results_size(); ++q) {
    EXPECT_EQ(
        std::vector<uint64_t>(from_bitmap.results(q).ids().begin(),
                              from_bitmap.results(q).ids().end()),
        std::vector<uint64_t>(scanned.results(q).ids().begin(), scanned.results(q).ids().end()));
  }
  // 10 items (below the crossover) plus ids that are not stored: scored exactly, the exact
  // answer with exact distances.
  v1::SearchRequest small = Request();
  std::vector<uint64_t> few = EveryNth(base_.rows, 500, 7);
  ASSERT_TRUE(ScoreExactly(static_cast<int64_t>(few.size()) + 2, 10, 16, base_.rows, 128));
  few.push_back(1000000);
  few.push_back(1000001);
  small.mutable_allow()->mutable_ids()->Add(few.begin(), few.end());
  const v1::SearchResponse exact = SearchOk(small);
  EXPECT_TRUE(exact.exact());
  few.resize(few.size() - 2);
  const auto truth = ExactAmong(few);
  ASSERT_EQ(exact.results_size(), static_cast<int>(truth.size()));
  for (int q = 0; q < exact.results_size(); ++q) {
    ASSERT_EQ(exact.results(q).ids_size(), 10);
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(exact.results(q).ids(i), truth[q][i].id);
      EXPECT_EQ(exact.results(q).distances(i), truth[q][i].distance);
    }
  }
  // Fewer allowed items than k: all of them.
  v1::SearchRequest three = Request();
  for (uint64_t id : {5, 6, 4999}) three.mutable_allow()->add_ids(id);
  const v1::SearchResponse all_three = SearchOk(three);
  for (const v1::SearchResult& result : all_three.results()) {
    EXPECT_EQ(std::set<uint64_t>(result.ids().begin(), result.ids().end()),
              (std::set<uint64_t>{5, 6, 4999}));
  }
}

TEST_F(FilteredSearchTest, DenyListNeverReturnsDeniedIds) {
  Prepare(/*tokenizer=*/false);
  // Deny every query's unfiltered top 10 and a third of the rest.
  const v1::SearchResponse plain = SearchOk(Request());
  const std::vector<uint64_t> third = EveryNth(base_.rows, 3);
  std::set<uint64_t> denied(third.begin(), third.end());
  for (const v1::SearchResult& result : plain.results()) {
    denied.insert(result.ids().begin(), result.ids().end());
  }
  v1::SearchRequest request = Request();
  request.mutable_deny()->mutable_ids()->Add(denied.begin(), denied.end());
  const v1::SearchResponse response = SearchOk(request);
  EXPECT_FALSE(response.exact());
  for (const v1::SearchResult& result : response.results()) {
    EXPECT_EQ(result.ids_size(), 10);
    for (uint64_t id : result.ids()) EXPECT_FALSE(denied.contains(id)) << id;
  }

  // A deny-list leaving 20 items (and naming ids that are not stored): its complement is
  // scored exactly, the exact answer among those 20.
  const std::vector<uint64_t> left = EveryNth(base_.rows, 250, 7);
  v1::SearchRequest nearly_all = Request();
  for (int64_t id = 0; id < base_.rows + 100; ++id) {
    if (!std::binary_search(left.begin(), left.end(), static_cast<uint64_t>(id))) {
      nearly_all.mutable_deny()->add_ids(static_cast<uint64_t>(id));
    }
  }
  const v1::SearchResponse few = SearchOk(nearly_all);
  EXPECT_TRUE(few.exact());
  const auto exact = ExactAmong(left);
  ASSERT_EQ(few.results_size(), queries_.rows);
  for (int q = 0; q < queries_.rows; ++q) {
    ASSERT_EQ(few.results(q).ids_size(), 10);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(few.results(q).ids(i), exact[q][i].id);
  }
}

TEST_F(FilteredSearchTest, PrefixResultsAllCarryThePrefix) {
  Prepare(/*tokenizer=*/true);
  const std::map<uint64_t, std::string> sids = AllSids("sift");
  ASSERT_EQ(sids.size(), static_cast<size_t>(base_.rows));
  const std::string& first = sids.at(0);  // "c0,c1,#suffix"
  const std::string c0 = first.substr(0, first.find(','));
  const std::string c01 = first.substr(0, first.find('#'));
  // One code (through the scan) and two codes (small: exact), as codes and as tokens.
  for (const std::string& prefix : {c0 + ",", c01}) {
    v1::SearchRequest request = Request();
    std::vector<uint32_t> codes;
    for (size_t at = 0; at < prefix.size();) {
      const size_t comma = prefix.find(',', at);
      codes.push_back(static_cast<uint32_t>(std::stoul(prefix.substr(at, comma - at))));
      at = comma + 1;
    }
    request.mutable_sid_prefix()->Add(codes.begin(), codes.end());
    const v1::SearchResponse by_codes = SearchOk(request);
    int64_t under = 0;
    for (const auto& [id, sid] : sids) under += sid.rfind(prefix, 0) == 0;
    for (const v1::SearchResult& result : by_codes.results()) {
      EXPECT_EQ(result.ids_size(), std::min<int64_t>(10, under));
      for (uint64_t id : result.ids()) EXPECT_EQ(sids.at(id).rfind(prefix, 0), 0u) << id;
    }
    v1::SearchRequest tokens = Request();
    std::string text;
    for (size_t l = 0; l < codes.size(); ++l) {
      text +=
          "<" + std::string(1, static_cast<char>('a' + l)) + "_" + std::to_string(codes[l]) + ">";
    }
    tokens.set_sid_prefix_tokens(text);
    const v1::SearchResponse by_tokens = SearchOk(tokens);
    ASSERT_EQ(by_tokens.results_size(), by_codes.results_size());
    for (int q = 0; q < by_codes.results_size(); ++q) {
      EXPECT_EQ(by_tokens.results(q).SerializeAsString(), by_codes.results(q).SerializeAsString());
    }
    // With a deny-list: under the prefix and not denied.
    request.mutable_deny()->add_ids(0);
    const v1::SearchResponse narrowed = SearchOk(request);
    for (const v1::SearchResult& result : narrowed.results()) {
      for (uint64_t id : result.ids()) {
        EXPECT_NE(id, 0u);
        EXPECT_EQ(sids.at(id).rfind(prefix, 0), 0u) << id;
      }
    }
  }
}

TEST_F(FilteredSearchTest, LikeSearchLeavesTheItemOutUnlessAsked) {
  Prepare(/*tokenizer=*/false);
  v1::SearchRequest request;
  request.set_collection("sift");
  request.set_k(10);
  request.set_refine(10);
  for (uint64_t id : {3, 100, 4999}) request.add_like_ids(id);
  const v1::SearchResponse like = SearchOk(request);
  ASSERT_EQ(like.results_size(), 3);
  for (int q = 0; q < 3; ++q) {
    EXPECT_EQ(like.results(q).ids_size(), 10);
    for (uint64_t id : like.results(q).ids()) EXPECT_NE(id, request.like_ids(q));
  }
  request.set_include_self(true);
  const v1::SearchResponse with_self = SearchOk(request);
  for (int q = 0; q < 3; ++q) {
    ASSERT_EQ(with_self.results(q).ids_size(), 10);
    EXPECT_EQ(with_self.results(q).ids(0), request.like_ids(q));
    EXPECT_EQ(with_self.results(q).distances(0), 0.0f);
    // Without self: the next nine, then one more.
    for (int i = 0; i < 9; ++i) {
      EXPECT_EQ(like.results(q).ids(i), with_self.results(q).ids(i + 1));
    }
  }
  // Like search combines with filters: an exact allow-list of 20 items.
  request.set_include_self(false);
  for (uint64_t id : EveryNth(base_.rows, 250, 3)) request.mutable_allow()->add_ids(id);
  ASSERT_TRUE(ScoreExactly(20, 11, 16, base_.rows, 128));
  const v1::SearchResponse filtered = SearchOk(request);
  EXPECT_TRUE(filtered.exact());
  for (int q = 0; q < 3; ++q) {
    EXPECT_EQ(filtered.results(q).ids_size(), 10);
    for (uint64_t id : filtered.results(q).ids()) {
      EXPECT_NE(id, request.like_ids(q));
      EXPECT_EQ(id % 250, 3u);
    }
  }
}

TEST_F(FilteredSearchTest, BadInputsNameTheFieldAndChangeNothing) {
  Prepare(/*tokenizer=*/false);
  const auto invalid = grpc::StatusCode::INVALID_ARGUMENT;
  v1::SearchRequest both = Request();
  both.mutable_allow()->add_ids(1);
  both.mutable_deny()->add_ids(2);
  ExpectSearchError(both, invalid, {"allow and deny"});

  v1::SearchRequest unsorted = Request();
  for (uint64_t id : {5, 3}) unsorted.mutable_allow()->add_ids(id);
  ExpectSearchError(unsorted, invalid, {"allow.ids[1] = 3", "strictly ascending"});
  v1::SearchRequest duplicate = Request();
  for (uint64_t id : {5, 5}) duplicate.mutable_deny()->add_ids(id);
  ExpectSearchError(duplicate, invalid, {"deny.ids[1] = 5"});

  v1::SearchRequest too_many = Request();
  for (int64_t i = 0; i <= kMaxFilterIds; ++i) too_many.mutable_allow()->add_ids(i);
  ExpectSearchError(too_many, invalid, {"allow.ids has 1000001 ids", "1000000"});

  v1::SearchRequest two_forms = Request();
  two_forms.mutable_allow()->add_ids(1);
  two_forms.mutable_allow()->set_bitmap("\x01");
  ExpectSearchError(two_forms, invalid, {"allow has both ids and a bitmap"});
  v1::SearchRequest big_bitmap = Request();
  big_bitmap.mutable_deny()->set_bitmap(std::string(kMaxFilterBitmapBytes + 1, '\0'));
  ExpectSearchError(big_bitmap, invalid, {"deny.bitmap has 8388609 bytes"});
  v1::SearchRequest wrapping = Request();
  wrapping.mutable_allow()->set_bitmap_base(~uint64_t{0} - 8);
  wrapping.mutable_allow()->set_bitmap("\x01\x01");
  ExpectSearchError(wrapping, invalid, {"allow.bitmap_base 18446744073709551607", "2^64"});

  v1::SearchRequest no_tokenizer = Request();
  no_tokenizer.add_sid_prefix(1);
  ExpectSearchError(no_tokenizer, grpc::StatusCode::FAILED_PRECONDITION, {"tokenizer"});
  v1::SearchRequest bad_tokens = Request();
  bad_tokens.set_sid_prefix_tokens("<a_1><x_2>");
  ExpectSearchError(bad_tokens, invalid, {"sid_prefix_tokens", "<x_2>"});
  v1::SearchRequest codes_and_tokens = Request();
  codes_and_tokens.add_sid_prefix(1);
  codes_and_tokens.set_sid_prefix_tokens("<a_1>");
  ExpectSearchError(codes_and_tokens, invalid, {"sid_prefix or sid_prefix_tokens"});

  v1::SearchRequest missing = Request();
  missing.clear_queries();
  missing.add_like_ids(3);
  missing.add_like_ids(777777);
  ExpectSearchError(missing, grpc::StatusCode::NOT_FOUND, {"like_ids[1] = 777777"});
  v1::SearchRequest queries_and_like = Request();
  queries_and_like.add_like_ids(3);
  ExpectSearchError(queries_and_like, invalid, {"queries and like_ids"});

  // Prefix checks against a tokenizer: longer than its levels, a code out of range.
  v1::TrainTokenizerRequest train;
  train.set_collection("sift");
  train.add_codebook_sizes(8);
  train.add_codebook_sizes(8);
  ASSERT_EQ(TrainAndWait(train).state(), v1::JOB_STATE_SUCCEEDED);
  v1::SearchRequest too_long = Request();
  for (uint32_t code : {1, 2, 3}) too_long.add_sid_prefix(code);
  ExpectSearchError(too_long, invalid, {"sid_prefix has 3 codes", "2 levels"});
  v1::SearchRequest out_of_range = Request();
  out_of_range.add_sid_prefix(1);
  out_of_range.add_sid_prefix(8);
  ExpectSearchError(out_of_range, invalid, {"sid_prefix[1] = 8", "0..7"});

  // Nothing changed: every item is still there, and a plain search answers as before.
  const v1::GetStatsResponse stats = Stats("sift");
  EXPECT_EQ(stats.collection().item_count(), static_cast<uint64_t>(base_.rows));
  EXPECT_EQ(SearchOk(Request()).results_size(), queries_.rows);
}

// Paging: offset skips the first results of each query, so a page is a slice of one search
// of offset + k (through the scan, the exact path and like search alike), and the plain scan's
// pages concatenate; a page deeper than 1024 results is INVALID_ARGUMENT.
TEST_F(FilteredSearchTest, OffsetPagesAreSlicesOfTheDeeperSearch) {
  Prepare(/*tokenizer=*/false);
  // Page `page` of k 10 equals ranks 10 page .. 10 page + 9 of the search of `deeper` results.
  const auto page_matches = [&](v1::SearchRequest request, int page, int deeper) {
    request.set_k(static_cast<uint32_t>(deeper));
    const v1::SearchResponse whole = SearchOk(request);
    request.set_k(10);
    request.set_offset(static_cast<uint32_t>(10 * page));
    const v1::SearchResponse part = SearchOk(request);
    ASSERT_EQ(part.results_size(), whole.results_size());
    for (int q = 0; q < whole.results_size(); ++q) {
      ASSERT_EQ(part.results(q).ids_size(), 10) << "page " << page << " query " << q;
      for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(part.results(q).ids(i), whole.results(q).ids(10 * page + i))
            << "page " << page << " query " << q << " rank " << i;
        EXPECT_EQ(part.results(q).distances(i), whole.results(q).distances(10 * page + i));
      }
    }
  };
  // 100 allowed items: the scan for the first page, exact scoring for the deeper ones.
  v1::SearchRequest allowed = Request();
  for (uint64_t id : EveryNth(5000, 50)) allowed.mutable_allow()->add_ids(id);
  ASSERT_FALSE(ScoreExactly(100, 10, 16, 5000, 128));
  ASSERT_TRUE(ScoreExactly(100, 20, 16, 5000, 128));
  // 34 allowed items: exact scoring for every page.
  v1::SearchRequest small = Request();
  for (uint64_t id : EveryNth(5000, 150)) small.mutable_allow()->add_ids(id);
  v1::SearchRequest like;
  like.set_collection("sift");
  for (uint64_t id : {3, 77, 4000}) like.add_like_ids(id);
  for (int page = 0; page < 3; ++page) {
    page_matches(Request(), page, 10 * page + 10);
    page_matches(Request(), page, 30);  // the plain scan: pages concatenate
    page_matches(allowed, page, 10 * page + 10);
    page_matches(small, page, 10 * page + 10);
    page_matches(like, page, 10 * page + 10);  // each query's own item left out first
  }

  // A page past the end is short, not an error: 100 allowed items, ranks 95..104.
  allowed.set_k(10);
  allowed.set_offset(95);
  const v1::SearchResponse tail = SearchOk(allowed);
  for (const v1::SearchResult& result : tail.results()) EXPECT_EQ(result.ids_size(), 5);

  v1::SearchRequest deep = Request();
  deep.set_offset(1020);
  ExpectSearchError(deep, grpc::StatusCode::INVALID_ARGUMENT,
                    {"offset 1020 + k 10 = 1030 exceeds 1024"});
  deep.set_offset(100);
  deep.set_refine(600);
  ExpectSearchError(deep, grpc::StatusCode::INVALID_ARGUMENT,
                    {"refine 600: refine x (offset + k) (66000) must be at most 65536"});
}

}  // namespace
}  // namespace quantd
