// ImportTokenizer's torch_checkpoint: a PyTorch checkpoint of the seed's RQ-VAE pipeline read
// (io/torch_checkpoint.h, no pickle code run) into a model for a collection.
#ifndef QUANTD_SERVER_TORCH_IMPORT_H_
#define QUANTD_SERVER_TORCH_IMPORT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/rqvae.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd {

// The RQ-VAE of request.torch_checkpoint for a collection of `dimension`: the architecture from
// the checkpoint's args (a bare state dict takes it from manifest.parameters.rqvae), every
// tensor checked. Fills the checkpoint's figures (epoch, best_loss, best_collision_rate) and
// source into *stats. INVALID_ARGUMENT starting "torch_checkpoint: " and saying what is wrong.
absl::StatusOr<RqVae> RqVaeFromTorchImport(const v1::ImportTokenizerRequest& request,
                                           int64_t dimension, v1::RqVaeStats* stats);

}  // namespace quantd

#endif  // QUANTD_SERVER_TORCH_IMPORT_H_
