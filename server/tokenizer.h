// A committed tokenizer version: the residual quantizer plus what it was trained with, and its
// on-disk blob format: "QTOK" magic, format version (uint32), CRC-32 of the payload (uint32),
// then a serialized quantd.storage.TokenizerRecord whose `model` holds the quantizer as core
// serializes it (ResidualQuantizer::Serialize). Blobs of earlier releases carry raw
// `codebooks` instead, and are still read. A blob that fails any check is DATA_LOSS.
#ifndef QUANTD_SERVER_TOKENIZER_H_
#define QUANTD_SERVER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/residual_quantizer.h"
#include "quantd/storage/records.pb.h"

namespace quantd {

class Tokenizer {
 public:
  // `record` holds the metadata; its model and codebooks fields are cleared (the quantizer
  // holds them).
  Tokenizer(ResidualQuantizer quantizer, storage::TokenizerRecord record);

  uint32_t version() const { return record_.version(); }
  int64_t levels() const { return quantizer_.levels(); }
  int64_t dimension() const { return quantizer_.dimension(); }
  const ResidualQuantizer& quantizer() const { return quantizer_; }
  const storage::TokenizerRecord& record() const { return record_; }

  // Codes (n x L) of raw vectors x (n x d); normalises them first for cosine collections.
  void Encode(const float* x, int64_t n, int32_t* codes) const;

  std::string Serialize() const;
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> Parse(const std::string& blob);

 private:
  ResidualQuantizer quantizer_;
  storage::TokenizerRecord record_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKENIZER_H_
