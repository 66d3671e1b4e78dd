// Capacity-aware semantic-ID assignment (core/sid_assignment.h), three tables:
//
//   1. latency: SidAssigner::Propose (Encode by vector) and ::Assign (upsert), as the server
//      holds one per tokenizer version, per batch of 1 and 64 rows, beam 1 / 4 / 16, one
//      thread, on SASRec Beauty (d 32) and
//      Fashion-MNIST (d 784), balanced RQ 4 x 256 trained on 80% and queried with the other 20%:
//      items/s, p50 and p99 per batch; ResidualQuantizer::Encode alongside.
//   1b. grpc: Encode by vector through gRPC on loopback, batch 1, 64 and 1024, nearest and
//      capacity assignment with beam 1 / 4 / 16, same data and tokenizer shape; and an RQ-VAE
//      tokenizer (512-256-128-64, e_dim 32, 4 x 256), whose encoder MLP dominates.
//   2. growth: balanced RQ 3 x 256 (slack 0.1) trained on a random 80%, the other 20% added by
//      (a) nearest codes (Encode) or (b) AssignUnderCapacity (bounds in force for the grown
//      collection, suffix cap = DefaultSuffixCap: max(1, largest suffix seen at training)), next to
//      training on 100%: collision rate, largest group, largest suffix, (level, code) bound
//      violations, MSE.
//   3. collisions: ResolveCollisions with cap 1 on balanced RQ 3 x 256 and 4 x 256 trained on
//      100% of Beauty / Instruments: collisions and MSE before / after, codes used per level,
//      next to the LETTER reference index and the seed's published figures.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/sid_bench
//   [--only=latency,grpc,growth,collisions]
//
// All training: seed 42, 20 iterations, tolerance 0, all cores. Data: QUANTD_TEST_DATA_DIR (default
// the checkout's ../shared/data) for sasrec/, and Debian's dataset-fashion-mnist.
#include <time.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "core/balanced_assignment.h"
#include "core/gemm.h"
#include "core/residual_quantizer.h"
#include "core/semantic_id.h"
#include "core/sid_assignment.h"
#include "server/server.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::DataDir;
using bench::Die;
using bench::SecondsSince;

constexpr uint64_t kSeed = 42;
constexpr int kIterations = 20;
constexpr double kSlack = 0.1;

// Rows of m in a seeded random order.
Matrix Shuffled(const Matrix& m, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(m.rows));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  Matrix out{m.rows, m.dim, std::vector<float>(m.values.size())};
  for (int64_t i = 0; i < m.rows; ++i) {
    std::copy_n(m.values.data() + order[i] * m.dim, m.dim, out.values.data() + i * m.dim);
  }
  return out;
}

Matrix RowRange(const Matrix& m, int64_t begin, int64_t end) {
  return {end - begin, m.dim,
          std::vector<float>(m.values.begin() + begin * m.dim, m.values.begin() + end * m.dim)};
}

RqTrainResult TrainBalanced(const Matrix& m, int levels, int64_t k = 256) {
  RqOptions options;
  for (int l = 0; l < levels; ++l)
    options.levels.push_back({.k = k, .balanced = true, .bounds = {}, .initial_centroids = {}});
  options.balance_slack = kSlack;
  options.kmeans.seed = kSeed;
  options.kmeans.max_iterations = kIterations;
  options.kmeans.tolerance = 0;
  options.kmeans.num_threads = 0;
  auto trained = TrainResidualQuantizer(m.values.data(), m.rows, m.dim, options);
  if (!trained.ok()) Die(trained.status().ToString());
  return std::move(*trained);
}

// The default suffix cap of a tokenizer trained to `at_training`: its largest suffix, at least 1
// (server/tokenizer_job.cc).
int64_t DefaultSuffixCap(const SidOccupancy& at_training) {
  return std::max<int64_t>(1, at_training.largest_tuple() - 1);
}

SidOccupancy OccupancyOf(const ResidualQuantizer& q, const int32_t* codes, int64_t n) {
  SidOccupancy occupancy(q.codebook_sizes());
  for (int64_t i = 0; i < n; ++i) occupancy.Add(codes + i * q.levels());
  return occupancy;
}

// Limits for a collection grown from n_trained to n_now items: each level's bounds in force
// (slack kSlack) and DefaultSuffixCap of the training occupancy.
CapacityLimits LimitsFor(const RqTrainResult& trained, int64_t n_trained, int64_t n_now,
                         const SidOccupancy& at_training) {
  CapacityLimits limits;
  for (const RqLevelReport& level : trained.levels) {
    limits.size_max.push_back(
        BoundsInForce(level.bounds, n_trained, n_now, level.k, kSlack).size_max);
  }
  limits.suffix_cap = DefaultSuffixCap(at_training);
  return limits;
}

// CPU seconds of the calling thread (the latency runs use one thread): less sensitive than wall
// time to the other processes sharing the machine.
double ThreadCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(p * values.size()));
  return values[index];
}

// ------------------------------------------------------------------------------------------
// 1. Latency.

void LatencyTable(const std::string& name, const Matrix& m) {
  const Matrix shuffled = Shuffled(m, kSeed);
  const int64_t n_train = m.rows * 4 / 5;
  const Matrix train = RowRange(shuffled, 0, n_train);
  const Matrix fresh = RowRange(shuffled, n_train, m.rows);
  std::fprintf(stderr, "  training %s 4x256 balanced on %lld rows ...\n", name.c_str(),
               static_cast<long long>(n_train));
  const RqTrainResult trained = TrainBalanced(train, 4);
  const ResidualQuantizer& q = trained.quantizer;
  const SidOccupancy base = OccupancyOf(q, trained.codes.data(), n_train);
  const CapacityLimits limits = LimitsFor(trained, n_train, m.rows, base);
  const auto prepare_start = Clock::now();
  const SidAssigner assigner(&q);
  std::printf("%-13s d %-4lld SidAssigner prepared in %.1f ms (tables %.1f MB)\n", name.c_str(),
              static_cast<long long>(m.dim), SecondsSince(prepare_start) * 1e3,
              assigner.table_bytes() / 1048576.0);
  std::vector<int32_t> codes(static_cast<size_t>(fresh.rows * 4));
  // Wall time of every batch and the thread's CPU time over all of them.
  struct Timing {
    std::vector<double> wall;
    double cpu = 0;
  };
  const auto timed = [](int64_t batches, const auto& body) {
    Timing t;
    const double cpu_start = ThreadCpuSeconds();
    for (int64_t b = 0; b < batches; ++b) {
      const auto start = Clock::now();
      body(b);
      t.wall.push_back(SecondsSince(start));
    }
    t.cpu = ThreadCpuSeconds() - cpu_start;
    return t;
  };
  const auto print = [&](const char* what, int64_t batch, int beam, int64_t batches,
                         const Timing& t, const std::string& note) {
    const double total = std::accumulate(t.wall.begin(), t.wall.end(), 0.0);
    std::printf(
        "%-13s d %-4lld %-21s batch %-3lld beam %2s %9.0f items/s  p50 %8.1f us  p99 %8.1f us  "
        "cpu %7.1f us/item%s\n",
        name.c_str(), static_cast<long long>(m.dim), what, static_cast<long long>(batch),
        beam > 0 ? absl::StrCat(beam).c_str() : "-", batches * batch / total,
        Percentile(t.wall, 0.5) * 1e6, Percentile(t.wall, 0.99) * 1e6,
        t.cpu / (batches * batch) * 1e6, note.c_str());
  };
  for (int64_t batch : {1, 64}) {
    const int64_t batches = std::min<int64_t>(fresh.rows / batch, batch == 1 ? 2000 : 200);
    const auto rows = [&](int64_t b) { return fresh.values.data() + b * batch * m.dim; };
    print("Encode (nearest)", batch, 0, batches,
          timed(batches, [&](int64_t b) { q.Encode(rows(b), batch, codes.data(), 1); }), "");
    for (int beam : {1, 4, 16}) {
      const SidAssignOptions options{.beam_width = beam};
      const auto check = [](const absl::StatusOr<SidAssignment>& a) {
        if (!a.ok()) Die(a.status().ToString());
      };
      print(
          "SidAssigner::Propose", batch, beam, batches,
          timed(batches,
                [&](int64_t b) { check(assigner.Propose(rows(b), batch, limits, options, base)); }),
          "");
      SidOccupancy occupancy = base;
      int64_t displaced = 0, overflow = 0;
      const Timing assign = timed(batches, [&](int64_t b) {
        auto assigned = assigner.Assign(rows(b), batch, limits, options, &occupancy);
        check(assigned);
        for (int64_t i = 0; i < batch; ++i) {
          displaced += assigned->displaced[i];
          overflow += assigned->overflow[i];
        }
      });
      print("SidAssigner::Assign", batch, beam, batches, assign,
            absl::StrCat("  (displaced ", displaced, ", overflow ", overflow, " of ",
                         batches * batch, ")"));
      std::fflush(stdout);
    }
  }
}

// ------------------------------------------------------------------------------------------
// 1b. Encode by vector through gRPC on loopback (an in-process server, sync off): a balanced
// 4 x 256 tokenizer trained on 80% of the rows, retrained with each beam width (same seed, so
// the same codebooks), then an RQ-VAE 4 x 256, queried with the other 20%, one call at a time.

void Check(const grpc::Status& status, const char* what) {
  if (!status.ok()) Die(absl::StrCat(what, ": ", status.error_message()));
}

void GrpcLatencyTable(const std::string& name, const Matrix& m) {
  const Matrix shuffled = Shuffled(m, kSeed);
  const int64_t n_train = m.rows * 4 / 5;
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("quantd-sid-bench-" + name)).string();
  std::filesystem::remove_all(dir);
  auto server = QuantdServer::Start(ServerOptions::Embedded(dir, /*sync=*/false));
  if (!server.ok()) Die(server.status().ToString());
  auto stub = v1::Quantd::NewStub(Connect((*server)->address()));
  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(static_cast<uint32_t>(m.dim));
    request.set_metric(v1::METRIC_L2);
    v1::CreateCollectionResponse response;
    Check(stub->CreateCollection(&context, request, &response), "CreateCollection");
  }
  for (int64_t begin = 0; begin < n_train; begin += 1000) {
    const int64_t rows = std::min<int64_t>(1000, n_train - begin);
    grpc::ClientContext context;
    auto stream = stub->Upsert(&context);
    v1::UpsertRequest request;
    request.set_collection(name);
    for (int64_t i = 0; i < rows; ++i) request.add_ids(static_cast<uint64_t>(begin + i));
    request.mutable_vectors()->Add(shuffled.values.data() + begin * m.dim,
                                   shuffled.values.data() + (begin + rows) * m.dim);
    stream->Write(request);
    stream->WritesDone();
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
    }
    Check(stream->Finish(), "Upsert");
  }
  const float* fresh = shuffled.values.data() + n_train * m.dim;
  const int64_t fresh_rows = m.rows - n_train;
  for (int beam : {0, 1, 4, 16, -1}) {  // 0: nearest assignment; -1: an RQ-VAE, nearest
    v1::TrainTokenizerRequest train;
    train.set_collection(name);
    for (int l = 0; l < 4; ++l) train.add_codebook_sizes(256);
    train.set_seed(kSeed);
    if (beam >= 0) {
      train.set_balanced(true);
      train.set_max_iterations(10);
    }
    if (beam == -1) {
      // The seed's architecture (512-256-128-64, e_dim 32), 20 epochs: Encode's cost does not
      // depend on how well it trained.
      train.set_method(v1::TOKENIZER_METHOD_RQ_VAE);
      train.mutable_rqvae()->set_epochs(20);
    } else if (beam == 0) {
      train.set_assignment(v1::ASSIGNMENT_NEAREST);
    } else {
      train.set_assignment(v1::ASSIGNMENT_CAPACITY);
      train.set_beam_width(static_cast<uint32_t>(beam));
    }
    v1::Job job;
    {
      grpc::ClientContext context;
      Check(stub->TrainTokenizer(&context, train, &job), "TrainTokenizer");
    }
    while (job.state() == v1::JOB_STATE_PENDING || job.state() == v1::JOB_STATE_RUNNING) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      grpc::ClientContext context;
      v1::GetJobRequest get;
      get.set_id(job.id());
      Check(stub->GetJob(&context, get, &job), "GetJob");
    }
    if (job.state() != v1::JOB_STATE_SUCCEEDED) Die("TrainTokenizer: " + job.error());
    const std::string method = beam == -1 ? "rq-vae" : beam == 0 ? "nearest" : "capacity";
    for (int64_t batch : {1, 64, 1024}) {
      if (batch > fresh_rows) continue;
      // Calls cycle through the fresh rows' blocks, so that large batches still get enough
      // calls for a p99 (the fresh rows hold only a few blocks of 1024).
      const int64_t blocks = fresh_rows / batch;
      const int64_t calls = batch == 1 ? std::min<int64_t>(blocks, 2000) : batch == 64 ? 200 : 50;
      std::vector<double> wall;
      int64_t displaced = 0;
      v1::EncodeRequest request;
      request.set_collection(name);
      v1::EncodeResponse response;
      for (int64_t c = 0; c <= calls; ++c) {  // call 0 warms up
        const float* rows = fresh + (c % blocks) * batch * m.dim;
        request.clear_vectors();
        request.mutable_vectors()->Add(rows, rows + batch * m.dim);
        grpc::ClientContext context;
        const auto start = Clock::now();
        Check(stub->Encode(&context, request, &response), "Encode");
        if (c > 0) wall.push_back(SecondsSince(start));
        if (response.encoded_size() != batch) Die("Encode answered the wrong number of rows");
        for (const v1::EncodedVector& e : response.encoded()) displaced += e.displaced();
      }
      const double total = std::accumulate(wall.begin(), wall.end(), 0.0);
      std::printf(
          "%-13s d %-4lld gRPC Encode %-9s batch %-3lld beam %2s %9.0f items/s  p50 %8.1f us  "
          "p99 %8.1f us  (%lld of %lld displaced)\n",
          name.c_str(), static_cast<long long>(m.dim), method.c_str(),
          static_cast<long long>(batch), beam > 0 ? absl::StrCat(beam).c_str() : "-",
          static_cast<double>(calls * batch) / total, Percentile(wall, 0.5) * 1e6,
          Percentile(wall, 0.99) * 1e6, static_cast<long long>(displaced),
          static_cast<long long>((calls + 1) * batch));
      std::fflush(stdout);
    }
  }
  (*server)->Shutdown(std::chrono::seconds(5));
  std::filesystem::remove_all(dir);
}

// ------------------------------------------------------------------------------------------
// 2. Growth.

struct GrowthRow {
  std::string method;
  CollisionStats collisions;
  int64_t violations = 0;  // (level, code) pairs above size_max in force
  double mse = 0;
};

void PrintGrowthRow(const std::string& name, const GrowthRow& row) {
  std::printf("%-13s %-34s %9.3f%% %8lld %8lld %11lld %12.6g\n", name.c_str(), row.method.c_str(),
              100.0 * row.collisions.collision_rate,
              static_cast<long long>(row.collisions.largest_group),
              static_cast<long long>(row.collisions.largest_group - 1),
              static_cast<long long>(row.violations), row.mse);
}

GrowthRow Measure(const std::string& method, const ResidualQuantizer& q, const Matrix& x,
                  const std::vector<int32_t>& codes, const std::vector<int64_t>& size_max) {
  GrowthRow row;
  row.method = method;
  row.collisions = ComputeCollisions(codes.data(), x.rows, q.levels());
  const SidOccupancy occupancy = OccupancyOf(q, codes.data(), x.rows);
  for (int64_t l = 0; l < q.levels(); ++l) {
    for (int64_t count : occupancy.level_counts(l)) row.violations += count > size_max[l];
  }
  row.mse = q.LevelMse(x.values.data(), x.rows, codes.data()).back();
  return row;
}

void GrowthTable(const std::string& name, const Matrix& m, int levels) {
  const Matrix all = Shuffled(m, kSeed);
  const int64_t n_train = m.rows * 4 / 5;
  const Matrix train = RowRange(all, 0, n_train);
  const Matrix fresh = RowRange(all, n_train, m.rows);
  std::fprintf(stderr, "  growth %s: training %dx256 on 80%% and on 100%% ...\n", name.c_str(),
               levels);
  const RqTrainResult trained = TrainBalanced(train, levels);
  const ResidualQuantizer& q = trained.quantizer;
  const CapacityLimits limits =
      LimitsFor(trained, n_train, m.rows, OccupancyOf(q, trained.codes.data(), n_train));

  std::vector<int32_t> nearest = trained.codes;
  nearest.resize(static_cast<size_t>(m.rows * levels));
  q.Encode(fresh.values.data(), fresh.rows, nearest.data() + n_train * levels, 0);
  PrintGrowthRow(name, Measure(absl::StrCat(levels, "x256 80%+20% nearest"), q, all, nearest,
                               limits.size_max));
  for (const auto& [beam, cap] : {std::pair<int, int64_t>{1, limits.suffix_cap},
                                  {4, limits.suffix_cap},
                                  {16, limits.suffix_cap},
                                  {4, 1}}) {
    CapacityLimits these = limits;
    these.suffix_cap = cap;
    SidOccupancy occupancy = OccupancyOf(q, trained.codes.data(), n_train);
    auto assigned = AssignUnderCapacity(q, fresh.values.data(), fresh.rows, these,
                                        {.beam_width = beam}, &occupancy);
    if (!assigned.ok()) Die(assigned.status().ToString());
    std::vector<int32_t> codes = trained.codes;
    codes.insert(codes.end(), assigned->codes.begin(), assigned->codes.end());
    const int64_t overflow =
        std::count(assigned->overflow.begin(), assigned->overflow.end(), uint8_t{1});
    PrintGrowthRow(name, Measure(absl::StrCat(levels, "x256 80%+20% capacity b", beam,
                                              cap == 1 ? " cap 1" : "", " (", overflow, " ovf)"),
                                 q, all, codes, limits.size_max));
  }
  const RqTrainResult full = TrainBalanced(all, levels);
  std::vector<int64_t> full_max;
  for (const RqLevelReport& level : full.levels) full_max.push_back(level.bounds.size_max);
  PrintGrowthRow(name, Measure(absl::StrCat(levels, "x256 trained on 100%"), full.quantizer, all,
                               full.codes, full_max));
  std::printf("%-13s   (cap %lld; size_max in force per level:", name.c_str(),
              static_cast<long long>(limits.suffix_cap));
  for (int64_t s : limits.size_max) std::printf(" %lld", static_cast<long long>(s));
  std::printf("; trained:");
  for (const RqLevelReport& level : trained.levels) {
    std::printf(" %lld", static_cast<long long>(level.bounds.size_max));
  }
  std::printf(")\n");
  std::fflush(stdout);
}

// ------------------------------------------------------------------------------------------
// 3. Collision resolution.

// LETTER index JSON: {"0": ["<a_183>", "<b_70>", "<c_232>", "<d_6>"], ...}: codes by item id
// (0..n-1), items x levels; the tokens are parsed with ParseSidTokens.
std::vector<int32_t> ReadLetterIndex(const std::string& path, int64_t* items, int64_t* levels) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot open " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::map<int64_t, std::vector<int32_t>> by_id;
  size_t pos = 0;
  while (true) {
    const size_t key_start = text.find('"', pos);
    if (key_start == std::string::npos) break;
    const size_t key_end = text.find('"', key_start + 1);
    const size_t open = text.find('[', key_end);
    const size_t close = text.find(']', open);
    if (key_end == std::string::npos || open == std::string::npos || close == std::string::npos)
      Die(path + ": malformed");
    const int64_t id = std::stoll(text.substr(key_start + 1, key_end - key_start - 1));
    std::string tokens;
    for (char c : text.substr(open + 1, close - open - 1)) {
      if (c != '"' && c != ',' && !std::isspace(static_cast<unsigned char>(c))) tokens += c;
    }
    auto parsed = ParseSidTokens(tokens);
    if (!parsed.ok()) Die(path + ": " + parsed.status().ToString());
    by_id[id].assign(parsed->begin(), parsed->end());
    pos = close + 1;
  }
  *items = static_cast<int64_t>(by_id.size());
  *levels = static_cast<int64_t>(by_id.begin()->second.size());
  std::vector<int32_t> codes;
  for (const auto& [id, tuple] : by_id) codes.insert(codes.end(), tuple.begin(), tuple.end());
  return codes;
}

std::string CodesUsed(const int32_t* codes, int64_t n, int64_t levels, int64_t k) {
  std::string out;
  for (int64_t l = 0; l < levels; ++l) {
    const LevelUsage usage = ComputeLevelUsage(codes + l, n, levels, k);
    absl::StrAppend(&out, l ? "/" : "", usage.codes_used);
  }
  return out;
}

void CollisionTable(const std::string& name, const Matrix& m) {
  for (int levels : {3, 4}) {
    std::fprintf(stderr, "  collisions %s %dx256 ...\n", name.c_str(), levels);
    const RqTrainResult trained = TrainBalanced(m, levels);
    const ResidualQuantizer& q = trained.quantizer;
    CapacityLimits limits;
    for (const RqLevelReport& level : trained.levels)
      limits.size_max.push_back(level.bounds.size_max);
    limits.suffix_cap = 1;
    for (int beam : {4, 16, 64}) {
      std::vector<int32_t> codes = trained.codes;
      const auto start = Clock::now();
      auto report =
          ResolveCollisions(q, m.values.data(), m.rows, limits, {.beam_width = beam}, &codes);
      const double seconds = SecondsSince(start);
      if (!report.ok()) Die(report.status().ToString());
      std::printf(
          "%-12s %dx256 balanced, beam %2d  %7.3f%% -> %7.3f%%  MSE %.6g -> %.6g (%+.3f%%)  moved "
          "%5lld  codes used %s -> %s  %.2f s\n",
          name.c_str(), levels, beam, 100.0 * report->collisions_before / m.rows,
          100.0 * report->collisions_after / m.rows, report->mse_before, report->mse_after,
          100.0 * (report->mse_after / report->mse_before - 1),
          static_cast<long long>(report->moved),
          CodesUsed(trained.codes.data(), m.rows, levels, 256).c_str(),
          CodesUsed(codes.data(), m.rows, levels, 256).c_str(), seconds);
      std::fflush(stdout);
    }
  }
  int64_t items = 0, letter_levels = 0;
  const std::vector<int32_t> letter =
      ReadLetterIndex(DataDir() + "/sasrec/" + name + ".letter.index.json", &items, &letter_levels);
  std::vector<int32_t> prefix;  // its first three levels
  for (int64_t i = 0; i < items; ++i) {
    prefix.insert(prefix.end(), letter.begin() + i * letter_levels,
                  letter.begin() + i * letter_levels + 3);
  }
  const CollisionStats c3 = ComputeCollisions(prefix.data(), items, 3);
  const CollisionStats c4 = ComputeCollisions(letter.data(), items, letter_levels);
  std::printf(
      "%-12s LETTER reference index: %lld items, %lld unique %lld-token tuples (%.3f%%), "
      "first 3 tokens %.3f%%; codes used %s\n",
      name.c_str(), static_cast<long long>(items), static_cast<long long>(c4.unique_tuples),
      static_cast<long long>(letter_levels), 100.0 * c4.collision_rate, 100.0 * c3.collision_rate,
      CodesUsed(letter.data(), items, letter_levels, 256).c_str());
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--only=", 0) == 0) {
      for (absl::string_view part : absl::StrSplit(arg.substr(7), ',')) only.emplace(part);
    } else {
      Die("unknown argument " + arg +
          " (usage: sid_bench [--only=latency,grpc,growth,collisions])");
    }
  }
  const auto run = [&](const std::string& section) {
    return only.empty() || only.contains(section);
  };
  const auto start = Clock::now();
  std::printf("quantd sid_bench\nmachine: %u hardware threads, %s; GEMM kernel %s\n",
              std::thread::hardware_concurrency(), bench::CpuModel().c_str(),
              std::string(GemmKernelName(BestGemmKernel())).c_str());
  std::printf("settings: balanced RQ-KMeans slack %.1f, seed %llu, %d iterations, tolerance 0\n\n",
              kSlack, static_cast<unsigned long long>(kSeed), kIterations);
  const std::string sasrec = DataDir() + "/sasrec/";
  const Matrix beauty = bench::LoadMatrix(sasrec + "Beauty-32d-sasrec.npy");
  const Matrix instruments = bench::LoadMatrix(sasrec + "Instruments-32d-sasrec.npy");
  const Matrix fmnist =
      bench::LoadMatrix(std::string(QUANTD_FASHION_MNIST_DIR) + "/train-images-idx3-ubyte.gz");

  if (run("latency")) {
    std::printf(
        "== 1. Latency per batch, one thread: balanced RQ 4x256 trained on 80%%, the other 20%% "
        "queried (Propose: occupancy of the 80%%; Assign: consuming capacity batch after batch) "
        "==\n");
    LatencyTable("Beauty", beauty);
    LatencyTable("FashionMNIST", fmnist);
    std::printf("\n");
  }
  if (run("grpc")) {
    std::printf(
        "== 1b. Encode by vector through gRPC on loopback, one call at a time: balanced RQ 4x256 "
        "trained on 80%%, retrained per beam width, the other 20%% encoded ==\n");
    GrpcLatencyTable("Beauty", beauty);
    GrpcLatencyTable("FashionMNIST", fmnist);
    std::printf("\n");
  }
  if (run("growth")) {
    std::printf(
        "== 2. Growth: balanced RQ trained on a random 80%%, the other 20%% added by nearest codes "
        "or AssignUnderCapacity (bounds in force for n, slack %.1f; cap = max(1, largest "
        "suffix at training)), next to training on 100%% ==\n",
        kSlack);
    std::printf("%-13s %-34s %10s %8s %8s %11s %12s\n", "dataset", "method", "collisions",
                "largest", "suffix", "violations", "MSE");
    GrowthTable("Beauty", beauty, 3);
    GrowthTable("Instruments", instruments, 3);
    GrowthTable("FashionMNIST", fmnist, 3);
    std::printf("\n");
  }
  if (run("collisions")) {
    std::printf(
        "== 3. Collision resolution at training time (ResolveCollisions, cap 1, size_max of "
        "training), balanced RQ trained on 100%% ==\n");
    CollisionTable("Beauty", beauty);
    CollisionTable("Instruments", instruments);
    std::printf(
        "reference (issue #11): seed RQ-VAE + Sinkhorn-Knopp: Beauty 3x256 0.70%% -> 0.09%%, 4x256 "
        "0.12%% -> 0.008%%; Instruments 3x256 0.55%% -> 0%%, 4x256 0.06%% -> 0.02%%; balanced "
        "RQ-KMeans today: Beauty 0.65%% (3x256) / 0.13%% (4x256), Instruments 0.32%% / 0.14%%; "
        "LETTER README: Beauty 12088/12101 unique, Instruments 9897/9922\n");
  }
  std::printf("\ntotal %.0f s\n", SecondsSince(start));
  return 0;
}
