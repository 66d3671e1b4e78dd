#include "server/service.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/semantic_id.h"
#include "server/index.h"
#include "server/index_job.h"
#include "server/log.h"
#include "server/metric_proto.h"
#include "server/tokenizer.h"
#include "server/tokenizer_job.h"

namespace quantd {
namespace {

void ToProto(const CollectionInfo& info, const Tokenizers& tokenizers, v1::Collection* out) {
  out->set_keep_tokenizer_versions(tokenizers.KeepOf(info));
  out->set_name(info.name);
  out->set_dimension(static_cast<uint32_t>(info.dimension));
  out->set_metric(MetricToProto(info.metric));
  out->set_item_count(info.item_count);
  out->set_create_time_ms(info.create_time_ms);
}

// The id set of a Search filter (`field`: "allow" or "deny"), checked against the encoding
// and limits documented at IdList in quantd.proto.
absl::StatusOr<IdSet> ParseIdList(const v1::IdList& list, absl::string_view field) {
  if (list.ids_size() > 0 && !list.bitmap().empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has both ids and a bitmap: give one form", field));
  }
  if (list.ids_size() > kMaxFilterIds) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.ids has %d ids, at most %d", field, list.ids_size(), kMaxFilterIds));
  }
  for (int i = 1; i < list.ids_size(); ++i) {
    if (list.ids(i) <= list.ids(i - 1)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s.ids[%d] = %d follows %d: ids must be strictly ascending (sorted, no duplicates)",
          field, i, list.ids(i), list.ids(i - 1)));
    }
  }
  const auto bytes = static_cast<int64_t>(list.bitmap().size());
  if (bytes > kMaxFilterBitmapBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.bitmap has %d bytes, at most %d", field, bytes, kMaxFilterBitmapBytes));
  }
  if (bytes > 0 && list.bitmap_base() > ~uint64_t{0} - (8 * static_cast<uint64_t>(bytes) - 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.bitmap_base %d + 8 x %d bitmap bytes passes 2^64", field, list.bitmap_base(), bytes));
  }
  if (bytes > 0) return IdSet::FromBitmap(list.bitmap_base(), list.bitmap());
  return IdSet(list.ids());
}

// Row `row`'s attributes (field "attributes[row] (id ...)"), sorted by key. INVALID_ARGUMENT for
// a value with neither s nor i set; the limits are checked by ItemService::Upsert.
absl::StatusOr<ItemAttributes> AttributesFromProto(const v1::Attributes& in, int row, uint64_t id) {
  ItemAttributes out;
  out.reserve(in.values().size());
  for (const auto& [key, value] : in.values()) {
    switch (value.value_case()) {
      case v1::AttributeValue::kS:
        out.push_back({key, value.s()});
        break;
      case v1::AttributeValue::kI:
        out.push_back({key, value.i()});
        break;
      default:
        return absl::InvalidArgumentError(absl::StrFormat(
            "attributes[%d] (id %d): key '%s' has no value: set s or i", row, id, key));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Attribute& a, const Attribute& b) { return a.key < b.key; });
  return out;
}

void AttributesToProto(const ItemAttributes& in, v1::Attributes* out) {
  auto& values = *out->mutable_values();
  for (const Attribute& attribute : in) {
    v1::AttributeValue& value = values[attribute.key];
    if (const auto* text = std::get_if<std::string>(&attribute.value)) {
      value.set_s(*text);
    } else {
      value.set_i(std::get<int64_t>(attribute.value));
    }
  }
}

// SearchRequest.where as conditions; INVALID_ARGUMENT naming where[i] when no test is set.
absl::StatusOr<std::vector<AttributeCondition>> ConditionsFromProto(
    const google::protobuf::RepeatedPtrField<v1::AttributeCondition>& where) {
  std::vector<AttributeCondition> out;
  out.reserve(static_cast<size_t>(where.size()));
  for (int i = 0; i < where.size(); ++i) {
    const v1::AttributeCondition& in = where[i];
    AttributeCondition condition;
    condition.key = in.key();
    switch (in.test_case()) {
      case v1::AttributeCondition::kEqualsString:
        condition.kind = AttributeCondition::Kind::kEqualsString;
        condition.text = in.equals_string();
        break;
      case v1::AttributeCondition::kEqualsInt:
        condition.kind = AttributeCondition::Kind::kEqualsInt;
        condition.min = condition.max = in.equals_int();
        break;
      case v1::AttributeCondition::kRange:
        condition.kind = AttributeCondition::Kind::kRange;
        if (in.range().has_min()) condition.min = in.range().min();
        if (in.range().has_max()) condition.max = in.range().max();
        break;
      default:
        return absl::InvalidArgumentError(absl::StrFormat(
            "where[%d] on key '%s' has no test: set equals_string, equals_int or range", i,
            in.key()));
    }
    out.push_back(std::move(condition));
  }
  return out;
}

}  // namespace

void FillSid(const int32_t* codes, int64_t levels, uint32_t suffix, v1::Sid* sid) {
  for (int64_t l = 0; l < levels; ++l) sid->add_codes(static_cast<uint32_t>(codes[l]));
  sid->set_suffix(suffix);
  sid->set_tokens(RenderSidTokens(absl::MakeConstSpan(codes, static_cast<size_t>(levels)), suffix));
}

namespace {

void FillIndexStats(const ServingIndex& index, v1::IndexStats* out) {
  IvfPqStats stats;
  {
    std::shared_lock lock(index.mu);
    stats = index.index.Stats();
  }
  const storage::IndexRecord& record = index.record;
  out->set_version(record.version());
  out->set_nlist(static_cast<uint64_t>(stats.nlist));
  out->set_m(static_cast<uint32_t>(stats.m));
  out->set_nbits(static_cast<uint32_t>(stats.nbits));
  out->set_items(static_cast<uint64_t>(stats.ntotal));
  out->set_list_size_min(static_cast<uint64_t>(stats.list_size_min));
  out->set_list_size_max(static_cast<uint64_t>(stats.list_size_max));
  out->set_list_size_mean(stats.list_size_mean);
  out->set_imbalance_factor(stats.imbalance_factor);
  out->set_bytes_per_vector(static_cast<uint64_t>(stats.bytes_per_vector));
  out->set_code_size(static_cast<uint64_t>(stats.code_size));
  out->set_memory_bytes(static_cast<uint64_t>(stats.memory_bytes));
  out->set_trained_items(record.trained_items());
  out->set_train_seconds(record.train_seconds());
  out->set_create_time_ms(record.create_time_ms());
  out->set_job_id(record.job_id());
  out->set_seed(record.seed());
  out->set_coarse_iterations(record.coarse_iterations());
  out->set_pq_iterations(record.pq_iterations());
  out->set_layout(stats.fast_scan ? v1::INDEX_LAYOUT_FAST_SCAN : v1::INDEX_LAYOUT_PLAIN);
  out->set_list_code_bytes(static_cast<uint64_t>(stats.list_code_bytes));
  out->set_list_code_capacity_bytes(static_cast<uint64_t>(stats.list_code_capacity_bytes));
  out->set_refine_codes(stats.refine_codes == RefineCodes::kSq8 ? v1::REFINE_CODES_SQ8
                                                                : v1::REFINE_CODES_NONE);
  out->set_refine_code_size(static_cast<uint32_t>(stats.refine_code_size));
  out->set_refine_code_bytes(static_cast<uint64_t>(stats.refine_code_bytes));
  v1::IndexMemory* memory = out->mutable_memory();
  memory->set_codes(static_cast<uint64_t>(stats.memory.codes));
  memory->set_ids(static_cast<uint64_t>(stats.memory.ids));
  memory->set_refine_codes(static_cast<uint64_t>(stats.memory.refine_codes));
  memory->set_id_map(static_cast<uint64_t>(stats.memory.id_map));
  memory->set_centroids(static_cast<uint64_t>(stats.memory.centroids));
  memory->set_tables(static_cast<uint64_t>(stats.memory.tables));
}

// An empty job id is a caller mistake (every job has one), not a job that does not exist.
absl::Status EmptyJobId() {
  return absl::InvalidArgumentError("id is empty: name a job, such as one from ListJobs");
}

}  // namespace

QuantdService::QuantdService(Storage* storage, JobManager* jobs, Metrics* metrics,
                             ServiceLimits limits, std::string backup_dir)
    : GuardedService(metrics, limits),
      storage_(storage),
      jobs_(jobs),
      metrics_(metrics),
      sids_(storage),
      backup_dir_(std::move(backup_dir)) {
  using std::placeholders::_1;
  using std::placeholders::_2;
  // Every method of quantd.v1.Quantd, with where it runs and what rows it counts.
  Unary<v1::CreateCollectionRequest, v1::CreateCollectionResponse>(
      "CreateCollection", RunOn::kCallThread,
      std::bind(&QuantdService::HandleCreateCollection, this, _1, _2));
  Unary<v1::ListCollectionsRequest, v1::ListCollectionsResponse>(
      "ListCollections", RunOn::kCallThread,
      std::bind(&QuantdService::HandleListCollections, this, _1, _2));
  Unary<v1::DescribeCollectionRequest, v1::DescribeCollectionResponse>(
      "DescribeCollection", RunOn::kCallThread,
      std::bind(&QuantdService::HandleDescribeCollection, this, _1, _2));
  Unary<v1::DropCollectionRequest, v1::DropCollectionResponse>(
      "DropCollection", RunOn::kCallThread,
      std::bind(&QuantdService::HandleDropCollection, this, _1, _2));
  BidiStream<v1::UpsertRequest, v1::UpsertResponse>(
      "Upsert", [this] { return NewUpsertSession(); },
      [](const v1::UpsertRequest& request, const v1::UpsertResponse&) {
        return static_cast<double>(request.ids_size());
      });
  Unary<v1::DeleteItemsRequest, v1::DeleteItemsResponse>(
      "DeleteItems", RunOn::kCallThread, std::bind(&QuantdService::HandleDeleteItems, this, _1, _2),
      [](const v1::DeleteItemsRequest& request, const v1::DeleteItemsResponse&) {
        return static_cast<double>(request.ids_size());
      });
  Unary<v1::GetItemsRequest, v1::GetItemsResponse>(
      "GetItems", RunOn::kCallThread, std::bind(&QuantdService::HandleGetItems, this, _1, _2),
      [](const v1::GetItemsRequest& request, const v1::GetItemsResponse&) {
        return static_cast<double>(request.ids_size());
      });
  Unary<v1::ListItemsRequest, v1::ListItemsResponse>(
      "ListItems", RunOn::kCallThread, std::bind(&QuantdService::HandleListItems, this, _1, _2),
      [](const v1::ListItemsRequest&, const v1::ListItemsResponse& response) {
        return static_cast<double>(response.ids_size());
      });
  Unary<v1::TrainTokenizerRequest, v1::Job>(
      "TrainTokenizer", RunOn::kCallThread,
      std::bind(&QuantdService::HandleTrainTokenizer, this, _1, _2));
  Unary<v1::EncodeRequest, v1::EncodeResponse>(
      "Encode", RunOn::kServingPool, std::bind(&QuantdService::HandleEncode, this, _1, _2),
      [](const v1::EncodeRequest&, const v1::EncodeResponse& response) {
        return static_cast<double>(response.ids_size() + response.missing_ids_size() +
                                   response.encoded_size());
      });
  Unary<v1::LookupRequest, v1::LookupResponse>(
      "Lookup", RunOn::kCallThread, std::bind(&QuantdService::HandleLookup, this, _1, _2));
  ServerStream<v1::ExportSidsRequest, v1::ExportSidsResponse>(
      "ExportSids", std::bind(&QuantdService::HandleExportSids, this, _1));
  Unary<v1::TrainIndexRequest, v1::Job>("TrainIndex", RunOn::kCallThread,
                                        std::bind(&QuantdService::HandleTrainIndex, this, _1, _2));
  Unary<v1::SearchRequest, v1::SearchResponse>(
      "Search", RunOn::kServingPool, std::bind(&QuantdService::HandleSearch, this, _1, _2),
      [](const v1::SearchRequest&, const v1::SearchResponse& response) {
        return static_cast<double>(response.results_size());
      });
  Unary<v1::GetJobRequest, v1::Job>("GetJob", RunOn::kCallThread,
                                    std::bind(&QuantdService::HandleGetJob, this, _1, _2));
  Unary<v1::ListJobsRequest, v1::ListJobsResponse>(
      "ListJobs", RunOn::kCallThread, std::bind(&QuantdService::HandleListJobs, this, _1, _2));
  Unary<v1::CancelJobRequest, v1::Job>("CancelJob", RunOn::kCallThread,
                                       std::bind(&QuantdService::HandleCancelJob, this, _1, _2));
  Unary<v1::GetStatsRequest, v1::GetStatsResponse>(
      "GetStats", RunOn::kServingPool, std::bind(&QuantdService::HandleGetStats, this, _1, _2));
  // A backup may copy gigabytes: on its own thread, not on gRPC's callback threads. The server's
  // Shutdown waits for it (its call is in flight) before the storage closes.
  Unary<v1::BackupRequest, v1::BackupResponse>(
      "Backup", RunOn::kOwnThread, std::bind(&QuantdService::HandleBackup, this, _1, _2));
  RegisterVersionMethods();
  SealRegistration();
}

absl::Status QuantdService::HandleCreateCollection(const v1::CreateCollectionRequest& request,
                                                   v1::CreateCollectionResponse* response) {
  auto metric = MetricFromProto(request.metric());
  if (!metric.ok()) return metric.status();
  auto info = storage_->collections().Create(request.name(), request.dimension(), *metric,
                                             request.keep_tokenizer_versions());
  if (info.ok()) ToProto(*info, storage_->tokenizers(), response->mutable_collection());
  return info.status();
}

absl::Status QuantdService::HandleListCollections(const v1::ListCollectionsRequest&,
                                                  v1::ListCollectionsResponse* response) {
  for (const CollectionInfo& info : storage_->collections().List()) {
    ToProto(info, storage_->tokenizers(), response->add_collections());
  }
  return absl::OkStatus();
}

absl::Status QuantdService::HandleDescribeCollection(const v1::DescribeCollectionRequest& request,
                                                     v1::DescribeCollectionResponse* response) {
  auto info = storage_->collections().Describe(request.name());
  if (info.ok()) ToProto(*info, storage_->tokenizers(), response->mutable_collection());
  return info.status();
}

absl::Status QuantdService::HandleDropCollection(const v1::DropCollectionRequest& request,
                                                 v1::DropCollectionResponse* response) {
  auto info = storage_->collections().Describe(request.name());
  if (!info.ok()) return info.status();
  auto deleted = storage_->items().DropCollection(request.name());
  if (!deleted.ok()) return deleted.status();
  response->set_items_deleted(*deleted);
  jobs_->CancelCollection(info->id);
  return absl::OkStatus();
}

absl::Status QuantdService::HandleDeleteItems(const v1::DeleteItemsRequest& request,
                                              v1::DeleteItemsResponse* response) {
  auto result = storage_->items().Delete(request.collection(), request.ids());
  if (!result.ok()) return result.status();
  response->set_deleted(result->deleted);
  response->set_missing(result->missing);
  response->set_item_count(result->item_count);
  return absl::OkStatus();
}

absl::Status QuantdService::HandleGetItems(const v1::GetItemsRequest& request,
                                           v1::GetItemsResponse* response) {
  auto info = storage_->collections().Describe(request.collection());
  if (!info.ok()) return info.status();
  const int64_t payload =
      static_cast<int64_t>(request.ids_size()) * info->dimension * static_cast<int64_t>(4);
  if (payload > kMaxResponsePayloadBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ids has %d entries; at dimension %d the answer would exceed %d MiB, "
                        "ask for at most %d ids per call",
                        request.ids_size(), info->dimension, kMaxResponsePayloadBytes >> 20,
                        kMaxResponsePayloadBytes / (4 * info->dimension)));
  }
  auto result = storage_->items().Get(request.collection(), request.ids());
  if (!result.ok()) return result.status();
  response->set_dimension(static_cast<uint32_t>(result->dimension));
  response->mutable_ids()->Add(result->ids.begin(), result->ids.end());
  response->mutable_vectors()->Add(result->vectors.begin(), result->vectors.end());
  response->mutable_missing_ids()->Add(result->missing.begin(), result->missing.end());
  for (const ItemAttributes& attributes : result->attributes) {
    AttributesToProto(attributes, response->add_attributes());
  }
  return absl::OkStatus();
}

// One stream's batches all go to the collection its first message names; each batch is one
// atomic write, acknowledged with the running totals of the stream.
StreamSession<v1::UpsertRequest, v1::UpsertResponse> QuantdService::NewUpsertSession() {
  struct State {
    std::string collection;
    uint64_t batch_index = 0;
    uint64_t total_rows = 0;
  };
  return [this, state = std::make_shared<State>()](const v1::UpsertRequest& request,
                                                   v1::UpsertResponse* response) -> absl::Status {
    if (!request.collection().empty()) {
      if (state->collection.empty()) {
        state->collection = request.collection();
      } else if (request.collection() != state->collection) {
        return absl::InvalidArgumentError(
            absl::StrFormat("collection '%s' differs from '%s' named earlier in this stream",
                            request.collection(), state->collection));
      }
    }
    if (state->collection.empty()) {
      return absl::InvalidArgumentError("collection is empty: name it in the first message");
    }
    std::vector<ItemAttributes> attributes;
    attributes.reserve(static_cast<size_t>(request.attributes_size()));
    for (int i = 0; i < request.attributes_size(); ++i) {
      auto parsed = AttributesFromProto(request.attributes(i), i,
                                        i < request.ids_size() ? request.ids(i) : 0);
      if (!parsed.ok()) return parsed.status();
      attributes.push_back(std::move(*parsed));
    }
    auto result =
        storage_->items().Upsert(state->collection, request.ids(), request.vectors(), attributes);
    if (!result.ok()) return result.status();
    state->total_rows += static_cast<uint64_t>(request.ids_size());
    if (metrics_ != nullptr) metrics_->AddUpsertedRows(request.ids_size());
    response->set_batch_index(state->batch_index++);
    response->set_rows(static_cast<uint64_t>(request.ids_size()));
    response->set_inserted(result->inserted);
    response->set_total_rows(state->total_rows);
    response->set_item_count(result->item_count);
    return absl::OkStatus();
  };
}

absl::Status QuantdService::HandleListItems(const v1::ListItemsRequest& request,
                                            v1::ListItemsResponse* response) {
  if (!request.with_sids() && request.tokenizer_version() != 0) {
    return absl::InvalidArgumentError("tokenizer_version applies with with_sids only");
  }
  auto page =
      storage_->items().List(request.collection(), request.page_size(), request.page_token(),
                             request.with_vectors(), request.with_attributes());
  if (!page.ok()) return page.status();
  std::vector<size_t> rows(page->ids.size());  // rows of the page that are answered
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i;
  SidList sids;
  if (request.with_sids()) {
    auto encoded = sids_.Encode(request.collection(), page->ids, {}, request.tokenizer_version());
    if (!encoded.ok()) return encoded.status();
    sids = std::move(encoded->by_id);
    // Items deleted since the page was read have no SID: they are left out (they are gone).
    rows.clear();
    for (size_t i = 0, j = 0; i < page->ids.size() && j < sids.ids.size(); ++i) {
      if (page->ids[i] == sids.ids[j]) {
        rows.push_back(i);
        ++j;
      }
    }
  }
  const int64_t d = page->dimension;
  response->set_dimension(static_cast<uint32_t>(d));
  for (size_t r = 0; r < rows.size(); ++r) {
    const size_t i = rows[r];
    response->add_ids(page->ids[i]);
    if (request.with_vectors()) {
      response->mutable_vectors()->Add(page->vectors.begin() + static_cast<int64_t>(i) * d,
                                       page->vectors.begin() + static_cast<int64_t>(i + 1) * d);
    }
    if (request.with_sids()) {
      FillSid(sids.codes.data() + r * sids.levels, sids.levels, sids.suffixes[r],
              response->add_sids());
    }
    if (request.with_attributes()) {
      AttributesToProto(page->attributes[i], response->add_attributes());
    }
  }
  response->set_next_page_token(page->next_page_token);
  return absl::OkStatus();
}

absl::Status QuantdService::HandleTrainTokenizer(const v1::TrainTokenizerRequest& request,
                                                 v1::Job* response) {
  auto job = jobs_->Start(std::make_unique<TokenizerJob>(request, training_memory_bytes_));
  if (job.ok()) *response = *job;
  return job.status();
}

absl::Status QuantdService::HandleTrainIndex(const v1::TrainIndexRequest& request,
                                             v1::Job* response) {
  auto job = jobs_->Start(std::make_unique<IndexJob>(request));
  if (job.ok()) *response = *job;
  return job.status();
}

// A batch is bounded (kMaxSearchQueries x kMaxSearchK) and searched on one core.
absl::Status QuantdService::HandleSearch(const v1::SearchRequest& request,
                                         v1::SearchResponse* response) {
  Indexes::SearchSpec spec;
  spec.queries = request.queries();
  spec.like_ids = request.like_ids();
  spec.include_self = request.include_self();
  spec.k = request.k();
  spec.offset = request.offset();
  spec.nprobe = request.nprobe();
  spec.refine = request.refine();
  spec.refine_exact = request.refine_exact();
  if (request.has_allow() && request.has_deny()) {
    return absl::InvalidArgumentError("allow and deny are both set: give one of them");
  }
  IdSet filter;
  if (request.has_allow() || request.has_deny()) {
    auto parsed = request.has_allow() ? ParseIdList(request.allow(), "allow")
                                      : ParseIdList(request.deny(), "deny");
    if (!parsed.ok()) return parsed.status();
    filter = std::move(*parsed);
    (request.has_allow() ? spec.allow : spec.deny) = &filter;
  }
  auto prefix = SidPrefixOf(request.sid_prefix(), request.sid_prefix_tokens(), "sid_prefix",
                            "sid_prefix_tokens");
  if (!prefix.ok()) return prefix.status();
  spec.sid_prefix = std::move(*prefix);
  auto where = ConditionsFromProto(request.where());
  if (!where.ok()) return where.status();
  spec.where = *where;
  auto result = storage_->indexes().Search(request.collection(), spec);
  if (!result.ok()) return result.status();
  response->set_index_version(result->index_version);
  response->set_nprobe(static_cast<uint32_t>(result->nprobe));
  response->set_exact(result->exact);
  for (const std::vector<IvfPqNeighbor>& neighbors : result->neighbors) {
    v1::SearchResult* out = response->add_results();
    for (const IvfPqNeighbor& neighbor : neighbors) {
      out->add_ids(neighbor.id);
      out->add_distances(neighbor.distance);
    }
  }
  return absl::OkStatus();
}

absl::Status QuantdService::HandleGetJob(const v1::GetJobRequest& request, v1::Job* response) {
  if (request.id().empty()) return EmptyJobId();
  auto job = jobs_->Get(request.id());
  if (job.ok()) *response = *job;
  return job.status();
}

absl::Status QuantdService::HandleListJobs(const v1::ListJobsRequest& request,
                                           v1::ListJobsResponse* response) {
  uint32_t collection_id = 0;
  if (!request.collection().empty()) {
    auto info = storage_->collections().Describe(request.collection());
    if (!info.ok()) return info.status();
    collection_id = info->id;
  }
  for (v1::Job& job : jobs_->List(request.collection(), collection_id)) {
    *response->add_jobs() = std::move(job);
  }
  return absl::OkStatus();
}

absl::Status QuantdService::HandleCancelJob(const v1::CancelJobRequest& request,
                                            v1::Job* response) {
  if (request.id().empty()) return EmptyJobId();
  auto job = jobs_->Cancel(request.id());
  if (job.ok()) *response = *job;
  return job.status();
}

absl::Status QuantdService::HandleEncode(const v1::EncodeRequest& request,
                                         v1::EncodeResponse* response) {
  auto encoded = sids_.Encode(request.collection(), request.ids(), request.vectors(),
                              request.tokenizer_version());
  if (!encoded.ok()) return encoded.status();
  const int64_t levels = encoded->levels;
  response->set_tokenizer_version(encoded->tokenizer_version);
  const SidList& by_id = encoded->by_id;
  for (size_t i = 0; i < by_id.ids.size(); ++i) {
    response->add_ids(by_id.ids[i]);
    FillSid(by_id.codes.data() + i * levels, levels, by_id.suffixes[i], response->add_sids());
  }
  response->mutable_missing_ids()->Add(by_id.missing.begin(), by_id.missing.end());
  const SidAssignment& proposed = encoded->vectors;
  for (size_t i = 0; i < encoded->items_with_codes.size(); ++i) {
    v1::EncodedVector* out = response->add_encoded();
    const int32_t* row = proposed.codes.data() + i * levels;
    const int32_t* nearest = proposed.nearest_codes.data() + i * levels;
    for (int64_t l = 0; l < levels; ++l) {
      out->add_codes(static_cast<uint32_t>(row[l]));
      out->add_nearest_codes(static_cast<uint32_t>(nearest[l]));
    }
    out->set_tokens(RenderSidTokens(absl::MakeConstSpan(row, static_cast<size_t>(levels))));
    out->set_items_with_codes(encoded->items_with_codes[i]);
    out->set_error(proposed.error[i]);
    out->set_nearest_error(proposed.nearest_error[i]);
    out->set_displaced(proposed.displaced[i] != 0);
    out->set_overflow(proposed.overflow[i] != 0);
  }
  return absl::OkStatus();
}

absl::Status QuantdService::HandleLookup(const v1::LookupRequest& request,
                                         v1::LookupResponse* response) {
  auto found = sids_.Lookup(request.collection(), request.codes(), request.tokens(),
                            request.limit(), request.tokenizer_version());
  if (!found.ok()) return found.status();
  for (size_t i = 0; i < found->ids.size(); ++i) {
    response->add_ids(found->ids[i]);
    FillSid(found->codes.data() + i * found->levels, found->levels, found->suffixes[i],
            response->add_sids());
  }
  response->set_truncated(found->truncated);
  return absl::OkStatus();
}

// Streams a collection's SIDs in batches of kExportBatch items; the first message goes out even
// for an empty collection, as it carries the version and the levels.
absl::StatusOr<MessageSource<v1::ExportSidsResponse>> QuantdService::HandleExportSids(
    const v1::ExportSidsRequest& request) {
  constexpr size_t kExportBatch = 8192;
  auto list = sids_.Export(request.collection(), request.tokenizer_version());
  if (!list.ok()) return list.status();
  struct State {
    SidList list;
    size_t next = 0;
  };
  auto state = std::make_shared<State>();
  state->list = std::move(*list);
  return [state](v1::ExportSidsResponse* response) {
    const SidList& sids = state->list;
    const size_t next = state->next;
    if (next >= sids.ids.size() && next > 0) return false;
    const size_t end = std::min(sids.ids.size(), next + kExportBatch);
    response->set_tokenizer_version(sids.version);
    response->set_levels(static_cast<uint32_t>(sids.levels));
    response->mutable_ids()->Add(sids.ids.begin() + next, sids.ids.begin() + end);
    for (size_t i = next * sids.levels; i < end * sids.levels; ++i) {
      response->add_codes(static_cast<uint32_t>(sids.codes[i]));
    }
    response->mutable_suffixes()->Add(sids.suffixes.begin() + next, sids.suffixes.begin() + end);
    state->next = std::max(end, next + 1);
    return true;
  };
}

absl::Status QuantdService::HandleGetStats(const v1::GetStatsRequest& request,
                                           v1::GetStatsResponse* response) {
  auto info = storage_->collections().Describe(request.collection());
  if (!info.ok()) return info.status();
  ToProto(*info, storage_->tokenizers(), response->mutable_collection());
  auto keys = storage_->items().AttributeKeys(request.collection());
  if (!keys.ok()) return keys.status();
  for (const AttributeIndex::KeyStats& key : *keys) {
    v1::AttributeKeyStats* out = response->add_attribute_keys();
    out->set_key(key.key);
    out->set_type(static_cast<v1::AttributeType>(key.type));
    out->set_items(static_cast<uint64_t>(key.items));
    out->set_distinct_values(static_cast<uint64_t>(key.distinct_values));
  }
  auto index = storage_->indexes().GetIndex(request.collection());
  if (index.ok()) {
    FillIndexStats(**index, response->mutable_index());
  } else if (index.status().code() != absl::StatusCode::kFailedPrecondition) {
    return index.status();
  }
  auto versions = storage_->tokenizers().GetVersions(request.collection());
  if (!versions.ok()) return versions.status();
  FillVersions(request.collection(), versions->get(), response->mutable_tokenizer_versions());
  auto tokenizer =
      storage_->tokenizers().GetTokenizer(request.collection(), request.tokenizer_version());
  if (tokenizer.status().code() == absl::StatusCode::kFailedPrecondition) {
    return absl::OkStatus();  // no (active) tokenizer: collection stats only
  }
  if (!tokenizer.ok()) return tokenizer.status();
  auto figures = sids_.GetFigures(*info, **tokenizer, SidService::Freshness::kCurrent);
  if (!figures.ok()) return figures.status();
  const storage::TokenizerRecord& record = (*tokenizer)->record();
  const int64_t levels = (*tokenizer)->levels();
  v1::TokenizerStats* stats = response->mutable_tokenizer();
  stats->set_version(record.version());
  stats->set_levels(static_cast<uint32_t>(levels));
  stats->mutable_codebook_sizes()->Add(record.codebook_sizes().begin(),
                                       record.codebook_sizes().end());
  stats->set_balanced(record.balanced());
  stats->set_seed(record.seed());
  stats->set_max_iterations(record.max_iterations());
  stats->set_tolerance(record.tolerance());
  stats->set_restarts(std::max<uint32_t>(1, record.restarts()));
  stats->set_assignment((*tokenizer)->assignment());
  stats->set_beam_width(record.beam_width());
  stats->set_suffix_cap(record.suffix_cap());
  stats->set_collisions_before_resolution(record.collisions_before_resolution());
  stats->set_collisions_after_resolution(record.collisions_after_resolution());
  stats->set_mse_before_resolution(record.mse_before_resolution());
  stats->set_mse_after_resolution(record.mse_after_resolution());
  stats->set_resolution_moved(record.resolution_moved());
  stats->set_trained_items(record.trained_items());
  stats->set_train_seconds(record.train_seconds());
  stats->set_create_time_ms(record.create_time_ms());
  stats->set_job_id(record.job_id());
  stats->set_method((*tokenizer)->method());
  if ((*tokenizer)->rqvae() != nullptr) {
    v1::RqVaeStats* rqvae = stats->mutable_rqvae();
    if (!rqvae->ParseFromString(record.rqvae_stats())) rqvae->Clear();
    rqvae->set_reconstruction_mse(record.committed_mse());
  }
  const CollisionStats& collisions = (*figures)->collisions;
  stats->set_items(static_cast<uint64_t>((*figures)->items));
  stats->set_unique_tuples(static_cast<uint64_t>(collisions.unique_tuples));
  stats->set_collision_rate(collisions.collision_rate);
  stats->set_collision_groups(static_cast<uint64_t>(collisions.collision_groups));
  stats->set_largest_group(static_cast<uint64_t>(collisions.largest_group));
  const SidService::Drift drift = SidService::DriftOf(**tokenizer);
  for (int64_t l = 0; l < levels; ++l) {
    const LevelUsage& usage = (*figures)->levels[static_cast<size_t>(l)];
    v1::LevelStats* level = stats->add_level_stats();
    level->set_codebook_size(static_cast<uint32_t>(usage.codebook_size));
    level->set_codes_used(static_cast<uint32_t>(usage.codes_used));
    level->set_perplexity(usage.perplexity);
    level->set_size_min(static_cast<uint64_t>(usage.size_min));
    level->set_size_max(static_cast<uint64_t>(usage.size_max));
    level->set_size_mean(usage.size_mean);
    level->set_size_std(usage.size_std);
    if (l < record.levels_size()) {
      const auto& trained = record.levels(static_cast<int>(l));
      level->set_reconstruction_mse(trained.mse_after());
      level->set_balanced(trained.balanced());
      level->mutable_trained_bounds()->set_size_min(trained.size_min());
      level->mutable_trained_bounds()->set_size_max(trained.size_max());
      level->set_iterations(trained.iterations());
      level->set_objective(trained.objective());
    }
    level->mutable_bounds()->set_size_min(static_cast<uint64_t>(drift.bounds[l].size_min));
    level->mutable_bounds()->set_size_max(static_cast<uint64_t>(drift.bounds[l].size_max));
    level->set_clusters_at_bound(static_cast<uint32_t>(drift.clusters_at_bound[l]));
    level->set_clusters_over_bound(static_cast<uint32_t>(drift.clusters_over_bound[l]));
  }
  v1::TokenizerDrift* out = stats->mutable_drift();
  out->set_assigned_since_training(drift.assigned);
  out->set_displaced_fraction(drift.displaced_fraction);
  out->set_overflow_fraction(drift.overflow_fraction);
  out->set_assigned_mse(drift.assigned_mse);
  out->set_training_mse(drift.training_mse);
  out->set_largest_suffix((*figures)->largest_suffix);
  out->set_growth(drift.growth);
  out->set_retrain_recommended(drift.retrain_recommended);
  for (const std::string& reason : drift.reasons) out->add_reasons(reason);
  return absl::OkStatus();
}

// One backup at a time: a second one while one runs is ABORTED at once by the Storage rather than
// queued, so no caller waits unboundedly behind a long copy.
absl::Status QuantdService::HandleBackup(const v1::BackupRequest& request,
                                         v1::BackupResponse* response) {
  if (auto status = ValidateBackupName(request.name()); !status.ok()) return status;
  auto result = storage_->backups().Backup(backup_dir_, request.name());
  if (!result.ok()) {
    LogWarning("backup '%s' failed: %s", request.name(), result.status().ToString());
    return result.status();
  }
  response->set_path(result->path);
  response->set_bytes(result->bytes);
  response->set_files(result->files);
  response->set_seconds(result->seconds);
  response->set_sequence(result->sequence);
  LogInfo("backup '%s' written to %s: %d bytes in %d files, %.3f s, sequence %d", request.name(),
          result->path, result->bytes, result->files, result->seconds, result->sequence);
  return absl::OkStatus();
}

}  // namespace quantd
