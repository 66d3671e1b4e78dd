#include "server/tokenizer.h"

#include <zlib.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quantd {
namespace {

constexpr char kMagic[4] = {'Q', 'T', 'O', 'K'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kHeaderBytes = 12;

uint32_t Crc32(const std::string& bytes) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

}  // namespace

Tokenizer::Tokenizer(ResidualQuantizer quantizer, storage::TokenizerRecord record)
    : quantizer_(std::move(quantizer)), record_(std::move(record)) {
  record_.clear_codebooks();
}

std::vector<float> NormalizedRows(const float* x, int64_t n, int64_t d) {
  std::vector<float> out(x, x + n * d);
  for (int64_t i = 0; i < n; ++i) {
    float* row = out.data() + i * d;
    double norm = 0;
    for (int64_t j = 0; j < d; ++j) norm += static_cast<double>(row[j]) * row[j];
    if (norm > 0) {
      const float scale = static_cast<float>(1.0 / std::sqrt(norm));
      for (int64_t j = 0; j < d; ++j) row[j] *= scale;
    }
  }
  return out;
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
  for (int64_t l = 0; l < quantizer_.levels(); ++l) {
    const std::vector<float>& codebook = quantizer_.codebook(l);
    record.add_codebooks(std::string(reinterpret_cast<const char*>(codebook.data()),
                                     codebook.size() * sizeof(float)));
  }
  const std::string payload = record.SerializeAsString();
  std::string blob(kMagic, 4);
  const uint32_t header[2] = {kFormatVersion, Crc32(payload)};
  blob.append(reinterpret_cast<const char*>(header), sizeof(header));
  blob += payload;
  return blob;
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::Parse(const std::string& blob) {
  if (blob.size() < kHeaderBytes || std::memcmp(blob.data(), kMagic, 4) != 0) {
    return absl::DataLossError("tokenizer blob has no QTOK magic");
  }
  uint32_t header[2];
  std::memcpy(header, blob.data() + 4, sizeof(header));
  if (header[0] != kFormatVersion) {
    return absl::DataLossError(
        absl::StrFormat("tokenizer blob format %d is not %d", header[0], kFormatVersion));
  }
  const std::string payload = blob.substr(kHeaderBytes);
  if (Crc32(payload) != header[1]) {
    return absl::DataLossError("tokenizer blob checksum mismatch");
  }
  storage::TokenizerRecord record;
  if (!record.ParseFromString(payload)) {
    return absl::DataLossError("tokenizer blob payload does not parse");
  }
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
  auto quantizer = ResidualQuantizer::FromCodebooks(d, std::move(ks), std::move(codebooks));
  if (!quantizer.ok()) {
    return absl::DataLossError(absl::StrCat("tokenizer blob: ", quantizer.status().message()));
  }
  return std::make_shared<const Tokenizer>(std::move(*quantizer), std::move(record));
}

}  // namespace quantd
