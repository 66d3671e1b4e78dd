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
#include "server/auth.h"
#include "server/jobs.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/rpc.h"
#include "server/service.h"
#include "server/storage.h"
#include "server/work_queue.h"

namespace quantd {

QuantdServer::QuantdServer() = default;

QuantdServer::~QuantdServer() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<QuantdServer>> QuantdServer::Start(const ServerOptions& options) {
  auto server = std::unique_ptr<QuantdServer>(new QuantdServer());
  server->options_ = options;
  if (options.max_message_bytes < 1 << 20) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_message_bytes %d is below 1 MiB", options.max_message_bytes));
  }
  if (options.search_threads < 0 || options.search_queue < 0 || options.max_collections < 1 ||
      options.default_deadline.count() < 1 || options.max_deadline < options.default_deadline) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "limits out of range: search_threads %d and search_queue %d must be >= 0, "
        "max_collections %d >= 1, 1 ms <= default_deadline %d ms <= max_deadline %d ms",
        options.search_threads, options.search_queue, options.max_collections,
        options.default_deadline.count(), options.max_deadline.count()));
  }

  auto security = LoadSecurity(options);  // checks the TLS and token files before the data
  if (!security.ok()) return security.status();

  grpc::EnableDefaultHealthCheckService(true);
  if (!options.health_listen_address.empty()) {
    // Up before the database opens, so probes see NOT_SERVING rather than a refused connection.
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.health_listen_address, grpc::InsecureServerCredentials(),
                             &server->health_port_);
    server->health_server_ = builder.BuildAndStart();
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      return absl::FailedPreconditionError(
          absl::StrFormat("health_listen '%s' cannot be bound", options.health_listen_address));
    }
    server->SetServing(false);
  }

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
  auto storage = Storage::Open(
      {.path = options.data_dir, .sync = options.sync, .max_collections = options.max_collections});
  if (!storage.ok()) return storage.status();
  server->storage_ = std::move(*storage);
  auto jobs = JobManager::Create(server->storage_.get());
  if (!jobs.ok()) return jobs.status();
  server->jobs_ = std::move(*jobs);
  server->metrics_ = std::make_unique<Metrics>();
  const int threads = options.search_threads > 0
                          ? options.search_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  server->pool_ = std::make_unique<WorkQueue>(threads, options.search_queue);
  server->service_ = std::make_unique<QuantdService>(
      server->storage_.get(), server->jobs_.get(), server->metrics_.get(),
      ServiceLimits{.pool = server->pool_.get(),
                    .default_deadline = options.default_deadline,
                    .max_deadline = options.max_deadline,
                    .max_request_bytes = options.max_message_bytes},
      options.backup_dir);
  server->service_->set_authorizer(std::move(security->authorizer));

  if (!options.metrics_address.empty()) {
    try {
      server->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_address);
    } catch (const std::exception& e) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "metrics_address '%s' cannot be served: %s", options.metrics_address, e.what()));
    }
    server->exposer_->RegisterCollectable(server->metrics_->registry());
    server->state_collector_ =
        std::make_shared<StateCollector>(server->storage_.get(), server->jobs_.get(),
                                         server->pool_.get(), &server->service_->sids());
    server->exposer_->RegisterCollectable(server->state_collector_);
  }

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, security->credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(TransportReceiveLimit(options.max_message_bytes));
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(CallInterceptors(server->metrics_.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("listen_address '%s' cannot be bound", options.listen_address));
  }
  server->SetServing(true);
  return server;
}

void QuantdServer::SetServing(bool serving) {
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s == nullptr) continue;
    s->GetHealthCheckService()->SetServingStatus(serving);  // "" and every service
    s->GetHealthCheckService()->SetServingStatus(v1::Quantd::service_full_name(), serving);
  }
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
  SetServing(false);  // probes and load balancers stop sending new calls first
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
    server_.reset();
  }
  if (health_server_ != nullptr) {
    health_server_->Shutdown(std::chrono::system_clock::now());
    health_server_->Wait();
    health_server_.reset();
  }
  exposer_stop.join();  // no scrape reads the pool, the jobs or the storage after this
  pool_.reset();        // every queued call finished with the gRPC server
  jobs_.reset();        // cancels a running training job and waits for it
  service_.reset();
  storage_.reset();  // flushes the WAL and closes RocksDB after the last call finished
}

}  // namespace quantd
