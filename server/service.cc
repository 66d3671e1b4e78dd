#include "server/service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/semantic_id.h"
#include "server/index.h"
#include "server/log.h"
#include "server/metric_proto.h"
#include "server/tokenizer.h"
#include "server/work_queue.h"

namespace quantd {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void ToProto(const CollectionInfo& info, v1::Collection* out) {
  out->set_name(info.name);
  out->set_dimension(static_cast<uint32_t>(info.dimension));
  out->set_metric(MetricToProto(info.metric));
  out->set_item_count(info.item_count);
  out->set_create_time_ms(info.create_time_ms);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // Messages quote what the caller sent (names, job ids, tokens). A message past the client's
  // metadata limit (8 KiB by default) reaches it as RESOURCE_EXHAUSTED "received initial metadata
  // size exceeds limit", losing the real code and message: long ones keep their start (the field
  // and value) and their end (what is wrong), and say how much is left out.
  constexpr size_t kHead = 768;
  constexpr size_t kTail = 256;
  absl::string_view message = status.message();
  if (message.size() <= kHead + kTail) {
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(message));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      absl::StrCat(message.substr(0, kHead), "...[", message.size() - kHead - kTail,
                                   " bytes elided]...", message.substr(message.size() - kTail)));
}

grpc::ServerUnaryReactor* QuantdService::Finish(grpc::CallbackServerContext* context,
                                                absl::string_view method,
                                                std::chrono::steady_clock::time_point start,
                                                const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Complete(reactor, method, start, status);
  return reactor;
}

void QuantdService::Complete(grpc::ServerUnaryReactor* reactor, absl::string_view method,
                             std::chrono::steady_clock::time_point start,
                             const absl::Status& status) {
  if (metrics_ != nullptr) {
    metrics_->RecordRequest(method, static_cast<int>(status.code()), SecondsSince(start));
  }
  reactor->Finish(ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* QuantdService::OnPool(grpc::CallbackServerContext* context,
                                                absl::string_view method, Clock::time_point start,
                                                std::function<absl::Status()> work) {
  if (limits_.pool == nullptr) return Finish(context, method, start, work());
  // The call's budget: the client's deadline capped at max_deadline, else default_deadline.
  std::chrono::nanoseconds budget = limits_.default_deadline;
  const auto client_deadline = context->deadline();
  const auto now = std::chrono::system_clock::now();
  if (client_deadline < now + limits_.max_deadline) {
    budget = std::chrono::duration_cast<std::chrono::nanoseconds>(client_deadline - now);
  } else if (client_deadline != std::chrono::system_clock::time_point::max()) {
    budget = limits_.max_deadline;
  }
  const Clock::time_point deadline = start + budget;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto task = [this, context, reactor, method, start, deadline, work = std::move(work)] {
    absl::Status status;
    if (context->IsCancelled()) {
      status = absl::CancelledError(absl::StrFormat("%s was cancelled before it ran", method));
    } else if (Clock::now() >= deadline) {
      status = absl::DeadlineExceededError(absl::StrFormat(
          "%s waited %.3f s for a worker, past its deadline", method, SecondsSince(start)));
    } else {
      status = work();
    }
    Complete(reactor, method, start, status);
  };
  if (!limits_.pool->TrySubmit(std::move(task))) {
    Complete(reactor, method, start,
             absl::ResourceExhaustedError(absl::StrFormat(
                 "server busy: %d %s calls already waiting for %d workers (--search_queue); retry "
                 "with backoff",
                 limits_.pool->capacity(), "Search/Encode", limits_.pool->threads())));
  }
  return reactor;
}

grpc::ServerUnaryReactor* QuantdService::CreateCollection(
    grpc::CallbackServerContext* context, const v1::CreateCollectionRequest* request,
    v1::CreateCollectionResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "CreateCollection"); !denied.ok())
    return Finish(context, "CreateCollection", start, denied);
  auto metric = MetricFromProto(request->metric());
  if (!metric.ok()) return Finish(context, "CreateCollection", start, metric.status());
  auto info = storage_->collections().Create(request->name(), request->dimension(), *metric);
  if (info.ok()) ToProto(*info, response->mutable_collection());
  return Finish(context, "CreateCollection", start, info.status());
}

grpc::ServerUnaryReactor* QuantdService::ListCollections(grpc::CallbackServerContext* context,
                                                         const v1::ListCollectionsRequest*,
                                                         v1::ListCollectionsResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "ListCollections"); !denied.ok())
    return Finish(context, "ListCollections", start, denied);
  for (const CollectionInfo& info : storage_->collections().List()) {
    ToProto(info, response->add_collections());
  }
  return Finish(context, "ListCollections", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* QuantdService::DescribeCollection(
    grpc::CallbackServerContext* context, const v1::DescribeCollectionRequest* request,
    v1::DescribeCollectionResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "DescribeCollection"); !denied.ok())
    return Finish(context, "DescribeCollection", start, denied);
  auto info = storage_->collections().Describe(request->name());
  if (info.ok()) ToProto(*info, response->mutable_collection());
  return Finish(context, "DescribeCollection", start, info.status());
}

grpc::ServerUnaryReactor* QuantdService::DropCollection(grpc::CallbackServerContext* context,
                                                        const v1::DropCollectionRequest* request,
                                                        v1::DropCollectionResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "DropCollection"); !denied.ok())
    return Finish(context, "DropCollection", start, denied);
  auto info = storage_->collections().Describe(request->name());
  auto deleted = info.ok() ? storage_->items().DropCollection(request->name())
                           : absl::StatusOr<uint64_t>(info.status());
  if (deleted.ok()) {
    response->set_items_deleted(*deleted);
    jobs_->CancelCollection(info->id);
  }
  return Finish(context, "DropCollection", start, deleted.status());
}

grpc::ServerUnaryReactor* QuantdService::DeleteItems(grpc::CallbackServerContext* context,
                                                     const v1::DeleteItemsRequest* request,
                                                     v1::DeleteItemsResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "DeleteItems"); !denied.ok())
    return Finish(context, "DeleteItems", start, denied);
  if (metrics_ != nullptr) metrics_->RecordRows("DeleteItems", request->ids_size());
  auto result = storage_->items().Delete(request->collection(), request->ids());
  if (result.ok()) {
    response->set_deleted(result->deleted);
    response->set_missing(result->missing);
    response->set_item_count(result->item_count);
  }
  return Finish(context, "DeleteItems", start, result.status());
}

grpc::ServerUnaryReactor* QuantdService::GetItems(grpc::CallbackServerContext* context,
                                                  const v1::GetItemsRequest* request,
                                                  v1::GetItemsResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "GetItems"); !denied.ok())
    return Finish(context, "GetItems", start, denied);
  if (metrics_ != nullptr) metrics_->RecordRows("GetItems", request->ids_size());
  auto info = storage_->collections().Describe(request->collection());
  if (!info.ok()) return Finish(context, "GetItems", start, info.status());
  const int64_t payload =
      static_cast<int64_t>(request->ids_size()) * info->dimension * static_cast<int64_t>(4);
  if (payload > kMaxResponsePayloadBytes) {
    return Finish(context, "GetItems", start,
                  absl::InvalidArgumentError(absl::StrFormat(
                      "ids has %d entries; at dimension %d the answer would exceed %d MiB, "
                      "ask for at most %d ids per call",
                      request->ids_size(), info->dimension, kMaxResponsePayloadBytes >> 20,
                      kMaxResponsePayloadBytes / (4 * info->dimension))));
  }
  auto result = storage_->items().Get(request->collection(), request->ids());
  if (result.ok()) {
    response->set_dimension(static_cast<uint32_t>(result->dimension));
    response->mutable_ids()->Add(result->ids.begin(), result->ids.end());
    response->mutable_vectors()->Add(result->vectors.begin(), result->vectors.end());
    response->mutable_missing_ids()->Add(result->missing.begin(), result->missing.end());
  }
  return Finish(context, "GetItems", start, result.status());
}

// Reads batches one at a time; each is committed before its acknowledgement is written and the
// next batch read, so acknowledgements are in batch order and a failure ends the stream with
// every earlier batch committed and the failing one not written at all.
class QuantdService::UpsertReactor final
    : public grpc::ServerBidiReactor<v1::UpsertRequest, v1::UpsertResponse> {
 public:
  UpsertReactor(Storage* storage, Metrics* metrics)
      : storage_(storage), metrics_(metrics), start_(Clock::now()) {
    Read();
  }

  void OnReadDone(bool ok) override {
    if (!ok && request_.collection() != kUnread) {
      Done(absl::InvalidArgumentError(absl::StrFormat(
          "batch %d does not parse as an UpsertRequest (cut short, not protobuf, or a collection "
          "name that is not UTF-8)",
          batch_index_)));
      return;
    }
    if (!ok) {  // the client closed its side: every batch it sent is acknowledged
      Done(absl::OkStatus());
      return;
    }
    if (absl::Status status = Apply(); !status.ok()) {
      Done(absl::Status(status.code(),
                        absl::StrFormat("batch %d: %s", batch_index_, status.message())));
      return;
    }
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Done(absl::CancelledError("the client went away before an acknowledgement was sent"));
      return;
    }
    ++batch_index_;
    Read();
  }

  void OnDone() override { delete this; }

 private:
  // gRPC reports a batch that does not deserialize like the end of the stream (ok = false).
  // Deserializing clears the message first, so a marker left in it before each read tells the
  // two apart.
  static constexpr absl::string_view kUnread = absl::string_view("\0unread", 7);
  void Read() {
    request_.Clear();
    request_.set_collection(std::string(kUnread));
    StartRead(&request_);
  }

  absl::Status Apply() {
    if (!request_.collection().empty()) {
      if (collection_.empty()) {
        collection_ = request_.collection();
      } else if (request_.collection() != collection_) {
        return absl::InvalidArgumentError(
            absl::StrFormat("collection '%s' differs from '%s' named earlier in this stream",
                            request_.collection(), collection_));
      }
    }
    if (collection_.empty()) {
      return absl::InvalidArgumentError("collection is empty: name it in the first message");
    }
    auto result = storage_->items().Upsert(collection_, request_.ids(), request_.vectors());
    if (!result.ok()) return result.status();
    total_rows_ += static_cast<uint64_t>(request_.ids_size());
    if (metrics_ != nullptr) {
      metrics_->AddUpsertedRows(request_.ids_size());
      metrics_->RecordRows("Upsert", request_.ids_size());
    }
    response_.set_batch_index(batch_index_);
    response_.set_rows(static_cast<uint64_t>(request_.ids_size()));
    response_.set_inserted(result->inserted);
    response_.set_total_rows(total_rows_);
    response_.set_item_count(result->item_count);
    return absl::OkStatus();
  }

  void Done(const absl::Status& status) {
    if (metrics_ != nullptr) {
      metrics_->RecordRequest("Upsert", static_cast<int>(status.code()), SecondsSince(start_));
    }
    Finish(ToGrpcStatus(status));
  }

  Storage* storage_;
  Metrics* metrics_;
  Clock::time_point start_;
  v1::UpsertRequest request_;
  v1::UpsertResponse response_;
  std::string collection_;
  uint64_t batch_index_ = 0;
  uint64_t total_rows_ = 0;
};

grpc::ServerBidiReactor<v1::UpsertRequest, v1::UpsertResponse>* QuantdService::Upsert(
    grpc::CallbackServerContext* context) {
  if (auto denied = authorizer_.Authorize(*context, "Upsert"); !denied.ok()) {
    return RejectStream<grpc::ServerBidiReactor<v1::UpsertRequest, v1::UpsertResponse>>(
        metrics_, "Upsert", denied);
  }
  return new UpsertReactor(storage_, metrics_);
}

namespace {

void FillSid(const int32_t* codes, int64_t levels, uint32_t suffix, v1::Sid* sid) {
  for (int64_t l = 0; l < levels; ++l) sid->add_codes(static_cast<uint32_t>(codes[l]));
  sid->set_suffix(suffix);
  sid->set_tokens(RenderSidTokens(absl::MakeConstSpan(codes, static_cast<size_t>(levels)), suffix));
}

}  // namespace

grpc::ServerUnaryReactor* QuantdService::TrainTokenizer(grpc::CallbackServerContext* context,
                                                        const v1::TrainTokenizerRequest* request,
                                                        v1::Job* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "TrainTokenizer"); !denied.ok())
    return Finish(context, "TrainTokenizer", start, denied);
  auto job = jobs_->StartTrainTokenizer(*request);
  if (job.ok()) *response = *job;
  return Finish(context, "TrainTokenizer", start, job.status());
}

grpc::ServerUnaryReactor* QuantdService::TrainIndex(grpc::CallbackServerContext* context,
                                                    const v1::TrainIndexRequest* request,
                                                    v1::Job* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "TrainIndex"); !denied.ok())
    return Finish(context, "TrainIndex", start, denied);
  auto job = jobs_->StartTrainIndex(*request);
  if (job.ok()) *response = *job;
  return Finish(context, "TrainIndex", start, job.status());
}

// Runs on the serving pool: a batch is bounded (kMaxSearchQueries x kMaxSearchK) and searched on
// one core.
grpc::ServerUnaryReactor* QuantdService::Search(grpc::CallbackServerContext* context,
                                                const v1::SearchRequest* request,
                                                v1::SearchResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "Search"); !denied.ok())
    return Finish(context, "Search", start, denied);
  return OnPool(context, "Search", start, [this, request, response]() -> absl::Status {
    auto result = storage_->indexes().Search(request->collection(), request->queries(),
                                             request->k(), request->nprobe(), request->refine());
    if (!result.ok()) return result.status();
    if (metrics_ != nullptr) metrics_->RecordRows("Search", result->neighbors.size());
    response->set_index_version(result->index_version);
    response->set_nprobe(static_cast<uint32_t>(result->nprobe));
    for (const std::vector<IvfPqNeighbor>& neighbors : result->neighbors) {
      v1::SearchResult* out = response->add_results();
      for (const IvfPqNeighbor& neighbor : neighbors) {
        out->add_ids(neighbor.id);
        out->add_distances(neighbor.distance);
      }
    }
    return absl::OkStatus();
  });
}

namespace {

// An empty job id is a caller mistake (every job has one), not a job that does not exist.
absl::Status EmptyJobId() {
  return absl::InvalidArgumentError("id is empty: name a job, such as one from ListJobs");
}

}  // namespace

grpc::ServerUnaryReactor* QuantdService::GetJob(grpc::CallbackServerContext* context,
                                                const v1::GetJobRequest* request,
                                                v1::Job* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "GetJob"); !denied.ok())
    return Finish(context, "GetJob", start, denied);
  auto job =
      request->id().empty() ? absl::StatusOr<v1::Job>(EmptyJobId()) : jobs_->Get(request->id());
  if (job.ok()) *response = *job;
  return Finish(context, "GetJob", start, job.status());
}

grpc::ServerUnaryReactor* QuantdService::ListJobs(grpc::CallbackServerContext* context,
                                                  const v1::ListJobsRequest* request,
                                                  v1::ListJobsResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "ListJobs"); !denied.ok())
    return Finish(context, "ListJobs", start, denied);
  uint32_t collection_id = 0;
  if (!request->collection().empty()) {
    auto info = storage_->collections().Describe(request->collection());
    if (!info.ok()) return Finish(context, "ListJobs", start, info.status());
    collection_id = info->id;
  }
  for (v1::Job& job : jobs_->List(request->collection(), collection_id)) {
    *response->add_jobs() = std::move(job);
  }
  return Finish(context, "ListJobs", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* QuantdService::CancelJob(grpc::CallbackServerContext* context,
                                                   const v1::CancelJobRequest* request,
                                                   v1::Job* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "CancelJob"); !denied.ok())
    return Finish(context, "CancelJob", start, denied);
  auto job =
      request->id().empty() ? absl::StatusOr<v1::Job>(EmptyJobId()) : jobs_->Cancel(request->id());
  if (job.ok()) *response = *job;
  return Finish(context, "CancelJob", start, job.status());
}

grpc::ServerUnaryReactor* QuantdService::Encode(grpc::CallbackServerContext* context,
                                                const v1::EncodeRequest* request,
                                                v1::EncodeResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "Encode"); !denied.ok())
    return Finish(context, "Encode", start, denied);
  return OnPool(context, "Encode", start, [this, request, response]() -> absl::Status {
    auto info = storage_->collections().Describe(request->collection());
    if (!info.ok()) return info.status();
    if (metrics_ != nullptr) {
      metrics_->RecordRows(
          "Encode",
          request->ids_size() + request->vectors_size() / std::max<int64_t>(1, info->dimension));
    }
    if (request->ids_size() == 0 && request->vectors_size() == 0) {
      return absl::InvalidArgumentError("ids and vectors are both empty: give either or both");
    }
    auto tokenizer = storage_->tokenizers().GetTokenizer(request->collection());
    if (!tokenizer.ok()) return tokenizer.status();
    const int64_t levels = (*tokenizer)->levels();
    response->set_tokenizer_version((*tokenizer)->version());
    if (request->ids_size() > 0) {
      if (request->ids_size() > kMaxEncodeRows) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "ids has %d entries, at most %d per request", request->ids_size(), kMaxEncodeRows));
      }
      auto sids =
          storage_->tokenizers().GetSids(request->collection(), **tokenizer, request->ids());
      if (!sids.ok()) return sids.status();
      for (size_t i = 0; i < sids->ids.size(); ++i) {
        response->add_ids(sids->ids[i]);
        FillSid(sids->codes.data() + i * levels, levels, sids->suffixes[i], response->add_sids());
      }
      response->mutable_missing_ids()->Add(sids->missing.begin(), sids->missing.end());
    }
    if (request->vectors_size() > 0) {
      const int64_t d = info->dimension;
      if (request->vectors_size() % d != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "vectors has %d values, not a multiple of dimension %d of collection '%s'",
            request->vectors_size(), d, request->collection()));
      }
      const int64_t n = request->vectors_size() / d;
      if (n > kMaxEncodeRows) {
        return absl::InvalidArgumentError(
            absl::StrFormat("vectors holds %d rows, at most %d per request", n, kMaxEncodeRows));
      }
      if (auto s = CheckVectors(request->vectors().data(), n, d, info->metric); !s.ok()) return s;
      std::vector<int32_t> codes(static_cast<size_t>(n * levels));
      (*tokenizer)->Encode(request->vectors().data(), n, codes.data());
      auto counts =
          storage_->tokenizers().CountTuples(request->collection(), **tokenizer, codes.data(), n);
      if (!counts.ok()) return counts.status();
      for (int64_t i = 0; i < n; ++i) {
        v1::EncodedVector* encoded = response->add_encoded();
        const int32_t* row = codes.data() + i * levels;
        for (int64_t l = 0; l < levels; ++l) encoded->add_codes(static_cast<uint32_t>(row[l]));
        encoded->set_tokens(RenderSidTokens(absl::MakeConstSpan(row, static_cast<size_t>(levels))));
        encoded->set_items_with_codes((*counts)[i]);
      }
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QuantdService::Lookup(grpc::CallbackServerContext* context,
                                                const v1::LookupRequest* request,
                                                v1::LookupResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "Lookup"); !denied.ok())
    return Finish(context, "Lookup", start, denied);
  auto status = [&]() -> absl::Status {
    std::vector<int64_t> prefix(request->codes().begin(), request->codes().end());
    if (!request->tokens().empty()) {
      if (!prefix.empty()) return absl::InvalidArgumentError("give codes or tokens, not both");
      auto parsed = ParseSidTokens(request->tokens());
      if (!parsed.ok()) return parsed.status();
      prefix = std::move(*parsed);
    }
    if (prefix.empty()) return absl::InvalidArgumentError("codes and tokens are both empty");
    const int64_t limit = request->limit() == 0 ? 1000 : request->limit();
    if (limit > kMaxLookupLimit) {
      return absl::InvalidArgumentError(
          absl::StrFormat("limit %d exceeds %d", request->limit(), kMaxLookupLimit));
    }
    auto tokenizer = storage_->tokenizers().GetTokenizer(request->collection());
    if (!tokenizer.ok()) return tokenizer.status();
    auto found =
        storage_->tokenizers().LookupSids(request->collection(), **tokenizer, prefix, limit);
    if (!found.ok()) return found.status();
    for (size_t i = 0; i < found->ids.size(); ++i) {
      response->add_ids(found->ids[i]);
      FillSid(found->codes.data() + i * found->levels, found->levels, found->suffixes[i],
              response->add_sids());
    }
    response->set_truncated(found->truncated);
    return absl::OkStatus();
  }();
  return Finish(context, "Lookup", start, status);
}

// Streams a collection's SIDs in batches of kExportBatch items, one write at a time.
class QuantdService::ExportReactor final : public grpc::ServerWriteReactor<v1::ExportSidsResponse> {
 public:
  ExportReactor(Storage* storage, Metrics* metrics, const v1::ExportSidsRequest& request)
      : metrics_(metrics), start_(Clock::now()) {
    auto tokenizer = storage->tokenizers().GetTokenizer(request.collection());
    auto list = tokenizer.ok() ? storage->tokenizers().ExportSids(request.collection(), **tokenizer)
                               : absl::StatusOr<SidList>(tokenizer.status());
    if (!list.ok()) {
      Done(list.status());
      return;
    }
    list_ = std::move(*list);
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Done(absl::CancelledError("the client went away"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  static constexpr size_t kExportBatch = 8192;
  void WriteNext() {
    // The first message goes out even for an empty collection: it carries version and levels.
    if (next_ >= list_.ids.size() && next_ > 0) {
      Done(absl::OkStatus());
      return;
    }
    const size_t end = std::min(list_.ids.size(), next_ + kExportBatch);
    response_.Clear();
    response_.set_tokenizer_version(list_.version);
    response_.set_levels(static_cast<uint32_t>(list_.levels));
    response_.mutable_ids()->Add(list_.ids.begin() + next_, list_.ids.begin() + end);
    for (size_t i = next_ * list_.levels; i < end * list_.levels; ++i) {
      response_.add_codes(static_cast<uint32_t>(list_.codes[i]));
    }
    response_.mutable_suffixes()->Add(list_.suffixes.begin() + next_, list_.suffixes.begin() + end);
    next_ = std::max(end, next_ + 1);
    StartWrite(&response_);
  }
  void Done(const absl::Status& status) {
    if (metrics_ != nullptr) {
      metrics_->RecordRequest("ExportSids", static_cast<int>(status.code()), SecondsSince(start_));
    }
    Finish(ToGrpcStatus(status));
  }

  Metrics* metrics_;
  Clock::time_point start_;
  SidList list_;
  size_t next_ = 0;
  v1::ExportSidsResponse response_;
};

grpc::ServerWriteReactor<v1::ExportSidsResponse>* QuantdService::ExportSids(
    grpc::CallbackServerContext* context, const v1::ExportSidsRequest* request) {
  if (auto denied = authorizer_.Authorize(*context, "ExportSids"); !denied.ok()) {
    return RejectStream<grpc::ServerWriteReactor<v1::ExportSidsResponse>>(metrics_, "ExportSids",
                                                                          denied);
  }
  return new ExportReactor(storage_, metrics_, *request);
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
}

}  // namespace

grpc::ServerUnaryReactor* QuantdService::GetStats(grpc::CallbackServerContext* context,
                                                  const v1::GetStatsRequest* request,
                                                  v1::GetStatsResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto denied = authorizer_.Authorize(*context, "GetStats"); !denied.ok())
    return Finish(context, "GetStats", start, denied);
  auto status = [&]() -> absl::Status {
    auto info = storage_->collections().Describe(request->collection());
    if (!info.ok()) return info.status();
    ToProto(*info, response->mutable_collection());
    auto index = storage_->indexes().GetIndex(request->collection());
    if (index.ok()) {
      FillIndexStats(**index, response->mutable_index());
    } else if (index.status().code() != absl::StatusCode::kFailedPrecondition) {
      return index.status();
    }
    auto tokenizer = storage_->tokenizers().GetTokenizer(request->collection());
    if (tokenizer.status().code() == absl::StatusCode::kFailedPrecondition) {
      return absl::OkStatus();  // no tokenizer yet: collection stats only
    }
    if (!tokenizer.ok()) return tokenizer.status();
    auto sids = storage_->tokenizers().ExportSids(request->collection(), **tokenizer);
    if (!sids.ok()) return sids.status();
    const storage::TokenizerRecord& record = (*tokenizer)->record();
    const int64_t levels = (*tokenizer)->levels();
    const int64_t n = static_cast<int64_t>(sids->ids.size());
    v1::TokenizerStats* stats = response->mutable_tokenizer();
    stats->set_version(record.version());
    stats->set_levels(static_cast<uint32_t>(levels));
    stats->mutable_codebook_sizes()->Add(record.codebook_sizes().begin(),
                                         record.codebook_sizes().end());
    stats->set_balanced(record.balanced());
    stats->set_seed(record.seed());
    stats->set_max_iterations(record.max_iterations());
    stats->set_trained_items(record.trained_items());
    stats->set_train_seconds(record.train_seconds());
    stats->set_create_time_ms(record.create_time_ms());
    stats->set_job_id(record.job_id());
    const CollisionStats collisions = ComputeCollisions(sids->codes.data(), n, levels);
    stats->set_items(static_cast<uint64_t>(n));
    stats->set_unique_tuples(static_cast<uint64_t>(collisions.unique_tuples));
    stats->set_collision_rate(collisions.collision_rate);
    stats->set_collision_groups(static_cast<uint64_t>(collisions.collision_groups));
    stats->set_largest_group(static_cast<uint64_t>(collisions.largest_group));
    for (int64_t l = 0; l < levels; ++l) {
      const LevelUsage usage = ComputeLevelUsage(sids->codes.data() + l, n, levels,
                                                 (*tokenizer)->quantizer().codebook_size(l));
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
        level->mutable_bounds()->set_size_min(trained.size_min());
        level->mutable_bounds()->set_size_max(trained.size_max());
        level->set_iterations(trained.iterations());
      }
    }
    return absl::OkStatus();
  }();
  return Finish(context, "GetStats", start, status);
}

QuantdService::~QuantdService() {
  std::lock_guard lock(backup_mu_);
  if (backup_thread_.joinable()) backup_thread_.join();
}

// One backup at a time: a second one while one runs is ABORTED at once (the Storage refuses it
// too) rather than queued, so no caller waits unboundedly behind a long copy. The server's
// Shutdown waits for a running backup (its call is in flight) before the storage closes.
grpc::ServerUnaryReactor* QuantdService::Backup(grpc::CallbackServerContext* context,
                                                const v1::BackupRequest* request,
                                                v1::BackupResponse* response) {
  const Clock::time_point start = Clock::now();
  if (auto status = ValidateBackupName(request->name()); !status.ok()) {
    return Finish(context, "Backup", start, status);
  }
  std::lock_guard lock(backup_mu_);
  if (backup_running_.exchange(true)) {
    return Finish(context, "Backup", start,
                  absl::AbortedError(absl::StrFormat(
                      "backup '%s' not started: another backup is running; retry when it ends",
                      request->name())));
  }
  // The previous backup's thread has cleared backup_running_: at most its Finish is left.
  if (backup_thread_.joinable()) backup_thread_.join();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  backup_thread_ = std::thread([this, request, response, reactor, start] {
    auto result = storage_->backups().Backup(backup_dir_, request->name());
    if (result.ok()) {
      response->set_path(result->path);
      response->set_bytes(result->bytes);
      response->set_files(result->files);
      response->set_seconds(result->seconds);
      response->set_sequence(result->sequence);
      LogInfo("backup '%s' written to %s: %d bytes in %d files, %.3f s, sequence %d",
              request->name(), result->path, result->bytes, result->files, result->seconds,
              result->sequence);
    } else {
      LogWarning("backup '%s' failed: %s", request->name(), result.status().ToString());
    }
    if (metrics_ != nullptr) {
      metrics_->RecordRequest("Backup", static_cast<int>(result.status().code()),
                              SecondsSince(start));
    }
    // Cleared before the answer goes out, so a caller's next backup is never refused.
    backup_running_ = false;
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  return reactor;
}

namespace {

class UnparsableRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit UnparsableRequestInterceptor(grpc::experimental::ServerRpcInfo* info) : info_(info) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    // A unary or server-streaming call has exactly one request; no message means it did not
    // deserialize.
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      unparsable_ = true;
    }
    if (unparsable_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("the request to ", info_->method(),
                         " does not parse as its request message (cut short, not protobuf, or a "
                         "string field that is not UTF-8)")));
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  bool unparsable_ = false;
};

class UnparsableRequestFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    using Type = grpc::experimental::ServerRpcInfo::Type;
    if (info->type() != Type::UNARY && info->type() != Type::SERVER_STREAMING) return nullptr;
    return new UnparsableRequestInterceptor(info);
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
UnparsableRequestInterceptors() {
  return std::make_unique<UnparsableRequestFactory>();
}

}  // namespace quantd
