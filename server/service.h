// gRPC adapter of quantd.v1.Quantd: validates and converts requests, delegates to Storage, maps
// absl::Status to grpc::Status (the codes are the same numbers). Callback API: cheap RPCs finish
// inline on gRPC's threads.
#ifndef QUANTD_SERVER_SERVICE_H_
#define QUANTD_SERVER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "grpcpp/support/server_interceptor.h"
#include "quantd/v1/quantd.grpc.pb.h"
#include "server/auth.h"
#include "server/jobs.h"
#include "server/metrics.h"
#include "server/storage.h"

namespace quantd {

// Largest GetItems answer, in bytes of vector payload (the default message limit is above it).
inline constexpr int64_t kMaxResponsePayloadBytes = 48 << 20;
// Most vectors one Encode request may carry, and most ids a Lookup may return.
inline constexpr int64_t kMaxEncodeRows = 100000;
inline constexpr int64_t kMaxLookupLimit = 100000;

class WorkQueue;

// How the serving calls are bounded (see ServerOptions for the flags behind them).
struct ServiceLimits {
  // Search and Encode run through it (inline when a slot is free, else queued; null: always
  // inline, unbounded); a full queue refuses the call with RESOURCE_EXHAUSTED.
  WorkQueue* pool = nullptr;
  // Budget of a queued call whose client set no deadline, and the most any call gets: a call
  // still queued when its budget runs out is answered DEADLINE_EXCEEDED without being run.
  std::chrono::milliseconds default_deadline{30000};
  std::chrono::milliseconds max_deadline{600000};
};

class QuantdService final : public v1::Quantd::CallbackService {
 public:
  // `storage`, `jobs`, `metrics` (may be null) and limits.pool outlive the service. Backups go
  // under `backup_dir`.
  QuantdService(Storage* storage, JobManager* jobs, Metrics* metrics, ServiceLimits limits = {},
                std::string backup_dir = "")
      : storage_(storage),
        jobs_(jobs),
        metrics_(metrics),
        limits_(limits),
        backup_dir_(std::move(backup_dir)) {}
  ~QuantdService() override;  // waits for a running backup's thread

  // Bearer-token checks for every call (server/auth.h); the default allows every call.
  void set_authorizer(Authorizer authorizer) { authorizer_ = std::move(authorizer); }

  grpc::ServerUnaryReactor* CreateCollection(grpc::CallbackServerContext* context,
                                             const v1::CreateCollectionRequest* request,
                                             v1::CreateCollectionResponse* response) override;
  grpc::ServerUnaryReactor* ListCollections(grpc::CallbackServerContext* context,
                                            const v1::ListCollectionsRequest* request,
                                            v1::ListCollectionsResponse* response) override;
  grpc::ServerUnaryReactor* DescribeCollection(grpc::CallbackServerContext* context,
                                               const v1::DescribeCollectionRequest* request,
                                               v1::DescribeCollectionResponse* response) override;
  grpc::ServerUnaryReactor* DropCollection(grpc::CallbackServerContext* context,
                                           const v1::DropCollectionRequest* request,
                                           v1::DropCollectionResponse* response) override;
  grpc::ServerBidiReactor<v1::UpsertRequest, v1::UpsertResponse>* Upsert(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* DeleteItems(grpc::CallbackServerContext* context,
                                        const v1::DeleteItemsRequest* request,
                                        v1::DeleteItemsResponse* response) override;
  grpc::ServerUnaryReactor* GetItems(grpc::CallbackServerContext* context,
                                     const v1::GetItemsRequest* request,
                                     v1::GetItemsResponse* response) override;
  grpc::ServerUnaryReactor* TrainTokenizer(grpc::CallbackServerContext* context,
                                           const v1::TrainTokenizerRequest* request,
                                           v1::Job* response) override;
  grpc::ServerUnaryReactor* Encode(grpc::CallbackServerContext* context,
                                   const v1::EncodeRequest* request,
                                   v1::EncodeResponse* response) override;
  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* context,
                                   const v1::LookupRequest* request,
                                   v1::LookupResponse* response) override;
  grpc::ServerWriteReactor<v1::ExportSidsResponse>* ExportSids(
      grpc::CallbackServerContext* context, const v1::ExportSidsRequest* request) override;
  grpc::ServerUnaryReactor* TrainIndex(grpc::CallbackServerContext* context,
                                       const v1::TrainIndexRequest* request,
                                       v1::Job* response) override;
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const v1::SearchRequest* request,
                                   v1::SearchResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* Backup(grpc::CallbackServerContext* context,
                                   const v1::BackupRequest* request,
                                   v1::BackupResponse* response) override;

 private:
  class UpsertReactor;
  class ExportReactor;
  // Finishes a unary call with `status`, recording it in the metrics.
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, absl::string_view method,
                                   std::chrono::steady_clock::time_point start,
                                   const absl::Status& status);
  void Complete(grpc::ServerUnaryReactor* reactor, absl::string_view method,
                std::chrono::steady_clock::time_point start, const absl::Status& status);
  // Runs `work` on limits_.pool and finishes the call with its status; refuses the call when
  // the queue is full, and skips the work when the client cancelled or the call's budget ran
  // out while it waited. `method` must outlive the call (a string literal).
  grpc::ServerUnaryReactor* OnPool(grpc::CallbackServerContext* context, absl::string_view method,
                                   std::chrono::steady_clock::time_point start,
                                   std::function<absl::Status()> work);

  Storage* storage_;
  JobManager* jobs_;
  Metrics* metrics_;
  ServiceLimits limits_;
  Authorizer authorizer_;
  std::string backup_dir_;
  // A backup runs on its own thread (it may copy gigabytes), not on gRPC's callback threads.
  std::mutex backup_mu_;       // guards backup_thread_
  std::thread backup_thread_;  // the latest backup's thread, joined by the next one
  std::atomic<bool> backup_running_{false};
};

grpc::Status ToGrpcStatus(const absl::Status& status);

// gRPC's callback API deserializes a unary or server-streaming request before the service sees
// it, and answers one that does not parse (cut short, not protobuf, a string that is not UTF-8)
// with UNIMPLEMENTED and no message, as if the method did not exist. Interceptors from this
// factory make that INVALID_ARGUMENT naming the method. (Upsert, bidi, tells a batch that does
// not parse from the end of the stream itself.)
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
UnparsableRequestInterceptors();

}  // namespace quantd

#endif  // QUANTD_SERVER_SERVICE_H_
