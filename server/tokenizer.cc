#include "server/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/vectors.h"
#include "server/model_blob.h"
#include "server/rqvae_model.h"

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

// Rows decoded per block when measuring an RQ-VAE's reconstruction.
constexpr int64_t kDecodeBlockRows = 4096;

}  // namespace

absl::StatusOr<TokenizerModel> TokenizerModel::OfRqVae(RqVae model) {
  std::vector<int64_t> ks;
  std::vector<std::vector<float>> codebooks;
  for (int64_t l = 0; l < model.levels(); ++l) {
    ks.push_back(model.codebook_size(l));
    codebooks.push_back(model.codebook(l));
  }
  auto quantizer =
      ResidualQuantizer::FromCodebooks(model.e_dim(), std::move(ks), std::move(codebooks));
  if (!quantizer.ok()) return quantizer.status();
  return TokenizerModel{std::move(*quantizer), std::make_shared<const RqVae>(std::move(model))};
}

const float* TokenizerModel::QuantizerRows(const float* x, int64_t n,
                                           std::vector<float>* buffer) const {
  if (rqvae == nullptr) return x;
  buffer->resize(static_cast<size_t>(n * rqvae->e_dim()));
  rqvae->EncodeLatent(x, n, buffer->data());
  return buffer->data();
}

double TokenizerModel::ReconstructionMse(const float* x, int64_t n, const int32_t* codes) const {
  if (n <= 0) return 0;
  if (rqvae == nullptr) return quantizer.LevelMse(x, n, codes).back();
  const int64_t d = rqvae->input_dim();
  const int64_t levels = rqvae->levels();
  std::vector<float> decoded;
  double sum = 0;
  for (int64_t start = 0; start < n; start += kDecodeBlockRows) {
    const int64_t rows = std::min(kDecodeBlockRows, n - start);
    decoded.resize(static_cast<size_t>(rows * d));
    rqvae->Decode(codes + start * levels, rows, decoded.data());
    for (int64_t i = 0; i < rows * d; ++i) {
      const double diff = static_cast<double>(decoded[i]) - x[start * d + i];
      sum += diff * diff;
    }
  }
  return sum / (static_cast<double>(n) * static_cast<double>(d));
}

Tokenizer::Tokenizer(TokenizerModel model, storage::TokenizerRecord record)
    : quantizer_(std::move(model.quantizer)),
      rqvae_(std::move(model.rqvae)),
      latent_encoder_(rqvae_ != nullptr ? std::make_unique<const PackedMlp>(rqvae_->encoder())
                                        : nullptr),
      record_(std::move(record)),
      assigner_(&quantizer_),
      ledger_(std::make_unique<SidLedger>(quantizer_.codebook_sizes())) {
  record_.clear_codebooks();
  record_.clear_model();
  record_.clear_rqvae_model();
  record_.set_method(method());
}

const float* Tokenizer::Prepared(const float* x, int64_t n, std::vector<float>* buffer) const {
  const float* rows = x;
  std::vector<float> normalized;
  if (record_.normalize()) {
    normalized = NormalizedRows(x, n, input_dimension());
    rows = normalized.data();
  }
  if (latent_encoder_ == nullptr) {
    if (rows == x) return x;
    *buffer = std::move(normalized);
    return buffer->data();
  }
  buffer->resize(static_cast<size_t>(n * dimension()));
  latent_encoder_->Forward(rows, n, buffer->data(), /*num_threads=*/1);
  return buffer->data();
}

void Tokenizer::Encode(const float* x, int64_t n, int32_t* codes) const {
  std::vector<float> buffer;
  quantizer_.Encode(Prepared(x, n, &buffer), n, codes, /*num_threads=*/1);
}

v1::Assignment Tokenizer::assignment() const {
  return record_.assignment() == v1::ASSIGNMENT_CAPACITY ? v1::ASSIGNMENT_CAPACITY
                                                         : v1::ASSIGNMENT_NEAREST;
}

std::vector<SizeBounds> BoundsInForceOf(const storage::TokenizerRecord& record,
                                        absl::Span<const int64_t> codebook_sizes, int64_t items) {
  std::vector<SizeBounds> bounds(codebook_sizes.size());
  const auto trained = static_cast<int64_t>(record.trained_items());
  for (size_t l = 0; l < codebook_sizes.size() && l < static_cast<size_t>(record.levels_size());
       ++l) {
    const storage::TokenizerRecord::Level& level = record.levels(static_cast<int>(l));
    if (!level.balanced()) continue;
    const SizeBounds at_training{static_cast<int64_t>(level.size_min()),
                                 static_cast<int64_t>(level.size_max())};
    std::optional<double> slack;
    if (record.has_balance_slack()) slack = record.balance_slack();
    bounds[l] = BoundsInForce(at_training, std::max<int64_t>(trained, 1),
                              std::max<int64_t>(items, 1), codebook_sizes[l], slack);
  }
  return bounds;
}

CapacityLimits CapacityLimitsOf(const storage::TokenizerRecord& record,
                                absl::Span<const int64_t> codebook_sizes, int64_t items) {
  CapacityLimits limits;
  limits.size_max.assign(codebook_sizes.size(), kUnbounded);
  limits.suffix_cap = kUnbounded;
  if (record.assignment() != v1::ASSIGNMENT_CAPACITY) return limits;
  const std::vector<SizeBounds> bounds = BoundsInForceOf(record, codebook_sizes, items);
  for (size_t l = 0; l < bounds.size(); ++l) {
    if (bounds[l].size_max > 0) limits.size_max[l] = bounds[l].size_max;
  }
  limits.suffix_cap = std::max<int64_t>(1, record.suffix_cap());
  return limits;
}

int64_t Tokenizer::assigner_bytes() const {
  int64_t bytes = assigner_.table_bytes();
  if (rqvae_ != nullptr) {
    // The model (encoder, decoder, codebooks) and the packed encoder.
    const int64_t parameters = RqVaeParameterCount(rqvae_->options(), rqvae_->input_dim());
    bytes += 2 * parameters * static_cast<int64_t>(sizeof(float));
  }
  for (int64_t l = 0; l < levels(); ++l) {
    // Plain and packed codebooks, and the squared norms.
    bytes +=
        quantizer_.codebook_size(l) * (2 * dimension() + 1) * static_cast<int64_t>(sizeof(float));
  }
  return bytes;
}

int64_t Tokenizer::memory_bytes() const {
  const SidLedger::Reader ledger(*ledger_);
  return assigner_bytes() + ledger.occupancy().memory_bytes();
}

std::vector<SizeBounds> Tokenizer::BoundsFor(int64_t items) const {
  return BoundsInForceOf(record_, quantizer_.codebook_sizes(), items);
}

CapacityLimits Tokenizer::LimitsFor(int64_t items) const {
  return CapacityLimitsOf(record_, quantizer_.codebook_sizes(), items);
}

SidAssignOptions Tokenizer::AssignOptions() const {
  SidAssignOptions options;
  options.beam_width =
      record_.beam_width() > 0 ? static_cast<int>(record_.beam_width()) : kDefaultBeamWidth;
  return options;
}

SidAssignment Tokenizer::Nearest(const float* x, int64_t n) const {
  SidAssignment out;
  out.levels = levels();
  out.codes.resize(static_cast<size_t>(n * levels()));
  quantizer_.Encode(x, n, out.codes.data(), /*num_threads=*/1);
  out.nearest_codes = out.codes;
  out.error.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    out.error[i] = assigner_.Error(x + i * dimension(), out.codes.data() + i * levels());
  }
  out.nearest_error = out.error;
  out.displaced.assign(static_cast<size_t>(n), 0);
  out.overflow.assign(static_cast<size_t>(n), 0);
  return out;
}

absl::StatusOr<SidAssignment> Tokenizer::AssignNew(const float* x, int64_t n, int64_t items,
                                                   SidOccupancy* occupancy) const {
  std::vector<float> buffer;
  const float* rows = Prepared(x, n, &buffer);
  if (assignment() == v1::ASSIGNMENT_CAPACITY) {
    return assigner_.Assign(rows, n, LimitsFor(items), AssignOptions(), occupancy);
  }
  SidAssignment nearest = Nearest(rows, n);
  for (int64_t i = 0; i < n; ++i) occupancy->Add(nearest.codes.data() + i * levels());
  return nearest;
}

absl::StatusOr<SidAssignment> Tokenizer::Propose(const float* x, int64_t n, int64_t items,
                                                 const SidOccupancy& occupancy) const {
  std::vector<float> buffer;
  const float* rows = Prepared(x, n, &buffer);
  if (assignment() == v1::ASSIGNMENT_CAPACITY) {
    return assigner_.Propose(rows, n, LimitsFor(items), AssignOptions(), occupancy);
  }
  return Nearest(rows, n);
}

std::string Tokenizer::Serialize() const {
  storage::TokenizerRecord record = record_;
  if (rqvae_ != nullptr) {
    record.set_rqvae_model(RqVaeModelToProto(*rqvae_).SerializeAsString());
  } else {
    record.set_model(quantizer_.Serialize());
  }
  return FrameModelBlob(kTokenizerBlob, record);
}

namespace {

// The model of a blob's record: its RQ-VAE, its quantizer or (earliest releases) its codebooks.
absl::StatusOr<TokenizerModel> ModelOfRecord(const storage::TokenizerRecord& record) {
  if (!record.rqvae_model().empty()) {
    v1::RqVaeModel proto;
    if (!proto.ParseFromString(record.rqvae_model())) {
      return absl::DataLossError("tokenizer blob: the RQ-VAE model does not parse");
    }
    const std::vector<int64_t> ks(record.codebook_sizes().begin(), record.codebook_sizes().end());
    auto model = RqVaeModelFromProto(proto, ks, record.dimension(), "rqvae_model");
    if (!model.ok()) {
      return absl::DataLossError(absl::StrCat("tokenizer blob: ", model.status().message()));
    }
    return TokenizerModel::OfRqVae(std::move(*model));
  }
  absl::StatusOr<ResidualQuantizer> quantizer =
      record.model().empty() ? FromRecordCodebooks(record)
                             : ResidualQuantizer::Deserialize(record.model());
  if (!quantizer.ok()) {
    return absl::DataLossError(absl::StrCat("tokenizer blob: ", quantizer.status().message()));
  }
  return TokenizerModel{std::move(*quantizer), nullptr};
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::Parse(const std::string& blob) {
  storage::TokenizerRecord record;
  if (absl::Status s = ParseModelBlob(kTokenizerBlob, blob, &record); !s.ok()) return s;
  absl::StatusOr<TokenizerModel> model = ModelOfRecord(record);
  if (!model.ok()) return model.status();
  // The metadata others read (dimension, codebook sizes) must describe the model.
  const ResidualQuantizer& quantizer = model->quantizer;
  const std::vector<int64_t>& ks = quantizer.codebook_sizes();
  bool same_sizes = static_cast<int64_t>(record.codebook_sizes_size()) == quantizer.levels();
  for (int l = 0; same_sizes && l < record.codebook_sizes_size(); ++l) {
    same_sizes = record.codebook_sizes(l) == ks[l];
  }
  if (record.dimension() != model->input_dimension() || !same_sizes) {
    return absl::DataLossError(absl::StrFormat(
        "tokenizer blob: the record says dimension %d and %d levels, the model %d and %d",
        record.dimension(), record.codebook_sizes_size(), model->input_dimension(),
        quantizer.levels()));
  }
  return std::make_shared<const Tokenizer>(std::move(*model), std::move(record));
}

}  // namespace quantd
