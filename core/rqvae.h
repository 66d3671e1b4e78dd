// RQ-VAE tokenizer (the indexer of LC-Rec, LETTER and MiniOneRec, seed 001): an MLP encoder maps
// an item's embedding to a latent of e_dim, a residual vector quantizer with one codebook per
// level (num_emb_list) turns the latent into codes, and an MLP decoder reconstructs the
// embedding from the sum of the chosen codewords.
//
// Training follows the seed's PyTorch model: loss = mse(decoder output, x) + quant_loss_weight *
// mean over levels of (codebook loss + beta * commitment loss), codebook loss = mse(q_l,
// sg(r_l)), commitment loss = mse(sg(q_l), r_l), r_l the residual entering level l and q_l its
// codeword; the decoder's input is z + sg(x_q - z) (straight-through: dLoss/dz gets the
// decoder's gradient as it is). As in PyTorch's autograd of that model, r_{l+1} = r_l - (r_l +
// sg(q_l - r_l)) carries no gradient, so only level 0's commitment loss reaches the encoder and
// each codebook learns from its own codebook loss alone. Codes are the nearest codeword, or at
// levels with sk_epsilons[l] > 0 the Sinkhorn-Knopp assignment of the batch (core/sinkhorn.h).
//
// Parameter layout is PyTorch's (see Parameters()): a torch state dict maps onto it one to one.
//
// Shapes: x is n x input_dim row-major float32; latents n x e_dim; codes n x L row-major int32
// (L = num_emb_list.size()); codebook l is num_emb_list[l] x e_dim row-major.
#ifndef QUANTD_CORE_RQVAE_H_
#define QUANTD_CORE_RQVAE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/mlp.h"

namespace quantd {

// Option names are the seed's argparse names (main.py); defaults are the seed's, except
// layers (the 512-256-128-64 of the runs) and the quantd additions marked so.
struct RqVaeOptions {
  // Hidden sizes of the encoder (input -> layers... -> e_dim); the decoder mirrors it.
  std::vector<int64_t> layers = {512, 256, 128, 64};
  int64_t e_dim = 32;
  std::vector<int64_t> num_emb_list = {256, 256, 256};
  double beta = 0.25;
  double quant_loss_weight = 1.0;
  // Per level; 0 = plain nearest code in training. Empty: 0 at every level.
  std::vector<double> sk_epsilons = {0.0, 0.0, 0.003};
  int sk_iters = 50;
  double dropout_prob = 0.0;
  // BatchNorm1d after every Linear but the last, before the activation (nn.BatchNorm1d: batch
  // statistics in training, running ones in inference; momentum 0.1, eps 1e-5).
  bool bn = false;
  // relu, leakyrelu, tanh, sigmoid, gelu or none (the seed's MLPLayers default is relu).
  std::string activation = "relu";
  double lr = 1e-3;
  double weight_decay = 1e-4;
  // Linear warm-up of the learning rate from lr / warmup_steps to lr over warmup_epochs epochs.
  int warmup_epochs = 50;
  // After warm-up: "constant" keeps lr, "linear" decays it linearly to 0 at the last step.
  std::string lr_scheduler_type = "constant";
  int epochs = 100;
  int64_t batch_size = 1024;
  uint64_t seed = 2024;
  // Codebooks from k-means (core/kmeans.h, kmeans_iters Lloyd iterations) on the first batch's
  // residuals, level after level; with large_scale_kmeans on every item's residuals instead
  // (the untrained encoder's latents). Without kmeans_init, uniform in [-1/k, 1/k] as the seed.
  bool kmeans_init = true;
  bool large_scale_kmeans = false;
  int kmeans_iters = 100;
  // quantd: after every epoch, codes no training item took in that epoch are re-seeded with the
  // residuals of the last batch that their codes fit worst (the seed never revives dead codes).
  bool revive_dead_codes = true;
  // quantd: evaluate (all items, nearest codes) every eval_step epochs and after the last one.
  int eval_step = 1;
  // quantd: which epoch's model TrainRqVae returns: the last, or the evaluated epoch of the
  // lowest loss, the lowest collision rate (then loss) or the most codes used (then collisions).
  enum class Keep { kLast, kBestLoss, kBestCollision, kBestUsage };
  Keep keep = Keep::kLast;
  // Worker threads, 0 for the hardware concurrency. Results depend on seed only, not on this.
  int num_threads = 0;
};

// INVALID_ARGUMENT naming the option and its value for: input_dim < 1; layers empty or with a
// size < 1; e_dim < 1 or > input_dim; num_emb_list empty, longer than 16 or with k < 1;
// sk_epsilons neither empty nor one per level, or an epsilon < 0 or not finite; sk_iters < 1;
// beta or quant_loss_weight < 0 or not finite; dropout_prob outside [0, 1); an unknown
// activation or lr_scheduler_type; lr <= 0 or not finite; weight_decay < 0; warmup_epochs < 0;
// epochs < 1; batch_size < 1; kmeans_iters < 1 with kmeans_init; eval_step < 1; num_threads < 0.
absl::Status ValidateRqVaeOptions(const RqVaeOptions& options, int64_t input_dim);

// A named parameter tensor: PyTorch's state-dict name, its shape, its values (row-major).
struct RqVaeParameter {
  std::string name;  // e.g. "encoder.mlp_layers.1.weight", "rq.vq_layers.0.embedding.weight"
  std::vector<int64_t> shape;  // {out, in} for weights, {out} for biases, {k, e_dim} codebooks
  float* data = nullptr;
  // A buffer, not trained: batch norm's running_mean and running_var. (The state dict's
  // num_batches_tracked, an int64 counter nothing here reads, is not listed.)
  bool buffer = false;
};

// dLoss / d every parameter, shaped as the model.
struct RqVaeGradients {
  std::vector<Linear> encoder;
  std::vector<Linear> decoder;
  std::vector<std::vector<float>> codebooks;  // k_l x e_dim each
};

// Loss of a batch: total = recon + quant_loss_weight * quant.
struct RqVaeLoss {
  double total = 0;
  double recon = 0;  // mean squared error of the reconstruction, over n x input_dim
  double quant = 0;  // mean over levels of (1 + beta) * mse(q_l, r_l)
};

class RqVae {
 public:
  RqVae() = default;
  // An untrained model for input_dim: encoder and decoder Xavier-normal from options.seed,
  // codebooks uniform in [-1/k, 1/k]. Errors as ValidateRqVaeOptions.
  static absl::StatusOr<RqVae> Create(int64_t input_dim, const RqVaeOptions& options);

  const RqVaeOptions& options() const { return options_; }
  int64_t input_dim() const { return encoder_.input_dim(); }
  int64_t e_dim() const { return options_.e_dim; }
  int64_t levels() const { return static_cast<int64_t>(codebooks_.size()); }
  int64_t codebook_size(int64_t level) const { return options_.num_emb_list[level]; }
  const std::vector<float>& codebook(int64_t level) const { return codebooks_[level]; }
  // Mutable for loading and tests: its size must stay codebook_size(level) x e_dim.
  std::vector<float>& codebook(int64_t level) { return codebooks_[level]; }
  const Mlp& encoder() const { return encoder_; }
  const Mlp& decoder() const { return decoder_; }
  Mlp& encoder() { return encoder_; }
  Mlp& decoder() { return decoder_; }

  // Every parameter with its PyTorch name and shape, in state-dict order (encoder layers,
  // codebooks, decoder layers); the pointers stay valid while the model lives and is not moved.
  // Writing through them (checkpoint import) is all it takes to load weights.
  std::vector<RqVaeParameter> Parameters();

  // Inference latents (n x e_dim): the encoder without dropout.
  void EncodeLatent(const float* x, int64_t n, float* latent, int num_threads = 0) const;
  // Inference codes (n x L): nearest codeword per level, greedily on the residual (ties to the
  // lower code). latent (n x e_dim) may be null. Packs the weights on every call: serving
  // should hold an RqVaeEncoder, which gives the same codes.
  void Encode(const float* x, int64_t n, int32_t* codes, float* latent = nullptr,
              int num_threads = 0) const;
  // Codes of latents (n x e_dim) by nearest codeword per level; residuals (n x e_dim, may be
  // null) receives what is left after the first `stop_level` levels (all L when -1).
  void Quantize(const float* latent, int64_t n, int32_t* codes, float* residuals = nullptr,
                int64_t stop_level = -1, int num_threads = 0) const;
  // Reconstruction (n x input_dim) of codes (n x L): the decoder on the sum of codewords.
  void Decode(const int32_t* codes, int64_t n, float* out, int num_threads = 0) const;

  // Loss and its straight-through gradients on x (n x input_dim) with the given codes (n x L)
  // held fixed, without dropout: the training step's computation, for tests and tools.
  RqVaeLoss Gradients(const float* x, int64_t n, const int32_t* codes, RqVaeGradients* grads,
                      int num_threads = 0) const;

 private:
  RqVaeOptions options_;
  Mlp encoder_;
  Mlp decoder_;
  std::vector<std::vector<float>> codebooks_;
};

// A model prepared for serving Encode: the encoder's weights and the codebooks packed once for
// the GEMM, immutable (threads may share it), independent of the model afterwards. Its codes and
// latents are bit-identical to RqVae::Encode's, which runs through it.
class RqVaeEncoder {
 public:
  explicit RqVaeEncoder(const RqVae& model);
  int64_t input_dim() const { return input_dim_; }
  int64_t e_dim() const { return e_dim_; }
  int64_t levels() const { return static_cast<int64_t>(codebooks_.size()); }
  // codes (n x L) of x (n x input_dim); latent (n x e_dim) may be null.
  void Encode(const float* x, int64_t n, int32_t* codes, float* latent = nullptr,
              int num_threads = 0) const;

 private:
  int64_t input_dim_;
  int64_t e_dim_;
  PackedMlp encoder_;
  std::vector<std::vector<float>> codebooks_;  // level l: k_l x e_dim
  std::vector<PackedRhs> packed_;              // level l: codebook l packed
  std::vector<std::vector<float>> norms_;      // level l: squared norms of its codewords
};

// One epoch of training.
struct RqVaeEpochReport {
  int epoch = 0;        // from 0
  RqVaeLoss loss;       // mean over the epoch's batches (training mode: dropout, Sinkhorn)
  double lr = 0;        // learning rate of the epoch's last step
  double seconds = 0;   // wall time of the epoch's training steps
  int64_t revived = 0;  // dead codes re-seeded after the epoch, over all levels
  bool evaluated = false;
  // Evaluated epochs: all items encoded with nearest codes.
  double collision_rate = 0;        // (n - distinct full codes) / n
  std::vector<int64_t> codes_used;  // per level, distinct codes taken
};

struct RqVaeTrainResult {
  RqVae model;
  int model_epoch = 0;  // the epoch whose model was kept (options.keep)
  std::vector<RqVaeEpochReport> epochs;
};

// Trains on x (n x d). Errors: options as ValidateRqVaeOptions (d the input dim);
// INVALID_ARGUMENT for n < 1, non-finite data, or k-means initialisation with a level's k larger
// than the rows it fits on (the first batch, min(batch_size, n), or n); ABORTED when a batch's
// loss is not finite (naming the epoch, the batch and the loss) or an epoch's mean loss explodes
// to over 10^4 times the lowest epoch mean before it; CANCELLED when on_epoch returns false.
// Deterministic for options.seed (any thread count).
absl::StatusOr<RqVaeTrainResult> TrainRqVae(
    const float* x, int64_t n, int64_t d, const RqVaeOptions& options,
    const std::function<bool(const RqVaeEpochReport&)>& on_epoch = {});

// Trainable float parameters of a model of `options` for input_dim (weights, biases, batch
// norm's affine terms, codebooks); options valid.
int64_t RqVaeParameterCount(const RqVaeOptions& options, int64_t input_dim);

// An upper estimate of the bytes TrainRqVae allocates for n rows of input_dim, x itself not
// counted: the parameters four times over (values, gradients, AdamW's two moments) plus the
// kept best model, one batch's activations, gradients and Sinkhorn tables, and per row the
// codes, latents and residuals of an evaluation (and of large_scale_kmeans); options valid.
int64_t RqVaeTrainingBytes(const RqVaeOptions& options, int64_t input_dim, int64_t n);

// Fraction of the n rows of codes (n x levels) that share their full code with an earlier row:
// (n - distinct codes) / n, the seed's collision rate.
double CollisionRate(const int32_t* codes, int64_t n, int64_t levels);

// Semantic IDs from a trained model, as the seed's generate_indices: nearest codes, then the
// items that share a full code are re-assigned at the last level.
struct GenerateIndicesOptions {
  enum class Mode {
    // The seed's: each colliding group alone through Sinkhorn at the last level (epsilon
    // sk_epsilons.back(), or 0.003 when that is 0; sk_iters), rounds while collisions drop, at
    // most max_rounds.
    kSeedSinkhorn,
    // quantd: per prefix (codes of levels 0..L-2), the item of each colliding group nearest its
    // code keeps it, and all the others move together to distinct last-level codes not held by
    // any item of that prefix, at the least total squared distance (exact min-cost assignment):
    // near codes rather than low indices, and never onto a code already taken.
    kExactFreeCodes,
  };
  Mode mode = Mode::kExactFreeCodes;
  int max_rounds = 20;
  int num_threads = 0;
};

struct GeneratedIndices {
  std::vector<int32_t> codes;     // n x L
  int64_t collisions_before = 0;  // n - distinct full codes, nearest codes
  int64_t collisions_after = 0;   // the same after re-assignment
  int64_t moved = 0;              // items whose last-level code changed
  int rounds = 0;
};

absl::StatusOr<GeneratedIndices> GenerateIndices(const RqVae& model, const float* x, int64_t n,
                                                 const GenerateIndicesOptions& options = {});

}  // namespace quantd

#endif  // QUANTD_CORE_RQVAE_H_
