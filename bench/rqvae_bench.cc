// RQ-VAE tokenizer (issue #13's measurements): training curve (loss, collisions, codebook usage
// per level), training throughput (samples/s, wall and process CPU time) against the GEMM's
// floor and the share of Sinkhorn in a step, a quality table (collisions before / after index
// generation, codes used and perplexity per level, reconstruction MSE) for the RQ-VAE's codes
// under quantd's exact free-code generation and the seed's Sinkhorn rounds, next to balanced
// RQ-KMeans at the same L x K (slack 0.1, seed 42, 25 iterations, as tokenizer_bench) and the
// LETTER reference index (Beauty / Instruments), and Encode latency through RqVaeEncoder (p50 /
// p99 per call and vectors/s at batch 1 and 1024).
//
//   build/bench/rqvae_bench --data=Beauty --epochs=100 --levels=3 --threads=1
//   build/bench/rqvae_bench --data=fmnist --rows=20000 --epochs=20 --threads=1
//
// Issue #13's runs (run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`):
//   --data=Beauty|Instruments --levels=3|4 --epochs=300 --warmup=50 --keep=collision
//   --data=fmnist --rows=20000 --levels=3 --epochs=30 --warmup=5 --eval_step=5 --keep=collision
//     [--scale=0.00392156862745098]
// and beside the peer, one after the other in one session:
//   /usr/bin/python3 bench/rqvae_torch_peer.py --data=Beauty --levels=3 --steps=60
//   build/bench/rqvae_bench --data=Beauty --levels=3 --epochs=10 --eval_step=10 --rq_kmeans=0
//
// On a shared machine read the CPU-time figures: wall time there is the work times the wait for
// a core (the header and the encode section print the load average).
//
// Flags (defaults in brackets): --data=Beauty|Instruments|fmnist [Beauty] (fmnist: Debian's
// Fashion-MNIST training images, 60000 x 784 pixel floats 0..255 as io/vector_file reads them),
// --rows=N [all], --epochs [100; fmnist 20], --layers=512,256,128,64, --e_dim [32],
// --levels [3], --k [256], --batch [1024], --lr [1e-3], --warmup [10], --sk_last [0.003],
// --threads [1], --eval_step [10], --large_scale_kmeans [0], --revive [1], --bn [0],
// --keep=last|loss|collision|usage [last] (the evaluated epoch whose model is measured after),
// --rq_kmeans [1] (0 skips the balanced RQ-KMeans row), --encode_seconds [2] (per batch size),
// --scale [1] (multiplies the data before anything, e.g. 0.00392 = 1/255 for fmnist pixels).
//
// The peer is bench/rqvae_torch_peer.py (the seed's model in Debian's PyTorch, one thread):
// compare its "process CPU time per 1024 items" with this program's on the same shapes.
//
// Not in the Makefile's bench target: with the defaults a Beauty run trains 100 epochs on one
// thread (about a minute unloaded, several on a shared machine), and a meaningful run (hundreds
// of epochs at 3 and 4 levels on two data sets) takes far longer than the other benchmarks.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "core/kmeans.h"
#include "core/mlp.h"
#include "core/residual_quantizer.h"
#include "core/rqvae.h"
#include "core/sinkhorn.h"

namespace quantd::bench {
namespace {

struct Flags {
  std::string data = "Beauty";
  int64_t rows = -1;
  RqVaeOptions options;
  int levels = 3;
  int64_t k = 256;
  double sk_last = 0.003;
  bool epochs_set = false;
  bool rq_kmeans = true;
  double encode_seconds = 2;
  double scale = 1;
};

Flags Parse(int argc, char** argv) {
  Flags f;
  f.options.epochs = 100;
  f.options.warmup_epochs = 10;
  f.options.num_threads = 1;
  f.options.eval_step = 10;
  for (int i = 1; i < argc; ++i) {
    const std::vector<std::string> kv = absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    if (kv.size() != 2) Die("flags are --name=value: " + std::string(argv[i]));
    const std::string& key = kv[0];
    const std::string& value = kv[1];
    int64_t i64 = 0;
    double dbl = 0;
    const bool is_int = absl::SimpleAtoi(value, &i64);
    const bool is_double = absl::SimpleAtod(value, &dbl);
    if (key == "--data") {
      f.data = value;
    } else if (key == "--layers") {
      f.options.layers.clear();
      for (absl::string_view s : absl::StrSplit(value, ',')) {
        int64_t size = 0;
        if (!absl::SimpleAtoi(s, &size)) Die("--layers: " + value);
        f.options.layers.push_back(size);
      }
    } else if (key == "--rows" && is_int) {
      f.rows = i64;
    } else if (key == "--epochs" && is_int) {
      f.options.epochs = static_cast<int>(i64);
      f.epochs_set = true;
    } else if (key == "--e_dim" && is_int) {
      f.options.e_dim = i64;
    } else if (key == "--levels" && is_int) {
      f.levels = static_cast<int>(i64);
    } else if (key == "--k" && is_int) {
      f.k = i64;
    } else if (key == "--batch" && is_int) {
      f.options.batch_size = i64;
    } else if (key == "--lr" && is_double) {
      f.options.lr = dbl;
    } else if (key == "--warmup" && is_int) {
      f.options.warmup_epochs = static_cast<int>(i64);
    } else if (key == "--sk_last" && is_double) {
      f.sk_last = dbl;
    } else if (key == "--threads" && is_int) {
      f.options.num_threads = static_cast<int>(i64);
    } else if (key == "--eval_step" && is_int) {
      f.options.eval_step = static_cast<int>(i64);
    } else if (key == "--large_scale_kmeans" && is_int) {
      f.options.large_scale_kmeans = i64 != 0;
    } else if (key == "--keep") {
      if (value == "last") {
        f.options.keep = RqVaeOptions::Keep::kLast;
      } else if (value == "loss") {
        f.options.keep = RqVaeOptions::Keep::kBestLoss;
      } else if (value == "collision") {
        f.options.keep = RqVaeOptions::Keep::kBestCollision;
      } else if (value == "usage") {
        f.options.keep = RqVaeOptions::Keep::kBestUsage;
      } else {
        Die("--keep: last, loss, collision or usage");
      }
    } else if (key == "--bn" && is_int) {
      f.options.bn = i64 != 0;
    } else if (key == "--revive" && is_int) {
      f.options.revive_dead_codes = i64 != 0;
    } else if (key == "--rq_kmeans" && is_int) {
      f.rq_kmeans = i64 != 0;
    } else if (key == "--scale" && is_double) {
      f.scale = dbl;
    } else if (key == "--encode_seconds" && is_double) {
      f.encode_seconds = dbl;
    } else {
      Die("unknown or malformed flag: " + std::string(argv[i]));
    }
  }
  if (f.data != "Beauty" && f.data != "Instruments" && f.data != "fmnist") {
    Die("--data: Beauty, Instruments or fmnist");
  }
  if (f.data == "fmnist" && !f.epochs_set) f.options.epochs = 20;
  f.options.num_emb_list.assign(f.levels, f.k);
  f.options.sk_epsilons.assign(f.levels, 0.0);
  f.options.sk_epsilons.back() = f.sk_last;
  return f;
}

// Multiply-adds of one item through encoder and decoder (forward).
double MacsPerItem(const RqVae& model) {
  double macs = 0;
  for (const Mlp* mlp : {&model.encoder(), &model.decoder()}) {
    for (int i = 0; i < mlp->num_layers(); ++i) {
      macs += static_cast<double>(mlp->layer(i).in * mlp->layer(i).out);
    }
  }
  return macs;
}

// Wall and process CPU seconds.
struct Seconds {
  double wall = 0;
  double cpu = 0;
};

// Seconds per call of run(), over 20 calls after one warm-up call.
template <typename Run>
Seconds TimePerRun(const Run& run) {
  run();
  const int reps = 20;
  const auto start = Clock::now();
  const double cpu0 = ProcessCpuSeconds();
  for (int r = 0; r < reps; ++r) run();
  return {SecondsSince(start) / reps, (ProcessCpuSeconds() - cpu0) / reps};
}

// Seconds of the GEMM calls of one training step on `batch` items: per layer the forward
// product, the weight gradient and the input gradient (MatMulTransB, packing the right-hand side
// into a reused buffer on every call, as Mlp does), on buffers allocated beforehand.
Seconds GemmSecondsPerStep(const RqVae& model, int64_t batch, int threads) {
  int64_t widest = 1;
  for (const Mlp* mlp : {&model.encoder(), &model.decoder()}) {
    for (int i = 0; i < mlp->num_layers(); ++i) {
      widest = std::max({widest, mlp->layer(i).in, mlp->layer(i).out});
    }
  }
  const std::vector<float> a(batch * widest, 0.5f), b(batch * widest, 0.25f);
  std::vector<float> c(std::max(batch, widest) * widest);
  PackedRhs packed(nullptr, 0, 0);
  const auto run = [&]() {
    for (const Mlp* mlp : {&model.encoder(), &model.decoder()}) {
      for (int i = 0; i < mlp->num_layers(); ++i) {
        const int64_t in = mlp->layer(i).in;
        const int64_t out = mlp->layer(i).out;
        MatMulTransB(a.data(), batch, b.data(), out, in, c.data(), threads, &packed);  // forward
        MatMulTransB(a.data(), out, b.data(), in, batch, c.data(), threads, &packed);  // dW
        MatMulTransB(a.data(), batch, b.data(), in, out, c.data(), threads, &packed);  // dx
      }
    }
  };
  return TimePerRun(run);
}

// Seconds of the last level's Sinkhorn code choice in one training step, as TrainRqVae makes it
// (squared distances of the batch's residuals to the codebook, then SinkhornAssign), on the
// first `batch` rows' residuals under `model`.
Seconds SinkhornSecondsPerStep(const RqVae& model, const Matrix& data, int64_t batch, double eps,
                               int threads) {
  const int64_t e = model.e_dim();
  const int64_t last = model.levels() - 1;
  const int64_t k = model.codebook_size(last);
  std::vector<float> latent(batch * e), residuals(batch * e), distances(batch * k);
  std::vector<int32_t> codes(batch * model.levels()), labels(batch);
  std::vector<double> plan;
  model.EncodeLatent(data.values.data(), batch, latent.data(), threads);
  model.Quantize(latent.data(), batch, codes.data(), residuals.data(), last, threads);
  const auto run = [&]() {
    SquaredDistances(residuals.data(), batch, model.codebook(last).data(), k, e, distances.data(),
                     threads);
    const absl::Status s = SinkhornAssign(distances.data(), batch, k,
                                          {.epsilon = eps, .iterations = model.options().sk_iters},
                                          labels.data(), &plan);
    if (!s.ok()) Die(s.ToString());
  };
  return TimePerRun(run);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return absl::StrCat(one, " ", five, " ", fifteen);
}

// One row of the quality table.
struct QualityRow {
  std::string method;
  std::string config;  // "3x256"
  int64_t items = 0;
  std::optional<double> collisions_before;  // fraction; nearest codes, before generation
  CodeSummary final_codes;                  // the codes the row stands for
  std::optional<double> mse;                // per component, embedding space
  std::optional<double> seconds;
  std::string note;
};

void PrintQualityHeader() {
  std::printf("%-22s %-6s %6s %8s %8s %-17s %-17s %10s %8s %s\n", "method", "L x K", "items",
              "before%", "after%", "codes used/level", "perplexity/level", "MSE", "train s",
              "note");
}

void PrintQualityRow(const QualityRow& row) {
  std::vector<std::string> used, perplexity;
  for (const LevelUsage& u : row.final_codes.usage) {
    used.push_back(absl::StrCat(u.codes_used));
    perplexity.push_back(absl::StrCat(static_cast<int64_t>(std::lround(u.perplexity))));
  }
  char before[32] = "-", mse[32] = "-", seconds[32] = "-";
  if (row.collisions_before) {
    std::snprintf(before, sizeof(before), "%.4f", 100 * *row.collisions_before);
  }
  if (row.mse) std::snprintf(mse, sizeof(mse), "%.5g", *row.mse);
  if (row.seconds) std::snprintf(seconds, sizeof(seconds), "%.1f", *row.seconds);
  std::printf("%-22s %-6s %6lld %8s %8.4f %-17s %-17s %10s %8s %s\n", row.method.c_str(),
              row.config.c_str(), static_cast<long long>(row.items), before,
              100.0 * row.final_codes.collisions.collision_rate, absl::StrJoin(used, "/").c_str(),
              absl::StrJoin(perplexity, "/").c_str(), mse, seconds, row.note.c_str());
  std::fflush(stdout);
}

// Mean squared error per component between x and the model's reconstruction of codes.
double ReconstructionMse(const RqVae& model, const Matrix& data, const std::vector<int32_t>& codes,
                         int threads) {
  std::vector<float> out(data.values.size());
  model.Decode(codes.data(), data.rows, out.data(), threads);
  double sum = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double diff = static_cast<double>(out[i]) - data.values[i];
    sum += diff * diff;
  }
  return sum / static_cast<double>(out.size());
}

// Balanced RQ-KMeans at levels x k, as tokenizer_bench trains it (slack 0.1, seed 42, 25
// iterations, tolerance 0).
QualityRow BalancedRqKMeans(const Matrix& data, int levels, int64_t k, int threads) {
  const RqOptions options =
      RqKMeansOptions(levels, k, /*balanced=*/true, /*seed=*/42, /*max_iterations=*/25, threads);
  const auto start = Clock::now();
  auto trained = TrainResidualQuantizer(data.values.data(), data.rows, data.dim, options);
  if (!trained.ok()) Die(trained.status().ToString());
  QualityRow row;
  row.method = "RQ-KMeans balanced";
  row.config = absl::StrCat(levels, "x", k);
  row.items = data.rows;
  row.seconds = SecondsSince(start);
  row.final_codes = SummarizeCodes(trained->codes.data(), data.rows, levels, levels, k);
  row.mse = trained->levels.back().mse_after;
  row.note = "no index generation (after = its codes)";
  return row;
}

// Per-call latency of RqVaeEncoder::Encode on `batch` rows (cycling through the data): calls for
// at least min_seconds and 20 calls after one warm-up call.
struct EncodeLatency {
  int64_t calls = 0;
  double p50 = 0;  // seconds per call
  double p99 = 0;
  double vectors_per_second = 0;      // wall
  double vectors_per_cpu_second = 0;  // process CPU time
};

EncodeLatency MeasureEncode(const RqVaeEncoder& encoder, const Matrix& data, int64_t batch,
                            double min_seconds, int threads) {
  std::vector<int32_t> codes(batch * encoder.levels());
  const auto call = [&](int64_t i) {
    const int64_t row0 = (i * batch) % (data.rows - batch + 1);
    encoder.Encode(data.values.data() + row0 * data.dim, batch, codes.data(), nullptr, threads);
  };
  call(0);
  std::vector<double> times;
  const auto start = Clock::now();
  const double cpu0 = ProcessCpuSeconds();
  while (SecondsSince(start) < min_seconds || times.size() < 20) {
    const auto t0 = Clock::now();
    call(static_cast<int64_t>(times.size()) + 1);
    times.push_back(SecondsSince(t0));
  }
  const double wall = SecondsSince(start);
  const double cpu = ProcessCpuSeconds() - cpu0;
  EncodeLatency result;
  result.calls = static_cast<int64_t>(times.size());
  const double total_vectors = static_cast<double>(result.calls * batch);
  result.vectors_per_second = total_vectors / wall;
  result.vectors_per_cpu_second = total_vectors / cpu;
  std::sort(times.begin(), times.end());
  const auto at = [&](double q) {
    return times[std::min(times.size() - 1,
                          static_cast<size_t>(q * static_cast<double>(times.size())))];
  };
  result.p50 = at(0.50);
  result.p99 = at(0.99);
  return result;
}

int Main(int argc, char** argv) {
  const Flags f = Parse(argc, argv);
  const std::string path = f.data == "fmnist" ? FashionMnistTrainImages()
                                              : DataDir() + "/sasrec/" + f.data + "-32d-sasrec.npy";
  Matrix data = LoadMatrix(path, f.rows);
  if (f.scale != 1) {
    for (float& v : data.values) v = static_cast<float>(v * f.scale);
  }
  const int threads = f.options.num_threads;
  std::printf("rqvae_bench: %s %lld x %lld, layers", f.data.c_str(),
              static_cast<long long>(data.rows), static_cast<long long>(data.dim));
  for (int64_t s : f.options.layers) std::printf(" %lld", static_cast<long long>(s));
  std::printf(
      ", e_dim %lld, %d x %lld codes, batch %lld, lr %g, warm-up %d, sk_last %g, epochs %d, "
      "bn %d, data x %g, %d thread(s), CPU %s, load average %s\n",
      static_cast<long long>(f.options.e_dim), f.levels, static_cast<long long>(f.k),
      static_cast<long long>(f.options.batch_size), f.options.lr, f.options.warmup_epochs,
      f.sk_last, f.options.epochs, f.options.bn ? 1 : 0, f.scale, threads, CpuModel().c_str(),
      LoadAverage().c_str());
  std::fflush(stdout);

  // Training. Each callback closes an epoch: the CPU time between two callbacks is that epoch's
  // steps, its dead-code revival and, on evaluated epochs, the evaluation of all items.
  std::vector<double> cpu_at_epoch_end;
  const auto start = Clock::now();
  const double cpu_start = ProcessCpuSeconds();
  auto trained = TrainRqVae(
      data.values.data(), data.rows, data.dim, f.options, [&](const RqVaeEpochReport& r) {
        cpu_at_epoch_end.push_back(ProcessCpuSeconds());
        if (!r.evaluated) return true;
        std::printf(
            "epoch %4d loss %.6f recon %.6f quant %.6f "
            "collisions %.4f%% used",
            r.epoch, r.loss.total, r.loss.recon, r.loss.quant, 100 * r.collision_rate);
        for (int64_t u : r.codes_used) {
          std::printf(" %lld", static_cast<long long>(u));
        }
        std::printf(" revived %lld, %.3f s/epoch\n", static_cast<long long>(r.revived), r.seconds);
        std::fflush(stdout);
        return true;
      });
  if (!trained.ok()) Die(trained.status().ToString());
  const double total = SecondsSince(start);
  const double total_cpu = ProcessCpuSeconds() - cpu_start;
  const int64_t epochs = static_cast<int64_t>(trained->epochs.size());
  const int64_t batch = std::min<int64_t>(f.options.batch_size, data.rows);
  const int64_t steps_per_epoch = (data.rows + batch - 1) / batch;
  double train_seconds = 0;
  for (const RqVaeEpochReport& r : trained->epochs) train_seconds += r.seconds;
  // Steady-state CPU time of an epoch: epochs after the first (which also fits the codebooks by
  // k-means) that were not evaluated.
  double plain_cpu = 0;
  int64_t plain_epochs = 0;
  for (int64_t i = 1; i < epochs; ++i) {
    if (trained->epochs[i].evaluated) continue;
    plain_cpu += cpu_at_epoch_end[i] - cpu_at_epoch_end[i - 1];
    ++plain_epochs;
  }
  std::printf("kept the model of epoch %d\n", trained->model_epoch);
  const double per_epoch = train_seconds / static_cast<double>(epochs);
  // Too few epochs for that: all of them, k-means and evaluations included.
  const double cpu_per_epoch =
      plain_epochs > 0 ? plain_cpu / static_cast<double>(plain_epochs)
                       : (cpu_at_epoch_end.back() - cpu_start) / static_cast<double>(epochs);
  const double rows_processed = static_cast<double>(epochs * data.rows);
  std::printf(
      "training: %lld epochs x %lld rows = %.0f rows in %lld steps of <= %lld; %.1f s wall in "
      "all (%.1f s CPU), steps alone %.1f s wall = %.3f s per epoch, %.0f samples/s; CPU "
      "%.3f s per epoch (over %lld epochs neither first nor evaluated; 0: over all), %.0f "
      "samples per CPU second\n",
      static_cast<long long>(epochs), static_cast<long long>(data.rows), rows_processed,
      static_cast<long long>(epochs * steps_per_epoch), static_cast<long long>(batch), total,
      total_cpu, train_seconds, per_epoch, rows_processed / train_seconds, cpu_per_epoch,
      static_cast<long long>(plain_epochs), static_cast<double>(data.rows) / cpu_per_epoch);

  // Training against the GEMM: the step's products alone, on the same shapes; and the last
  // level's Sinkhorn.
  const RqVae& model = trained->model;
  const Seconds gemm = GemmSecondsPerStep(model, batch, threads);
  const double items_scale = static_cast<double>(batch) / static_cast<double>(data.rows);
  const double step_wall = per_epoch * items_scale;
  const double step_cpu = cpu_per_epoch * items_scale;
  const double flops = 6 * MacsPerItem(model) * static_cast<double>(batch);
  std::printf(
      "step of %lld items: %.2f ms wall, %.2f ms CPU; its GEMMs alone %.2f ms wall, %.2f ms CPU "
      "(%.1f GFLOP/s by CPU time), GEMM share %.0f%% (CPU)\n",
      static_cast<long long>(batch), 1e3 * step_wall, 1e3 * step_cpu, 1e3 * gemm.wall,
      1e3 * gemm.cpu, flops / gemm.cpu * 1e-9, 100 * gemm.cpu / step_cpu);
  const double sk_eps = f.options.sk_epsilons.back();
  if (sk_eps > 0) {
    const Seconds sk = SinkhornSecondsPerStep(model, data, batch, sk_eps, threads);
    std::printf(
        "Sinkhorn at the last level (epsilon %g, %d iterations) on %lld items: %.2f ms wall, "
        "%.2f ms CPU, %.0f%% of a step (CPU)\n",
        sk_eps, f.options.sk_iters, static_cast<long long>(batch), 1e3 * sk.wall, 1e3 * sk.cpu,
        100 * sk.cpu / step_cpu);
  }
  std::fflush(stdout);

  // Quality table.
  const std::string config = absl::StrCat(f.levels, "x", f.k);
  std::printf(
      "\nquality (%s): before = collisions of nearest codes, after = of the codes the row "
      "stands for; MSE = mean squared error per component in the input space (RQ-VAE: decoder "
      "on the codes; RQ-KMeans: residual after the last level); perplexity = exp(entropy of the "
      "level's code distribution)\n",
      f.data.c_str());
  PrintQualityHeader();
  for (auto mode : {GenerateIndicesOptions::Mode::kExactFreeCodes,
                    GenerateIndicesOptions::Mode::kSeedSinkhorn}) {
    const bool exact = mode == GenerateIndicesOptions::Mode::kExactFreeCodes;
    const auto t0 = Clock::now();
    auto indices = GenerateIndices(model, data.values.data(), data.rows,
                                   {.mode = mode, .num_threads = threads});
    if (!indices.ok()) Die(indices.status().ToString());
    const double seconds = SecondsSince(t0);
    QualityRow row;
    row.method = exact ? "RQ-VAE exact free" : "RQ-VAE seed Sinkhorn";
    row.config = config;
    row.items = data.rows;
    row.collisions_before =
        static_cast<double>(indices->collisions_before) / static_cast<double>(data.rows);
    row.final_codes = SummarizeCodes(indices->codes.data(), data.rows, f.levels, f.levels, f.k);
    if (row.final_codes.collisions.items - row.final_codes.collisions.unique_tuples !=
        indices->collisions_after) {
      Die("collisions after generation disagree with ComputeCollisions");
    }
    row.mse = ReconstructionMse(model, data, indices->codes, threads);
    row.seconds = train_seconds;
    row.note = absl::StrCat("epoch ", trained->model_epoch, "; moved ", indices->moved, " in ",
                            indices->rounds, " round(s), ", absl::StrFormat("%.2f", seconds), " s");
    PrintQualityRow(row);
  }
  if (f.rq_kmeans) PrintQualityRow(BalancedRqKMeans(data, f.levels, f.k, threads));
  if (f.data != "fmnist") {
    const LetterIndex letter =
        ParseLetterIndex(DataDir() + "/sasrec/" + f.data + ".letter.index.json");
    QualityRow row;
    row.method = "LETTER";
    row.config = config;
    row.items = letter.items;
    if (letter.levels > f.levels) row.method = "LETTER (first levels)";
    const int64_t levels = std::min<int64_t>(f.levels, letter.levels);
    row.config = absl::StrCat(levels, "x", f.k);
    row.final_codes = SummarizeCodes(letter.codes.data(), letter.items, levels, letter.levels, f.k);
    row.note = absl::StrCat("published index, ", letter.levels, " levels");
    PrintQualityRow(row);
  }

  // Encode latency through the serving snapshot (weights packed once).
  std::printf("\nencode (RqVaeEncoder, %d thread(s), load average %s):\n", threads,
              LoadAverage().c_str());
  const RqVaeEncoder encoder(model);
  for (int64_t b : {int64_t{1}, int64_t{1024}}) {
    const int64_t rows = std::min(b, data.rows);
    const EncodeLatency latency = MeasureEncode(encoder, data, rows, f.encode_seconds, threads);
    std::printf(
        "encode batch %lld: p50 %.1f us, p99 %.1f us per call (%lld calls), %.0f vectors/s "
        "wall, %.0f vectors per CPU second\n",
        static_cast<long long>(rows), 1e6 * latency.p50, 1e6 * latency.p99,
        static_cast<long long>(latency.calls), latency.vectors_per_second,
        latency.vectors_per_cpu_second);
  }
  std::printf("load average at the end: %s\n", LoadAverage().c_str());
  return 0;
}

}  // namespace
}  // namespace quantd::bench

int main(int argc, char** argv) { return quantd::bench::Main(argc, argv); }
