#include "server/tokenizer.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/vectors.h"
#include "server/model_blob.h"

namespace quantd {
namespace {

constexpr BlobFormat kTokenizerBlob{"QTOK", 1, "tokenizer"};

// The quantizer of a blob written before TokenizerRecord.model: one `codebooks` entry per level
// of codebook_sizes[l] x dimension float32 values.
absl::StatusOr<ResidualQuantizer> FromRecordCodebooks(const storage::TokenizerRecord& record) {
  const int64_t d = record.dimension();
  std::vector<int64_t> ks;
  std::vector<std::vector<float>> codebooks;
  for (int l = 0; l < record.codebooks_size(); ++l) {
    if (l >= record.codebook_sizes_size()) break;
    ks.push_back(record.codebook_sizes(l));
    const std::string& bytes = record.codebooks(l);
    if (bytes.size() != static_cast<size_t>(ks.back() * d) * sizeof(float)) {
      return absl::DataLossError(
          absl::StrFormat("tokenizer codebook %d has %d bytes", l, bytes.size()));
    }
    std::vector<float> values(bytes.size() / sizeof(float));
    std::memcpy(values.data(), bytes.data(), bytes.size());
    codebooks.push_back(std::move(values));
  }
  return ResidualQuantizer::FromCodebooks(d, std::move(ks), std::move(codebooks));
}

}  // namespace

Tokenizer::Tokenizer(ResidualQuantizer quantizer, storage::TokenizerRecord record)
    : quantizer_(std::move(quantizer)), record_(std::move(record)) {
  record_.clear_codebooks();
  record_.clear_model();
}

void Tokenizer::Encode(const float* x, int64_t n, int32_t* codes) const {
  if (record_.normalize()) {
    const std::vector<float> normalized = NormalizedRows(x, n, dimension());
    quantizer_.Encode(normalized.data(), n, codes, /*num_threads=*/1);
  } else {
    quantizer_.Encode(x, n, codes, /*num_threads=*/1);
  }
}

std::string Tokenizer::Serialize() const {
  storage::TokenizerRecord record = record_;
  record.set_model(quantizer_.Serialize());
  return FrameModelBlob(kTokenizerBlob, record);
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::Parse(const std::string& blob) {
  storage::TokenizerRecord record;
  if (absl::Status s = ParseModelBlob(kTokenizerBlob, blob, &record); !s.ok()) return s;
  absl::StatusOr<ResidualQuantizer> quantizer =
      record.model().empty() ? FromRecordCodebooks(record)
                             : ResidualQuantizer::Deserialize(record.model());
  if (!quantizer.ok()) {
    return absl::DataLossError(absl::StrCat("tokenizer blob: ", quantizer.status().message()));
  }
  // The metadata others read (dimension, codebook sizes) must describe the model.
  const std::vector<int64_t>& ks = quantizer->codebook_sizes();
  bool same_sizes = static_cast<int64_t>(record.codebook_sizes_size()) == quantizer->levels();
  for (int l = 0; same_sizes && l < record.codebook_sizes_size(); ++l) {
    same_sizes = record.codebook_sizes(l) == ks[l];
  }
  if (record.dimension() != quantizer->dimension() || !same_sizes) {
    return absl::DataLossError(absl::StrFormat(
        "tokenizer blob: the record says dimension %d and %d levels, the model %d and %d",
        record.dimension(), record.codebook_sizes_size(), quantizer->dimension(),
        quantizer->levels()));
  }
  return std::make_shared<const Tokenizer>(std::move(*quantizer), std::move(record));
}

}  // namespace quantd
