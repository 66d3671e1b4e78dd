// Dense multi-layer perceptrons for the RQ-VAE tokenizer: Linear layers with dropout and an
// activation, forward and backward passes on the project's GEMM, and the AdamW optimiser.
//
// The layout is PyTorch's so that a torch checkpoint can be loaded as it is: a Linear layer's
// weight is out x in row-major (nn.Linear.weight), its bias out. An Mlp over dims d_0..d_L is the
// seed's MLPLayers without batch norm: for each layer i, Dropout(p), Linear(d_i -> d_{i+1}), then
// the activation except after the last layer; in PyTorch's nn.Sequential the Linear of layer i is
// module 3 * i + 1 (`mlp_layers.1`, `mlp_layers.4`, ...).
//
// Shapes: activations are n x d row-major float32, one row an item.
#ifndef QUANTD_CORE_MLP_H_
#define QUANTD_CORE_MLP_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/gemm.h"

namespace quantd {

enum class Activation { kNone, kRelu, kLeakyRelu, kTanh, kSigmoid, kGelu };

// "none", "relu", "leakyrelu" (slope 0.01, nn.LeakyReLU's default), "tanh", "sigmoid", "gelu"
// (exact, erf-based, as nn.GELU), in any case as the seed's activation_layer (it lower-cases).
// Anything else: INVALID_ARGUMENT naming the value.
absl::StatusOr<Activation> ParseActivation(absl::string_view name);
absl::string_view ActivationName(Activation activation);

// out (m x n, row-major, contiguous) = a (m x k) . b^T, b being n x k: the one product of the
// dense layers, on the project's GEMM (b packed once, row blocks of a in parallel). The row
// blocks do not depend on num_threads, so neither does the result.
// `packed` (may be null) is scratch reused for b's packing across calls.
void MatMulTransB(const float* a, int64_t m, const float* b, int64_t n, int64_t k, float* out,
                  int num_threads, PackedRhs* packed = nullptr);
// out (m x n) = a (m x k) . b, b being k x n: the same product with b packed as it is stored.
void MatMul(const float* a, int64_t m, const float* b, int64_t k, int64_t n, float* out,
            int num_threads, PackedRhs* packed = nullptr);

// nn.BatchNorm1d's constants (its defaults).
inline constexpr float kBatchNormEps = 1e-5f;
inline constexpr float kBatchNormMomentum = 0.1f;

// One Linear layer y = x W^T + b, and the BatchNorm1d after it when the Mlp has one there.
struct Linear {
  int64_t in = 0;
  int64_t out = 0;
  std::vector<float> weight;  // out x in
  std::vector<float> bias;    // out
  // BatchNorm1d (out values each; all empty without one): the affine weight and bias (trained),
  // and the running mean and (unbiased) variance (updated in training, used in inference).
  std::vector<float> bn_weight;
  std::vector<float> bn_bias;
  std::vector<float> running_mean;
  std::vector<float> running_var;
};

// What a training forward pass keeps for the backward pass.
struct MlpCache {
  int64_t n = 0;
  // inputs[i]: the input of Linear i after dropout (n x d_i).
  std::vector<std::vector<float>> inputs;
  // outputs[i]: Linear i's output (n x d_{i+1}), before batch norm and activation.
  std::vector<std::vector<float>> outputs;
  // Batch-normalised layers: normalized[i] = (outputs[i] - batch mean) * inv_std[i] (n x
  // d_{i+1}), inv_std[i] = 1 / sqrt(batch variance + eps), batch_mean / batch_var (biased) per
  // column, and activated[i], the activation's input (n x d_{i+1}). Empty elsewhere.
  std::vector<std::vector<float>> normalized;
  std::vector<std::vector<float>> activated;
  std::vector<std::vector<float>> inv_std;
  std::vector<std::vector<float>> batch_mean;
  std::vector<std::vector<float>> batch_var;
  // masks[i]: dropout mask of Linear i's input, n x d_i (1 kept, 0 dropped); empty when no
  // dropout was drawn.
  std::vector<std::vector<uint8_t>> masks;
  // Scratch of the passes, kept so that a cache reused step after step allocates nothing.
  std::vector<float> grad;
  std::vector<float> grad_in;
  std::vector<float> transposed;
  PackedRhs packed{nullptr, 0, 0};
};

class Mlp {
 public:
  Mlp() = default;
  // dims = d_0..d_L (L >= 1, every d_i >= 1); dropout_prob in [0, 1). Weights are drawn
  // Xavier-normal (std sqrt(2 / (in + out)), as the seed's init_weights) from `seed`, biases 0.
  // With batch_norm, a BatchNorm1d follows every Linear but the last (as the seed's MLPLayers
  // with bn): weight 1, bias 0, running mean 0, running variance 1. INVALID_ARGUMENT naming the
  // value otherwise.
  static absl::StatusOr<Mlp> Create(std::vector<int64_t> dims, Activation activation,
                                    double dropout_prob, uint64_t seed, bool batch_norm = false);

  int64_t input_dim() const { return dims_.front(); }
  int64_t output_dim() const { return dims_.back(); }
  const std::vector<int64_t>& dims() const { return dims_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  Activation activation() const { return activation_; }
  double dropout_prob() const { return dropout_prob_; }
  Linear& layer(int i) { return layers_[i]; }
  const Linear& layer(int i) const { return layers_[i]; }
  bool batch_norm() const { return batch_norm_; }
  // Index of Linear i in the PyTorch nn.Sequential (`mlp_layers.{index}`): every layer but the
  // last adds Dropout, Linear, BatchNorm1d (with batch norm) and the activation module (not for
  // activation none, which the seed's activation_layer leaves out). Its BatchNorm1d is the next
  // index.
  int TorchModuleIndex(int i) const {
    return (2 + (activation_ == Activation::kNone ? 0 : 1) + (batch_norm_ ? 1 : 0)) * i + 1;
  }

  // Inference (no dropout): out (n x output_dim) for x (n x input_dim).
  void Forward(const float* x, int64_t n, float* out, int num_threads) const;
  // Training pass: as Forward, with dropout drawn from *rng when dropout_prob > 0 (rng may be
  // null: no dropout) and batch norm on the batch's statistics, keeping in *cache what Backward
  // needs. Running statistics are not touched: UpdateRunningStats does that.
  void ForwardTrain(const float* x, int64_t n, std::mt19937_64* rng, MlpCache* cache, float* out,
                    int num_threads) const;
  // Backward pass of the last ForwardTrain (cache) for grad_out (n x output_dim) = dLoss/dout:
  // sets *grads (shaped as the layers, resized here) to dLoss/dW and dLoss/db, and grad_in
  // (n x input_dim, may be null) to dLoss/dx. Uses the cache's scratch.
  void Backward(MlpCache* cache, const float* grad_out, std::vector<Linear>* grads, float* grad_in,
                int num_threads) const;
  // Folds the batch statistics of the last ForwardTrain (cache) into the running ones, as
  // nn.BatchNorm1d in training: running = (1 - momentum) running + momentum batch, the variance
  // unbiased (n / (n - 1)). Nothing without batch norm or for a batch of one row.
  void UpdateRunningStats(const MlpCache& cache);

 private:
  std::vector<int64_t> dims_;
  Activation activation_ = Activation::kRelu;
  double dropout_prob_ = 0;
  bool batch_norm_ = false;
  std::vector<Linear> layers_;
};

// An Mlp's inference pass with its weights packed once for the GEMM: immutable, so threads may
// share it; for serving (Encode at batch 1 would otherwise repack every weight per call). Its
// output is bit-identical to Mlp::Forward, which runs through it.
class PackedMlp {
 public:
  explicit PackedMlp(const Mlp& mlp);
  int64_t output_dim() const { return output_dim_; }
  // out (n x output_dim) for x (n x input_dim), no dropout.
  void Forward(const float* x, int64_t n, float* out, int num_threads) const;

 private:
  Activation activation_;
  int64_t input_dim_;
  int64_t output_dim_;
  std::vector<PackedRhs> weights_;          // layer i: W_i packed (out x in)
  std::vector<std::vector<float>> biases_;  // layer i: b_i (out)
  // Batch-normalised layer i: y = (h - running_mean) * inv_std * bn_weight + bn_bias, with
  // inv_std = 1 / sqrt(running_var + eps); empty elsewhere.
  std::vector<std::vector<float>> bn_mean_;
  std::vector<std::vector<float>> bn_inv_std_;
  std::vector<std::vector<float>> bn_weight_;
  std::vector<std::vector<float>> bn_bias_;
};

// AdamW as torch.optim.AdamW (decoupled weight decay): for every parameter tensor,
// p -= lr * weight_decay * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t counting steps from 1.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-4;
};

class AdamW {
 public:
  AdamW() = default;
  // One moment pair per tensor of the given sizes.
  AdamW(const std::vector<size_t>& sizes, const AdamWOptions& options);
  // Starts step t + 1 (call once per optimiser step, before Update of its tensors).
  void BeginStep() { ++t_; }
  int64_t steps() const { return t_; }
  // Updates tensor `index` (param and grad of its size) with learning rate lr.
  void Update(int index, double lr, float* param, const float* grad);
  // Zeroes the moments of row `row` (of `width` values) of tensor `index`: a codebook row that
  // was re-seeded starts afresh.
  void ResetRow(int index, int64_t row, int64_t width);

 private:
  AdamWOptions options_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_;
  std::vector<std::vector<float>> v_;
};

// A standard normal draw from rng (Box-Muller on 53-bit uniforms: the same numbers with every
// standard library).
double StandardNormal(std::mt19937_64& rng);

}  // namespace quantd

#endif  // QUANTD_CORE_MLP_H_
