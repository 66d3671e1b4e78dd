// Item attributes through gRPC, in-process (issue #15 part 4): attributes are written with the
// vector in one write, returned by GetItems and ListItems, replaced / cleared / kept by later
// upserts, removed with the item and with the collection, and restored at restart; Search's
// `where` (a conjunction of string / int equalities and int ranges) returns only matching
// items, through the scan with recall near unfiltered search and, when few match, exactly (the
// exact filtered answer); every bad attribute or condition is INVALID_ARGUMENT naming the field
// and value and changes nothing.
#include "server/attributes.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/ivf_pq.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using Value = std::variant<std::string, int64_t>;
using Attrs = std::map<std::string, Value>;

v1::Attributes ToProto(const Attrs& attrs) {
  v1::Attributes out;
  for (const auto& [key, value] : attrs) {
    v1::AttributeValue& v = (*out.mutable_values())[key];
    if (const auto* text = std::get_if<std::string>(&value)) {
      v.set_s(*text);
    } else {
      v.set_i(std::get<int64_t>(value));
    }
  }
  return out;
}

Attrs FromProto(const v1::Attributes& in) {
  Attrs out;
  for (const auto& [key, value] : in.values()) {
    if (value.value_case() == v1::AttributeValue::kS) {
      out[key] = value.s();
    } else {
      out[key] = value.i();
    }
  }
  return out;
}

// sift5k's attributes in these tests: genre "g<id % 10>", year 1900 + id % 100, shop
// "s<id % 2>", so a condition's matching ids are known from the id alone.
Attrs SiftAttrs(uint64_t id) {
  return {{"genre", absl::StrCat("g", id % 10)},
          {"year", static_cast<int64_t>(1900 + id % 100)},
          {"shop", absl::StrCat("s", id % 2)}};
}

v1::AttributeCondition Equals(const std::string& key, Value value) {
  v1::AttributeCondition condition;
  condition.set_key(key);
  if (const auto* text = std::get_if<std::string>(&value)) {
    condition.set_equals_string(*text);
  } else {
    condition.set_equals_int(std::get<int64_t>(value));
  }
  return condition;
}

v1::AttributeCondition Range(const std::string& key, std::optional<int64_t> min,
                             std::optional<int64_t> max) {
  v1::AttributeCondition condition;
  condition.set_key(key);
  v1::IntRange* range = condition.mutable_range();
  if (min) range->set_min(*min);
  if (max) range->set_max(*max);
  return condition;
}

class AttributesTest : public ::quantd::testing::InProcessServerTest {
 protected:
  // One Upsert stream with one batch of rows (id, vector, attributes); `with_attributes` false
  // sends no attributes at all (stored ones stay).
  grpc::Status UpsertRows(const std::string& collection, const std::vector<uint64_t>& ids,
                          const std::vector<float>& vectors, const std::vector<Attrs>& attrs,
                          bool with_attributes = true) {
    std::vector<v1::Attributes> protos;
    if (with_attributes) {
      for (const Attrs& a : attrs) protos.push_back(ToProto(a));
    }
    return Upsert(collection, ids, vectors, protos);
  }

  // GetItems: id -> attributes of the found ids; `missing` gets the others.
  std::map<uint64_t, Attrs> GetAttrs(const std::string& collection,
                                     const std::vector<uint64_t>& ids,
                                     std::vector<uint64_t>* missing = nullptr) {
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection(collection);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    v1::GetItemsResponse response;
    const grpc::Status status = stub_->GetItems(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.attributes_size(), response.ids_size());
    std::map<uint64_t, Attrs> out;
    for (int i = 0; i < response.ids_size() && i < response.attributes_size(); ++i) {
      out[response.ids(i)] = FromProto(response.attributes(i));
    }
    if (missing != nullptr)
      missing->assign(response.missing_ids().begin(), response.missing_ids().end());
    return out;
  }

  // Every item's attributes through ListItems(with_attributes), pages of 3.
  std::map<uint64_t, Attrs> ListAttrs(const std::string& collection) {
    std::map<uint64_t, Attrs> out;
    std::string token;
    do {
      grpc::ClientContext context;
      v1::ListItemsRequest request;
      request.set_collection(collection);
      request.set_page_size(3);
      request.set_page_token(token);
      request.set_with_attributes(true);
      v1::ListItemsResponse response;
      const grpc::Status status = stub_->ListItems(&context, request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      EXPECT_EQ(response.attributes_size(), response.ids_size());
      for (int i = 0; i < response.ids_size() && i < response.attributes_size(); ++i) {
        out[response.ids(i)] = FromProto(response.attributes(i));
      }
      token = response.next_page_token();
    } while (!token.empty());
    return out;
  }

  // Adds 300 items without attributes (ids 10000..10299, far from the test's rows) and trains an
  // index (nlist 2, PQ 2 x 4 bit), so that a 4-dimensional collection can be searched.
  void PadAndIndex(const std::string& collection) {
    std::vector<uint64_t> ids;
    std::vector<float> rows;
    for (int i = 0; i < 300; ++i) {
      ids.push_back(10000 + static_cast<uint64_t>(i));
      for (int j = 0; j < 4; ++j)
        rows.push_back(1000.0f + static_cast<float>((i * 7 + j * 13) % 97));
    }
    ASSERT_TRUE(Upsert(collection, ids, rows).ok());
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection(collection);
    request.set_nlist(2);
    request.set_m(2);
    request.set_nbits(4);
    request.set_seed(7);
    v1::Job job;
    const grpc::Status status = stub_->TrainIndex(&context, request, &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED) << WaitJob(job.id()).error();
  }

  // sift5k uploaded as "sift" with SiftAttrs, in batches of 1000, then an index (service
  // defaults: nlist 128, nprobe 16).
  void PrepareSift() {
    auto base = ReadMatrix(::quantd::testing::DataFile("sift5k/sift5k_base.fvecs"));
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = *std::move(base);
    auto queries = ReadMatrix(::quantd::testing::DataFile("sift5k/sift5k_query.fvecs"), 20);
    ASSERT_TRUE(queries.ok());
    queries_ = *std::move(queries);
    CreateCollection("sift", static_cast<uint32_t>(base_.dim));
    for (int64_t r0 = 0; r0 < base_.rows; r0 += 1000) {
      const int64_t r1 = std::min<int64_t>(base_.rows, r0 + 1000);
      std::vector<uint64_t> ids;
      std::vector<Attrs> attrs;
      for (int64_t r = r0; r < r1; ++r) {
        ids.push_back(static_cast<uint64_t>(r));
        attrs.push_back(SiftAttrs(static_cast<uint64_t>(r)));
      }
      const std::vector<float> rows(base_.values.begin() + r0 * base_.dim,
                                    base_.values.begin() + r1 * base_.dim);
      const grpc::Status status = UpsertRows("sift", ids, rows, attrs);
      ASSERT_TRUE(status.ok()) << status.error_message();
    }
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection("sift");
    request.set_seed(7);
    v1::Job job;
    ASSERT_TRUE(stub_->TrainIndex(&context, request, &job).ok());
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  }

  v1::SearchRequest Request() const {
    v1::SearchRequest request;
    request.set_collection("sift");
    request.mutable_queries()->Add(queries_.values.begin(), queries_.values.end());
    request.set_k(10);
    return request;
  }

  // The exact answer among the sift5k rows whose id passes `keep`, per query.
  std::vector<std::vector<IvfPqNeighbor>> ExactAmong(bool (*keep)(uint64_t)) const {
    std::vector<uint64_t> ids;
    std::vector<float> rows;
    for (int64_t r = 0; r < base_.rows; ++r) {
      if (!keep(static_cast<uint64_t>(r))) continue;
      ids.push_back(static_cast<uint64_t>(r));
      rows.insert(rows.end(), base_.values.begin() + r * base_.dim,
                  base_.values.begin() + (r + 1) * base_.dim);
    }
    auto exact = ExactSearch(Metric::kL2, base_.dim, queries_.values, ids, rows, 10);
    EXPECT_TRUE(exact.ok()) << exact.status();
    return exact.ok() ? *std::move(exact) : std::vector<std::vector<IvfPqNeighbor>>{};
  }

  // Mean fraction of each query's exact top 10 that `response` returns.
  static double Recall(const v1::SearchResponse& response,
                       const std::vector<std::vector<IvfPqNeighbor>>& exact) {
    double hits = 0, total = 0;
    for (size_t q = 0; q < exact.size(); ++q) {
      const std::set<uint64_t> got(response.results(static_cast<int>(q)).ids().begin(),
                                   response.results(static_cast<int>(q)).ids().end());
      for (const IvfPqNeighbor& n : exact[q]) hits += got.contains(n.id);
      total += static_cast<double>(exact[q].size());
    }
    return total == 0 ? 0 : hits / total;
  }

  Matrix base_;
  Matrix queries_;
};

std::vector<float> Rows(int n, float start) {
  std::vector<float> v;
  for (int i = 0; i < n * 4; ++i) v.push_back(start + static_cast<float>(i));
  return v;
}

// The attribute index alone: Plan walks the narrowest condition when one matches at most
// `limit` items, else leaves every condition to Matches; both agree with the definition.
TEST(AttributeIndexTest, PlanMaterializesNarrowConditionsAndTestsBroadOnes) {
  AttributeIndex index;
  std::vector<AttributeIndex::Change> items;
  for (uint64_t id = 0; id < 1000; ++id) {
    items.push_back(
        {id, {}, {{"color", absl::StrCat("c", id % 4)}, {"n", static_cast<int64_t>(id)}}});
  }
  index.Apply({{"color", AttributeType::kString}, {"n", AttributeType::kInt}}, items);
  auto condition = [](std::string key, AttributeCondition::Kind kind, std::string text, int64_t min,
                      int64_t max) {
    AttributeCondition c;
    c.key = std::move(key);
    c.kind = kind;
    c.text = std::move(text);
    c.min = min;
    c.max = max;
    return c;
  };
  const auto kRange = AttributeCondition::Kind::kRange;
  const AttributeCondition c1 = condition("color", AttributeCondition::Kind::kEqualsString, "c1",
                                          INT64_MIN, INT64_MAX);               // 250 items
  const AttributeCondition low = condition("n", kRange, "", INT64_MIN, 599);   // 600
  const AttributeCondition high = condition("n", kRange, "", 400, INT64_MAX);  // 600
  const auto want = [&](const std::vector<AttributeCondition>& where) {
    std::set<uint64_t> ids;
    for (uint64_t id = 0; id < 1000; ++id) {
      bool ok = true;
      for (const AttributeCondition& c : where) {
        ok = ok && (c.kind == kRange
                        ? static_cast<int64_t>(id) >= c.min && static_cast<int64_t>(id) <= c.max
                        : absl::StrCat("c", id % 4) == c.text);
      }
      if (ok) ids.insert(id);
    }
    return ids;
  };
  for (const std::vector<AttributeCondition>& where :
       std::vector<std::vector<AttributeCondition>>{{c1}, {low, high}, {c1, low, high}, {high}}) {
    for (int64_t limit : {100, 300, 700}) {
      auto plan = index.Plan(where, limit, "c");
      ASSERT_TRUE(plan.ok()) << plan.status();
      const std::set<uint64_t> expected = want(where);
      // Materialized exactly when some condition has at most `limit` matches.
      const bool narrow = limit >= 600 || (limit >= 250 && where[0].key == "color");
      EXPECT_EQ(plan->materialized, narrow) << limit;
      if (plan->materialized) {
        EXPECT_EQ(std::set<uint64_t>(plan->ids.begin(), plan->ids.end()), expected);
      } else {
        EXPECT_TRUE(plan->ids.empty());
        EXPECT_EQ(plan->at_least, limit + 1);
      }
      for (uint64_t id = 0; id < 1000; ++id) {
        ASSERT_EQ(index.Matches(where, id), expected.contains(id)) << id;
      }
    }
  }
  // Moving an item between values moves it in Matches too.
  index.Apply({}, {{5, items[5].after, {{"n", int64_t{-1}}}}});
  EXPECT_FALSE(index.Matches({c1}, 5));
  EXPECT_TRUE(index.Matches({condition("n", kRange, "", -1, -1)}, 5));
  EXPECT_FALSE(index.Matches({low, high}, 5));
}

TEST_F(AttributesTest, StoredWithTheVectorReplacedClearedAndRestored) {
  CreateCollection("c", 4);
  const std::vector<Attrs> first = {
      {{"color", "red"}, {"size", int64_t{3}}},
      {{"color", "blue"}},
      {{"size", int64_t{-7}}, {"tag", std::string(256, 'x')}},
      {},
  };
  ASSERT_TRUE(UpsertRows("c", {1, 2, 3, 4}, Rows(4, 0), first).ok());
  std::map<uint64_t, Attrs> want = {{1, first[0]}, {2, first[1]}, {3, first[2]}, {4, {}}};
  EXPECT_EQ(GetAttrs("c", {1, 2, 3, 4}), want);
  EXPECT_EQ(ListAttrs("c"), want);

  // Row 1's attributes replace the stored ones (size dropped); an empty entry clears row 2's;
  // the last row of a duplicated id wins; vectors unchanged still get the new attributes.
  ASSERT_TRUE(UpsertRows("c", {1, 2, 3, 3}, Rows(4, 0),
                         {{{"color", "green"}}, {}, {{"size", int64_t{1}}}, {{"size", int64_t{2}}}})
                  .ok());
  want = {{1, {{"color", "green"}}}, {2, {}}, {3, {{"size", int64_t{2}}}}, {4, {}}};
  EXPECT_EQ(GetAttrs("c", {1, 2, 3, 4}), want);
  // A batch without attributes keeps the stored ones, even with a new vector.
  ASSERT_TRUE(UpsertRows("c", {1}, Rows(1, 100), {}, /*with_attributes=*/false).ok());
  EXPECT_EQ(GetAttrs("c", {1}), (std::map<uint64_t, Attrs>{{1, {{"color", "green"}}}}));

  // A deleted item's attributes go with it: re-added without attributes, it has none.
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("c");
    request.add_ids(3);
    v1::DeleteItemsResponse response;
    ASSERT_TRUE(stub_->DeleteItems(&context, request, &response).ok());
  }
  std::vector<uint64_t> missing;
  GetAttrs("c", {3}, &missing);
  EXPECT_EQ(missing, std::vector<uint64_t>{3});
  ASSERT_TRUE(UpsertRows("c", {3}, Rows(1, 50), {}, /*with_attributes=*/false).ok());
  want = {{1, {{"color", "green"}}}, {2, {}}, {3, {}}, {4, {}}};
  EXPECT_EQ(GetAttrs("c", {1, 2, 3, 4}), want);

  // GetStats lists the keys: `size` stays (int) though no item carries it now.
  const v1::GetStatsResponse stats = Stats("c");
  ASSERT_EQ(stats.attribute_keys_size(), 3);
  EXPECT_EQ(stats.attribute_keys(0).key(), "color");
  EXPECT_EQ(stats.attribute_keys(0).type(), v1::ATTRIBUTE_TYPE_STRING);
  EXPECT_EQ(stats.attribute_keys(0).items(), 1u);
  EXPECT_EQ(stats.attribute_keys(0).distinct_values(), 1u);
  EXPECT_EQ(stats.attribute_keys(1).key(), "size");
  EXPECT_EQ(stats.attribute_keys(1).type(), v1::ATTRIBUTE_TYPE_INT);
  EXPECT_EQ(stats.attribute_keys(1).items(), 0u);
  EXPECT_EQ(stats.attribute_keys(2).key(), "tag");

  // A restart reads the same back, and the index of attributes is rebuilt: `color` is still a
  // string key (an int for it is refused) and finds item 1 through an exact search.
  Restart();
  EXPECT_EQ(GetAttrs("c", {1, 2, 3, 4}), want);
  PadAndIndex("c");
  const grpc::Status wrong_type = UpsertRows("c", {9}, Rows(1, 0), {{{"color", int64_t{1}}}});
  EXPECT_EQ(wrong_type.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(wrong_type.error_message().find("key 'color' is string"), std::string::npos)
      << wrong_type.error_message();
  v1::SearchRequest request;
  request.set_collection("c");
  request.add_queries(0);
  request.add_queries(0);
  request.add_queries(0);
  request.add_queries(0);
  request.set_k(5);
  *request.add_where() = Equals("color", "green");
  v1::SearchResponse response;
  ASSERT_TRUE(Search(request, &response).ok());
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_EQ(
      std::vector<uint64_t>(response.results(0).ids().begin(), response.results(0).ids().end()),
      std::vector<uint64_t>{1});
  // `size` (int) is still in the schema though no item carries it now: a valid condition that
  // matches nothing.
  request.clear_where();
  *request.add_where() = Range("size", 0, std::nullopt);
  ASSERT_TRUE(Search(request, &response).ok());
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_EQ(response.results(0).ids_size(), 0);
}

bool Genre3(uint64_t id) { return id % 10 == 3; }
bool Year1900To1949(uint64_t id) { return id % 100 < 50; }
bool Year1907(uint64_t id) { return id % 100 == 7; }
bool Genre3Shop1Year1900To1939(uint64_t id) { return id % 10 == 3 && id % 100 < 40; }
bool Any(uint64_t) { return true; }
bool Year1900To1989(uint64_t id) { return id % 100 < 90; }
bool Year1910To1989(uint64_t id) { return id % 100 >= 10 && id % 100 < 90; }

TEST_F(AttributesTest, WhereReturnsOnlyMatchesWithRecallOfTheExactFilteredAnswer) {
  PrepareSift();
  const double unfiltered = Recall(SearchOk(Request()), ExactAmong(Any));
  // 10% (string equality) and 50% (int range) through the scan; the goal: recall within
  // 0.02 of unfiltered search at the same nprobe.
  struct Case {
    const char* name;
    std::vector<v1::AttributeCondition> where;
    bool (*keep)(uint64_t);
  };
  const std::vector<Case> cases = {
      {"genre = g3", {Equals("genre", "g3")}, Genre3},
      {"1900 <= year <= 1949", {Range("year", 1900, 1949)}, Year1900To1949},
      {"year <= 1949 (open min)", {Range("year", std::nullopt, 1949)}, Year1900To1949},
      {"year = 1907", {Equals("year", int64_t{1907})}, Year1907},
      // Broad (more than 4096 of the 5000 items): tested per candidate in the scan.
      {"year <= 1989 (broad)", {Range("year", std::nullopt, 1989)}, Year1900To1989},
      {"1910 <= year and year <= 1989 (both broad)",
       {Range("year", 1910, std::nullopt), Range("year", std::nullopt, 1989)},
       Year1910To1989},
      {"genre = g3 and shop = s1 and year < 1940",
       {Equals("genre", "g3"), Equals("shop", "s1"), Range("year", std::nullopt, 1939)},
       Genre3Shop1Year1900To1939},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::SearchRequest request = Request();
    for (const v1::AttributeCondition& condition : c.where) *request.add_where() = condition;
    const v1::SearchResponse response = SearchOk(request);
    ASSERT_EQ(response.results_size(), queries_.rows);
    const auto exact = ExactAmong(c.keep);
    for (const v1::SearchResult& result : response.results()) {
      EXPECT_EQ(result.ids_size(), 10);
      for (uint64_t id : result.ids()) EXPECT_TRUE(c.keep(id)) << id;
    }
    const double recall = Recall(response, exact);
    std::printf("%-42s exact %d  R@10 %.3f (unfiltered %.3f)\n", c.name, response.exact(), recall,
                unfiltered);
    if (response.exact()) {
      // Scored exactly: the exact filtered answer, distances included.
      for (int q = 0; q < queries_.rows; ++q) {
        for (int i = 0; i < 10; ++i) {
          EXPECT_EQ(response.results(q).ids(i), exact[q][i].id);
          EXPECT_NEAR(response.results(q).distances(i), exact[q][i].distance,
                      1e-4f * exact[q][i].distance + 1e-3f);
        }
      }
    } else {
      EXPECT_GE(recall, unfiltered - 0.02);
    }
  }
  // Few matches (year = 1907: 50 items) go to exact scoring.
  v1::SearchRequest few = Request();
  *few.add_where() = Equals("year", int64_t{1907});
  EXPECT_TRUE(SearchOk(few).exact());

  // `where` combines with a deny-list, a like search and an offset.
  v1::SearchRequest denied = Request();
  *denied.add_where() = Equals("genre", "g3");
  const v1::SearchResponse plain = SearchOk(denied);
  std::set<uint64_t> deny;
  for (const v1::SearchResult& result : plain.results()) deny.insert(result.ids(0));
  denied.mutable_deny()->mutable_ids()->Add(deny.begin(), deny.end());
  const v1::SearchResponse narrowed = SearchOk(denied);
  for (const v1::SearchResult& result : narrowed.results()) {
    EXPECT_EQ(result.ids_size(), 10);
    for (uint64_t id : result.ids()) {
      EXPECT_FALSE(deny.contains(id)) << id;
      EXPECT_TRUE(Genre3(id)) << id;
    }
  }
  v1::SearchRequest like;
  like.set_collection("sift");
  like.set_k(10);
  like.add_like_ids(13);
  like.add_like_ids(14);  // not itself a match: its neighbours still must be
  *like.add_where() = Equals("genre", "g3");
  const v1::SearchResponse liked = SearchOk(like);
  ASSERT_EQ(liked.results_size(), 2);
  for (const v1::SearchResult& result : liked.results()) {
    EXPECT_EQ(result.ids_size(), 10);
    for (uint64_t id : result.ids()) {
      EXPECT_NE(id, 13u);
      EXPECT_TRUE(Genre3(id)) << id;
    }
  }
  v1::SearchRequest paged = Request();
  *paged.add_where() = Equals("year", int64_t{1907});
  paged.set_k(20);
  const v1::SearchResponse deep = SearchOk(paged);
  paged.set_k(10);
  paged.set_offset(10);
  const v1::SearchResponse second = SearchOk(paged);
  for (int q = 0; q < queries_.rows; ++q) {
    ASSERT_EQ(second.results(q).ids_size(), 10);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(second.results(q).ids(i), deep.results(q).ids(10 + i));
  }

  // A value no item has (of a known key), and conditions that exclude each other: no results.
  for (const auto& where : std::vector<std::vector<v1::AttributeCondition>>{
           {Equals("genre", "g99")},
           {Equals("genre", "g3"), Equals("genre", "g4")},
           {Range("year", 3000, std::nullopt)}}) {
    v1::SearchRequest none = Request();
    for (const v1::AttributeCondition& condition : where) *none.add_where() = condition;
    const v1::SearchResponse response = SearchOk(none);
    ASSERT_EQ(response.results_size(), queries_.rows);
    for (const v1::SearchResult& result : response.results()) EXPECT_EQ(result.ids_size(), 0);
  }
}

TEST_F(AttributesTest, WritesMoveItemsBetweenValuesAndSurviveRestart) {
  PrepareSift();
  // Item 3 (genre g3) becomes g4; item 4 is deleted; the nearest g3 items to query 0 change
  // accordingly, in memory and after a restart.
  ASSERT_TRUE(UpsertRows("sift", {3},
                         std::vector<float>(base_.values.begin() + 3 * base_.dim,
                                            base_.values.begin() + 4 * base_.dim),
                         {{{"genre", "g4"}}})
                  .ok());
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("sift");
    request.add_ids(14);
    v1::DeleteItemsResponse response;
    ASSERT_TRUE(stub_->DeleteItems(&context, request, &response).ok());
  }
  // Scored exactly (a like search from item 3's own vector, 3 and 13 allowed and every g4).
  const auto check = [&] {
    v1::SearchRequest request;
    request.set_collection("sift");
    request.set_k(600);
    request.add_like_ids(3);
    request.set_include_self(true);
    *request.add_where() = Equals("genre", "g4");
    const v1::SearchResponse response = SearchOk(request);
    ASSERT_EQ(response.results_size(), 1);
    std::set<uint64_t> got(response.results(0).ids().begin(), response.results(0).ids().end());
    EXPECT_TRUE(got.contains(3));
    EXPECT_FALSE(got.contains(14));
    EXPECT_EQ(got.size(), 500u);  // 499 g4 items left, plus item 3
    for (uint64_t id : got) EXPECT_TRUE(id == 3 || id % 10 == 4) << id;
    EXPECT_EQ(response.results(0).ids(0), 3u);
    v1::SearchRequest old_value = request;
    old_value.mutable_where(0)->set_equals_string("g3");
    const v1::SearchResponse g3 = SearchOk(old_value);
    for (uint64_t id : g3.results(0).ids()) EXPECT_NE(id, 3u);
    EXPECT_EQ(g3.results(0).ids_size(), 499);
  };
  check();
  Restart();
  check();
}

TEST_F(AttributesTest, DropCollectionForgetsItsAttributesAndTheirTypes) {
  CreateCollection("c", 4);
  ASSERT_TRUE(UpsertRows("c", {1}, Rows(1, 0), {{{"color", "red"}}}).ok());
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest request;
    request.set_name("c");
    v1::DropCollectionResponse response;
    ASSERT_TRUE(stub_->DropCollection(&context, request, &response).ok());
  }
  CreateCollection("c", 4);
  // `color` may now be an int, and item 1 (re-added without attributes) has none.
  ASSERT_TRUE(UpsertRows("c", {2}, Rows(1, 0), {{{"color", int64_t{5}}}}).ok());
  ASSERT_TRUE(UpsertRows("c", {1}, Rows(1, 0), {}, /*with_attributes=*/false).ok());
  EXPECT_EQ(GetAttrs("c", {1, 2}),
            (std::map<uint64_t, Attrs>{{1, {}}, {2, {{"color", int64_t{5}}}}}));
  Restart();
  EXPECT_EQ(GetAttrs("c", {1, 2}),
            (std::map<uint64_t, Attrs>{{1, {}}, {2, {{"color", int64_t{5}}}}}));
}

TEST_F(AttributesTest, BadAttributesAreRefusedNamingTheFieldAndChangeNothing) {
  CreateCollection("c", 4);
  ASSERT_TRUE(
      UpsertRows("c", {1, 2}, Rows(2, 0), {{{"color", "red"}}, {{"size", int64_t{3}}}}).ok());
  PadAndIndex("c");
  Attrs seventeen;
  for (int i = 0; i < 17; ++i) seventeen[absl::StrCat("k", i)] = int64_t{i};
  struct Case {
    std::vector<uint64_t> ids;
    std::vector<Attrs> attrs;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {{1, 7},
       {{{"color", int64_t{1}}}, {}},
       {"attributes[0] (id 1)", "key 'color' is string", "int 1"}},
      {{7, 8},
       {{{"w", "a"}}, {{"w", int64_t{2}}}},
       {"attributes[1] (id 8)", "key 'w' is string in row 0"}},
      {{7}, {seventeen}, {"attributes[0] (id 7) has 17 attributes", "at most 16"}},
      {{7}, {{{"", "x"}}}, {"attributes[0] (id 7)", "key is empty"}},
      {{7}, {{{"bad key", "x"}}}, {"attributes[0] (id 7)", "key 'bad key'", "' '"}},
      {{7}, {{{std::string(65, 'k'), "x"}}}, {"has 65 characters", "at most 64"}},
      {{7},
       {{{"note", std::string(257, 'x')}}},
       {"value of key 'note' has 257 bytes", "at most 256"}},
      {{7, 8}, {{{"color", "red"}}}, {"attributes has 1 entries for 2 rows"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.words[0]);
    const grpc::Status status =
        UpsertRows("c", c.ids, Rows(static_cast<int>(c.ids.size()), 40), c.attrs);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    for (const std::string& word : c.words) {
      EXPECT_NE(status.error_message().find(word), std::string::npos)
          << "'" << word << "' not in: " << status.error_message();
    }
  }
  // A value with neither s nor i set.
  {
    grpc::ClientContext context;
    auto stream = stub_->Upsert(&context);
    v1::UpsertRequest request;
    request.set_collection("c");
    request.add_ids(7);
    for (float v : Rows(1, 0)) request.add_vectors(v);
    (*request.add_attributes()->mutable_values())["color"];
    stream->Write(request);
    stream->WritesDone();
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
    }
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("attributes[0] (id 7): key 'color' has no value"),
              std::string::npos)
        << status.error_message();
  }
  // Nothing changed: items 7 and 8 were never written, 1 and 2 keep their attributes, and the
  // refused batches added no key (`w` is unknown to Search).
  std::vector<uint64_t> missing;
  EXPECT_EQ(GetAttrs("c", {1, 2, 7, 8}, &missing),
            (std::map<uint64_t, Attrs>{{1, {{"color", "red"}}}, {2, {{"size", int64_t{3}}}}}));
  EXPECT_EQ(missing, (std::vector<uint64_t>{7, 8}));
  EXPECT_EQ(Stats("c").collection().item_count(), 302u);

  // Search conditions.
  v1::SearchRequest base;
  base.set_collection("c");
  for (int i = 0; i < 4; ++i) base.add_queries(0);
  base.set_k(1);
  const auto invalid = grpc::StatusCode::INVALID_ARGUMENT;
  struct SearchCase {
    std::vector<v1::AttributeCondition> where;
    std::vector<std::string> words;
  };
  v1::AttributeCondition no_test;
  no_test.set_key("color");
  std::vector<v1::AttributeCondition> seventeen_conditions(17, Equals("color", "red"));
  const std::vector<SearchCase> search_cases = {
      {{Equals("w", "a")}, {"where[0]", "unknown attribute key 'w'", "collection 'c'"}},
      {{Equals("color", "red"), Equals("size", "big")},
       {"where[1]", "key 'size' is int", "a string equality"}},
      {{Equals("color", int64_t{3})}, {"where[0]", "key 'color' is string", "an int equality"}},
      {{Range("color", 1, 2)}, {"where[0]", "key 'color' is string", "an int range"}},
      {{Range("size", 5, 4)}, {"where[0]", "min 5 > max 4"}},
      {{no_test}, {"where[0] on key 'color' has no test"}},
      {{Equals("", "x")}, {"where[0]", "key is empty"}},
      {{Equals("a b", "x")}, {"where[0]", "key 'a b'"}},
      {seventeen_conditions, {"where has 17 conditions", "at most 16"}},
  };
  for (const SearchCase& c : search_cases) {
    SCOPED_TRACE(c.words[0]);
    v1::SearchRequest request = base;
    for (const v1::AttributeCondition& condition : c.where) *request.add_where() = condition;
    ExpectSearchError(request, invalid, c.words);
  }
  // A collection that never had attributes: every key is unknown.
  CreateCollection("plain", 4);
  ASSERT_TRUE(Upsert("plain", {1}, Rows(1, 0)).ok());
  PadAndIndex("plain");
  v1::SearchRequest plain = base;
  plain.set_collection("plain");
  *plain.add_where() = Equals("color", "red");
  ExpectSearchError(plain, invalid, {"unknown attribute key 'color'", "collection 'plain'"});
}

}  // namespace
}  // namespace quantd
