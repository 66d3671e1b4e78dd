#include "server/server.h"

#include <filesystem>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "server/jobs.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/service.h"
#include "server/store.h"

namespace quantd {

QuantdServer::QuantdServer() = default;

QuantdServer::~QuantdServer() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<QuantdServer>> QuantdServer::Start(const ServerOptions& options) {
  auto server = std::unique_ptr<QuantdServer>(new QuantdServer());
  server->options_ = options;

  // Creates `dir` (and its parents) if missing; the error names `flag`.
  const auto make_directory = [](absl::string_view flag, const std::string& dir) {
    std::error_code error;
    if (std::filesystem::exists(dir, error) && !std::filesystem::is_directory(dir, error)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s '%s' is not a directory", flag, dir));
    }
    std::filesystem::create_directories(dir, error);
    if (error) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s '%s' cannot be created: %s", flag, dir, error.message()));
    }
    return absl::OkStatus();
  };
  if (auto status = make_directory("data_dir", options.data_dir); !status.ok()) return status;
  // Backups are an occasional operation: an unusable backup_dir (say a read-only root
  // filesystem in a container) must not keep the server from serving. Each Backup call tries
  // again and reports the error to its caller.
  if (auto status = make_directory("backup_dir", options.backup_dir); !status.ok()) {
    LogWarning("%s: Backup calls will fail until it can be created", status.message());
  }
  auto store = Store::Open({.path = options.data_dir, .sync = options.sync});
  if (!store.ok()) return store.status();
  server->store_ = std::move(*store);
  auto jobs = JobManager::Create(server->store_.get());
  if (!jobs.ok()) return jobs.status();
  server->jobs_ = std::move(*jobs);
  server->metrics_ = std::make_unique<Metrics>();
  server->service_ = std::make_unique<QuantdService>(server->store_.get(), server->jobs_.get(),
                                                     server->metrics_.get(), options.backup_dir);

  if (!options.metrics_address.empty()) {
    try {
      server->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_address);
    } catch (const std::exception& e) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "metrics_address '%s' cannot be served: %s", options.metrics_address, e.what()));
    }
    server->exposer_->RegisterCollectable(server->metrics_->registry());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  builder.SetMaxSendMessageSize(kMaxReceiveMessageBytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("listen_address '%s' cannot be bound", options.listen_address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

std::string QuantdServer::address() const {
  const std::string& listen = options_.listen_address;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return absl::StrCat(host, ":", port_);
}

std::string QuantdServer::metrics_address() const {
  if (exposer_ == nullptr) return "";
  const std::string& listen = options_.metrics_address;
  return absl::StrCat(listen.substr(0, listen.rfind(':')), ":",
                      exposer_->GetListeningPorts().front());
}

void QuantdServer::Shutdown(std::chrono::milliseconds grace) {
  if (jobs_ != nullptr) jobs_->Stop();  // no training job commits while calls drain
  // The metrics HTTP server (civetweb) takes up to two seconds to stop its poll loop; stop it
  // while gRPC drains rather than after.
  std::thread exposer_stop([exposer = std::move(exposer_)]() mutable { exposer.reset(); });
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
    server_.reset();
  }
  exposer_stop.join();
  jobs_.reset();  // cancels a running training job and waits for it
  service_.reset();
  store_.reset();  // flushes the WAL and closes RocksDB after the last call finished
}

}  // namespace quantd
