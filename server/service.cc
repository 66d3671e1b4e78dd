#include "server/service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quantd {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::StatusOr<Metric> MetricFromProto(int value) {
  switch (value) {
    case v1::METRIC_L2:
      return Metric::kL2;
    case v1::METRIC_INNER_PRODUCT:
      return Metric::kInnerProduct;
    case v1::METRIC_COSINE:
      return Metric::kCosine;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "metric %d is not one of METRIC_L2 (1), METRIC_INNER_PRODUCT (2), METRIC_COSINE (3)",
          value));
  }
}

v1::Metric MetricToProto(Metric metric) {
  switch (metric) {
    case Metric::kL2:
      return v1::METRIC_L2;
    case Metric::kInnerProduct:
      return v1::METRIC_INNER_PRODUCT;
    case Metric::kCosine:
      return v1::METRIC_COSINE;
  }
  return v1::METRIC_UNSPECIFIED;
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
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::ServerUnaryReactor* QuantdService::Finish(grpc::CallbackServerContext* context,
                                                absl::string_view method,
                                                std::chrono::steady_clock::time_point start,
                                                const absl::Status& status) {
  if (metrics_ != nullptr) {
    metrics_->RecordRequest(method, static_cast<int>(status.code()), SecondsSince(start));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* QuantdService::CreateCollection(
    grpc::CallbackServerContext* context, const v1::CreateCollectionRequest* request,
    v1::CreateCollectionResponse* response) {
  const Clock::time_point start = Clock::now();
  auto metric = MetricFromProto(request->metric());
  if (!metric.ok()) return Finish(context, "CreateCollection", start, metric.status());
  auto info = store_->CreateCollection(request->name(), request->dimension(), *metric);
  if (info.ok()) ToProto(*info, response->mutable_collection());
  return Finish(context, "CreateCollection", start, info.status());
}

grpc::ServerUnaryReactor* QuantdService::ListCollections(grpc::CallbackServerContext* context,
                                                         const v1::ListCollectionsRequest*,
                                                         v1::ListCollectionsResponse* response) {
  const Clock::time_point start = Clock::now();
  for (const CollectionInfo& info : store_->ListCollections()) {
    ToProto(info, response->add_collections());
  }
  return Finish(context, "ListCollections", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* QuantdService::DescribeCollection(
    grpc::CallbackServerContext* context, const v1::DescribeCollectionRequest* request,
    v1::DescribeCollectionResponse* response) {
  const Clock::time_point start = Clock::now();
  auto info = store_->DescribeCollection(request->name());
  if (info.ok()) ToProto(*info, response->mutable_collection());
  return Finish(context, "DescribeCollection", start, info.status());
}

grpc::ServerUnaryReactor* QuantdService::DropCollection(grpc::CallbackServerContext* context,
                                                        const v1::DropCollectionRequest* request,
                                                        v1::DropCollectionResponse* response) {
  const Clock::time_point start = Clock::now();
  auto deleted = store_->DropCollection(request->name());
  if (deleted.ok()) response->set_items_deleted(*deleted);
  return Finish(context, "DropCollection", start, deleted.status());
}

grpc::ServerUnaryReactor* QuantdService::DeleteItems(grpc::CallbackServerContext* context,
                                                     const v1::DeleteItemsRequest* request,
                                                     v1::DeleteItemsResponse* response) {
  const Clock::time_point start = Clock::now();
  auto result = store_->Delete(request->collection(), request->ids());
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
  auto info = store_->DescribeCollection(request->collection());
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
  auto result = store_->Get(request->collection(), request->ids());
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
  UpsertReactor(Store* store, Metrics* metrics)
      : store_(store), metrics_(metrics), start_(Clock::now()) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
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
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
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
    auto result = store_->Upsert(collection_, request_.ids(), request_.vectors());
    if (!result.ok()) return result.status();
    total_rows_ += static_cast<uint64_t>(request_.ids_size());
    if (metrics_ != nullptr) metrics_->AddUpsertedRows(request_.ids_size());
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

  Store* store_;
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
  return new UpsertReactor(store_, metrics_);
}

}  // namespace quantd
