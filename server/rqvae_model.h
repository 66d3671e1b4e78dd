// The RQ-VAE tokenizer's API shapes: TrainTokenizerRequest.rqvae (v1::RqVaeOptions) to core's
// RqVaeOptions with the documented defaults and limits, and a model (core RqVae) to and from
// v1::RqVaeModel, the named tensors export, import and the tokenizer blob carry.
#ifndef QUANTD_SERVER_RQVAE_MODEL_H_
#define QUANTD_SERVER_RQVAE_MODEL_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/rqvae.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd {

// The options of an RQ-VAE training of `codebook_sizes` on `training_items` rows of
// `dimension`, seeded by `seed`, with every default of v1::RqVaeOptions filled in.
// INVALID_ARGUMENT naming the field ("rqvae.layers[1]") and its value for anything out of range,
// including codebooks larger than the rows their k-means initialisation sees.
absl::StatusOr<RqVaeOptions> RqVaeOptionsFromProto(const v1::RqVaeOptions& proto,
                                                   absl::Span<const int64_t> codebook_sizes,
                                                   int64_t dimension, int64_t training_items,
                                                   uint64_t seed);

// The options as the API states them (defaults explicit); codebook sizes and seed are the
// request's own fields and not in it.
v1::RqVaeOptions RqVaeOptionsToProto(const RqVaeOptions& options);

// The model's tensors by PyTorch name, with its input dimension and options.
v1::RqVaeModel RqVaeModelToProto(const RqVae& model);

// A model from `proto` (the architecture from proto.options, every tensor it needs present
// once, shaped as it needs, finite; no others), whose codebooks have `codebook_sizes` rows and
// whose input is `dimension` wide. INVALID_ARGUMENT prefixed with `field` ("rqvae") naming the
// tensor or option.
absl::StatusOr<RqVae> RqVaeModelFromProto(const v1::RqVaeModel& proto,
                                          absl::Span<const int64_t> codebook_sizes,
                                          int64_t dimension, absl::string_view field);

}  // namespace quantd

#endif  // QUANTD_SERVER_RQVAE_MODEL_H_
