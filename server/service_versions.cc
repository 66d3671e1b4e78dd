// The tokenizer-version methods of QuantdService: versions, SID maps, constrained decoding,
// codebook export and import.
#include <algorithm>
#include <memory>

#include "core/semantic_id.h"
#include "server/metric_proto.h"
#include "server/rqvae_model.h"
#include "server/service.h"
#include "server/tokenizer.h"
#include "server/tokenizer_job.h"

namespace quantd {
namespace {

// The parameters a version was made with, as a TrainTokenizer request would give them.
v1::TrainTokenizerRequest ParametersOf(absl::string_view collection,
                                       const storage::TokenizerRecord& record,
                                       v1::Assignment assignment) {
  v1::TrainTokenizerRequest parameters;
  parameters.set_collection(std::string(collection));
  for (uint32_t k : record.codebook_sizes()) parameters.add_codebook_sizes(k);
  bool any_balanced = false;
  for (const storage::TokenizerRecord::Level& level : record.levels()) {
    parameters.add_level_balanced(level.balanced());
    any_balanced = any_balanced || level.balanced();
  }
  if (!any_balanced) parameters.clear_level_balanced();
  if (record.has_balance_slack()) {
    if (any_balanced) parameters.set_balance_slack(record.balance_slack());
  } else if (any_balanced) {
    for (const storage::TokenizerRecord::Level& level : record.levels()) {
      v1::SizeBounds* bounds = parameters.add_size_bounds();
      bounds->set_size_min(level.size_min());
      bounds->set_size_max(level.size_max());
    }
  }
  parameters.set_max_iterations(record.max_iterations());
  parameters.set_seed(record.seed());
  if (record.tolerance() > 0) parameters.set_tolerance(record.tolerance());
  parameters.set_restarts(record.restarts());
  parameters.set_assignment(assignment);
  if (assignment == v1::ASSIGNMENT_CAPACITY) {
    parameters.set_beam_width(record.beam_width());
    parameters.set_suffix_cap(record.suffix_cap());
  }
  if (record.method() == v1::TOKENIZER_METHOD_RQ_VAE) {
    parameters.set_method(v1::TOKENIZER_METHOD_RQ_VAE);
    v1::RqVaeStats stats;
    if (stats.ParseFromString(record.rqvae_stats())) {
      *parameters.mutable_rqvae() = stats.options();
      parameters.mutable_rqvae()->set_index_generation(stats.index_generation());
    }
  }
  return parameters;
}

}  // namespace

void QuantdService::FillVersions(absl::string_view collection, const TokenizerSet* set,
                                 v1::TokenizerVersions* out) const {
  out->set_collection(std::string(collection));
  if (auto info = storage_->collections().Describe(collection); info.ok()) {
    out->set_keep_versions(storage_->tokenizers().KeepOf(*info));
  }
  if (set == nullptr) return;
  out->set_active_version(set->record.active());
  for (const auto& [version, tokenizer] : set->versions) {
    const storage::TokenizerRecord& record = tokenizer->record();
    v1::TokenizerVersion* entry = out->add_versions();
    entry->set_version(version);
    entry->set_active(version == set->record.active());
    entry->set_pinned(set->pinned(version));
    entry->set_create_time_ms(record.create_time_ms());
    entry->set_job_id(record.job_id());
    entry->set_source(record.source().empty() ? "trained" : record.source());
    entry->set_parent_version(record.parent_version());
    entry->set_levels(static_cast<uint32_t>(tokenizer->levels()));
    entry->mutable_codebook_sizes()->Add(record.codebook_sizes().begin(),
                                         record.codebook_sizes().end());
    entry->set_balanced(record.balanced());
    entry->set_assignment(tokenizer->assignment());
    entry->set_seed(record.seed());
    entry->set_trained_items(record.trained_items());
    entry->set_train_seconds(record.train_seconds());
    {
      const SidLedger::Reader ledger(tokenizer->ledger());
      const SidOccupancy& occupancy = ledger.occupancy();
      entry->set_items(static_cast<uint64_t>(occupancy.items()));
      entry->set_unique_tuples(static_cast<uint64_t>(occupancy.unique_tuples()));
      entry->set_collision_rate(occupancy.items() > 0
                                    ? 1.0 - static_cast<double>(occupancy.unique_tuples()) /
                                                static_cast<double>(occupancy.items())
                                    : 0.0);
    }
    entry->set_committed_items(record.committed_items());
    entry->set_committed_mse(record.committed_mse());
    entry->set_committed_collision_rate(record.committed_collision_rate());
    entry->set_suffixes_carried(record.suffixes_carried());
    entry->set_decision(record.decision());
  }
}

void QuantdService::RegisterVersionMethods() {
  using std::placeholders::_1;
  using std::placeholders::_2;
  Unary<v1::ListTokenizerVersionsRequest, v1::TokenizerVersions>(
      "ListTokenizerVersions", RunOn::kCallThread,
      std::bind(&QuantdService::HandleListTokenizerVersions, this, _1, _2));
  Unary<v1::ActivateTokenizerRequest, v1::TokenizerVersions>(
      "ActivateTokenizer", RunOn::kCallThread,
      std::bind(&QuantdService::HandleActivateTokenizer, this, _1, _2));
  Unary<v1::DropTokenizerVersionRequest, v1::TokenizerVersions>(
      "DropTokenizerVersion", RunOn::kCallThread,
      std::bind(&QuantdService::HandleDropTokenizerVersion, this, _1, _2));
  Unary<v1::PinTokenizerVersionRequest, v1::TokenizerVersions>(
      "PinTokenizerVersion", RunOn::kCallThread,
      std::bind(&QuantdService::HandlePinTokenizerVersion, this, _1, _2));
  Unary<v1::SetTokenizerRetentionRequest, v1::TokenizerVersions>(
      "SetTokenizerRetention", RunOn::kCallThread,
      std::bind(&QuantdService::HandleSetTokenizerRetention, this, _1, _2));
  ServerStream<v1::MapSidsRequest, v1::MapSidsResponse>(
      "MapSids", std::bind(&QuantdService::HandleMapSids, this, _1));
  Unary<v1::NextCodesRequest, v1::NextCodesResponse>(
      "NextCodes", RunOn::kServingPool, std::bind(&QuantdService::HandleNextCodes, this, _1, _2),
      [](const v1::NextCodesRequest&, const v1::NextCodesResponse& response) {
        return static_cast<double>(response.codes_size());
      });
  Unary<v1::ExportTokenizerRequest, v1::ExportTokenizerResponse>(
      "ExportTokenizer", RunOn::kCallThread,
      std::bind(&QuantdService::HandleExportTokenizer, this, _1, _2));
  Unary<v1::ImportTokenizerRequest, v1::Job>(
      "ImportTokenizer", RunOn::kCallThread,
      std::bind(&QuantdService::HandleImportTokenizer, this, _1, _2));
}

absl::Status QuantdService::HandleListTokenizerVersions(
    const v1::ListTokenizerVersionsRequest& request, v1::TokenizerVersions* response) {
  auto set = storage_->tokenizers().GetVersions(request.collection());
  if (!set.ok()) return set.status();
  FillVersions(request.collection(), set->get(), response);
  return absl::OkStatus();
}

namespace {
// A version number a request names: 1 or more.
absl::Status CheckVersionGiven(uint32_t version) {
  if (version > 0) return absl::OkStatus();
  return absl::InvalidArgumentError("version is 0: name a kept tokenizer version (1 or more)");
}
}  // namespace

absl::Status QuantdService::HandleActivateTokenizer(const v1::ActivateTokenizerRequest& request,
                                                    v1::TokenizerVersions* response) {
  if (auto status = CheckVersionGiven(request.version()); !status.ok()) return status;
  auto set = storage_->tokenizers().Activate(request.collection(), request.version());
  if (!set.ok()) return set.status();
  FillVersions(request.collection(), set->get(), response);
  return absl::OkStatus();
}

absl::Status QuantdService::HandleDropTokenizerVersion(
    const v1::DropTokenizerVersionRequest& request, v1::TokenizerVersions* response) {
  if (auto status = CheckVersionGiven(request.version()); !status.ok()) return status;
  auto set = storage_->tokenizers().Drop(request.collection(), request.version());
  if (!set.ok()) return set.status();
  FillVersions(request.collection(), set->get(), response);
  return absl::OkStatus();
}

absl::Status QuantdService::HandlePinTokenizerVersion(const v1::PinTokenizerVersionRequest& request,
                                                      v1::TokenizerVersions* response) {
  if (auto status = CheckVersionGiven(request.version()); !status.ok()) return status;
  auto set = storage_->tokenizers().Pin(request.collection(), request.version(), request.pinned());
  if (!set.ok()) return set.status();
  FillVersions(request.collection(), set->get(), response);
  return absl::OkStatus();
}

absl::Status QuantdService::HandleSetTokenizerRetention(
    const v1::SetTokenizerRetentionRequest& request, v1::TokenizerVersions* response) {
  auto set = storage_->tokenizers().SetRetention(request.collection(), request.keep_versions());
  if (!set.ok()) return set.status();
  FillVersions(request.collection(), set->get(), response);
  return absl::OkStatus();
}

// Streams the map in batches of kMapBatch items; the first message goes out even for an empty
// collection, as it carries the versions and their levels.
absl::StatusOr<MessageSource<v1::MapSidsResponse>> QuantdService::HandleMapSids(
    const v1::MapSidsRequest& request) {
  constexpr size_t kMapBatch = 8192;
  auto map = sids_.Map(request.collection(), request.from_version(), request.to_version());
  if (!map.ok()) return map.status();
  struct State {
    SidService::SidMap map;
    size_t next = 0;
  };
  auto state = std::make_shared<State>();
  state->map = std::move(*map);
  return [state](v1::MapSidsResponse* response) {
    const SidList& from = state->map.from;
    const SidList& to = state->map.to;
    const size_t next = state->next;
    if (next >= from.ids.size() && next > 0) return false;
    const size_t end = std::min(from.ids.size(), next + kMapBatch);
    response->set_from_version(from.version);
    response->set_to_version(to.version);
    response->set_from_levels(static_cast<uint32_t>(from.levels));
    response->set_to_levels(static_cast<uint32_t>(to.levels));
    response->mutable_ids()->Add(from.ids.begin() + next, from.ids.begin() + end);
    for (size_t i = next * from.levels; i < end * from.levels; ++i) {
      response->add_from_codes(static_cast<uint32_t>(from.codes[i]));
    }
    response->mutable_from_suffixes()->Add(from.suffixes.begin() + next,
                                           from.suffixes.begin() + end);
    for (size_t i = next * to.levels; i < end * to.levels; ++i) {
      response->add_to_codes(static_cast<uint32_t>(to.codes[i]));
    }
    response->mutable_to_suffixes()->Add(to.suffixes.begin() + next, to.suffixes.begin() + end);
    state->next = std::max(end, next + 1);
    return true;
  };
}

absl::Status QuantdService::HandleNextCodes(const v1::NextCodesRequest& request,
                                            v1::NextCodesResponse* response) {
  auto next = sids_.NextCodes(request.collection(), request.prefix(), request.tokens(),
                              request.tokenizer_version());
  if (!next.ok()) return next.status();
  response->set_tokenizer_version(next->tokenizer_version);
  response->set_level(static_cast<uint32_t>(next->level));
  for (size_t i = 0; i < next->codes.size(); ++i) {
    response->add_codes(static_cast<uint32_t>(next->codes[i]));
    response->add_items(static_cast<uint64_t>(next->items[i]));
    response->add_tokens(RenderSidToken(next->level, next->codes[i]));
  }
  response->mutable_ids()->Add(next->ids.begin(), next->ids.end());
  return absl::OkStatus();
}

absl::Status QuantdService::HandleExportTokenizer(const v1::ExportTokenizerRequest& request,
                                                  v1::ExportTokenizerResponse* response) {
  auto tokenizer =
      storage_->tokenizers().GetTokenizer(request.collection(), request.tokenizer_version());
  if (!tokenizer.ok()) return tokenizer.status();
  auto info = storage_->collections().Describe(request.collection());
  if (!info.ok()) return info.status();
  const storage::TokenizerRecord& record = (*tokenizer)->record();
  const ResidualQuantizer& quantizer = (*tokenizer)->quantizer();
  v1::TokenizerManifest* manifest = response->mutable_manifest();
  manifest->set_format("quantd.tokenizer/1");
  manifest->set_dimension(static_cast<uint32_t>((*tokenizer)->input_dimension()));
  manifest->set_metric(MetricToProto(info->metric));
  for (int64_t k : quantizer.codebook_sizes()) {
    manifest->add_codebook_sizes(static_cast<uint32_t>(k));
  }
  *manifest->mutable_parameters() =
      ParametersOf(request.collection(), record, (*tokenizer)->assignment());
  manifest->set_version(record.version());
  manifest->set_create_time_ms(record.create_time_ms());
  manifest->set_source(record.source().empty() ? "trained" : record.source());
  if (const RqVae* rqvae = (*tokenizer)->rqvae(); rqvae != nullptr) {
    *response->mutable_rqvae() = RqVaeModelToProto(*rqvae);
    return absl::OkStatus();
  }
  for (int64_t l = 0; l < quantizer.levels(); ++l) {
    const std::vector<float>& codebook = quantizer.codebook(l);
    response->mutable_codebooks()->Add(codebook.begin(), codebook.end());
  }
  return absl::OkStatus();
}

absl::Status QuantdService::HandleImportTokenizer(const v1::ImportTokenizerRequest& request,
                                                  v1::Job* response) {
  auto job = jobs_->Start(std::make_unique<ImportTokenizerJob>(request));
  if (job.ok()) *response = *job;
  return job.status();
}

}  // namespace quantd
