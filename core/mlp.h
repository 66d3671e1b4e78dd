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

// One Linear layer y = x W^T + b.
struct Linear {
  int64_t in = 0;
  int64_t out = 0;
  std::vector<float> weight;  // out x in
  std::vector<float> bias;    // out
};

// What a training forward pass keeps for the backward pass.
struct MlpCache {
  int64_t n = 0;
  // inputs[i]: the input of Linear i after dropout (n x d_i).
  std::vector<std::vector<float>> inputs;
  // outputs[i]: Linear i's output before the activation (n x d_{i+1}).
  std::vector<std::vector<float>> outputs;
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
  // INVALID_ARGUMENT naming the value otherwise.
  static absl::StatusOr<Mlp> Create(std::vector<int64_t> dims, Activation activation,
                                    double dropout_prob, uint64_t seed);

  int64_t input_dim() const { return dims_.front(); }
  int64_t output_dim() const { return dims_.back(); }
  const std::vector<int64_t>& dims() const { return dims_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  Activation activation() const { return activation_; }
  double dropout_prob() const { return dropout_prob_; }
  Linear& layer(int i) { return layers_[i]; }
  const Linear& layer(int i) const { return layers_[i]; }
  // Index of Linear i in the PyTorch nn.Sequential (`mlp_layers.{index}`): every layer but the
  // last adds Dropout, Linear and the activation module, except for activation none, which the
  // seed's activation_layer leaves out: 3 * i + 1, or 2 * i + 1 without activation.
  int TorchModuleIndex(int i) const { return (activation_ == Activation::kNone ? 2 : 3) * i + 1; }

  // Inference (no dropout): out (n x output_dim) for x (n x input_dim).
  void Forward(const float* x, int64_t n, float* out, int num_threads) const;
  // Training pass: as Forward, with dropout drawn from *rng when dropout_prob > 0 (rng may be
  // null: no dropout), keeping in *cache what Backward needs.
  void ForwardTrain(const float* x, int64_t n, std::mt19937_64* rng, MlpCache* cache, float* out,
                    int num_threads) const;
  // Backward pass of the last ForwardTrain (cache) for grad_out (n x output_dim) = dLoss/dout:
  // sets *grads (shaped as the layers, resized here) to dLoss/dW and dLoss/db, and grad_in
  // (n x input_dim, may be null) to dLoss/dx. Uses the cache's scratch.
  void Backward(MlpCache* cache, const float* grad_out, std::vector<Linear>* grads, float* grad_in,
                int num_threads) const;

 private:
  std::vector<int64_t> dims_;
  Activation activation_ = Activation::kRelu;
  double dropout_prob_ = 0;
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
