#include "core/mlp.h"

// Eigen must not spawn threads of its own: we parallelise over row blocks with ParallelFor.
#define EIGEN_DONT_PARALLELIZE

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "core/gemm.h"
#include "core/parallel.h"

namespace quantd {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows of a block of the products: fixed, so that the partition does not depend on the threads.
constexpr int64_t kBlockRows = 96;
constexpr float kLeakySlope = 0.01f;

// Uniform in [0, 1) with 53 random bits.
double Unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

float Activate(Activation activation, float v) {
  switch (activation) {
    case Activation::kNone:
      return v;
    case Activation::kRelu:
      return v > 0 ? v : 0.0f;
    case Activation::kLeakyRelu:
      return v > 0 ? v : kLeakySlope * v;
    case Activation::kTanh:
      return std::tanh(v);
    case Activation::kSigmoid:
      return 1.0f / (1.0f + std::exp(-v));
    case Activation::kGelu:
      return 0.5f * v * (1.0f + std::erf(v * static_cast<float>(std::numbers::sqrt2 / 2)));
  }
  return v;
}

// d Activate(v) / dv.
float ActivationSlope(Activation activation, float v) {
  switch (activation) {
    case Activation::kNone:
      return 1.0f;
    case Activation::kRelu:
      return v > 0 ? 1.0f : 0.0f;
    case Activation::kLeakyRelu:
      return v > 0 ? 1.0f : kLeakySlope;
    case Activation::kTanh: {
      const float t = std::tanh(v);
      return 1.0f - t * t;
    }
    case Activation::kSigmoid: {
      const float s = 1.0f / (1.0f + std::exp(-v));
      return s * (1.0f - s);
    }
    case Activation::kGelu: {
      const float cdf = 0.5f * (1.0f + std::erf(v * static_cast<float>(std::numbers::sqrt2 / 2)));
      const float pdf = std::exp(-0.5f * v * v) *
                        static_cast<float>(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
      return cdf + v * pdf;
    }
  }
  return 1.0f;
}

// y (n x out) = x (n x in) W^T + b.
void LinearForward(const Linear& layer, const float* x, int64_t n, float* y, int num_threads,
                   PackedRhs* packed = nullptr) {
  MatMulTransB(x, n, layer.weight.data(), layer.out, layer.in, y, num_threads, packed);
  Eigen::Map<RowMatrix>(y, n, layer.out).rowwise() +=
      Eigen::Map<const Eigen::RowVectorXf>(layer.bias.data(), layer.out);
}

// out (m x packed.k()) = a (m x packed.d()) . c^T, in fixed row blocks of a spread over threads.
void MultiplyRows(const PackedRhs& packed, const float* a, int64_t m, float* out, int num_threads) {
  const int64_t n = packed.k();
  const int64_t k = packed.d();
  const int64_t blocks = (m + kBlockRows - 1) / kBlockRows;
  ParallelFor(blocks, ParallelWorkers(num_threads, blocks), [&](int64_t block) {
    const int64_t row0 = block * kBlockRows;
    const int64_t rows = std::min(kBlockRows, m - row0);
    packed.Multiply(a + row0 * k, rows, out + row0 * n, n);
  });
}

// out (m x n) = a (m x k) . c^T where b is c (n x k) when b_is_c, else c^T (k x n); packed
// into *scratch when given.
void Product(const float* a, int64_t m, const float* b, int64_t n, int64_t k, bool b_is_c,
             float* out, int num_threads, PackedRhs* scratch) {
  if (m <= 0 || n <= 0) return;
  std::optional<PackedRhs> own;
  if (scratch == nullptr) own.emplace(nullptr, 0, 0);
  PackedRhs& packed = scratch == nullptr ? *own : *scratch;
  if (b_is_c) {
    packed.Repack(b, n, k);
  } else {
    packed.RepackTransposed(b, n, k);
  }
  MultiplyRows(packed, a, m, out, num_threads);
}

// Batch norm of Linear `i`'s output (cache->outputs[i], n x out) on the batch's statistics:
// fills the cache's normalized, activated, inv_std, batch_mean and batch_var of layer i.
void BatchNormForward(const Linear& layer, int64_t n, int i, MlpCache* cache) {
  const int64_t width = layer.out;
  const std::vector<float>& h = cache->outputs[i];
  std::vector<double> sum(static_cast<size_t>(width), 0.0),
      squares(static_cast<size_t>(width), 0.0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < width; ++c) sum[c] += h[r * width + c];
  }
  std::vector<float>& mean = cache->batch_mean[i];
  std::vector<float>& var = cache->batch_var[i];
  std::vector<float>& inv_std = cache->inv_std[i];
  mean.resize(width);
  var.resize(width);
  inv_std.resize(width);
  for (int64_t c = 0; c < width; ++c) mean[c] = static_cast<float>(sum[c] / static_cast<double>(n));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      const double diff = static_cast<double>(h[r * width + c]) - mean[c];
      squares[c] += diff * diff;
    }
  }
  for (int64_t c = 0; c < width; ++c) {
    const double biased = squares[c] / static_cast<double>(n);
    var[c] = static_cast<float>(biased);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(biased + kBatchNormEps));
  }
  std::vector<float>& normalized = cache->normalized[i];
  std::vector<float>& activated = cache->activated[i];
  normalized.resize(h.size());
  activated.resize(h.size());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      const float x_hat = (h[r * width + c] - mean[c]) * inv_std[c];
      normalized[r * width + c] = x_hat;
      activated[r * width + c] = x_hat * layer.bn_weight[c] + layer.bn_bias[c];
    }
  }
}

// Backward of BatchNormForward for layer `i`: *g (n x out) holds dLoss/d(batch norm output) and
// becomes dLoss/d(Linear output); grad's bn_weight and bn_bias are set.
void BatchNormBackward(const Linear& layer, const MlpCache& cache, int i, std::vector<float>* g,
                       Linear* grad) {
  const int64_t n = cache.n;
  const int64_t width = layer.out;
  const std::vector<float>& x_hat = cache.normalized[i];
  std::vector<double> sum_g(static_cast<size_t>(width), 0.0),
      sum_gx(static_cast<size_t>(width), 0.0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      const double gv = (*g)[r * width + c];
      sum_g[c] += gv;
      sum_gx[c] += gv * x_hat[r * width + c];
    }
  }
  grad->bn_weight.resize(width);
  grad->bn_bias.resize(width);
  for (int64_t c = 0; c < width; ++c) {
    grad->bn_weight[c] = static_cast<float>(sum_gx[c]);
    grad->bn_bias[c] = static_cast<float>(sum_g[c]);
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      const size_t j = static_cast<size_t>(r * width + c);
      const double scale = static_cast<double>(layer.bn_weight[c]) * cache.inv_std[i][c];
      (*g)[j] =
          static_cast<float>(scale * ((*g)[j] - sum_g[c] * inv_n - x_hat[j] * sum_gx[c] * inv_n));
    }
  }
}

// Row-major transpose: *out (cols x rows) of m (rows x cols); returns out's data.
const float* Transpose(const float* m, int64_t rows, int64_t cols, std::vector<float>* out) {
  out->resize(static_cast<size_t>(rows * cols));
  Eigen::Map<RowMatrix>(out->data(), cols, rows) =
      Eigen::Map<const RowMatrix>(m, rows, cols).transpose();
  return out->data();
}

}  // namespace

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  for (Activation a : {Activation::kNone, Activation::kRelu, Activation::kLeakyRelu,
                       Activation::kTanh, Activation::kSigmoid, Activation::kGelu}) {
    if (absl::EqualsIgnoreCase(ActivationName(a), name)) return a;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "activation \"%s\": expected one of none, relu, leakyrelu, tanh, sigmoid, gelu", name));
}

absl::string_view ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return "none";
    case Activation::kRelu:
      return "relu";
    case Activation::kLeakyRelu:
      return "leakyrelu";
    case Activation::kTanh:
      return "tanh";
    case Activation::kSigmoid:
      return "sigmoid";
    case Activation::kGelu:
      return "gelu";
  }
  return "unknown";
}

void MatMulTransB(const float* a, int64_t m, const float* b, int64_t n, int64_t k, float* out,
                  int num_threads, PackedRhs* scratch) {
  Product(a, m, b, n, k, /*b_is_c=*/true, out, num_threads, scratch);
}

void MatMul(const float* a, int64_t m, const float* b, int64_t k, int64_t n, float* out,
            int num_threads, PackedRhs* scratch) {
  Product(a, m, b, n, k, /*b_is_c=*/false, out, num_threads, scratch);
}

double StandardNormal(std::mt19937_64& rng) {
  const double u1 = 1.0 - Unit(rng);  // in (0, 1]
  const double u2 = Unit(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

absl::StatusOr<Mlp> Mlp::Create(std::vector<int64_t> dims, Activation activation,
                                double dropout_prob, uint64_t seed, bool batch_norm) {
  if (dims.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("mlp dims: need at least 2 sizes (input and output), got %d", dims.size()));
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("mlp dims[%d] = %d: sizes must be positive", i, dims[i]));
    }
  }
  if (!(dropout_prob >= 0 && dropout_prob < 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dropout_prob %g: must be in [0, 1)", dropout_prob));
  }
  Mlp mlp;
  mlp.dims_ = std::move(dims);
  mlp.activation_ = activation;
  mlp.dropout_prob_ = dropout_prob;
  mlp.batch_norm_ = batch_norm;
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 1 < mlp.dims_.size(); ++i) {
    Linear layer;
    layer.in = mlp.dims_[i];
    layer.out = mlp.dims_[i + 1];
    const double std_dev = std::sqrt(2.0 / static_cast<double>(layer.in + layer.out));
    layer.weight.resize(static_cast<size_t>(layer.out * layer.in));
    for (float& w : layer.weight) w = static_cast<float>(std_dev * StandardNormal(rng));
    layer.bias.assign(static_cast<size_t>(layer.out), 0.0f);
    if (batch_norm && i + 2 < mlp.dims_.size()) {
      layer.bn_weight.assign(static_cast<size_t>(layer.out), 1.0f);
      layer.bn_bias.assign(static_cast<size_t>(layer.out), 0.0f);
      layer.running_mean.assign(static_cast<size_t>(layer.out), 0.0f);
      layer.running_var.assign(static_cast<size_t>(layer.out), 1.0f);
    }
    mlp.layers_.push_back(std::move(layer));
  }
  return mlp;
}

void Mlp::Forward(const float* x, int64_t n, float* out, int num_threads) const {
  PackedMlp(*this).Forward(x, n, out, num_threads);
}

PackedMlp::PackedMlp(const Mlp& mlp)
    : activation_(mlp.activation()), input_dim_(mlp.input_dim()), output_dim_(mlp.output_dim()) {
  for (int i = 0; i < mlp.num_layers(); ++i) {
    const Linear& layer = mlp.layer(i);
    weights_.emplace_back(layer.weight.data(), layer.out, layer.in);
    biases_.push_back(layer.bias);
    std::vector<float> inv_std(layer.running_var.size());
    for (size_t c = 0; c < inv_std.size(); ++c) {
      inv_std[c] = 1.0f / std::sqrt(layer.running_var[c] + kBatchNormEps);
    }
    bn_mean_.push_back(layer.running_mean);
    bn_inv_std_.push_back(std::move(inv_std));
    bn_weight_.push_back(layer.bn_weight);
    bn_bias_.push_back(layer.bn_bias);
  }
}

void PackedMlp::Forward(const float* x, int64_t n, float* out, int num_threads) const {
  std::vector<float> input(x, x + n * input_dim_);
  std::vector<float> output;
  const int layers = static_cast<int>(weights_.size());
  for (int i = 0; i < layers; ++i) {
    const int64_t width = weights_[i].k();
    const bool last = i + 1 == layers;
    float* y = out;
    if (!last) {
      output.resize(static_cast<size_t>(n * width));
      y = output.data();
    }
    MultiplyRows(weights_[i], input.data(), n, y, num_threads);
    Eigen::Map<RowMatrix>(y, n, width).rowwise() +=
        Eigen::Map<const Eigen::RowVectorXf>(biases_[i].data(), width);
    if (!last) {
      if (!bn_mean_[i].empty()) {
        const std::vector<float>& mean = bn_mean_[i];
        const std::vector<float>& inv_std = bn_inv_std_[i];
        const std::vector<float>& weight = bn_weight_[i];
        const std::vector<float>& bias = bn_bias_[i];
        for (int64_t r = 0; r < n; ++r) {
          float* row = output.data() + r * width;
          for (int64_t c = 0; c < width; ++c) {
            row[c] = (row[c] - mean[c]) * inv_std[c] * weight[c] + bias[c];
          }
        }
      }
      for (float& v : output) v = Activate(activation_, v);
      input.swap(output);
    }
  }
}

void Mlp::ForwardTrain(const float* x, int64_t n, std::mt19937_64* rng, MlpCache* cache, float* out,
                       int num_threads) const {
  const int layers = num_layers();
  cache->n = n;
  cache->inputs.resize(layers);
  cache->outputs.resize(layers);
  cache->masks.resize(layers);
  for (auto* v : {&cache->normalized, &cache->activated, &cache->inv_std, &cache->batch_mean,
                  &cache->batch_var}) {
    v->resize(layers);
  }
  const bool dropout = rng != nullptr && dropout_prob_ > 0;
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout_prob_));
  for (int i = 0; i < layers; ++i) {
    const Linear& layer = layers_[i];
    std::vector<float>& input = cache->inputs[i];
    if (i == 0) {
      input.assign(x, x + n * layer.in);
    } else {
      const std::vector<float>& previous =
          layers_[i - 1].bn_weight.empty() ? cache->outputs[i - 1] : cache->activated[i - 1];
      input.resize(previous.size());
      for (size_t j = 0; j < previous.size(); ++j) input[j] = Activate(activation_, previous[j]);
    }
    cache->masks[i].clear();
    if (dropout) {
      // Drawn in row order on the calling thread: the same masks for every thread count.
      std::vector<uint8_t>& mask = cache->masks[i];
      mask.resize(input.size());
      for (size_t j = 0; j < input.size(); ++j) {
        mask[j] = Unit(*rng) >= dropout_prob_ ? 1 : 0;
        input[j] = mask[j] ? input[j] * keep_scale : 0.0f;
      }
    }
    std::vector<float>& output = cache->outputs[i];
    output.resize(static_cast<size_t>(n * layer.out));
    LinearForward(layer, input.data(), n, output.data(), num_threads, &cache->packed);
    if (!layer.bn_weight.empty()) BatchNormForward(layer, n, i, cache);
  }
  std::copy(cache->outputs.back().begin(), cache->outputs.back().end(), out);
}

void Mlp::Backward(MlpCache* cache, const float* grad_out, std::vector<Linear>* grads,
                   float* grad_in, int num_threads) const {
  const int64_t n = cache->n;
  const int layers = num_layers();
  grads->resize(layers);
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout_prob_));
  // g: dLoss / d(output of Linear i), n x out.
  std::vector<float>& g = cache->grad;
  std::vector<float>& g_in = cache->grad_in;
  g.assign(grad_out, grad_out + n * output_dim());
  for (int i = layers - 1; i >= 0; --i) {
    const Linear& layer = layers_[i];
    Linear& grad = (*grads)[i];
    grad.in = layer.in;
    grad.out = layer.out;
    // dW (out x in) = g^T (out x n) . input (n x in).
    const float* g_t = Transpose(g.data(), n, layer.out, &cache->transposed);
    grad.weight.resize(layer.weight.size());
    MatMul(g_t, layer.out, cache->inputs[i].data(), n, layer.in, grad.weight.data(), num_threads,
           &cache->packed);
    // db = column sums of g, in row order.
    grad.bias.resize(static_cast<size_t>(layer.out));
    Eigen::Map<Eigen::RowVectorXf>(grad.bias.data(), layer.out) =
        Eigen::Map<const RowMatrix>(g.data(), n, layer.out).colwise().sum();
    if (i == 0 && grad_in == nullptr) break;
    // d input (n x in) = g (n x out) . W (out x in).
    g_in.resize(static_cast<size_t>(n * layer.in));
    MatMul(g.data(), n, layer.weight.data(), layer.out, layer.in, g_in.data(), num_threads,
           &cache->packed);
    if (!cache->masks[i].empty()) {
      const std::vector<uint8_t>& mask = cache->masks[i];
      for (size_t j = 0; j < g_in.size(); ++j) g_in[j] = mask[j] ? g_in[j] * keep_scale : 0.0f;
    }
    if (i == 0) {
      std::copy(g_in.begin(), g_in.end(), grad_in);
      break;
    }
    const Linear& below = layers_[i - 1];
    const bool normalised = !below.bn_weight.empty();
    const std::vector<float>& pre = normalised ? cache->activated[i - 1] : cache->outputs[i - 1];
    for (size_t j = 0; j < g_in.size(); ++j) g_in[j] *= ActivationSlope(activation_, pre[j]);
    if (normalised) BatchNormBackward(below, *cache, i - 1, &g_in, &(*grads)[i - 1]);
    g.swap(g_in);
  }
}

void Mlp::UpdateRunningStats(const MlpCache& cache) {
  if (cache.n < 2) return;
  const float m = kBatchNormMomentum;
  const float unbias = static_cast<float>(cache.n) / static_cast<float>(cache.n - 1);
  for (int i = 0; i < num_layers(); ++i) {
    Linear& layer = layers_[i];
    for (size_t c = 0; c < layer.running_mean.size(); ++c) {
      layer.running_mean[c] = (1 - m) * layer.running_mean[c] + m * cache.batch_mean[i][c];
      layer.running_var[c] = (1 - m) * layer.running_var[c] + m * cache.batch_var[i][c] * unbias;
    }
  }
}

AdamW::AdamW(const std::vector<size_t>& sizes, const AdamWOptions& options) : options_(options) {
  for (size_t size : sizes) {
    m_.emplace_back(size, 0.0f);
    v_.emplace_back(size, 0.0f);
  }
}

void AdamW::Update(int index, double lr, float* param, const float* grad) {
  std::vector<float>& m = m_[index];
  std::vector<float>& v = v_[index];
  const double b1 = options_.beta1;
  const double b2 = options_.beta2;
  const double correction1 = 1.0 - std::pow(b1, static_cast<double>(t_));
  const double correction2 = 1.0 - std::pow(b2, static_cast<double>(t_));
  const float decay = static_cast<float>(1.0 - lr * options_.weight_decay);
  const float step = static_cast<float>(lr / correction1);
  const float root_correction2 = static_cast<float>(std::sqrt(correction2));
  const float eps = static_cast<float>(options_.eps);
  const float fb1 = static_cast<float>(b1);
  const float fb2 = static_cast<float>(b2);
  for (size_t j = 0; j < m.size(); ++j) {
    const float gj = grad[j];
    m[j] = fb1 * m[j] + (1.0f - fb1) * gj;
    v[j] = fb2 * v[j] + (1.0f - fb2) * gj * gj;
    param[j] = param[j] * decay - step * m[j] / (std::sqrt(v[j]) / root_correction2 + eps);
  }
}

void AdamW::ResetRow(int index, int64_t row, int64_t width) {
  std::fill_n(m_[index].begin() + row * width, width, 0.0f);
  std::fill_n(v_[index].begin() + row * width, width, 0.0f);
}

}  // namespace quantd
