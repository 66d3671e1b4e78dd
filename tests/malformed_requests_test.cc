// A deterministic battery of malformed requests through gRPC, one table row each: the RPC, the
// request, the expected code and a fragment the message must contain (naming the field or the
// value). Then bytes that are not protobuf, and truncated protobuf, to every method. The server
// must keep answering and every stored collection must be unchanged.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/hostile_support.h"

namespace quantd {
namespace {

using ::quantd::testing::HostileRequestTest;
using ::quantd::testing::IsStreamingMethod;
using ::quantd::testing::kSentinel;
using ::quantd::testing::QuantdMethods;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint32_t kU32Max = std::numeric_limits<uint32_t>::max();

struct Case {
  std::string name;  // RPC and what is wrong
  std::function<grpc::Status()> call;
  grpc::StatusCode code;
  std::string fragment;  // in the message, ignoring case
};

class MalformedRequestsTest : public HostileRequestTest {
 protected:
  void SetUp() override {
    HostileRequestTest::SetUp();
    // "plain": 40 items of dimension 4, no tokenizer and no index; "cos": cosine, 1 item;
    // "empty": no items.
    Create("plain", 4, v1::METRIC_L2);
    std::vector<uint64_t> ids;
    std::vector<float> vectors;
    for (uint64_t i = 1; i <= 40; ++i) {
      ids.push_back(i);
      for (int j = 0; j < 4; ++j) vectors.push_back(static_cast<float>(i) + 0.5f * j);
    }
    ASSERT_TRUE(Upsert("plain", ids, vectors).ok());
    Create("cos", 4, v1::METRIC_COSINE);
    ASSERT_TRUE(Upsert("cos", {1}, {1, 0, 0, 0}).ok());
    Create("empty", 4, v1::METRIC_L2);
  }

  void Create(const std::string& name, uint32_t dim, v1::Metric metric) {
    v1::CreateCollectionRequest r;
    r.set_name(name);
    r.set_dimension(dim);
    r.set_metric(metric);
    ASSERT_TRUE(Call(r).ok());
  }

  uint64_t ItemCount(const std::string& name) {
    v1::DescribeCollectionRequest r;
    r.set_name(name);
    v1::DescribeCollectionResponse out;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->DescribeCollection(&context, r, &out).ok());
    return out.collection().item_count();
  }

  // Upsert streams of one batch.
  grpc::Status UpsertOne(const std::string& collection, const std::vector<uint64_t>& ids,
                         const std::vector<float>& vectors) {
    v1::UpsertRequest r;
    r.set_collection(collection);
    r.mutable_ids()->Add(ids.begin(), ids.end());
    r.mutable_vectors()->Add(vectors.begin(), vectors.end());
    return Call(std::vector<v1::UpsertRequest>{r});
  }

  static void Run(const std::vector<Case>& cases) {
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name);
      const grpc::Status status = c.call();
      EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
      if (c.code != grpc::StatusCode::OK) {
        EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(status.error_message()),
                                      absl::AsciiStrToLower(c.fragment)))
            << c.name << ": message '" << status.error_message() << "' lacks '" << c.fragment
            << "'";
      }
    }
  }
};

constexpr auto kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
constexpr auto kNotFound = grpc::StatusCode::NOT_FOUND;
constexpr auto kPrecondition = grpc::StatusCode::FAILED_PRECONDITION;

template <typename Request, typename Fill>
Request Make(Fill fill) {
  Request r;
  fill(r);
  return r;
}

TEST_F(MalformedRequestsTest, CollectionRpcs) {
  using Create = v1::CreateCollectionRequest;
  auto create = [this](std::string name, uint32_t dim, int metric) {
    return [=, this] {
      return Call(Make<Create>([&](Create& r) {
        r.set_name(name);
        r.set_dimension(dim);
        r.set_metric(static_cast<v1::Metric>(metric));
      }));
    };
  };
  auto describe = [this](std::string name) {
    return [=, this] {
      return Call(Make<v1::DescribeCollectionRequest>([&](auto& r) { r.set_name(name); }));
    };
  };
  auto drop = [this](std::string name) {
    return [=, this] {
      return Call(Make<v1::DropCollectionRequest>([&](auto& r) { r.set_name(name); }));
    };
  };
  Run({
      {"Create: empty name", create("", 4, 1), kInvalid, "name is empty"},
      {"Create: 129-character name", create(std::string(129, 'n'), 4, 1), kInvalid,
       "129 characters"},
      {"Create: space in name", create("a b", 4, 1), kInvalid, "'a b' is invalid at position 1"},
      {"Create: leading dash", create("-x", 4, 1), kInvalid, "position 0"},
      {"Create: path in name", create("../x", 4, 1), kInvalid, "name '../x'"},
      {"Create: NUL in name", create(std::string("a\0b", 3), 4, 1), kInvalid, "position 1"},
      {"Create: dimension 0", create("new", 0, 1), kInvalid, "dimension 0 is outside 1..65536"},
      {"Create: dimension 65537", create("new", 65537, 1), kInvalid, "dimension 65537"},
      {"Create: dimension 2^32-1", create("new", kU32Max, 1), kInvalid, "dimension 4294967295"},
      {"Create: metric unspecified", create("new", 4, 0), kInvalid, "metric 0"},
      {"Create: metric 7", create("new", 4, 7), kInvalid, "metric 7"},
      {"Create: metric -1", create("new", 4, -1), kInvalid, "metric -1"},
      {"Create: existing", create(kSentinel, 8, 1), grpc::StatusCode::ALREADY_EXISTS,
       "collection 'sentinel' already exists"},
      {"Create: existing, other shape", create(kSentinel, 3, 2), grpc::StatusCode::ALREADY_EXISTS,
       "'sentinel'"},
      {"Describe: empty name", describe(""), kInvalid, "is empty"},
      {"Describe: unknown", describe("nope"), kNotFound, "collection 'nope' does not exist"},
      {"Describe: long name", describe(std::string(5000, 'x')), kInvalid, "5000 characters"},
      {"Describe: bad name", describe("x y"), kInvalid, "'x y'"},
      {"Describe: case differs", describe("Sentinel"), kNotFound, "'Sentinel'"},
      // proto3 strings must be UTF-8: the server cannot parse such a request.
      {"Describe: name not UTF-8", describe("\xff\xfe"), kInvalid,
       "/quantd.v1.Quantd/DescribeCollection does not parse"},
      {"Create: name not UTF-8", create("a\xc3", 4, 1), kInvalid,
       "/quantd.v1.Quantd/CreateCollection does not parse"},
      {"Drop: name not UTF-8", drop("sentinel\x80"), kInvalid,
       "/quantd.v1.Quantd/DropCollection does not parse"},
      {"Drop: empty name", drop(""), kInvalid, "is empty"},
      {"Drop: unknown", drop("nope"), kNotFound, "collection 'nope' does not exist"},
      {"Drop: bad name", drop("sentinel*"), kInvalid, "'sentinel*'"},
      {"Drop: long name", drop(std::string(129, 's')), kInvalid, "129 characters"},
  });
  ExpectSentinelUnchanged();
  EXPECT_EQ(ItemCount("plain"), 40u);
}

TEST_F(MalformedRequestsTest, ItemRpcs) {
  auto upsert = [this](std::string collection, std::vector<uint64_t> ids,
                       std::vector<float> vectors) {
    return [=, this] { return UpsertOne(collection, ids, vectors); };
  };
  auto get = [this](std::string collection, std::vector<uint64_t> ids) {
    return [=, this] {
      return Call(Make<v1::GetItemsRequest>([&](auto& r) {
        r.set_collection(collection);
        r.mutable_ids()->Add(ids.begin(), ids.end());
      }));
    };
  };
  auto del = [this](std::string collection, std::vector<uint64_t> ids) {
    return [=, this] {
      return Call(Make<v1::DeleteItemsRequest>([&](auto& r) {
        r.set_collection(collection);
        r.mutable_ids()->Add(ids.begin(), ids.end());
      }));
    };
  };
  const std::vector<uint64_t> too_many((1u << 20) + 1, 7);
  Run({
      {"Upsert: no collection", upsert("", {1}, {1, 2, 3, 4}), kInvalid,
       "collection is empty: name it in the first message"},
      {"Upsert: unknown collection", upsert("nope", {1}, {1, 2, 3, 4}), kNotFound,
       "collection 'nope' does not exist"},
      {"Upsert: bad name", upsert("no pe", {1}, {1, 2, 3, 4}), kInvalid, "'no pe'"},
      {"Upsert: no ids", upsert("plain", {}, {1, 2, 3, 4}), kInvalid, "ids is empty"},
      {"Upsert: no ids, no vectors", upsert("plain", {}, {}), kInvalid, "ids is empty"},
      {"Upsert: short vectors", upsert("plain", {1}, {1, 2, 3}), kInvalid,
       "vectors has 3 values; 1 ids x dimension 4"},
      {"Upsert: long vectors", upsert("plain", {1}, {1, 2, 3, 4, 5}), kInvalid,
       "vectors has 5 values"},
      {"Upsert: vectors for fewer ids", upsert("plain", {1, 2}, {1, 2, 3, 4}), kInvalid,
       "2 ids x dimension 4"},
      {"Upsert: NaN", upsert("plain", {1}, {1, kNaN, 3, 4}), kInvalid,
       "vectors[row 0, component 1] = nan"},
      {"Upsert: +Inf", upsert("plain", {1, 2}, {1, 2, 3, 4, 1, 2, 3, kInf}), kInvalid,
       "vectors[row 1, component 3] = inf"},
      {"Upsert: -Inf", upsert("plain", {1}, {-kInf, 2, 3, 4}), kInvalid, "component 0] = -inf"},
      {"Upsert: zero vector, cosine", upsert("cos", {2}, {0, 0, 0, 0}), kInvalid,
       "vectors[row 0] is the zero vector"},
      {"Upsert: 2^20 + 1 ids", upsert("plain", too_many, {}), kInvalid, "ids has 1048577 rows"},
      {"Upsert: name not UTF-8", upsert("plain\xff", {1}, {1, 2, 3, 4}), kInvalid,
       "batch 0 does not parse as an UpsertRequest"},
      {"Upsert: sentinel, wrong dimension", upsert(kSentinel, {1}, {1, 2, 3, 4}), kInvalid,
       "dimension 8"},
      {"GetItems: no ids", get("plain", {}), kInvalid, "ids is empty"},
      {"GetItems: no collection", get("", {1}), kInvalid, "collection is empty"},
      {"GetItems: unknown collection", get("nope", {1}), kNotFound, "'nope'"},
      {"GetItems: 2^20 + 1 ids", get(kSentinel, too_many), kInvalid, "ids has 1048577 entries"},
      {"GetItems: unknown ids are missing, not an error", get(kSentinel, {0, ~0ull}),
       grpc::StatusCode::OK, ""},
      {"DeleteItems: no ids", del("plain", {}), kInvalid, "ids is empty"},
      {"DeleteItems: no collection", del("", {1}), kInvalid, "collection is empty"},
      {"DeleteItems: unknown collection", del("nope", {1}), kNotFound, "'nope'"},
      {"DeleteItems: bad name", del("../plain", {1}), kInvalid, "'../plain'"},
      {"DeleteItems: 2^20 + 1 ids", del("plain", too_many), kInvalid, "ids has 1048577 entries"},
  });
  // A stream whose second batch names another collection: the first batch stays, the second is
  // refused with its batch index.
  {
    v1::UpsertRequest first;
    first.set_collection("plain");
    first.add_ids(100);
    for (float v : {1.0f, 2.0f, 3.0f, 4.0f}) first.add_vectors(v);
    v1::UpsertRequest second = first;
    second.set_collection("cos");
    second.set_ids(0, 101);
    const grpc::Status status = Call(std::vector<v1::UpsertRequest>{first, second});
    EXPECT_EQ(status.error_code(), kInvalid);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "batch 1: collection 'cos' differs"))
        << status.error_message();
    EXPECT_EQ(ItemCount("plain"), 41u);
    EXPECT_EQ(ItemCount("cos"), 1u);
  }
  // A batch that does not parse after a good one: refused with its index, the good one kept.
  {
    v1::UpsertRequest good;
    good.set_collection("plain");
    good.add_ids(104);
    for (float v : {1.0f, 2.0f, 3.0f, 4.0f}) good.add_vectors(v);
    v1::UpsertRequest bad = good;
    bad.set_collection("plain\xc3");
    bad.set_ids(0, 105);
    const grpc::Status status = Call(std::vector<v1::UpsertRequest>{good, bad});
    EXPECT_EQ(status.error_code(), kInvalid);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "batch 1 does not parse"))
        << status.error_message();
    EXPECT_EQ(ItemCount("plain"), 42u);
  }
  // A bad batch after a good one: its batch index is named, the good one is kept.
  {
    v1::UpsertRequest good;
    good.set_collection("plain");
    good.add_ids(102);
    for (float v : {1.0f, 2.0f, 3.0f, 4.0f}) good.add_vectors(v);
    v1::UpsertRequest bad;
    bad.add_ids(103);
    for (float v : {1.0f, kNaN, 3.0f, 4.0f}) bad.add_vectors(v);
    const grpc::Status status = Call(std::vector<v1::UpsertRequest>{good, bad});
    EXPECT_EQ(status.error_code(), kInvalid);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "batch 1: vectors[row 0, component 1]"))
        << status.error_message();
    EXPECT_EQ(ItemCount("plain"), 43u);
  }
  ExpectSentinelUnchanged();
  EXPECT_EQ(ItemCount("cos"), 1u);
}

TEST_F(MalformedRequestsTest, TokenizerRpcs) {
  using Train = v1::TrainTokenizerRequest;
  auto train = [this](std::function<void(Train&)> fill) {
    return [=, this] { return Call(Make<Train>(fill)); };
  };
  auto sizes = [](std::string collection, std::vector<uint32_t> k) {
    return [=](Train& r) {
      r.set_collection(collection);
      r.mutable_codebook_sizes()->Add(k.begin(), k.end());
    };
  };
  using Encode = v1::EncodeRequest;
  auto encode = [this](std::string collection, std::vector<uint64_t> ids,
                       std::vector<float> vectors) {
    return [=, this] {
      return Call(Make<Encode>([&](Encode& r) {
        r.set_collection(collection);
        r.mutable_ids()->Add(ids.begin(), ids.end());
        r.mutable_vectors()->Add(vectors.begin(), vectors.end());
      }));
    };
  };
  using Lookup = v1::LookupRequest;
  auto lookup = [this](std::string collection, std::vector<uint32_t> codes, std::string tokens,
                       uint32_t limit) {
    return [=, this] {
      return Call(Make<Lookup>([&](Lookup& r) {
        r.set_collection(collection);
        r.mutable_codes()->Add(codes.begin(), codes.end());
        r.set_tokens(tokens);
        r.set_limit(limit);
      }));
    };
  };
  auto exporting = [this](std::string collection) {
    return [=, this] {
      return Call(Make<v1::ExportSidsRequest>([&](auto& r) { r.set_collection(collection); }));
    };
  };
  const std::vector<float> row8(8, 0.5f);
  std::vector<float> nan8 = row8;
  nan8[5] = kNaN;
  Run({
      {"Train: no collection", train(sizes("", {4})), kInvalid, "collection is empty"},
      {"Train: unknown collection", train(sizes("nope", {4})), kNotFound, "'nope'"},
      {"Train: 17 levels", train(sizes("plain", std::vector<uint32_t>(17, 2))), kInvalid,
       "codebook_sizes has 17 levels, at most 16"},
      {"Train: K = 0", train(sizes("plain", {4, 0})), kInvalid,
       "codebook_sizes[1] = 0 is outside 1..65536"},
      {"Train: K = 65537", train(sizes("plain", {65537})), kInvalid, "codebook_sizes[0] = 65537"},
      {"Train: K = 2^32-1", train(sizes("plain", {kU32Max})), kInvalid,
       "codebook_sizes[0] = 4294967295"},
      {"Train: K above the items", train(sizes("plain", {41})), kInvalid,
       "codebook_sizes[0] = 41 exceeds the 40 training items"},
      {"Train: K above the sample", train([&](Train& r) {
         sizes("plain", {8})(r);
         r.set_sample_size(5);
       }),
       kInvalid, "exceeds the 5 training items"},
      {"Train: empty collection", train(sizes("empty", {1})), kInvalid,
       "exceeds the 0 training items"},
      {"Train: bounds without balanced", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.add_size_bounds()->set_size_max(20);
       }),
       kInvalid, "size_bounds and balance_slack need balanced = true"},
      {"Train: slack without balanced", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balance_slack(0.1);
       }),
       kInvalid, "need balanced"},
      {"Train: bounds and slack", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.add_size_bounds()->set_size_max(20);
         r.set_balance_slack(0.1);
       }),
       kInvalid, "give size_bounds or balance_slack, not both"},
      {"Train: bounds per level", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.add_size_bounds()->set_size_max(20);
         r.add_size_bounds()->set_size_max(20);
       }),
       kInvalid, "size_bounds has 2 entries for 1 levels"},
      {"Train: min above max", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.add_size_bounds()->set_size_min(11);
         r.mutable_size_bounds(0)->set_size_max(10);
       }),
       kInvalid, "size_bounds[0] = [11, 10]"},
      {"Train: max above the items", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.add_size_bounds()->set_size_max(~0ull);
       }),
       kInvalid, "size_bounds[0]"},
      {"Train: infeasible bounds", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.add_size_bounds()->set_size_max(5);
       }),
       kInvalid, "size_bounds[0]"},
      {"Train: slack -1", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.set_balance_slack(-1);
       }),
       kInvalid, "balance_slack -1 is outside 0..1"},
      {"Train: slack NaN", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.set_balance_slack(std::nan(""));
       }),
       kInvalid, "balance_slack nan"},
      {"Train: slack inf", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_balanced(true);
         r.set_balance_slack(std::numeric_limits<double>::infinity());
       }),
       kInvalid, "balance_slack inf"},
      {"Train: 1001 iterations", train([&](Train& r) {
         sizes("plain", {4})(r);
         r.set_max_iterations(1001);
       }),
       kInvalid, "max_iterations 1001 exceeds 1000"},
      {"Train: sentinel, K above the items", train(sizes(kSentinel, {301})), kInvalid,
       "codebook_sizes[0] = 301"},
      {"Encode: unknown collection", encode("nope", {1}, {}), kNotFound, "'nope'"},
      {"Encode: no collection", encode("", {1}, {}), kInvalid, "collection is empty"},
      {"Encode: nothing to encode", encode(kSentinel, {}, {}), kInvalid,
       "ids and vectors are both empty"},
      {"Encode: no tokenizer", encode("plain", {1}, {}), kPrecondition,
       "collection 'plain' has no tokenizer yet"},
      {"Encode: 7 values at dimension 8", encode(kSentinel, {}, std::vector<float>(7, 1)), kInvalid,
       "vectors has 7 values, not a multiple of dimension 8"},
      {"Encode: NaN", encode(kSentinel, {}, nan8), kInvalid, "vectors[row 0, component 5] = nan"},
      {"Encode: 100001 ids", encode(kSentinel, std::vector<uint64_t>(100001, 1), {}), kInvalid,
       "ids has 100001 entries, at most 100000"},
      {"Encode: 100001 vectors", encode(kSentinel, {}, std::vector<float>(800008, 0.5f)), kInvalid,
       "vectors holds 100001 rows, at most 100000"},
      {"Encode: unknown ids are missing, not an error", encode(kSentinel, {0, ~0ull}, {}),
       grpc::StatusCode::OK, ""},
      {"Lookup: nothing to look up", lookup(kSentinel, {}, "", 0), kInvalid,
       "codes and tokens are both empty"},
      {"Lookup: codes and tokens", lookup(kSentinel, {1}, "<a_1>", 0), kInvalid,
       "give codes or tokens, not both"},
      {"Lookup: too many codes", lookup(kSentinel, {1, 1, 0, 0}, "", 0), kInvalid,
       "codes has 4 values; a prefix has 1..3"},
      {"Lookup: code out of range", lookup(kSentinel, {1, 8}, "", 0), kInvalid,
       "codes[1] = 8 is outside 0..7"},
      {"Lookup: code 2^32-1", lookup(kSentinel, {kU32Max}, "", 0), kInvalid,
       "codes[0] = 4294967295"},
      {"Lookup: tokens out of order", lookup(kSentinel, {}, "<b_1>", 0), kInvalid,
       "tokens '<b_1>'"},
      {"Lookup: tokens garbage", lookup(kSentinel, {}, "garbage", 0), kInvalid, "tokens 'garbage'"},
      {"Lookup: negative token", lookup(kSentinel, {}, "<a_-1>", 0), kInvalid, "<a_-1>"},
      {"Lookup: unterminated token", lookup(kSentinel, {}, "<a_1><b_2", 0), kInvalid,
       "tokens '<a_1><b_2'"},
      {"Lookup: token above 2^32", lookup(kSentinel, {}, "<a_4294967296>", 0), kInvalid,
       "4294967296"},
      {"Lookup: 20 tokens", lookup(kSentinel, {}, absl::StrCat("<a_1><b_1><c_1><d_1><e_1>"), 0),
       kInvalid, "codes has 5 values"},
      {"Lookup: limit 100001", lookup(kSentinel, {1}, "", 100001), kInvalid,
       "limit 100001 exceeds 100000"},
      {"Lookup: limit 2^32-1", lookup(kSentinel, {1}, "", kU32Max), kInvalid, "limit 4294967295"},
      {"Lookup: no tokenizer", lookup("plain", {1}, "", 0), kPrecondition, "no tokenizer yet"},
      {"Lookup: unknown collection", lookup("nope", {1}, "", 0), kNotFound, "'nope'"},
      {"ExportSids: no collection", exporting(""), kInvalid, "collection is empty"},
      {"ExportSids: unknown collection", exporting("nope"), kNotFound, "'nope'"},
      {"ExportSids: bad name", exporting("a\tb"), kInvalid, "collection 'a\\tb'"},
      {"ExportSids: no tokenizer", exporting("plain"), kPrecondition, "no tokenizer yet"},
  });
  ExpectSentinelUnchanged();
  EXPECT_EQ(ItemCount("plain"), 40u);
}

TEST_F(MalformedRequestsTest, IndexAndJobRpcs) {
  using TrainIndex = v1::TrainIndexRequest;
  auto train = [this](std::string collection, std::function<void(TrainIndex&)> fill) {
    return [=, this] {
      return Call(Make<TrainIndex>([&](TrainIndex& r) {
        r.set_collection(collection);
        fill(r);
      }));
    };
  };
  using Search = v1::SearchRequest;
  auto search = [this](std::string collection, std::vector<float> queries, uint32_t k,
                       uint32_t nprobe, uint32_t refine) {
    return [=, this] {
      return Call(Make<Search>([&](Search& r) {
        r.set_collection(collection);
        r.mutable_queries()->Add(queries.begin(), queries.end());
        r.set_k(k);
        r.set_nprobe(nprobe);
        r.set_refine(refine);
      }));
    };
  };
  auto get_job = [this](std::string id) {
    return [=, this] { return Call(Make<v1::GetJobRequest>([&](auto& r) { r.set_id(id); })); };
  };
  auto cancel_job = [this](std::string id) {
    return [=, this] { return Call(Make<v1::CancelJobRequest>([&](auto& r) { r.set_id(id); })); };
  };
  auto list_jobs = [this](std::string collection) {
    return [=, this] {
      return Call(Make<v1::ListJobsRequest>([&](auto& r) { r.set_collection(collection); }));
    };
  };
  auto backup = [this](std::string name) {
    return [=, this] { return Call(Make<v1::BackupRequest>([&](auto& r) { r.set_name(name); })); };
  };
  auto stats = [this](std::string collection) {
    return [=, this] {
      return Call(Make<v1::GetStatsRequest>([&](auto& r) { r.set_collection(collection); }));
    };
  };
  const std::vector<float> q8(8, 0.5f);
  std::vector<float> inf8 = q8;
  inf8[7] = -kInf;
  Run({
      {"TrainIndex: no collection", train("", [](auto&) {}), kInvalid, "collection is empty"},
      {"TrainIndex: unknown collection", train("nope", [](auto&) {}), kNotFound, "'nope'"},
      {"TrainIndex: empty collection", train("empty", [](auto&) {}), kPrecondition,
       "collection 'empty' holds no items"},
      {"TrainIndex: nlist above the items", train("plain", [](auto& r) { r.set_nlist(41); }),
       kInvalid, "nlist 41 exceeds the 40 training items"},
      {"TrainIndex: nlist 2^32-1", train("plain", [](auto& r) { r.set_nlist(kU32Max); }), kInvalid,
       "nlist 4294967295"},
      {"TrainIndex: nlist above the sample",
       train("plain",
             [](auto& r) {
               r.set_nlist(10);
               r.set_sample_size(9);
             }),
       kInvalid, "nlist 10 exceeds the 9 training items"},
      {"TrainIndex: m not dividing d", train("plain", [](auto& r) { r.set_m(3); }), kInvalid,
       "m 3 does not divide dimension 4"},
      {"TrainIndex: m above d", train("plain", [](auto& r) { r.set_m(8); }), kInvalid, "m 8"},
      {"TrainIndex: m 2^32-1", train("plain", [](auto& r) { r.set_m(kU32Max); }), kInvalid,
       "m 4294967295"},
      {"TrainIndex: nbits 5", train("plain", [](auto& r) { r.set_nbits(5); }), kInvalid,
       "nbits 5 is not 4 or 8"},
      {"TrainIndex: nbits 8 on 40 items", train("plain", [](auto& r) { r.set_nbits(8); }), kInvalid,
       "nbits 8 needs at least 256 training items"},
      {"TrainIndex: 1001 coarse iterations",
       train("plain", [](auto& r) { r.set_coarse_iterations(1001); }), kInvalid,
       "coarse_iterations 1001 exceeds"},
      {"TrainIndex: 2^32-1 PQ iterations",
       train("plain", [](auto& r) { r.set_pq_iterations(kU32Max); }), kInvalid,
       "pq_iterations 4294967295 exceeds"},
      {"Search: unknown collection", search("nope", q8, 1, 0, 0), kNotFound, "'nope'"},
      {"Search: no collection", search("", q8, 1, 0, 0), kInvalid, "collection is empty"},
      {"Search: no queries", search(kSentinel, {}, 1, 0, 0), kInvalid, "queries is empty"},
      {"Search: 7 values at dimension 8", search(kSentinel, std::vector<float>(7, 1), 1, 0, 0),
       kInvalid, "queries has 7 values, not a multiple of dimension 8"},
      {"Search: 10001 queries", search(kSentinel, std::vector<float>(80008, 1), 1, 0, 0), kInvalid,
       "queries holds 10001 vectors, at most 10000"},
      {"Search: k 0", search(kSentinel, q8, 0, 0, 0), kInvalid, "k 0 is outside 1..1024"},
      {"Search: k 1025", search(kSentinel, q8, 1025, 0, 0), kInvalid, "k 1025"},
      {"Search: k 2^32-1", search(kSentinel, q8, kU32Max, 0, 0), kInvalid, "k 4294967295"},
      {"Search: nq x k too many", search(kSentinel, std::vector<float>(8 * 1025, 1), 1024, 0, 0),
       kInvalid, "1025 queries x k 1024"},
      {"Search: refine x k too many", search(kSentinel, q8, 1024, 0, 65), kInvalid,
       "refine 65: refine x k (66560)"},
      {"Search: refine 2^32-1", search(kSentinel, q8, 1, 0, kU32Max), kInvalid,
       "refine 4294967295"},
      {"Search: -Inf", search(kSentinel, inf8, 1, 0, 0), kInvalid,
       "queries[row 0, component 7] = -inf"},
      {"Search: nprobe 2^32-1 scans every list", search(kSentinel, q8, 3, kU32Max, 0),
       grpc::StatusCode::OK, ""},
      {"Search: no index", search("plain", std::vector<float>(4, 1), 1, 0, 0), kPrecondition,
       "collection 'plain' has no index yet"},
      {"Search: wrong dimension for the collection", search("plain", q8 /* 8 = 2 x 4 */, 1, 0, 0),
       kPrecondition, "no index yet"},
      {"GetJob: empty id", get_job(""), kInvalid, "id is empty"},
      {"GetJob: unknown id", get_job("job-999999"), kNotFound, "job 'job-999999' does not exist"},
      {"GetJob: non-ASCII id", get_job("jöb"), kNotFound, "does not exist"},
      {"GetJob: id not UTF-8",
       get_job("j\xff"
               "b"),
       kInvalid, "GetJob does not parse"},
      {"ExportSids: name not UTF-8",
       [&] {
         v1::ExportSidsRequest r;
         r.set_collection("\xed\xa0\x80");  // a UTF-16 surrogate, not valid UTF-8
         return Call(r);
       },
       kInvalid, "/quantd.v1.Quantd/ExportSids does not parse"},
      {"CancelJob: empty id", cancel_job(""), kInvalid, "id is empty"},
      {"CancelJob: unknown id", cancel_job("job-999999"), kNotFound, "'job-999999'"},
      {"CancelJob: ended job", cancel_job("job-000001"), kPrecondition,
       "job job-000001 already ended (JOB_STATE_SUCCEEDED)"},
      {"ListJobs: unknown collection", list_jobs("nope"), kNotFound, "'nope'"},
      {"ListJobs: bad name", list_jobs("no/pe"), kInvalid, "'no/pe'"},
      {"ListJobs: long name", list_jobs(std::string(129, 'j')), kInvalid, "129 characters"},
      {"Backup: empty name", backup(""), kInvalid, "name is empty"},
      {"Backup: ..", backup(".."), kInvalid, "name '..' is not a directory name"},
      {"Backup: path", backup("a/b"), kInvalid, "name 'a/b' is invalid at position 1"},
      {"Backup: absolute path", backup("/etc"), kInvalid, "position 0"},
      {"Backup: reserved marker", backup("x.partial-1"), kInvalid, "x.partial-1"},
      {"Backup: 129 characters", backup(std::string(129, 'b')), kInvalid, "129 characters"},
      {"Backup: name not UTF-8", backup("b\xff"), kInvalid, "Backup does not parse"},
      {"Backup: good", backup("b1"), grpc::StatusCode::OK, ""},
      {"Backup: exists", backup("b1"), grpc::StatusCode::ALREADY_EXISTS, "'b1'"},
      {"GetStats: no collection", stats(""), kInvalid, "collection is empty"},
      {"GetStats: unknown collection", stats("nope"), kNotFound, "'nope'"},
      {"GetStats: bad name", stats("-"), kInvalid, "'-'"},
  });
  ExpectSentinelUnchanged();
  EXPECT_EQ(ItemCount("plain"), 40u);
}

// Messages quote what the caller sent; a quote of a huge value must not push the status past
// the client's metadata limit, which turns it into RESOURCE_EXHAUSTED "received initial metadata
// size exceeds limit" and loses the real code and message.
TEST_F(MalformedRequestsTest, HugeValuesInMessagesKeepTheirCodeAndMessage) {
  const std::string huge(40000, 'z');
  v1::LookupRequest lookup;
  lookup.set_collection(kSentinel);
  lookup.set_tokens(std::string(40000, '<'));
  v1::GetJobRequest get_job;
  get_job.set_id(huge);
  v1::CancelJobRequest cancel_job;
  cancel_job.set_id(huge);
  v1::UpsertRequest first;
  first.set_collection("plain");
  first.add_ids(1);
  for (float v : {1.0f, 2.0f, 3.0f, 4.0f}) first.add_vectors(v);
  v1::UpsertRequest second = first;
  second.set_collection(huge);
  Run({
      {"Lookup: 40000-byte tokens", [&] { return Call(lookup); }, kInvalid, "tokens '<<<<"},
      {"GetJob: 40000-byte id", [&] { return Call(get_job); }, kNotFound, "does not exist"},
      {"CancelJob: 40000-byte id", [&] { return Call(cancel_job); }, kNotFound, "job 'zzzz"},
      {"Upsert: 40000-byte second name",
       [&] {
         return Call(std::vector<v1::UpsertRequest>{first, second});
       },
       kInvalid, "batch 1: collection 'zzzz"},
  });
  for (const std::string& method : {std::string("GetJob"), std::string("Lookup")}) {
    // The message is shortened, keeping its start and its end.
    const grpc::Status status = method == "GetJob" ? Call(get_job) : Call(lookup);
    EXPECT_LE(status.error_message().size(), 1100u) << method;
    EXPECT_TRUE(absl::StrContains(status.error_message(), "bytes elided")) << method;
  }
  EXPECT_TRUE(absl::EndsWith(Call(get_job).error_message(), "' does not exist"));
  ExpectSentinelUnchanged();
}

// Bytes that are not a protobuf message of the method's request type, and protobuf cut short.
// gRPC's callback API deserializes the request before the service sees it; on its own it answers
// one that does not parse with UNIMPLEMENTED and no message (gRPC 1.51), which the server's
// interceptor turns into INVALID_ARGUMENT naming the method; and it reports an Upsert batch that
// does not parse like the client closing its side, which the Upsert reactor tells apart.
TEST_F(MalformedRequestsTest, UnparsableBytesToEveryMethod) {
  const std::vector<std::pair<std::string, std::string>> payloads = {
      {"not protobuf", "\xff\xff\xff\xff garbage"},
      {"wire type 7", std::string("\x0f\x01", 2)},
      {"length past the end", std::string("\x0a\x08sent", 6)},
      {"varint cut short", std::string("\x10\x80\x80", 3)},
      {"packed floats cut short", std::string("\x1a\x08\x00\x00\x80\x3f", 6)},
      {"field number 0", std::string("\x00\x01", 2)},
      {"length 2^32-1", std::string("\x0a\xff\xff\xff\xff\x0f", 6)},
      {"non-UTF-8 string field 1", std::string("\x0a\x02\xff\xfe", 4)},
  };
  for (const std::string& method : QuantdMethods()) {
    for (const auto& [what, bytes] : payloads) {
      SCOPED_TRACE(method + ": " + what);
      std::string response;
      const grpc::Status status = RawRequest(method, bytes, &response);
      if (method == "ListCollections" && what == "non-UTF-8 string field 1") {
        // ListCollectionsRequest has no fields: field 1 is an unknown field, kept, not parsed.
        EXPECT_TRUE(status.ok()) << status.error_message();
      } else if (method == "Upsert") {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
            << status.error_code() << " " << status.error_message();
        EXPECT_TRUE(
            absl::StrContains(status.error_message(), "batch 0 does not parse as an UpsertRequest"))
            << status.error_message();
        EXPECT_TRUE(response.empty()) << "an unparsable batch was acknowledged";
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
            << status.error_code() << " " << status.error_message();
        EXPECT_TRUE(absl::StrContains(
            status.error_message(),
            absl::StrCat("the request to /quantd.v1.Quantd/", method, " does not parse")))
            << status.error_message();
      }
    }
  }
  // An unknown method stays UNIMPLEMENTED; good requests are still answered after all that.
  EXPECT_EQ(RawRequest("Nope", "").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_TRUE(RawRequest("ListCollections", "").ok());
  ExpectSentinelUnchanged();
  EXPECT_EQ(ItemCount("plain"), 40u);
  EXPECT_EQ(ItemCount("cos"), 1u);
}

}  // namespace
}  // namespace quantd
