// PyTorch checkpoints of the seed's RQ-VAE pipeline (LC-Rec's index/, issue #13 part 5), read
// from bytes in memory without Python and without running any pickle code.
//
// Format: what torch.save writes since torch 1.6, a ZIP archive (stored members) whose entries
// share one folder, "archive/" in torch 2.x and the file's stem in 1.x: data.pkl (the pickled
// object), data/<key> (one raw little-endian storage per key), version, and optionally
// byteorder, .data/serialization_id, .format_version, .storage_alignment. data.pkl is run by
// the restricted interpreter of io/pickle.h, which allows these names only:
//   collections.OrderedDict                  (empty, filled by SETITEMS; BUILD's state, the
//                                             state dict's _metadata, is ignored)
//   argparse.Namespace                       (NEWOBJ, then BUILD with a dict of attributes)
//   torch._utils._rebuild_tensor_v2          (storage, offset, size, stride, requires_grad,
//                                             backward_hooks (must be empty)[, metadata])
//   torch._utils._rebuild_parameter          (data, requires_grad, backward_hooks)
//   torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool,ComplexFloat,
//          ComplexDouble,Untyped}Storage     (only inside a persistent id, never called)
//   torch.device                             (becomes its string, "cpu" or "cuda:0")
//   _codecs.encode                           (str, "latin1"): how protocol 2 pickles bytes
// and a persistent id ('storage', <storage type>, key, location, numel) for each storage.
// Any other global (GLOBAL, STACK_GLOBAL, INST) is refused at once with INVALID_ARGUMENT
// "pickle global <module>.<name> is not allowed"; the legacy format (torch < 1.6 or
// _use_new_zipfile_serialization=False) and TorchScript archives are refused by name.
//
// Bounds: besides the interpreter's (io/pickle.h), a tensor's highest element (offset +
// sum (size_i - 1) stride_i) must lie in its storage, whose member must hold exactly numel
// elements; a tensor may not have more elements than its storage (expanded views), and the
// materialised state dict may not exceed 4 times the input plus 1 MiB.
#ifndef QUANTD_IO_TORCH_CHECKPOINT_H_
#define QUANTD_IO_TORCH_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/rqvae.h"

namespace quantd {

enum class TorchDtype {
  kFloat32,
  kFloat64,
  kFloat16,
  kBFloat16,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool,
  kComplex64,
  kComplex128,
};

// "torch.float32", "torch.int64", ...
absl::string_view TorchDtypeName(TorchDtype dtype);

// A tensor of the state dict, materialised contiguous (row-major) whatever its stride and
// storage offset were in the file. Only float32 and int64 carry values; other dtypes keep
// their shape and dtype alone (RqVaeFromCheckpoint refuses them as weights).
struct TorchTensor {
  TorchDtype dtype = TorchDtype::kFloat32;
  std::vector<int64_t> shape;  // empty for a 0-d tensor
  std::vector<float> floats;   // kFloat32: numel() values
  std::vector<int64_t> ints;   // kInt64: numel() values
  int64_t numel() const;
};

// An attribute of the pickled argparse.Namespace: a scalar, or a list / tuple of scalars.
// Anything else (a dict, bytes, a nested list, a tensor, an int wider than int64) is kOther,
// `text` saying what it was; it is an error only if RqVaeFromCheckpoint needs the attribute.
struct TorchArg {
  enum class Kind { kNone, kBool, kInt, kDouble, kString, kList, kTuple, kOther };
  Kind kind = Kind::kNone;
  bool bool_value = false;
  int64_t int_value = 0;
  double double_value = 0;
  std::string text;             // kString: the value; kOther: a description
  std::vector<TorchArg> items;  // kList, kTuple: scalars (or kOther)
  // Python-like: None, True, 3, 0.25, 'mse', [64, 32].
  std::string DebugString() const;
};

struct TorchCheckpoint {
  // The archive's folder ("archive" with torch 2.x, the file stem with 1.x) and version.
  std::string archive_name;
  int64_t version = 0;
  // False for a bare state dict (torch.save(model.state_dict())): no args nor training fields.
  bool has_args = false;
  // The Namespace's attributes in pickled order.
  std::vector<std::pair<std::string, TorchArg>> args;
  std::optional<int64_t> epoch;
  std::optional<double> best_loss;
  std::optional<double> best_collision_rate;
  // Name -> tensor in the state dict's order (a name given twice keeps its first place and its
  // last value, as a Python dict).
  std::vector<std::pair<std::string, TorchTensor>> state_dict;
  // Whether an "optimizer" entry was there: parsed (it must be as safe as the rest), ignored.
  bool has_optimizer = false;

  const TorchArg* FindArg(absl::string_view name) const;
  const TorchTensor* FindTensor(absl::string_view name) const;
};

// Parses a torch.save file. The top-level object must be a dict with a "state_dict" entry (an
// OrderedDict or dict of str -> tensor) and optionally "args" (an argparse.Namespace), "epoch"
// (int), "best_loss" and "best_collision_rate" (float or int), "optimizer" (ignored), other
// entries ignored; or a bare state dict (a dict of str -> tensor). Every error is
// INVALID_ARGUMENT starting "torch checkpoint: " and naming the member, opcode, global,
// tensor or field at fault.
absl::StatusOr<TorchCheckpoint> ParseTorchCheckpoint(absl::string_view bytes);

// The model options of a checkpoint's args (the seed's main.py names): layers, e_dim,
// num_emb_list (required), beta, quant_loss_weight, sk_epsilons, sk_iters, bn, dropout_prob,
// activation (optional; missing ones keep RqVaeOptions' defaults, activation "relu" as the
// seed's MLPLayers). As the seed's ResidualVectorQuantizer zips num_emb_list with sk_epsilons,
// a shorter sk_epsilons gives as many levels as it has entries (and a longer one is cut).
// loss_type is read but ignored: it only changes training's reconstruction loss, never
// inference. Training-only args (lr, epochs, kmeans_*, ...) are not mapped: the options keep
// quantd's defaults for them. bn is taken as the args say: the seed's scripts pass
// `--bn False`, which argparse's type=bool turns into True, and such a model does have batch
// norm. INVALID_ARGUMENT naming the arg: missing (for required ones), of the wrong type, or
// no args at all (a bare state dict: use the overload with options).
absl::StatusOr<RqVaeOptions> RqVaeOptionsFromCheckpoint(const TorchCheckpoint& checkpoint);

// The model of a checkpoint for items of input_dim: options from its args, every parameter of
// RqVae::Parameters() copied from the state dict by name. INVALID_ARGUMENT naming the tensor
// when one is missing ("state_dict lacks encoder.mlp_layers.4.weight"), has another shape
// ("encoder.mlp_layers.1.weight has shape [64, 30], the model needs [64, 32]"), is not float32,
// holds a non-finite value, or when the state dict has a tensor the model does not (other than
// batch norm's num_batches_tracked); when input_dim differs from the first encoder weight's
// (both named); when args.bn disagrees with the presence of batch-norm tensors (said so).
absl::StatusOr<RqVae> RqVaeFromCheckpoint(const TorchCheckpoint& checkpoint, int64_t input_dim);
// The same with explicit options (for a bare state dict, or to override the args).
absl::StatusOr<RqVae> RqVaeFromCheckpoint(const TorchCheckpoint& checkpoint, int64_t input_dim,
                                          const RqVaeOptions& options);

}  // namespace quantd

#endif  // QUANTD_IO_TORCH_CHECKPOINT_H_
