// A committed tokenizer version: the residual quantizer plus what it was trained with, and its
// on-disk blob format: "QTOK" magic, format version (uint32), CRC-32 of the payload (uint32),
// then a serialized quantd.storage.TokenizerRecord whose `model` holds the quantizer as core
// serializes it (ResidualQuantizer::Serialize), or, for RQ-VAE, whose `rqvae_model` holds the
// model's tensors (the quantizer is made of its codebooks). Blobs of earlier releases carry raw
// `codebooks` instead, and are still read. A blob that fails any check is DATA_LOSS.
//
// RQ-KMeans quantizes the (cosine: normalised) vectors themselves; RQ-VAE quantizes their
// latents, the encoder MLP's output (e_dim wide). Everything after that step (nearest and
// capacity assignment, occupancy, drift errors) works in that quantizer space.
#ifndef QUANTD_SERVER_TOKENIZER_H_
#define QUANTD_SERVER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/mlp.h"
#include "core/residual_quantizer.h"
#include "core/rqvae.h"
#include "core/sid_assignment.h"
#include "quantd/storage/records.pb.h"
#include "quantd/v1/quantd.pb.h"
#include "server/sid_ledger.h"

namespace quantd {

// The cluster-size bounds in force per level of a tokenizer with `record` and codebook_sizes
// for a collection of `items` items: balanced levels keep the training slack around
// items / K (record.balance_slack set) or scale the trained bounds by items / trained_items;
// plain levels {0, 0}.
std::vector<SizeBounds> BoundsInForceOf(const storage::TokenizerRecord& record,
                                        absl::Span<const int64_t> codebook_sizes, int64_t items);
// The capacity limits of capacity assignment for `items` items (the size_max of
// BoundsInForceOf per balanced level, the suffix cap); unbounded for nearest assignment.
CapacityLimits CapacityLimitsOf(const storage::TokenizerRecord& record,
                                absl::Span<const int64_t> codebook_sizes, int64_t items);

// What a tokenizer version encodes with: a residual quantizer over the vectors (RQ-KMeans), or
// an RQ-VAE and the quantizer over its latents made of its codebooks.
struct TokenizerModel {
  ResidualQuantizer quantizer;
  std::shared_ptr<const RqVae> rqvae;  // null for RQ-KMeans

  // The quantizer of an RQ-VAE's codebooks, with the model.
  static absl::StatusOr<TokenizerModel> OfRqVae(RqVae model);
  // Rows x (n x input dimension, prepared: normalised for cosine) in quantizer space: x itself,
  // or the RQ-VAE latents (n x e_dim) in *buffer.
  const float* QuantizerRows(const float* x, int64_t n, std::vector<float>* buffer) const;
  // Mean squared error per component of the reconstruction of prepared rows x (n x input
  // dimension) from their codes (n x L): the sum of codewords, or the RQ-VAE's decoder output.
  double ReconstructionMse(const float* x, int64_t n, const int32_t* codes) const;
  int64_t input_dimension() const {
    return rqvae != nullptr ? rqvae->input_dim() : quantizer.dimension();
  }
};

class Tokenizer {
 public:
  // `record` holds the metadata; its model, codebooks and rqvae_model fields are cleared (the
  // model holds them).
  Tokenizer(TokenizerModel model, storage::TokenizerRecord record);

  uint32_t version() const { return record_.version(); }
  int64_t levels() const { return quantizer_.levels(); }
  // The width of the quantizer space: the collection's dimension, or an RQ-VAE's e_dim.
  int64_t dimension() const { return quantizer_.dimension(); }
  // The width of the vectors it encodes: the collection's dimension.
  int64_t input_dimension() const { return model().input_dimension(); }
  const ResidualQuantizer& quantizer() const { return quantizer_; }
  // The RQ-VAE, null for RQ-KMeans.
  const RqVae* rqvae() const { return rqvae_.get(); }
  TokenizerModel model() const { return TokenizerModel{quantizer_, rqvae_}; }
  v1::TokenizerMethod method() const {
    return rqvae_ != nullptr ? v1::TOKENIZER_METHOD_RQ_VAE : v1::TOKENIZER_METHOD_RQ_KMEANS;
  }
  const storage::TokenizerRecord& record() const { return record_; }

  // Codes (n x L) of raw vectors x (n x d); normalises them first for cosine collections.
  void Encode(const float* x, int64_t n, int32_t* codes) const;

  // How items that were not in the training get their codes (v1::Assignment; records of
  // earlier releases: nearest).
  v1::Assignment assignment() const;
  // CapacityLimitsOf and BoundsInForceOf for this tokenizer.
  CapacityLimits LimitsFor(int64_t items) const;
  std::vector<SizeBounds> BoundsFor(int64_t items) const;

  // Codes for raw vectors x (n x d) as new items of a collection that will hold `items` items:
  // each row in order takes capacity in `occupancy` (its tuple is added) under the assignment
  // rule. INVALID_ARGUMENT for bad rows.
  absl::StatusOr<SidAssignment> AssignNew(const float* x, int64_t n, int64_t items,
                                          SidOccupancy* occupancy) const;
  // What each row of x would get as the next new item; `occupancy` is only read.
  absl::StatusOr<SidAssignment> Propose(const float* x, int64_t n, int64_t items,
                                        const SidOccupancy& occupancy) const;

  // Heap bytes of the codebooks (plain and packed for the product kernel) and the capacity
  // assignment's inter-level tables, estimated.
  int64_t assigner_bytes() const;
  // assigner_bytes() plus the ledger's counts: what this version holds in memory.
  int64_t memory_bytes() const;

  // The live occupancy and drift of this version's SIDs (see server/sid_ledger.h).
  SidLedger& ledger() const { return *ledger_; }

  std::string Serialize() const;
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> Parse(const std::string& blob);

 private:
  // Raw rows (n x input dimension) in quantizer space: normalised for cosine collections, then
  // through the RQ-VAE's encoder; x itself or a copy in `buffer`.
  const float* Prepared(const float* x, int64_t n, std::vector<float>* buffer) const;
  SidAssignOptions AssignOptions() const;
  // Nearest assignment of prepared rows: ResidualQuantizer::Encode's greedy codes.
  SidAssignment Nearest(const float* x, int64_t n) const;

  ResidualQuantizer quantizer_;
  std::shared_ptr<const RqVae> rqvae_;
  std::unique_ptr<const PackedMlp> latent_encoder_;  // rqvae_'s encoder, packed for serving
  storage::TokenizerRecord record_;
  SidAssigner assigner_;  // over quantizer_
  std::unique_ptr<SidLedger> ledger_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKENIZER_H_
