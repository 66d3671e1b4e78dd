// RQ-VAE tokenizer: training curve (loss, collisions, codebook usage per level), index
// generation (the seed's Sinkhorn rounds vs quantd's exact free-code assignment), training
// throughput against the GEMM's floor, and Encode throughput at batch 1 and 1024.
//
//   build/bench/rqvae_bench --data=Beauty --epochs=100 --levels=3 --threads=1
//
// Flags (defaults in brackets): --data=Beauty|Instruments [Beauty], --rows=N [all],
// --epochs [100], --layers=512,256,128,64, --e_dim [32], --levels [3], --k [256],
// --batch [1024], --lr [1e-3], --warmup [10], --sk_last [0.003], --threads [1],
// --eval_step [10], --large_scale_kmeans [0], --revive [1], --bn [0],
// --keep=last|loss|collision|usage [last] (the evaluated epoch whose model is measured after).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "core/mlp.h"
#include "core/rqvae.h"

namespace quantd::bench {
namespace {

struct Flags {
  std::string data = "Beauty";
  int64_t rows = -1;
  RqVaeOptions options;
  int levels = 3;
  int64_t k = 256;
  double sk_last = 0.003;
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
    } else {
      Die("unknown or malformed flag: " + std::string(argv[i]));
    }
  }
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

// Seconds of the GEMM calls of one training step on `batch` items: per layer the forward
// product, the weight gradient and the input gradient (MatMulTransB with a reused packing, as
// Mlp does), on buffers allocated beforehand.
double GemmSecondsPerStep(const RqVae& model, int64_t batch, int threads) {
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
  run();
  const int reps = 20;
  const auto start = Clock::now();
  for (int r = 0; r < reps; ++r) run();
  return SecondsSince(start) / reps;
}

int Main(int argc, char** argv) {
  const Flags f = Parse(argc, argv);
  const std::string path = DataDir() + "/sasrec/" + f.data + "-32d-sasrec.npy";
  const Matrix data = LoadMatrix(path, f.rows);
  std::printf("rqvae_bench: %s %lld x %lld, layers", f.data.c_str(),
              static_cast<long long>(data.rows), static_cast<long long>(data.dim));
  for (int64_t s : f.options.layers) std::printf(" %lld", static_cast<long long>(s));
  std::printf(
      ", e_dim %lld, %d x %lld codes, batch %lld, lr %g, warm-up %d, sk_last %g, "
      "%d thread(s), CPU %s\n",
      static_cast<long long>(f.options.e_dim), f.levels, static_cast<long long>(f.k),
      static_cast<long long>(f.options.batch_size), f.options.lr, f.options.warmup_epochs,
      f.sk_last, f.options.num_threads, CpuModel().c_str());
  const auto start = Clock::now();
  auto trained =
      TrainRqVae(data.values.data(), data.rows, data.dim, f.options, [](const RqVaeEpochReport& r) {
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
  double train_seconds = 0;
  for (const RqVaeEpochReport& r : trained->epochs) train_seconds += r.seconds;
  std::printf("kept the model of epoch %d\n", trained->model_epoch);
  const double per_epoch = train_seconds / static_cast<double>(trained->epochs.size());
  std::printf("training: %.1f s in all, %.3f s per epoch (steps only), %.0f samples/s\n", total,
              per_epoch, static_cast<double>(data.rows) / per_epoch);

  for (auto mode : {GenerateIndicesOptions::Mode::kSeedSinkhorn,
                    GenerateIndicesOptions::Mode::kExactFreeCodes}) {
    const auto t0 = Clock::now();
    auto indices = GenerateIndices(trained->model, data.values.data(), data.rows,
                                   {.mode = mode, .num_threads = f.options.num_threads});
    if (!indices.ok()) Die(indices.status().ToString());
    std::printf(
        "generate indices (%s): collisions %.4f%% -> %.4f%% (%lld -> %lld items), moved "
        "%lld, %d round(s), %.3f s\n",
        mode == GenerateIndicesOptions::Mode::kSeedSinkhorn ? "seed's Sinkhorn"
                                                            : "exact free codes",
        100.0 * indices->collisions_before / data.rows,
        100.0 * indices->collisions_after / data.rows,
        static_cast<long long>(indices->collisions_before),
        static_cast<long long>(indices->collisions_after), static_cast<long long>(indices->moved),
        indices->rounds, SecondsSince(t0));
  }

  // Training against the GEMM: the step's products alone, on the same shapes.
  const RqVae& model = trained->model;
  const int64_t batch = std::min<int64_t>(f.options.batch_size, data.rows);
  const double gemm_step = GemmSecondsPerStep(model, batch, f.options.num_threads);
  const double step = per_epoch * static_cast<double>(batch) / static_cast<double>(data.rows);
  const double flops = 6 * MacsPerItem(model) * static_cast<double>(batch);
  std::printf(
      "step of %lld items: %.2f ms; its GEMMs alone %.2f ms (%.1f GFLOP/s), GEMM share "
      "%.0f%%\n",
      static_cast<long long>(batch), 1e3 * step, 1e3 * gemm_step, flops / gemm_step * 1e-9,
      100 * gemm_step / step);

  // Encode throughput, through the serving snapshot (weights packed once).
  const RqVaeEncoder encoder(model);
  for (int64_t b : {int64_t{1}, int64_t{1024}}) {
    const int64_t rows = std::min(b, data.rows);
    std::vector<int32_t> codes(rows * model.levels());
    const double per_s = Throughput(rows, 1.0, [&](int64_t call) {
      const int64_t row0 = (call * rows) % (data.rows - rows + 1);
      encoder.Encode(data.values.data() + row0 * data.dim, rows, codes.data(), nullptr,
                     f.options.num_threads);
    });
    std::printf("encode batch %lld: %.0f vectors/s\n", static_cast<long long>(rows), per_s);
  }
  return 0;
}

}  // namespace
}  // namespace quantd::bench

int main(int argc, char** argv) { return quantd::bench::Main(argc, argv); }
