#include "server/rqvae_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace quantd {
namespace {

constexpr int kMaxLayers = 8;
constexpr int64_t kMaxLayerSize = 8192;
constexpr int64_t kMaxEpochs = 100000;
constexpr int64_t kMaxBatchSize = 65536;
constexpr int kMaxIterations = 1000;
// The default number of epochs aims at this many optimizer steps.
constexpr int64_t kDefaultSteps = 3000;
constexpr int kMinDefaultEpochs = 20;
constexpr int kMaxDefaultEpochs = 1000;

template <typename... Args>
absl::Status Invalid(const absl::FormatSpec<Args...>& format, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrFormat(format, args...));
}

RqVaeOptions::Keep KeepOf(v1::RqVaeCheckpoint keep) {
  switch (keep) {
    case v1::RQ_VAE_CHECKPOINT_BEST_LOSS:
      return RqVaeOptions::Keep::kBestLoss;
    case v1::RQ_VAE_CHECKPOINT_BEST_USAGE:
      return RqVaeOptions::Keep::kBestUsage;
    case v1::RQ_VAE_CHECKPOINT_LAST:
      return RqVaeOptions::Keep::kLast;
    default:
      return RqVaeOptions::Keep::kBestCollision;
  }
}

v1::RqVaeCheckpoint CheckpointOf(RqVaeOptions::Keep keep) {
  switch (keep) {
    case RqVaeOptions::Keep::kBestLoss:
      return v1::RQ_VAE_CHECKPOINT_BEST_LOSS;
    case RqVaeOptions::Keep::kBestUsage:
      return v1::RQ_VAE_CHECKPOINT_BEST_USAGE;
    case RqVaeOptions::Keep::kLast:
      return v1::RQ_VAE_CHECKPOINT_LAST;
    case RqVaeOptions::Keep::kBestCollision:
      break;
  }
  return v1::RQ_VAE_CHECKPOINT_BEST_COLLISION;
}

}  // namespace

absl::StatusOr<RqVaeOptions> RqVaeOptionsFromProto(const v1::RqVaeOptions& proto,
                                                   absl::Span<const int64_t> codebook_sizes,
                                                   int64_t dimension, int64_t training_items,
                                                   uint64_t seed) {
  RqVaeOptions options;
  options.num_emb_list.assign(codebook_sizes.begin(), codebook_sizes.end());
  const auto levels = static_cast<int64_t>(codebook_sizes.size());
  options.seed = seed;
  if (proto.layers_size() > kMaxLayers) {
    return Invalid("rqvae.layers has %d hidden layers; at most %d", proto.layers_size(),
                   kMaxLayers);
  }
  if (proto.layers_size() > 0) options.layers.assign(proto.layers().begin(), proto.layers().end());
  for (size_t i = 0; i < options.layers.size(); ++i) {
    if (options.layers[i] < 1 || options.layers[i] > kMaxLayerSize) {
      return Invalid("rqvae.layers[%d] = %d is outside 1..%d", i, options.layers[i], kMaxLayerSize);
    }
  }
  options.e_dim = proto.e_dim() > 0 ? proto.e_dim() : std::min<int64_t>(32, dimension);
  if (options.e_dim > dimension) {
    return Invalid("rqvae.e_dim %d exceeds the collection's dimension %d", proto.e_dim(),
                   dimension);
  }
  if (proto.has_beta()) options.beta = proto.beta();
  if (proto.has_quant_loss_weight()) options.quant_loss_weight = proto.quant_loss_weight();
  if (proto.sk_epsilons_size() > 0) {
    if (proto.sk_epsilons_size() != levels) {
      return Invalid("rqvae.sk_epsilons has %d values for %d levels", proto.sk_epsilons_size(),
                     levels);
    }
    options.sk_epsilons.assign(proto.sk_epsilons().begin(), proto.sk_epsilons().end());
  } else {
    options.sk_epsilons.assign(static_cast<size_t>(levels), 0.0);
    options.sk_epsilons.back() = 0.003;
  }
  if (proto.sk_iters() > kMaxIterations) {
    return Invalid("rqvae.sk_iters %d is outside 1..%d", proto.sk_iters(), kMaxIterations);
  }
  if (proto.sk_iters() > 0) options.sk_iters = static_cast<int>(proto.sk_iters());
  options.dropout_prob = proto.dropout_prob();
  options.bn = proto.bn();
  if (!proto.activation_fn().empty()) options.activation = proto.activation_fn();
  if (proto.has_lr()) {
    if (!(proto.lr() > 0 && proto.lr() <= 1)) {
      return Invalid("rqvae.lr %g is outside (0, 1]", proto.lr());
    }
    options.lr = proto.lr();
  }
  if (proto.has_weight_decay()) options.weight_decay = proto.weight_decay();
  if (!proto.lr_scheduler_type().empty()) options.lr_scheduler_type = proto.lr_scheduler_type();
  if (proto.batch_size() > kMaxBatchSize) {
    return Invalid("rqvae.batch_size %d is outside 1..%d", proto.batch_size(), kMaxBatchSize);
  }
  const int64_t rows = std::max<int64_t>(training_items, 1);
  options.batch_size = proto.batch_size() > 0 ? proto.batch_size() : std::min<int64_t>(1024, rows);
  if (proto.epochs() > kMaxEpochs) {
    return Invalid("rqvae.epochs %d is outside 1..%d", proto.epochs(), kMaxEpochs);
  }
  if (proto.epochs() > 0) {
    options.epochs = static_cast<int>(proto.epochs());
  } else {
    const int64_t batches = (rows + options.batch_size - 1) / options.batch_size;
    options.epochs = static_cast<int>(std::clamp<int64_t>((kDefaultSteps + batches - 1) / batches,
                                                          kMinDefaultEpochs, kMaxDefaultEpochs));
  }
  options.warmup_epochs =
      proto.has_warmup_epochs()
          ? static_cast<int>(std::min<uint32_t>(proto.warmup_epochs(), 1u << 30))
          : std::min(50, options.epochs / 10);
  if (proto.has_kmeans_init()) options.kmeans_init = proto.kmeans_init();
  options.large_scale_kmeans = proto.large_scale_kmeans();
  if (proto.kmeans_iters() > kMaxIterations) {
    return Invalid("rqvae.kmeans_iters %d is outside 1..%d", proto.kmeans_iters(), kMaxIterations);
  }
  if (proto.kmeans_iters() > 0) options.kmeans_iters = static_cast<int>(proto.kmeans_iters());
  if (proto.has_revive_dead_codes()) options.revive_dead_codes = proto.revive_dead_codes();
  if (proto.eval_step() > static_cast<uint32_t>(options.epochs)) {
    return Invalid("rqvae.eval_step %d exceeds epochs %d", proto.eval_step(), options.epochs);
  }
  options.eval_step = proto.eval_step() > 0 ? static_cast<int>(proto.eval_step()) : 1;
  if (!v1::RqVaeCheckpoint_IsValid(proto.keep())) {
    return Invalid("rqvae.keep %d is not an RqVaeCheckpoint value", static_cast<int>(proto.keep()));
  }
  options.keep = KeepOf(proto.keep());
  if (!v1::IndexGeneration_IsValid(proto.index_generation())) {
    return Invalid("rqvae.index_generation %d is not an IndexGeneration value",
                   static_cast<int>(proto.index_generation()));
  }
  options.num_threads = 0;
  if (absl::Status s = ValidateRqVaeOptions(options, dimension); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("rqvae.", s.message()));
  }
  // k-means initialisation fits each codebook on the first batch (or all rows).
  if (training_items > 0 && options.kmeans_init) {
    const int64_t fit_rows =
        options.large_scale_kmeans ? training_items : std::min(options.batch_size, training_items);
    for (int64_t l = 0; l < levels; ++l) {
      if (codebook_sizes[l] > fit_rows) {
        return Invalid(
            "codebook_sizes[%d] = %d exceeds the %d rows its k-means initialisation fits on (%s)",
            l, codebook_sizes[l], fit_rows,
            options.large_scale_kmeans ? "every training item"
                                       : "the first batch; raise rqvae.batch_size or set "
                                         "rqvae.large_scale_kmeans");
      }
    }
  }
  return options;
}

v1::RqVaeOptions RqVaeOptionsToProto(const RqVaeOptions& options) {
  v1::RqVaeOptions proto;
  for (int64_t size : options.layers) proto.add_layers(static_cast<uint32_t>(size));
  proto.set_e_dim(static_cast<uint32_t>(options.e_dim));
  proto.set_beta(options.beta);
  proto.set_quant_loss_weight(options.quant_loss_weight);
  for (double epsilon : options.sk_epsilons) proto.add_sk_epsilons(epsilon);
  if (options.sk_epsilons.empty()) {  // core's "0 at every level", explicit (unset is 0.003 last)
    for (size_t l = 0; l < options.num_emb_list.size(); ++l) proto.add_sk_epsilons(0);
  }
  proto.set_sk_iters(static_cast<uint32_t>(options.sk_iters));
  proto.set_dropout_prob(options.dropout_prob);
  proto.set_bn(options.bn);
  proto.set_activation_fn(options.activation);
  proto.set_lr(options.lr);
  proto.set_weight_decay(options.weight_decay);
  proto.set_warmup_epochs(static_cast<uint32_t>(options.warmup_epochs));
  proto.set_lr_scheduler_type(options.lr_scheduler_type);
  proto.set_epochs(static_cast<uint32_t>(options.epochs));
  proto.set_batch_size(static_cast<uint32_t>(options.batch_size));
  proto.set_kmeans_init(options.kmeans_init);
  proto.set_large_scale_kmeans(options.large_scale_kmeans);
  proto.set_kmeans_iters(static_cast<uint32_t>(options.kmeans_iters));
  proto.set_revive_dead_codes(options.revive_dead_codes);
  proto.set_eval_step(static_cast<uint32_t>(options.eval_step));
  proto.set_keep(CheckpointOf(options.keep));
  return proto;
}

v1::RqVaeModel RqVaeModelToProto(const RqVae& model) {
  v1::RqVaeModel proto;
  proto.set_input_dim(static_cast<uint32_t>(model.input_dim()));
  *proto.mutable_options() = RqVaeOptionsToProto(model.options());
  RqVae copy = model;  // Parameters() hands out writable pointers
  for (const RqVaeParameter& param : copy.Parameters()) {
    v1::Tensor* tensor = proto.add_tensors();
    tensor->set_name(param.name);
    int64_t size = 1;
    for (int64_t extent : param.shape) {
      tensor->add_shape(extent);
      size *= extent;
    }
    tensor->mutable_values()->Add(param.data, param.data + size);
  }
  return proto;
}

absl::StatusOr<RqVae> RqVaeModelFromProto(const v1::RqVaeModel& proto,
                                          absl::Span<const int64_t> codebook_sizes,
                                          int64_t dimension, absl::string_view field) {
  if (proto.input_dim() != static_cast<uint64_t>(dimension)) {
    return Invalid("%s.input_dim %d does not match the collection's dimension %d", field,
                   proto.input_dim(), dimension);
  }
  // The architecture only: training-only options are not checked against any data.
  auto options = RqVaeOptionsFromProto(proto.options(), codebook_sizes, dimension,
                                       /*training_items=*/0, /*seed=*/0);
  if (!options.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".options: ", options.status().message()));
  }
  auto model = RqVae::Create(dimension, *options);
  if (!model.ok()) return model.status();
  absl::flat_hash_map<std::string, const v1::Tensor*> given;
  for (const v1::Tensor& tensor : proto.tensors()) {
    if (!given.emplace(tensor.name(), &tensor).second) {
      return Invalid("%s: tensor %s is given twice", field, tensor.name());
    }
  }
  const std::vector<RqVaeParameter> params = model->Parameters();
  for (const RqVaeParameter& param : params) {
    auto found = given.find(param.name);
    if (found == given.end()) {
      return Invalid("%s: tensor %s is missing (the architecture needs it, shape [%s])", field,
                     param.name, absl::StrJoin(param.shape, ", "));
    }
    const v1::Tensor& tensor = *found->second;
    if (!std::equal(tensor.shape().begin(), tensor.shape().end(), param.shape.begin(),
                    param.shape.end())) {
      return Invalid("%s: tensor %s has shape [%s]; the model needs [%s]", field, param.name,
                     absl::StrJoin(tensor.shape(), ", "), absl::StrJoin(param.shape, ", "));
    }
    int64_t size = 1;
    for (int64_t extent : param.shape) size *= extent;
    if (tensor.values_size() != size) {
      return Invalid("%s: tensor %s has %d values for shape [%s] (%d)", field, param.name,
                     tensor.values_size(), absl::StrJoin(param.shape, ", "), size);
    }
    for (int64_t i = 0; i < size; ++i) {
      if (!std::isfinite(tensor.values(static_cast<int>(i)))) {
        return Invalid("%s: tensor %s value %d is %g, not finite", field, param.name, i,
                       tensor.values(static_cast<int>(i)));
      }
    }
    if (param.buffer && absl::EndsWith(param.name, "running_var")) {
      for (int64_t i = 0; i < size; ++i) {
        if (tensor.values(static_cast<int>(i)) < 0) {
          return Invalid("%s: tensor %s value %d is %g; a variance cannot be negative", field,
                         param.name, i, tensor.values(static_cast<int>(i)));
        }
      }
    }
    std::copy_n(tensor.values().data(), size, param.data);
    given.erase(found);
  }
  if (!given.empty()) {
    return Invalid("%s: tensor %s is not part of the architecture (layers [%s], e_dim %d, bn %s)",
                   field, given.begin()->first, absl::StrJoin(options->layers, ", "),
                   options->e_dim, options->bn ? "true" : "false");
  }
  return model;
}

}  // namespace quantd
