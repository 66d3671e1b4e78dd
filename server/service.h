// gRPC adapter of quantd.v1.Quantd: every method is registered with GuardedService (server/rpc.h),
// which authorizes, places and finishes the call; the handlers here convert protos, validate
// what the proto allows but quantd does not, and delegate to Storage, JobManager and the SID layer
// (SidService).
#ifndef QUANTD_SERVER_SERVICE_H_
#define QUANTD_SERVER_SERVICE_H_

#include <cstdint>
#include <string>
#include <utility>

#include "quantd/v1/quantd.grpc.pb.h"
#include "server/auth.h"
#include "server/jobs.h"
#include "server/metrics.h"
#include "server/rpc.h"
#include "server/sid_service.h"
#include "server/storage.h"

namespace quantd {

// A SID as the API shows it: codes (levels), suffix, tokens.
void FillSid(const int32_t* codes, int64_t levels, uint32_t suffix, v1::Sid* sid);

// Largest GetItems answer, in bytes of vector payload (the default message limit is above it).
inline constexpr int64_t kMaxResponsePayloadBytes = 48 << 20;

class QuantdService final : public GuardedService<v1::Quantd> {
 public:
  // `storage`, `jobs`, `metrics` (may be null) and limits.pool outlive the service. Backups go
  // under `backup_dir`.
  QuantdService(Storage* storage, JobManager* jobs, Metrics* metrics, ServiceLimits limits = {},
                std::string backup_dir = "");

  // The SID layer, whose cached figures the metrics collector shares.
  const SidService& sids() const { return sids_; }
  // Bytes an RQ-VAE training job may hold (0: no bound); larger jobs are refused at
  // TrainTokenizer with RESOURCE_EXHAUSTED.
  void set_training_memory_limit(int64_t bytes) { training_memory_bytes_ = bytes; }

 private:
  absl::Status HandleCreateCollection(const v1::CreateCollectionRequest& request,
                                      v1::CreateCollectionResponse* response);
  absl::Status HandleListCollections(const v1::ListCollectionsRequest& request,
                                     v1::ListCollectionsResponse* response);
  absl::Status HandleDescribeCollection(const v1::DescribeCollectionRequest& request,
                                        v1::DescribeCollectionResponse* response);
  absl::Status HandleDropCollection(const v1::DropCollectionRequest& request,
                                    v1::DropCollectionResponse* response);
  StreamSession<v1::UpsertRequest, v1::UpsertResponse> NewUpsertSession();
  absl::Status HandleDeleteItems(const v1::DeleteItemsRequest& request,
                                 v1::DeleteItemsResponse* response);
  absl::Status HandleGetItems(const v1::GetItemsRequest& request, v1::GetItemsResponse* response);
  absl::Status HandleListItems(const v1::ListItemsRequest& request,
                               v1::ListItemsResponse* response);
  absl::Status HandleTrainTokenizer(const v1::TrainTokenizerRequest& request, v1::Job* response);
  absl::Status HandleEncode(const v1::EncodeRequest& request, v1::EncodeResponse* response);
  absl::Status HandleLookup(const v1::LookupRequest& request, v1::LookupResponse* response);
  absl::StatusOr<MessageSource<v1::ExportSidsResponse>> HandleExportSids(
      const v1::ExportSidsRequest& request);
  absl::Status HandleTrainIndex(const v1::TrainIndexRequest& request, v1::Job* response);
  absl::Status HandleSearch(const v1::SearchRequest& request, v1::SearchResponse* response);
  absl::Status HandleGetJob(const v1::GetJobRequest& request, v1::Job* response);
  absl::Status HandleListJobs(const v1::ListJobsRequest& request, v1::ListJobsResponse* response);
  absl::Status HandleCancelJob(const v1::CancelJobRequest& request, v1::Job* response);
  absl::Status HandleGetStats(const v1::GetStatsRequest& request, v1::GetStatsResponse* response);
  absl::Status HandleBackup(const v1::BackupRequest& request, v1::BackupResponse* response);
  // Tokenizer versions (service_versions.cc).
  absl::Status HandleListTokenizerVersions(const v1::ListTokenizerVersionsRequest& request,
                                           v1::TokenizerVersions* response);
  absl::Status HandleActivateTokenizer(const v1::ActivateTokenizerRequest& request,
                                       v1::TokenizerVersions* response);
  absl::Status HandleDropTokenizerVersion(const v1::DropTokenizerVersionRequest& request,
                                          v1::TokenizerVersions* response);
  absl::Status HandlePinTokenizerVersion(const v1::PinTokenizerVersionRequest& request,
                                         v1::TokenizerVersions* response);
  absl::Status HandleSetTokenizerRetention(const v1::SetTokenizerRetentionRequest& request,
                                           v1::TokenizerVersions* response);
  absl::StatusOr<MessageSource<v1::MapSidsResponse>> HandleMapSids(
      const v1::MapSidsRequest& request);
  absl::Status HandleNextCodes(const v1::NextCodesRequest& request,
                               v1::NextCodesResponse* response);
  absl::Status HandleExportTokenizer(const v1::ExportTokenizerRequest& request,
                                     v1::ExportTokenizerResponse* response);
  absl::Status HandleImportTokenizer(const v1::ImportTokenizerRequest& request, v1::Job* response);
  void RegisterVersionMethods();
  // The kept versions of `collection` (`set` may be null: none) as the API shows them.
  void FillVersions(absl::string_view collection, const TokenizerSet* set,
                    v1::TokenizerVersions* out) const;

  Storage* storage_;
  JobManager* jobs_;
  Metrics* metrics_;
  SidService sids_;
  std::string backup_dir_;
  int64_t training_memory_bytes_ = 0;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SERVICE_H_
