#include "core/rqvae.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/balanced_assignment.h"
#include "core/kmeans.h"
#include "core/parallel.h"
#include "core/semantic_id.h"
#include "core/sinkhorn.h"

namespace quantd {
namespace {

template <typename... Args>
absl::Status Invalid(const absl::FormatSpec<Args...>& format, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrFormat(format, args...));
}

bool Finite(double v) { return std::isfinite(v); }

// Encoder dims: input, layers..., e_dim.
std::vector<int64_t> EncoderDims(int64_t input_dim, const RqVaeOptions& options) {
  std::vector<int64_t> dims = {input_dim};
  dims.insert(dims.end(), options.layers.begin(), options.layers.end());
  dims.push_back(options.e_dim);
  return dims;
}

double SkEpsilon(const RqVaeOptions& options, int64_t level) {
  return options.sk_epsilons.empty() ? 0.0 : options.sk_epsilons[level];
}

// Chooses the codes of one level: (level, residuals (n x e_dim), codes out (n)).
using ChooseCodes = std::function<absl::Status(int64_t, const float*, int32_t*)>;

// What one forward pass leaves for the caller besides the gradients, and its buffers: kept from
// step to step so that training allocates nothing after its first step.
struct BatchPass {
  RqVaeLoss loss;
  std::vector<int32_t> codes;                 // n x L
  std::vector<std::vector<float>> residuals;  // L: r_l, n x e_dim
  MlpCache encoder_cache;
  MlpCache decoder_cache;
  std::vector<float> z, r, x_q, g_commit, out, g_z;
  std::vector<int32_t> level_codes;
};

// Forward and backward pass of `model` on x (n x d) with dropout from rng (null: none), the
// codes of each level from `choose` (called after the level's residuals are known, so that it
// may initialise that level's codebook first). Fills *grads and *pass.
absl::Status ForwardBackward(const RqVae& model, const float* x, int64_t n, std::mt19937_64* rng,
                             const ChooseCodes& choose, RqVaeGradients* grads, BatchPass* pass,
                             int num_threads) {
  const int64_t d = model.input_dim();
  const int64_t e = model.e_dim();
  const int64_t levels = model.levels();
  const RqVaeOptions& options = model.options();
  std::vector<float>& z = pass->z;
  z.resize(static_cast<size_t>(n * e));
  model.encoder().ForwardTrain(x, n, rng, &pass->encoder_cache, z.data(), num_threads);
  if (!std::all_of(z.begin(), z.end(), [](float v) { return std::isfinite(v); })) {
    // Diverged parameters: no codes can be chosen; the caller sees a NaN loss.
    pass->loss.total = pass->loss.recon = pass->loss.quant = std::nan("");
    return absl::OkStatus();
  }

  // Residual quantization. coef turns a sum of squares into this level's share of the loss's
  // quant term: quant_loss_weight / L / (n e).
  const double per_level =
      options.quant_loss_weight / static_cast<double>(levels) / static_cast<double>(n * e);
  pass->codes.assign(static_cast<size_t>(n * levels), 0);
  pass->residuals.resize(static_cast<size_t>(levels));
  grads->codebooks.resize(static_cast<size_t>(levels));
  std::vector<float>& r = pass->r;
  std::vector<float>& x_q = pass->x_q;
  std::vector<float>& g_commit = pass->g_commit;
  std::vector<int32_t>& level_codes = pass->level_codes;
  r = z;
  x_q.assign(static_cast<size_t>(n * e), 0.0f);
  g_commit.assign(static_cast<size_t>(n * e), 0.0f);
  level_codes.resize(static_cast<size_t>(n));
  double quant = 0;
  for (int64_t l = 0; l < levels; ++l) {
    pass->residuals[l] = r;
    if (absl::Status s = choose(l, r.data(), level_codes.data()); !s.ok()) return s;
    const std::vector<float>& codebook = model.codebook(l);
    std::vector<float>& g_codebook = grads->codebooks[l];
    g_codebook.assign(codebook.size(), 0.0f);
    double squares = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t c = level_codes[i];
      pass->codes[i * levels + l] = c;
      const float* q = codebook.data() + c * e;
      float* ri = r.data() + i * e;
      float* gc = g_codebook.data() + c * e;
      for (int64_t j = 0; j < e; ++j) {
        const float diff = q[j] - ri[j];  // q_l - r_l
        squares += static_cast<double>(diff) * diff;
        gc[j] += static_cast<float>(2 * per_level) * diff;
        if (l == 0) g_commit[i * e + j] = static_cast<float>(-2 * per_level * options.beta) * diff;
        x_q[i * e + j] += q[j];
        ri[j] = -diff;  // r_{l+1} = r_l - q_l
      }
    }
    quant += (1 + options.beta) * squares / static_cast<double>(n * e);
  }
  pass->loss.quant = quant / static_cast<double>(levels);

  // Decoder and reconstruction loss.
  std::vector<float>& out = pass->out;
  out.resize(static_cast<size_t>(n * d));
  model.decoder().ForwardTrain(x_q.data(), n, rng, &pass->decoder_cache, out.data(), num_threads);
  double recon = 0;
  const float g_scale = 2.0f / static_cast<float>(n * d);
  for (int64_t i = 0; i < n * d; ++i) {
    const float diff = out[i] - x[i];
    recon += static_cast<double>(diff) * diff;
    out[i] = g_scale * diff;  // now dLoss / d out
  }
  pass->loss.recon = recon / static_cast<double>(n * d);
  pass->loss.total = pass->loss.recon + options.quant_loss_weight * pass->loss.quant;

  // Backward: the decoder's input gradient reaches z unchanged (straight-through), plus level
  // 0's commitment gradient.
  std::vector<float>& g_z = pass->g_z;
  g_z.resize(static_cast<size_t>(n * e));
  model.decoder().Backward(&pass->decoder_cache, out.data(), &grads->decoder, g_z.data(),
                           num_threads);
  for (size_t j = 0; j < g_z.size(); ++j) g_z[j] += g_commit[j];
  model.encoder().Backward(&pass->encoder_cache, g_z.data(), &grads->encoder, nullptr, num_threads);
  return absl::OkStatus();
}

// Pointers to every parameter tensor and its gradient, in Parameters() order.
struct TensorRefs {
  std::vector<float*> params;
  std::vector<const float*> grads;
  std::vector<size_t> sizes;
  int first_codebook = 0;  // index of codebook 0's tensor
};

TensorRefs Tensors(RqVae* model, const RqVaeGradients& grads) {
  TensorRefs refs;
  const auto add = [&refs](std::vector<float>& p, const std::vector<float>& g) {
    refs.params.push_back(p.data());
    refs.grads.push_back(g.data());
    refs.sizes.push_back(p.size());
  };
  const auto add_mlp = [&add](Mlp& mlp, const std::vector<Linear>& g) {
    for (int i = 0; i < mlp.num_layers(); ++i) {
      add(mlp.layer(i).weight, g[i].weight);
      add(mlp.layer(i).bias, g[i].bias);
      if (!mlp.layer(i).bn_weight.empty()) {
        add(mlp.layer(i).bn_weight, g[i].bn_weight);
        add(mlp.layer(i).bn_bias, g[i].bn_bias);
      }
    }
  };
  add_mlp(model->encoder(), grads.encoder);
  refs.first_codebook = static_cast<int>(refs.params.size());
  for (int64_t l = 0; l < model->levels(); ++l) add(model->codebook(l), grads.codebooks[l]);
  add_mlp(model->decoder(), grads.decoder);
  return refs;
}

// Fits level `level`'s codebook by k-means on rows (rows x e_dim).
absl::Status KMeansCodebook(RqVae* model, int64_t level, const float* rows, int64_t count,
                            int num_threads) {
  const RqVaeOptions& options = model->options();
  const int64_t k = model->codebook_size(level);
  if (k > count) {
    return Invalid(
        "num_emb_list[%d] = %d: k-means initialisation needs at least k rows, has %d "
        "(batch_size %d, items %s)",
        level, k, count, options.batch_size,
        options.large_scale_kmeans ? "all" : "of the first batch");
  }
  KMeansOptions kmeans;
  kmeans.k = k;
  kmeans.max_iterations = options.kmeans_iters;
  kmeans.seed = options.seed + 7919 * static_cast<uint64_t>(level + 1);
  kmeans.num_threads = num_threads;
  absl::StatusOr<KMeansResult> fit = TrainKMeans(rows, count, model->e_dim(), kmeans);
  if (!fit.ok()) return fit.status();
  model->codebook(level) = std::move(fit->centroids);
  return absl::OkStatus();
}

double LearningRate(const RqVaeOptions& options, int64_t step, int64_t warmup_steps,
                    int64_t total_steps) {
  if (step < warmup_steps) {
    return options.lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (options.lr_scheduler_type == "linear") {
    return options.lr * static_cast<double>(total_steps - step) /
           static_cast<double>(std::max<int64_t>(total_steps - warmup_steps, 1));
  }
  return options.lr;
}

// Distinct codes per level of codes (n x levels), each level of size ks[l].
std::vector<int64_t> CodesUsed(const int32_t* codes, int64_t n, const RqVae& model) {
  std::vector<int64_t> used(static_cast<size_t>(model.levels()), 0);
  for (int64_t l = 0; l < model.levels(); ++l) {
    std::vector<bool> seen(static_cast<size_t>(model.codebook_size(l)), false);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t c = codes[i * model.levels() + l];
      if (!seen[c]) {
        seen[c] = true;
        ++used[l];
      }
    }
  }
  return used;
}

// Whether candidate epoch report `a` beats `b` under `keep`.
bool Better(RqVaeOptions::Keep keep, const RqVaeEpochReport& a, const RqVaeEpochReport& b) {
  const int64_t used_a = std::accumulate(a.codes_used.begin(), a.codes_used.end(), int64_t{0});
  const int64_t used_b = std::accumulate(b.codes_used.begin(), b.codes_used.end(), int64_t{0});
  switch (keep) {
    case RqVaeOptions::Keep::kLast:
      return true;
    case RqVaeOptions::Keep::kBestLoss:
      return a.loss.total < b.loss.total;
    case RqVaeOptions::Keep::kBestCollision:
      return a.collision_rate < b.collision_rate ||
             (a.collision_rate == b.collision_rate && a.loss.total < b.loss.total);
    case RqVaeOptions::Keep::kBestUsage:
      return used_a > used_b || (used_a == used_b && a.collision_rate < b.collision_rate);
  }
  return false;
}

// Rows of items sorted by their code rows (lexicographically, ties by row): groups of equal
// codes and of equal prefixes are contiguous runs.
std::vector<int64_t> SortedByCodes(const std::vector<int32_t>& codes, int64_t n, int64_t levels) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::lexicographical_compare(
        codes.begin() + a * levels, codes.begin() + (a + 1) * levels, codes.begin() + b * levels,
        codes.begin() + (b + 1) * levels);
  });
  return order;
}

bool SameCodes(const std::vector<int32_t>& codes, int64_t a, int64_t b, int64_t count,
               int64_t levels) {
  return std::equal(codes.begin() + a * levels, codes.begin() + a * levels + count,
                    codes.begin() + b * levels);
}

int64_t CountCollisions(const std::vector<int32_t>& codes, int64_t n, int64_t levels) {
  const std::vector<int64_t> order = SortedByCodes(codes, n, levels);
  int64_t collisions = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (SameCodes(codes, order[i - 1], order[i], levels, levels)) ++collisions;
  }
  return collisions;
}

// Squared distances (rows.size() x k) of the given rows of residuals (n x e) to codebook.
std::vector<float> RowDistances(const std::vector<float>& residuals,
                                const std::vector<int64_t>& rows,
                                const std::vector<float>& codebook, int64_t k, int64_t e,
                                int num_threads) {
  std::vector<float> gathered(rows.size() * e);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(residuals.begin() + rows[i] * e, e, gathered.begin() + i * e);
  }
  std::vector<float> distances(rows.size() * k);
  SquaredDistances(gathered.data(), static_cast<int64_t>(rows.size()), codebook.data(), k, e,
                   distances.data(), num_threads);
  return distances;
}

// Nearest codeword per level, greedily on the residual, for latents (n x e): codes (n x L);
// residuals (may be null) gets what is left after the first stop_level levels (L when < 0).
void QuantizePacked(const float* latent, int64_t n, int64_t e,
                    const std::vector<std::vector<float>>& codebooks,
                    const std::vector<PackedRhs>& packed,
                    const std::vector<std::vector<float>>& norms, int32_t* codes, float* residuals,
                    int64_t stop_level, int num_threads) {
  const int64_t L = static_cast<int64_t>(codebooks.size());
  if (stop_level < 0) stop_level = L;
  std::vector<float> r(latent, latent + n * e);
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t l = 0; l < L; ++l) {
    if (l == stop_level && residuals != nullptr) std::copy(r.begin(), r.end(), residuals);
    AssignNearestPacked(r.data(), n, packed[l], norms[l].data(), labels.data(), nullptr,
                        num_threads);
    for (int64_t i = 0; i < n; ++i) {
      codes[i * L + l] = labels[i];
      const float* q = codebooks[l].data() + labels[i] * e;
      for (int64_t j = 0; j < e; ++j) r[i * e + j] -= q[j];
    }
  }
  if (stop_level == L && residuals != nullptr) std::copy(r.begin(), r.end(), residuals);
}

}  // namespace

absl::Status ValidateRqVaeOptions(const RqVaeOptions& o, int64_t input_dim) {
  if (input_dim < 1) return Invalid("input dim %d: must be at least 1", input_dim);
  if (o.layers.empty()) return Invalid("layers is empty: give at least one hidden size");
  for (size_t i = 0; i < o.layers.size(); ++i) {
    if (o.layers[i] < 1) return Invalid("layers[%d] = %d: sizes must be positive", i, o.layers[i]);
  }
  if (o.e_dim < 1 || o.e_dim > input_dim) {
    return Invalid("e_dim %d: must be in [1, input dim %d]", o.e_dim, input_dim);
  }
  const int64_t levels = static_cast<int64_t>(o.num_emb_list.size());
  if (levels < 1 || levels > kMaxSidLevels) {
    return Invalid("num_emb_list has %d levels: must be 1 to %d", levels, kMaxSidLevels);
  }
  for (int64_t l = 0; l < levels; ++l) {
    if (o.num_emb_list[l] < 1 || o.num_emb_list[l] > std::numeric_limits<int32_t>::max()) {
      return Invalid("num_emb_list[%d] = %d: must be in [1, 2^31)", l, o.num_emb_list[l]);
    }
  }
  if (!o.sk_epsilons.empty() && static_cast<int64_t>(o.sk_epsilons.size()) != levels) {
    return Invalid("sk_epsilons has %d values: need one per level (%d) or none",
                   o.sk_epsilons.size(), levels);
  }
  for (size_t l = 0; l < o.sk_epsilons.size(); ++l) {
    if (!(o.sk_epsilons[l] >= 0) || !Finite(o.sk_epsilons[l])) {
      return Invalid("sk_epsilons[%d] = %g: must be >= 0 and finite", l, o.sk_epsilons[l]);
    }
  }
  if (o.sk_iters < 1) return Invalid("sk_iters %d: must be at least 1", o.sk_iters);
  if (!(o.beta >= 0) || !Finite(o.beta)) return Invalid("beta %g: must be >= 0 and finite", o.beta);
  if (!(o.quant_loss_weight >= 0) || !Finite(o.quant_loss_weight)) {
    return Invalid("quant_loss_weight %g: must be >= 0 and finite", o.quant_loss_weight);
  }
  if (!(o.dropout_prob >= 0 && o.dropout_prob < 1)) {
    return Invalid("dropout_prob %g: must be in [0, 1)", o.dropout_prob);
  }
  if (absl::StatusOr<Activation> a = ParseActivation(o.activation); !a.ok()) return a.status();
  if (!(o.lr > 0) || !Finite(o.lr)) return Invalid("lr %g: must be positive and finite", o.lr);
  if (!(o.weight_decay >= 0) || !Finite(o.weight_decay)) {
    return Invalid("weight_decay %g: must be >= 0 and finite", o.weight_decay);
  }
  if (o.warmup_epochs < 0) return Invalid("warmup_epochs %d: must be >= 0", o.warmup_epochs);
  if (o.lr_scheduler_type != "constant" && o.lr_scheduler_type != "linear") {
    return Invalid("lr_scheduler_type \"%s\": expected constant or linear", o.lr_scheduler_type);
  }
  if (o.epochs < 1) return Invalid("epochs %d: must be at least 1", o.epochs);
  if (o.batch_size < 1) return Invalid("batch_size %d: must be at least 1", o.batch_size);
  if (o.kmeans_init && o.kmeans_iters < 1) {
    return Invalid("kmeans_iters %d: must be at least 1 with kmeans_init", o.kmeans_iters);
  }
  if (o.eval_step < 1) return Invalid("eval_step %d: must be at least 1", o.eval_step);
  if (o.num_threads < 0) return Invalid("num_threads %d: must be >= 0", o.num_threads);
  return absl::OkStatus();
}

absl::StatusOr<RqVae> RqVae::Create(int64_t input_dim, const RqVaeOptions& options) {
  if (absl::Status s = ValidateRqVaeOptions(options, input_dim); !s.ok()) return s;
  const Activation activation = *ParseActivation(options.activation);
  RqVae model;
  model.options_ = options;
  std::vector<int64_t> dims = EncoderDims(input_dim, options);
  absl::StatusOr<Mlp> encoder =
      Mlp::Create(dims, activation, options.dropout_prob, options.seed, options.bn);
  if (!encoder.ok()) return encoder.status();
  std::reverse(dims.begin(), dims.end());
  absl::StatusOr<Mlp> decoder =
      Mlp::Create(dims, activation, options.dropout_prob, options.seed + 1, options.bn);
  if (!decoder.ok()) return decoder.status();
  model.encoder_ = *std::move(encoder);
  model.decoder_ = *std::move(decoder);
  std::mt19937_64 rng(options.seed + 2);
  for (int64_t k : options.num_emb_list) {
    std::vector<float> codebook(static_cast<size_t>(k * options.e_dim));
    const double bound = 1.0 / static_cast<double>(k);
    for (float& v : codebook) {
      v = static_cast<float>(bound * (2.0 * static_cast<double>(rng() >> 11) * 0x1.0p-53 - 1.0));
    }
    model.codebooks_.push_back(std::move(codebook));
  }
  return model;
}

std::vector<RqVaeParameter> RqVae::Parameters() {
  std::vector<RqVaeParameter> params;
  const auto add_mlp = [&params](const std::string& prefix, Mlp& mlp) {
    for (int i = 0; i < mlp.num_layers(); ++i) {
      Linear& layer = mlp.layer(i);
      const std::string base =
          absl::StrFormat("%s.mlp_layers.%d.", prefix, mlp.TorchModuleIndex(i));
      params.push_back({base + "weight", {layer.out, layer.in}, layer.weight.data()});
      params.push_back({base + "bias", {layer.out}, layer.bias.data()});
      if (layer.bn_weight.empty()) continue;
      const std::string bn =
          absl::StrFormat("%s.mlp_layers.%d.", prefix, mlp.TorchModuleIndex(i) + 1);
      params.push_back({bn + "weight", {layer.out}, layer.bn_weight.data()});
      params.push_back({bn + "bias", {layer.out}, layer.bn_bias.data()});
      params.push_back({bn + "running_mean", {layer.out}, layer.running_mean.data(), true});
      params.push_back({bn + "running_var", {layer.out}, layer.running_var.data(), true});
    }
  };
  add_mlp("encoder", encoder_);
  for (int64_t l = 0; l < levels(); ++l) {
    params.push_back({absl::StrFormat("rq.vq_layers.%d.embedding.weight", l),
                      {codebook_size(l), e_dim()},
                      codebooks_[l].data()});
  }
  add_mlp("decoder", decoder_);
  return params;
}

void RqVae::EncodeLatent(const float* x, int64_t n, float* latent, int num_threads) const {
  encoder_.Forward(x, n, latent, num_threads);
}

void RqVae::Quantize(const float* latent, int64_t n, int32_t* codes, float* residuals,
                     int64_t stop_level, int num_threads) const {
  std::vector<PackedRhs> packed;
  std::vector<std::vector<float>> norms;
  for (int64_t l = 0; l < levels(); ++l) {
    packed.emplace_back(codebooks_[l].data(), codebook_size(l), e_dim());
    norms.push_back(SquaredNorms(codebooks_[l].data(), codebook_size(l), e_dim()));
  }
  QuantizePacked(latent, n, e_dim(), codebooks_, packed, norms, codes, residuals, stop_level,
                 num_threads);
}

void RqVae::Encode(const float* x, int64_t n, int32_t* codes, float* latent,
                   int num_threads) const {
  RqVaeEncoder(*this).Encode(x, n, codes, latent, num_threads);
}

RqVaeEncoder::RqVaeEncoder(const RqVae& model)
    : input_dim_(model.input_dim()), e_dim_(model.e_dim()), encoder_(model.encoder()) {
  for (int64_t l = 0; l < model.levels(); ++l) {
    codebooks_.push_back(model.codebook(l));
    packed_.emplace_back(model.codebook(l).data(), model.codebook_size(l), e_dim_);
    norms_.push_back(SquaredNorms(model.codebook(l).data(), model.codebook_size(l), e_dim_));
  }
}

void RqVaeEncoder::Encode(const float* x, int64_t n, int32_t* codes, float* latent,
                          int num_threads) const {
  std::vector<float> own;
  if (latent == nullptr) {
    own.resize(static_cast<size_t>(n * e_dim_));
    latent = own.data();
  }
  encoder_.Forward(x, n, latent, num_threads);
  QuantizePacked(latent, n, e_dim_, codebooks_, packed_, norms_, codes, nullptr, -1, num_threads);
}

void RqVae::Decode(const int32_t* codes, int64_t n, float* out, int num_threads) const {
  const int64_t e = e_dim();
  std::vector<float> sum(static_cast<size_t>(n * e), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t l = 0; l < levels(); ++l) {
      const float* q = codebooks_[l].data() + codes[i * levels() + l] * e;
      for (int64_t j = 0; j < e; ++j) sum[i * e + j] += q[j];
    }
  }
  decoder_.Forward(sum.data(), n, out, num_threads);
}

RqVaeLoss RqVae::Gradients(const float* x, int64_t n, const int32_t* codes, RqVaeGradients* grads,
                           int num_threads) const {
  const int64_t L = levels();
  const ChooseCodes given = [&](int64_t l, const float*, int32_t* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = codes[i * L + l];
    return absl::OkStatus();
  };
  BatchPass pass;
  // Cannot fail: `given` always succeeds.
  ForwardBackward(*this, x, n, nullptr, given, grads, &pass, num_threads).IgnoreError();
  return pass.loss;
}

int64_t RqVaeParameterCount(const RqVaeOptions& options, int64_t input_dim) {
  const std::vector<int64_t> dims = EncoderDims(input_dim, options);
  int64_t count = 0;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    // Encoder Linear d_i -> d_{i+1} and the decoder's mirror d_{i+1} -> d_i; batch norm (weight
    // and bias) after every Linear but the last of each MLP.
    const bool encoder_bn = options.bn && i + 2 < dims.size();
    const bool decoder_bn = options.bn && i > 0;
    count += dims[i] * dims[i + 1] + dims[i + 1] + (encoder_bn ? 2 * dims[i + 1] : 0);
    count += dims[i + 1] * dims[i] + dims[i] + (decoder_bn ? 2 * dims[i] : 0);
  }
  for (int64_t k : options.num_emb_list) count += k * options.e_dim;
  return count;
}

int64_t RqVaeTrainingBytes(const RqVaeOptions& options, int64_t input_dim, int64_t n) {
  const std::vector<int64_t> dims = EncoderDims(input_dim, options);
  const int64_t batch = std::min(options.batch_size, n);
  const int64_t e = options.e_dim;
  const auto levels = static_cast<int64_t>(options.num_emb_list.size());
  const int64_t largest_k =
      *std::max_element(options.num_emb_list.begin(), options.num_emb_list.end());
  int64_t sum_dims = 0;
  int64_t max_dim = 0;
  for (int64_t d : dims) {
    sum_dims += d;
    max_dim = std::max(max_dim, d);
  }
  const int64_t f = sizeof(float);
  // Values, gradients, two moments, the kept model; running statistics are noise beside them.
  const int64_t parameters = 5 * RqVaeParameterCount(options, input_dim) * f;
  // Per MLP and row: every layer's input and output (batch norm adds normalized and activated
  // copies), a dropout mask byte per input, three scratch rows of the widest layer; the batch
  // copy of x, the latent passes (z, r, x_q, gradients: 6 e), the residuals of every level, the
  // reconstruction and its gradient.
  const int64_t mlp_row = (sum_dims * (options.bn ? 3 : 1) + sum_dims + 3 * max_dim) * f + sum_dims;
  const int64_t batch_row = 2 * mlp_row + (input_dim + 6 * e + levels * e + 2 * input_dim) * f +
                            levels * static_cast<int64_t>(sizeof(int32_t));
  // Sinkhorn: float distances and a double plan of the widest level.
  const int64_t sinkhorn = batch * largest_k * (f + static_cast<int64_t>(sizeof(double)));
  // Per item: the shuffle order, the evaluation's codes, its latents and residual copy (and
  // large_scale_kmeans's residuals).
  const int64_t item_row = static_cast<int64_t>(sizeof(int64_t)) +
                           levels * static_cast<int64_t>(sizeof(int32_t)) + 3 * e * f;
  return parameters + batch * batch_row + sinkhorn + n * item_row;
}

double CollisionRate(const int32_t* codes, int64_t n, int64_t levels) {
  if (n <= 0) return 0;
  const std::vector<int32_t> copy(codes, codes + n * levels);
  return static_cast<double>(CountCollisions(copy, n, levels)) / static_cast<double>(n);
}

// An epoch whose mean loss exceeds the lowest epoch mean so far this many times diverged.
constexpr double kExplodingLossFactor = 1e4;

absl::StatusOr<RqVaeTrainResult> TrainRqVae(
    const float* x, int64_t n, int64_t d, const RqVaeOptions& options,
    const std::function<bool(const RqVaeEpochReport&)>& on_epoch) {
  if (absl::Status s = ValidateRqVaeOptions(options, d); !s.ok()) return s;
  if (n < 1) return Invalid("n %d: need at least one item to train on", n);
  for (int64_t i = 0; i < n * d; ++i) {
    if (!std::isfinite(x[i])) {
      return Invalid("data[row %d, component %d] = %f: components must be finite", i / d, i % d,
                     x[i]);
    }
  }
  absl::StatusOr<RqVae> created = RqVae::Create(d, options);
  if (!created.ok()) return created.status();
  RqVaeTrainResult result;
  RqVae& model = result.model;
  model = *std::move(created);
  const int threads = ResolveThreads(options.num_threads);
  const int64_t e = options.e_dim;
  const int64_t L = model.levels();

  // Codebook initialisation on all latents (large_scale_kmeans) before training.
  bool codebooks_ready = !options.kmeans_init;
  if (options.kmeans_init && options.large_scale_kmeans) {
    std::vector<float> r(static_cast<size_t>(n * e));
    model.EncodeLatent(x, n, r.data(), threads);
    std::vector<int32_t> labels(static_cast<size_t>(n));
    for (int64_t l = 0; l < L; ++l) {
      if (absl::Status s = KMeansCodebook(&model, l, r.data(), n, threads); !s.ok()) return s;
      AssignNearest(r.data(), n, model.codebook(l).data(), model.codebook_size(l), e, labels.data(),
                    nullptr, threads);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < e; ++j) r[i * e + j] -= model.codebook(l)[labels[i] * e + j];
      }
    }
    codebooks_ready = true;
  }

  // Codes of a level during training: k-means initialisation on the first batch when asked,
  // then Sinkhorn (sk_epsilons[l] > 0) or the nearest codeword.
  int64_t batch_rows = 0;
  std::vector<float> distances;
  std::vector<double> plan;
  const ChooseCodes choose = [&](int64_t l, const float* r, int32_t* codes) -> absl::Status {
    const int64_t k = model.codebook_size(l);
    if (!codebooks_ready) {
      if (absl::Status s = KMeansCodebook(&model, l, r, batch_rows, threads); !s.ok()) return s;
    }
    const double epsilon = SkEpsilon(options, l);
    if (epsilon <= 0) {
      AssignNearest(r, batch_rows, model.codebook(l).data(), k, e, codes, nullptr, threads);
      return absl::OkStatus();
    }
    distances.resize(static_cast<size_t>(batch_rows * k));
    SquaredDistances(r, batch_rows, model.codebook(l).data(), k, e, distances.data(), threads);
    return SinkhornAssign(distances.data(), batch_rows, k,
                          {.epsilon = epsilon, .iterations = options.sk_iters}, codes, &plan);
  };

  RqVaeGradients grads;
  AdamW optimizer;
  int first_codebook = 0;
  std::mt19937_64 rng(options.seed + 3);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const int64_t batch = std::min(options.batch_size, n);
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const int64_t warmup_steps = options.warmup_epochs * steps_per_epoch;
  const int64_t total_steps = options.epochs * steps_per_epoch;
  std::vector<float> xb(static_cast<size_t>(batch * d));
  std::vector<int32_t> all_codes(static_cast<size_t>(n * L));
  BatchPass pass;
  RqVaeEpochReport best;
  bool have_best = false;
  RqVae kept;  // the best epoch's model so far, when it is not the current one
  int64_t step = 0;
  double lowest_loss = std::numeric_limits<double>::infinity();
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    RqVaeEpochReport report;
    report.epoch = epoch;
    // Shuffle (Fisher-Yates from rng; modulo bias is below 2^-40 for any n that fits memory).
    for (int64_t i = n - 1; i > 0; --i) {
      std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
    }
    std::vector<std::vector<int64_t>> usage(static_cast<size_t>(L));
    for (int64_t l = 0; l < L; ++l) usage[l].assign(model.codebook_size(l), 0);
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      const int64_t row0 = b * batch;
      batch_rows = std::min(batch, n - row0);
      for (int64_t i = 0; i < batch_rows; ++i) {
        std::copy_n(x + order[row0 + i] * d, d, xb.data() + i * d);
      }
      if (absl::Status s =
              ForwardBackward(model, xb.data(), batch_rows, &rng, choose, &grads, &pass, threads);
          !s.ok()) {
        return s;
      }
      if (!std::isfinite(pass.loss.total)) {
        return absl::AbortedError(absl::StrFormat(
            "training diverged at epoch %d, batch %d: loss %g (reconstruction %g, quantization "
            "%g); try a lower lr than %g",
            epoch, b, pass.loss.total, pass.loss.recon, pass.loss.quant, options.lr));
      }
      codebooks_ready = true;
      // Gradients are refilled in place every step (same sizes), parameters never move.
      const TensorRefs tensors = Tensors(&model, grads);
      model.encoder().UpdateRunningStats(pass.encoder_cache);
      model.decoder().UpdateRunningStats(pass.decoder_cache);
      first_codebook = tensors.first_codebook;
      if (step == 0) {
        AdamWOptions adam;
        adam.weight_decay = options.weight_decay;
        optimizer = AdamW(tensors.sizes, adam);
      }
      report.loss.total += pass.loss.total;
      report.loss.recon += pass.loss.recon;
      report.loss.quant += pass.loss.quant;
      for (int64_t i = 0; i < batch_rows; ++i) {
        for (int64_t l = 0; l < L; ++l) ++usage[l][pass.codes[i * L + l]];
      }
      report.lr = LearningRate(options, step, warmup_steps, total_steps);
      optimizer.BeginStep();
      for (size_t t = 0; t < tensors.params.size(); ++t) {
        optimizer.Update(static_cast<int>(t), report.lr, tensors.params[t], tensors.grads[t]);
      }
      ++step;
    }
    report.loss.total /= static_cast<double>(steps_per_epoch);
    report.loss.recon /= static_cast<double>(steps_per_epoch);
    report.loss.quant /= static_cast<double>(steps_per_epoch);
    // An exploding loss: far above the lowest epoch mean so far (finite but diverging).
    if (epoch > 0 && report.loss.total > kExplodingLossFactor * lowest_loss) {
      return absl::AbortedError(absl::StrFormat(
          "training diverged at epoch %d: loss %g is over %g times the lowest epoch loss %g; "
          "try a lower lr than %g",
          epoch, report.loss.total, kExplodingLossFactor, lowest_loss, options.lr));
    }
    lowest_loss = std::min(lowest_loss, report.loss.total);
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    // Dead codes take the last batch's residuals that their level's codes fit worst.
    if (options.revive_dead_codes) {
      for (int64_t l = 0; l < L; ++l) {
        const std::vector<float>& r = pass.residuals[l];
        const std::vector<float>& codebook = model.codebook(l);
        std::vector<std::pair<float, int64_t>> worst(static_cast<size_t>(batch_rows));
        for (int64_t i = 0; i < batch_rows; ++i) {
          const float* q = codebook.data() + pass.codes[i * L + l] * e;
          float error = 0;
          for (int64_t j = 0; j < e; ++j) error += (r[i * e + j] - q[j]) * (r[i * e + j] - q[j]);
          worst[i] = {-error, i};
        }
        std::sort(worst.begin(), worst.end());
        int64_t next = 0;
        for (int64_t c = 0; c < model.codebook_size(l); ++c) {
          if (usage[l][c] > 0) continue;
          const int64_t row = worst[next++ % batch_rows].second;
          std::copy_n(r.begin() + row * e, e, model.codebook(l).begin() + c * e);
          optimizer.ResetRow(first_codebook + static_cast<int>(l), c, e);
          ++report.revived;
        }
      }
    }

    if ((epoch + 1) % options.eval_step == 0 || epoch + 1 == options.epochs) {
      model.Encode(x, n, all_codes.data(), nullptr, threads);
      report.evaluated = true;
      report.collision_rate = CollisionRate(all_codes.data(), n, L);
      report.codes_used = CodesUsed(all_codes.data(), n, model);
      if (!have_best || Better(options.keep, report, best)) {
        best = report;
        have_best = true;
        result.model_epoch = epoch;
      }
    }
    result.epochs.push_back(report);
    if (on_epoch && !on_epoch(report)) {
      return absl::CancelledError(absl::StrFormat("training cancelled after epoch %d", epoch));
    }
    // Snapshot the best epoch's model (the last epoch's needs no copy).
    if (have_best && result.model_epoch == epoch && epoch + 1 < options.epochs) kept = model;
  }
  if (result.model_epoch + 1 < options.epochs) result.model = std::move(kept);
  return result;
}

absl::StatusOr<GeneratedIndices> GenerateIndices(const RqVae& model, const float* x, int64_t n,
                                                 const GenerateIndicesOptions& options) {
  if (n < 1) return Invalid("n %d: need at least one item", n);
  if (options.max_rounds < 1)
    return Invalid("max_rounds %d: must be at least 1", options.max_rounds);
  const int threads = ResolveThreads(options.num_threads);
  const int64_t L = model.levels();
  const int64_t e = model.e_dim();
  const int64_t last = L - 1;
  const int64_t k = model.codebook_size(last);
  const std::vector<float>& codebook = model.codebook(last);
  std::vector<float> latent(static_cast<size_t>(n * e));
  model.EncodeLatent(x, n, latent.data(), threads);
  GeneratedIndices out;
  out.codes.resize(static_cast<size_t>(n * L));
  std::vector<float> residuals(static_cast<size_t>(n * e));  // entering the last level
  model.Quantize(latent.data(), n, out.codes.data(), residuals.data(), last, threads);
  const std::vector<int32_t> nearest = out.codes;
  out.collisions_before = CountCollisions(out.codes, n, L);
  int64_t collisions = out.collisions_before;
  double epsilon = SkEpsilon(model.options(), last);
  if (epsilon <= 0) epsilon = 0.003;  // the seed's generate_indices does the same
  while (collisions > 0 && out.rounds < options.max_rounds) {
    const std::vector<int32_t> before = out.codes;
    const std::vector<int64_t> order = SortedByCodes(out.codes, n, L);
    // Runs of equal prefix (levels 0..L-2), and inside them runs of equal full codes.
    for (int64_t p0 = 0; p0 < n;) {
      int64_t p1 = p0 + 1;
      while (p1 < n && SameCodes(out.codes, order[p0], order[p1], last, L)) ++p1;
      std::vector<bool> held(static_cast<size_t>(k), false);
      std::vector<int64_t> movers;
      for (int64_t g0 = p0; g0 < p1;) {
        int64_t g1 = g0 + 1;
        while (g1 < p1 && SameCodes(out.codes, order[g0], order[g1], L, L)) ++g1;
        const int32_t code = out.codes[order[g0] * L + last];
        held[code] = true;
        if (g1 - g0 > 1) {
          std::vector<int64_t> group(order.begin() + g0, order.begin() + g1);
          if (options.mode == GenerateIndicesOptions::Mode::kSeedSinkhorn) {
            const std::vector<float> costs =
                RowDistances(residuals, group, codebook, k, e, threads);
            std::vector<int32_t> labels(group.size());
            if (absl::Status s = SinkhornAssign(
                    costs.data(), static_cast<int64_t>(group.size()), k,
                    {.epsilon = epsilon, .iterations = model.options().sk_iters}, labels.data());
                !s.ok()) {
              return s;
            }
            for (size_t i = 0; i < group.size(); ++i) out.codes[group[i] * L + last] = labels[i];
          } else {
            // The member nearest to the code keeps it (ties: lower row); the rest move.
            const std::vector<float> costs =
                RowDistances(residuals, group, codebook, k, e, threads);
            size_t keep = 0;
            for (size_t i = 1; i < group.size(); ++i) {
              if (costs[i * k + code] < costs[keep * k + code]) keep = i;
            }
            for (size_t i = 0; i < group.size(); ++i) {
              if (i != keep) movers.push_back(group[i]);
            }
          }
        }
        g0 = g1;
      }
      if (!movers.empty()) {
        std::sort(movers.begin(), movers.end());
        std::vector<float> costs = RowDistances(residuals, movers, codebook, k, e, threads);
        const int64_t m = static_cast<int64_t>(movers.size());
        // A held code is a collision again: priced above any free one, still finite.
        float top = 0;
        for (float c : costs) top = std::max(top, c);
        const float penalty = 2 * top + 1;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < k; ++j) {
            if (held[j]) costs[i * k + j] += penalty;
          }
        }
        const SizeBounds bounds = {.size_min = 0, .size_max = (m + k - 1) / k};
        absl::StatusOr<std::vector<int32_t>> labels =
            BalancedAssign(costs.data(), m, k, bounds, BalancedMode::kExact);
        if (!labels.ok()) return labels.status();
        for (int64_t i = 0; i < m; ++i) out.codes[movers[i] * L + last] = (*labels)[i];
      }
      p0 = p1;
    }
    ++out.rounds;
    const int64_t now = CountCollisions(out.codes, n, L);
    if (now >= collisions) {  // no progress: keep the codes of the round before, and stop
      out.codes = before;
      break;
    }
    collisions = now;
  }
  out.collisions_after = collisions;
  for (int64_t i = 0; i < n; ++i) {
    if (out.codes[i * L + last] != nearest[i * L + last]) ++out.moved;
  }
  return out;
}

}  // namespace quantd
