// A seeded randomized run over request validation through gRPC: for every RPC of
// quantd.v1.Quantd, random requests (empty, huge and negative-looking numbers, NaN/Inf floats,
// vectors of wrong lengths, huge k/nprobe/limits, unknown, very long and non-UTF-8 names,
// random ids, repeated fields of wrong sizes) and random bytes as the serialized message. Every
// call must end within its deadline with a code from the allowed set and a message when it
// fails; the server must keep answering; the sentinel collection must be unchanged.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/hostile_support.h"

namespace quantd {
namespace {

using ::quantd::testing::HostileRequestTest;
using ::quantd::testing::kSentinel;
using ::quantd::testing::QuantdMethods;

constexpr int kTypedIterations = 10000;
constexpr int kRawIterations = 4000;

class Random : public testing::SeededRandom {
 public:
  explicit Random(uint64_t seed) : SeededRandom(seed) {}

  // A collection name: mostly from a small pool (so that creates, upserts and drops meet), or
  // a hostile one. The sentinel only when `read_only`.
  std::string Name(bool read_only) {
    if (read_only && OneIn(4)) return kSentinel;
    switch (Below(6)) {
      case 0:
      case 1:
      case 2:
        return Pick<std::string>({"scratch", "fz0", "fz1", "fz-2", "fz.3"});
      case 3:
        return Pick<std::string>({"", "nope", "sentinel2", "Sentinel", "sentinel ", " sentinel",
                                  "a b", "-x", "_x", ".x", "x/y", "../etc", "x\ty", "ünï",
                                  std::string("sen\0tinel", 9), "x;DROP", "%s%n", "*"});
      case 4:
        return std::string(Pick<size_t>({127, 128, 129, 1000, 70000}), 'n');
      default:
        return Pick<std::string>({"\xff\xfe", "a\xc3", "a\xc3\x28", "\xed\xa0\x80", "a\x80z"});
    }
  }

  uint32_t U32() {
    return Pick<uint32_t>(
        {0,           1,           2,           3,
         4,           5,           7,           8,
         16,          100,         256,         1000,
         1001,        1024,        1025,        65536,
         65537,       100000,      100001,      1u << 20,
         0x7fffffffu, 0x80000000u, 0xffffffffu, static_cast<uint32_t>(Below(1ull << 32))});
  }
  uint64_t U64() {
    return Pick<uint64_t>({0, 1, 2, 4, 7, 300, 898, 899, 900, 1ull << 31, 1ull << 32, 1ull << 63,
                           std::numeric_limits<uint64_t>::max(),
                           std::numeric_limits<uint64_t>::max() - 1, Below(1000), rng_()});
  }
  float Float() {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    switch (Below(4)) {
      case 0:
        return Pick<float>({std::numeric_limits<float>::quiet_NaN(), kInf, -kInf,
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest(),
                            std::numeric_limits<float>::denorm_min(), -0.0f, 0.0f});
      default:
        return std::uniform_real_distribution<float>(-2, 2)(rng_);
    }
  }
  // A count for a repeated field around `unit` (a dimension), mostly small, sometimes wrong,
  // rarely huge.
  size_t Count(size_t unit) {
    if (OneIn(400)) return Pick<size_t>({(1u << 20) + 1, 3u << 20});
    return Pick<size_t>({0, 1, unit - 1, unit, unit + 1, 2 * unit, 3 * unit, 5 * unit + 2, 8,
                         static_cast<size_t>(Below(64))});
  }
  std::vector<float> Floats(size_t n, bool finite) {
    std::vector<float> out(n);
    for (float& v : out) v = finite ? std::uniform_real_distribution<float>(-2, 2)(rng_) : Float();
    return out;
  }
  std::vector<uint64_t> Ids(size_t n) {
    std::vector<uint64_t> out(n);
    for (uint64_t& v : out) v = OneIn(3) ? U64() : Below(1000);
    return out;
  }
  std::string Bytes(size_t n) {
    std::string out(n, '\0');
    for (char& c : out) c = static_cast<char>(Below(256));
    return out;
  }
  std::string JobId() {
    return Pick<std::string>({"", "job-000001", "job-000002", "job-000003", "job-000004",
                              "job-000010", "job-999999", "job-", "job--1", "\xff",
                              std::string(5000, 'j'), absl::StrCat("job-", Below(40))});
  }
};

// Whether the server can parse `request` as sent: proto3 strings must be UTF-8.
bool Parses(const google::protobuf::Message& request) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  return copy->ParseFromString(request.SerializeAsString());
}

// Dimensions the fuzz's collections may have, so that vectors sometimes fit.
constexpr size_t kDims[] = {1, 3, 4, 8};

class RequestFuzzTest : public HostileRequestTest {
 protected:
  // Records `status` of a call to `method`; `raw` calls may also fail to parse.
  void Check(const std::string& method, const grpc::Status& status, bool raw,
             const std::string& what, bool parses = true) {
    {
      std::lock_guard lock(codes_mu_);
      auto& [count, example] = codes_[method][status.error_code()];
      if (count++ == 0) example = status.error_message().substr(0, 160);
    }
    static const std::set<grpc::StatusCode> kAllowed = {grpc::StatusCode::OK,
                                                        grpc::StatusCode::INVALID_ARGUMENT,
                                                        grpc::StatusCode::NOT_FOUND,
                                                        grpc::StatusCode::FAILED_PRECONDITION,
                                                        grpc::StatusCode::OUT_OF_RANGE,
                                                        grpc::StatusCode::ALREADY_EXISTS,
                                                        grpc::StatusCode::RESOURCE_EXHAUSTED};
    bool allowed = kAllowed.contains(status.error_code());
    // One backup at a time: another one racing it is ABORTED.
    if (method == "Backup" && status.error_code() == grpc::StatusCode::ABORTED) allowed = true;
    // gRPC itself answers unknown methods: UNIMPLEMENTED, without a message.
    const std::vector<std::string>& methods = QuantdMethods();
    const bool unknown_method =
        raw && std::find(methods.begin(), methods.end(), method) == methods.end();
    const bool grpc_refused =
        unknown_method && status.error_code() == grpc::StatusCode::UNIMPLEMENTED;
    if (grpc_refused) allowed = true;
    // A typed request the server cannot parse (a proto3 string that is not UTF-8, which the
    // client sends nevertheless) is INVALID_ARGUMENT. (In an Upsert stream such a batch ends
    // the stream as if the client had closed it; earlier batches decide the status.)
    if (!parses && method != "Upsert") {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << method << " " << what << ": unparsable request: " << status.error_message();
    }
    EXPECT_TRUE(allowed) << method << " " << what << ": code " << status.error_code() << ": "
                         << status.error_message();
    if (!status.ok() && !grpc_refused) {
      EXPECT_FALSE(status.error_message().empty())
          << method << " " << what << ": code " << status.error_code() << " without a message";
    }
  }

  // One random typed request to a random RPC.
  void TypedCall(Random& rnd) {
    const std::vector<std::string>& methods = QuantdMethods();
    const std::string method = methods[rnd.Below(methods.size())];
    const size_t dim = rnd.Pick<size_t>({1, 3, 4, 8, 8});
    const bool finite = !rnd.OneIn(4);
    grpc::Status status;
    std::string what;
    bool parses = true;
    if (method == "CreateCollection") {
      v1::CreateCollectionRequest r;
      r.set_name(rnd.Name(false));
      r.set_dimension(rnd.OneIn(2) ? kDims[rnd.Below(4)] : rnd.U32());
      r.set_metric(static_cast<v1::Metric>(rnd.OneIn(4) ? static_cast<int>(rnd.U32())
                                                        : static_cast<int>(rnd.Below(5))));
      what = r.ShortDebugString().substr(0, 200);
      parses = Parses(r);
      status = Call(r);
    } else if (method == "ListCollections") {
      status = Call(v1::ListCollectionsRequest());
    } else if (method == "DescribeCollection") {
      v1::DescribeCollectionRequest r;
      r.set_name(rnd.Name(true));
      parses = Parses(r);
      status = Call(r);
    } else if (method == "DropCollection") {
      v1::DropCollectionRequest r;
      r.set_name(rnd.Name(false));
      what = r.name().substr(0, 100);
      parses = Parses(r);
      status = Call(r);
    } else if (method == "Upsert") {
      std::vector<v1::UpsertRequest> batches(rnd.Below(4));
      const std::string name = rnd.Name(false);
      for (size_t b = 0; b < batches.size(); ++b) {
        v1::UpsertRequest& r = batches[b];
        if (b == 0 ? !rnd.OneIn(10) : rnd.OneIn(3)) {
          r.set_collection(rnd.OneIn(5) ? rnd.Name(false) : name);
        }
        const size_t n = rnd.Pick<size_t>({0, 1, 2, 5, 17});
        const std::vector<uint64_t> ids = rnd.Ids(rnd.OneIn(4) ? rnd.Count(1) : n);
        r.mutable_ids()->Add(ids.begin(), ids.end());
        const size_t values = rnd.OneIn(3) ? rnd.Count(dim) : n * dim;
        const std::vector<float> v = rnd.Floats(values, finite);
        r.mutable_vectors()->Add(v.begin(), v.end());
      }
      what = absl::StrCat(batches.size(), " batches to ", name.substr(0, 40));
      for (const v1::UpsertRequest& batch : batches) parses = parses && Parses(batch);
      status = Call(batches);
    } else if (method == "DeleteItems") {
      v1::DeleteItemsRequest r;
      r.set_collection(rnd.Name(false));
      const std::vector<uint64_t> ids = rnd.Ids(rnd.Count(3));
      r.mutable_ids()->Add(ids.begin(), ids.end());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "GetItems") {
      v1::GetItemsRequest r;
      r.set_collection(rnd.Name(true));
      const std::vector<uint64_t> ids = rnd.Ids(rnd.Count(3));
      r.mutable_ids()->Add(ids.begin(), ids.end());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "TrainTokenizer") {
      v1::TrainTokenizerRequest r;
      r.set_collection(rnd.OneIn(2) ? "scratch" : rnd.Name(false));
      for (size_t l = 0, n = rnd.Pick<size_t>({0, 1, 2, 3, 16, 17, 40}); l < n; ++l) {
        r.add_codebook_sizes(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(6)) : rnd.U32());
      }
      r.set_balanced(rnd.OneIn(2));
      for (size_t l = 0, n = rnd.Pick<size_t>({0, 0, 1, 2, 3, 20}); l < n; ++l) {
        v1::SizeBounds* b = r.add_size_bounds();
        b->set_size_min(rnd.OneIn(2) ? rnd.Below(10) : rnd.U64());
        b->set_size_max(rnd.OneIn(2) ? rnd.Below(20) : rnd.U64());
      }
      if (rnd.OneIn(3)) {
        r.set_balance_slack(rnd.Pick<double>(
            {-1, 0, 0.5, 1, 1.5, std::nan(""), 1e308, std::numeric_limits<double>::infinity()}));
      }
      r.set_max_iterations(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(4)) : rnd.U32());
      r.set_seed(rnd.U64());
      r.set_sample_size(rnd.OneIn(2) ? 0 : rnd.U64());
      what = r.ShortDebugString().substr(0, 300);
      parses = Parses(r);
      status = Call(r);
    } else if (method == "Encode") {
      v1::EncodeRequest r;
      r.set_collection(rnd.Name(true));
      const std::vector<uint64_t> ids = rnd.Ids(rnd.OneIn(2) ? 0 : rnd.Count(3));
      r.mutable_ids()->Add(ids.begin(), ids.end());
      const std::vector<float> v = rnd.Floats(rnd.OneIn(2) ? 0 : rnd.Count(dim), finite);
      r.mutable_vectors()->Add(v.begin(), v.end());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "Lookup") {
      v1::LookupRequest r;
      r.set_collection(rnd.Name(true));
      for (size_t l = 0, n = rnd.Pick<size_t>({0, 1, 2, 3, 4, 20}); l < n; ++l) {
        r.add_codes(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(10)) : rnd.U32());
      }
      if (rnd.OneIn(2)) {
        r.set_tokens(rnd.Pick<std::string>(
            {"<a_1>", "<a_1><b_2>", "<a_1><b_2><c_0>", "<a_1><b_2><c_0><d_0>", "<b_1>", "<a_-1>",
             "<a_99999999999999999999>", "<a_1", "a_1>", "<>", "<a_>", "<a_1><a_1>", "\xff",
             std::string(10000, '<'), "<a_4294967296>", "<a_1><b_2><c_4294967295>"}));
      }
      r.set_limit(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(5)) : rnd.U32());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "ExportSids") {
      v1::ExportSidsRequest r;
      r.set_collection(rnd.Name(true));
      parses = Parses(r);
      status = Call(r);
    } else if (method == "TrainIndex") {
      v1::TrainIndexRequest r;
      r.set_collection(rnd.OneIn(2) ? "scratch" : rnd.Name(false));
      r.set_nlist(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(10)) : rnd.U32());
      r.set_m(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(10)) : rnd.U32());
      r.set_nbits(rnd.Pick<uint32_t>({0, 0, 4, 8, 1, 7, 9, 16, 0xffffffffu}));
      r.set_sample_size(rnd.OneIn(2) ? 0 : rnd.U64());
      r.set_coarse_iterations(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(4)) : rnd.U32());
      r.set_pq_iterations(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(4)) : rnd.U32());
      r.set_seed(rnd.U64());
      what = r.ShortDebugString().substr(0, 300);
      parses = Parses(r);
      status = Call(r);
    } else if (method == "Search") {
      v1::SearchRequest r;
      r.set_collection(rnd.Name(true));
      const std::vector<float> v = rnd.Floats(rnd.Count(dim), finite);
      r.mutable_queries()->Add(v.begin(), v.end());
      r.set_k(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(20)) : rnd.U32());
      r.set_nprobe(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(20)) : rnd.U32());
      r.set_refine(rnd.OneIn(2) ? static_cast<uint32_t>(rnd.Below(4)) : rnd.U32());
      what = absl::StrCat(r.collection().substr(0, 40), " nq*d=", v.size(), " k=", r.k(),
                          " nprobe=", r.nprobe(), " refine=", r.refine());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "GetJob") {
      v1::GetJobRequest r;
      r.set_id(rnd.JobId());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "ListJobs") {
      v1::ListJobsRequest r;
      if (!rnd.OneIn(3)) r.set_collection(rnd.Name(true));
      parses = Parses(r);
      status = Call(r);
    } else if (method == "CancelJob") {
      v1::CancelJobRequest r;
      r.set_id(rnd.JobId());
      parses = Parses(r);
      status = Call(r);
    } else if (method == "Backup") {
      v1::BackupRequest r;
      r.set_name(rnd.OneIn(3) ? rnd.Pick<std::string>({".", "..", "b.partial-1", "b/c", "b1", "b2"})
                              : rnd.Name(false));
      parses = Parses(r);
      status = Call(r);
    } else if (method == "GetStats") {
      v1::GetStatsRequest r;
      r.set_collection(rnd.Name(true));
      parses = Parses(r);
      status = Call(r);
    }
    Check(method, status, /*raw=*/false, what, parses);
  }

  // Random bytes, or a valid request of another type, or a truncated valid request, as the
  // message of a random method (sometimes an unknown one).
  void RawFuzzCall(Random& rnd) {
    const std::vector<std::string>& methods = QuantdMethods();
    std::string method = methods[rnd.Below(methods.size())];
    if (rnd.OneIn(20)) method = rnd.Pick<std::string>({"Nope", "upsert", "Upsert/", ""});
    std::string bytes;
    switch (rnd.Below(3)) {
      case 0:
        bytes = rnd.Bytes(rnd.Pick<size_t>({0, 1, 2, 5, 16, 100, 1000}));
        break;
      case 1: {  // a request naming a scratch collection, cut short or with a byte changed
        v1::SearchRequest r;
        r.set_collection(rnd.Name(false));
        r.add_queries(1.0f);
        r.set_k(3);
        bytes = r.SerializeAsString();
        if (rnd.OneIn(2)) {
          bytes.resize(rnd.Below(bytes.size()));
        } else if (!bytes.empty()) {
          bytes[rnd.Below(bytes.size())] = static_cast<char>(rnd.Below(256));
        }
        break;
      }
      default: {  // valid tags with hostile lengths and wire types
        static const std::vector<std::string> kFragments = {
            std::string("\x0a\xff\xff\xff\xff\x0f", 6),  // field 1, length 2^32-1
            std::string("\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11),  // overlong varint
            std::string("\x12\x05\x01\x02", 4),                               // packed, cut short
            std::string("\x1d\x00\x00\xc0\x7f", 5),  // fixed32 NaN in field 3
            std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11),  // varint -1
            std::string("\x0b\x0c", 2),                                       // groups
            std::string("\x0a\x03\xff\xfe\xfd", 5),      // non-UTF-8 string in field 1
            std::string("\x0a\x08sentinel", 10),         // only with read-only methods below
            std::string("\xf8\xff\xff\xff\x0f\x01", 6),  // the largest field number
            std::string("\x00", 1),                      // field number 0
        };
        for (size_t i = 0, n = 1 + rnd.Below(4); i < n; ++i) bytes += rnd.Pick(kFragments);
        break;
      }
    }
    // Random bytes never name the sentinel for a method that writes.
    static const std::set<std::string> kReadOnly = {"ListCollections", "DescribeCollection",
                                                    "GetItems",        "Encode",
                                                    "Lookup",          "ExportSids",
                                                    "Search",          "GetJob",
                                                    "ListJobs",        "GetStats"};
    if (!kReadOnly.contains(method) && bytes.find("sentinel") != std::string::npos) return;
    const grpc::Status status = RawRequest(method, bytes);
    Check(method.empty() ? "(empty)" : method, status, /*raw=*/true,
          absl::StrCat("raw ", bytes.size(), " bytes"));
  }

  // Per method and code: how many calls, and the first one's message.
  std::mutex codes_mu_;
  std::map<std::string, std::map<int, std::pair<int, std::string>>> codes_;

  // Puts the scratch collection back with items (the run drops it now and then; if it was
  // recreated with another dimension, the upsert fails and it stays as it is).
  void RestoreScratch(Random& rnd) {
    v1::CreateCollectionRequest r;
    r.set_name("scratch");
    r.set_dimension(8);
    r.set_metric(v1::METRIC_L2);
    Call(r);
    std::vector<uint64_t> ids;
    for (uint64_t i = 0; i < 300; ++i) ids.push_back(i);
    Upsert("scratch", ids, rnd.Floats(300 * 8, true));
  }
};

TEST_F(RequestFuzzTest, RandomRequestsGetAllowedStatusesAndChangeNothingElse) {
  Random rnd(424242);
  const auto start = std::chrono::steady_clock::now();
  int typed = 0;
  int raw = 0;
  for (; typed < kTypedIterations && !HasFailure(); ++typed) {
    // A scratch collection with items, so that valid-looking requests get past the lookup.
    if (typed % 250 == 0) RestoreScratch(rnd);
    TypedCall(rnd);
  }
  for (; raw < kRawIterations && !HasFailure(); ++raw) RawFuzzCall(rnd);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("request_fuzz: %d typed and %d raw calls in %.1f s\n", typed, raw, seconds);
  int ok = 0;
  for (const auto& [method, counts] : codes_) {
    for (const auto& [code, seen] : counts) {
      std::printf("  %-18s code %2d x %4d  e.g. %s\n", method.c_str(), code, seen.first,
                  seen.second.c_str());
      if (code == 0) ok += seen.first;
    }
  }
  // Both outcomes occur across the run.
  EXPECT_GT(ok, 100);
  ExpectSentinelUnchanged();
}

// The same random requests from several clients at once: creates, drops, upserts, deletes and
// training jobs race on the same names. Still only allowed codes, and the sentinel unchanged.
TEST_F(RequestFuzzTest, ConcurrentRandomRequests) {
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 1500;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      Random rnd(777 + static_cast<uint64_t>(t));
      for (int i = 0; i < kCallsPerThread && !HasFailure(); ++i) {
        if (t == 0 && i % 100 == 0) RestoreScratch(rnd);
        if (rnd.OneIn(5)) {
          RawFuzzCall(rnd);
        } else {
          TypedCall(rnd);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int calls = 0;
  for (const auto& [method, counts] : codes_) {
    for (const auto& [code, seen] : counts) calls += seen.first;
  }
  std::printf("request_fuzz: %d calls from %d threads in %.1f s\n", calls, kThreads, seconds);
  ExpectSentinelUnchanged();
}

}  // namespace
}  // namespace quantd
