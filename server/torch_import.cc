#include "server/torch_import.h"

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "io/torch_checkpoint.h"
#include "server/rqvae_model.h"

namespace quantd {

absl::StatusOr<RqVae> RqVaeFromTorchImport(const v1::ImportTokenizerRequest& request,
                                           int64_t dimension, v1::RqVaeStats* stats) {
  auto checkpoint = ParseTorchCheckpoint(request.torch_checkpoint());
  if (!checkpoint.ok()) return checkpoint.status();  // "torch checkpoint: ..." naming the fault
  absl::StatusOr<RqVae> model = absl::InternalError("no model");
  if (checkpoint->has_args) {
    model = RqVaeFromCheckpoint(*checkpoint, dimension);
  } else {
    // A bare state dict: the architecture comes with the request.
    const v1::TokenizerManifest& manifest = request.manifest();
    if (!manifest.parameters().has_rqvae() || manifest.codebook_sizes().empty()) {
      return absl::InvalidArgumentError(
          "torch_checkpoint is a bare state dict (no args): give its architecture in "
          "manifest.parameters.rqvae (layers, e_dim, bn, ...) and manifest.codebook_sizes");
    }
    const std::vector<int64_t> sizes(manifest.codebook_sizes().begin(),
                                     manifest.codebook_sizes().end());
    auto options = RqVaeOptionsFromProto(manifest.parameters().rqvae(), sizes, dimension,
                                         /*training_items=*/0, /*seed=*/0);
    if (!options.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest.parameters.", options.status().message()));
    }
    model = RqVaeFromCheckpoint(*checkpoint, dimension, *options);
  }
  if (!model.ok()) return model.status();
  stats->set_source("torch_checkpoint");
  if (checkpoint->epoch && *checkpoint->epoch >= 0 && *checkpoint->epoch <= UINT32_MAX) {
    stats->set_epochs(static_cast<uint32_t>(*checkpoint->epoch));
    stats->set_model_epoch(static_cast<uint32_t>(*checkpoint->epoch));
  }
  if (checkpoint->best_loss) stats->set_loss(*checkpoint->best_loss);
  if (checkpoint->best_collision_rate) stats->set_collision_rate(*checkpoint->best_collision_rate);
  return model;
}

}  // namespace quantd
