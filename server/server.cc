#include "server/server.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "server/auth.h"
#include "server/health.h"
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

namespace {

// The port of a listen address ("host:port", "[::]:port"), checked to be 0..65535; `flag`
// names the setting in the error. Unix-domain addresses ("unix:...") have no port.
absl::Status CheckListenPort(absl::string_view flag, const std::string& address) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return absl::OkStatus();
  }
  const size_t colon = address.rfind(':');
  const std::string port = colon == std::string::npos ? std::string() : address.substr(colon + 1);
  uint32_t value = 0;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) ||
      !absl::SimpleAtoi(port, &value) || value > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s '%s': the port must be a number in 0..65535 (host:port; 0 picks a free port)", flag,
        address));
  }
  return absl::OkStatus();
}

// What to do about a directory quantd cannot create or write, as whichever user it runs as (in
// the Docker image uid 10001, and a bind-mounted host directory is often root's).
std::string OwnershipHint(const std::string& dir) {
  std::error_code error;
  std::filesystem::path existing = std::filesystem::absolute(dir, error);
  while (!existing.empty() && !std::filesystem::exists(existing, error) &&
         existing != existing.parent_path()) {
    existing = existing.parent_path();
  }
  return absl::StrFormat(
      "quantd runs as uid %d gid %d: give it the directory, e.g. `chown -R %d:%d %s` (as root; "
      "in Docker on the host directory mounted there), or choose another directory",
      geteuid(), getegid(), geteuid(), getegid(), existing.string());
}

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  if (options.max_message_bytes < 1 << 20) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_message_bytes %d is below 1 MiB", options.max_message_bytes));
  }
  if (options.keep_tokenizer_versions < 1 ||
      options.keep_tokenizer_versions > kMaxKeptTokenizerVersions) {
    return absl::InvalidArgumentError(absl::StrFormat("keep_tokenizer_versions %d is outside 1..%d",
                                                      options.keep_tokenizer_versions,
                                                      kMaxKeptTokenizerVersions));
  }
  if (options.search_threads < 0 || options.search_queue < 0 || options.max_collections < 1 ||
      options.default_deadline.count() < 1 || options.max_deadline < options.default_deadline) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "limits out of range: search_threads %d and search_queue %d must be >= 0, "
        "max_collections %d >= 1, 1 ms <= default_deadline %d ms <= max_deadline %d ms",
        options.search_threads, options.search_queue, options.max_collections,
        options.default_deadline.count(), options.max_deadline.count()));
  }
  if (auto status = CheckListenPort("listen", options.listen_address); !status.ok()) {
    return status;
  }
  if (!options.health_listen_address.empty()) {
    if (auto status = CheckListenPort("health_listen", options.health_listen_address);
        !status.ok()) {
      return status;
    }
  }
  if (!options.metrics_address.empty()) {
    if (auto status = CheckListenPort("metrics_addr", options.metrics_address); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<QuantdServer>> QuantdServer::Start(const ServerOptions& options) {
  auto server = std::unique_ptr<QuantdServer>(new QuantdServer());
  server->options_ = options;
  if (auto status = ValidateServerOptions(options); !status.ok()) return status;

  auto security = LoadSecurity(options);  // checks the TLS and token files before the data
  if (!security.ok()) return security.status();

  // quantd's own grpc.health.v1 (server/health.h), which ends Watch streams on a drain.
  grpc::EnableDefaultHealthCheckService(false);
  server->health_ = std::make_unique<HealthStatus>(
      std::vector<std::string>{std::string(v1::Quantd::service_full_name())});
  if (!options.health_listen_address.empty()) {
    // Up before the database opens, so probes see NOT_SERVING rather than a refused connection.
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.health_listen_address, grpc::InsecureServerCredentials(),
                             &server->health_port_);
    server->health_port_service_ = server->health_->NewService();
    builder.RegisterService(server->health_port_service_.get());
    server->health_server_ = builder.BuildAndStart();
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      return absl::FailedPreconditionError(
          absl::StrFormat("health_listen '%s' cannot be bound", options.health_listen_address));
    }
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
          absl::StrFormat("%s '%s' cannot be created: %s%s", flag, dir, error.message(),
                          error == std::errc::permission_denied ? "; " + OwnershipHint(dir) : ""));
    }
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s '%s' is not writable: %s; %s", flag, dir, std::strerror(errno), OwnershipHint(dir)));
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
  auto storage = Storage::Open({.path = options.data_dir,
                                .sync = options.sync,
                                .max_collections = options.max_collections,
                                .keep_tokenizer_versions = options.keep_tokenizer_versions});
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
  server->service_->set_training_memory_limit(options.training_memory_bytes);

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
  server->health_service_ = server->health_->NewService();
  builder.RegisterService(server->health_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(CallInterceptors(server->metrics_.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("listen_address '%s' cannot be bound", options.listen_address));
  }
  server->health_->SetServing(true);
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
  // Probes and load balancers stop sending new calls first; their Watch streams end now rather
  // than hold the drain below for its whole grace.
  if (health_ != nullptr) health_->Drain();
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
