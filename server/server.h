// QuantdServer: the whole service in one object: the RocksDB storage, the gRPC server with
// quantd.v1, grpc.health.v1 and reflection, and the Prometheus exposer. Used by the `quantd`
// binary, by the in-process tests and by the benchmarks.
#ifndef QUANTD_SERVER_SERVER_H_
#define QUANTD_SERVER_SERVER_H_

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc
namespace prometheus {
class Exposer;
}

namespace quantd {

class HealthStatus;
class Storage;
class JobManager;
class Metrics;
class StateCollector;
class QuantdService;
class WorkQueue;

struct ServerOptions {
  // host:port for gRPC; port 0 picks a free port (see QuantdServer::port()).
  std::string listen_address = "127.0.0.1:50051";
  // RocksDB directory; created with its parents if missing.
  std::string data_dir = "./var/quantd";
  // host:port for /metrics; empty disables the exposer.
  std::string metrics_address = "127.0.0.1:9464";
  // fsync the WAL before acknowledging each write.
  bool sync = true;
  // host:port of a plaintext gRPC server with only grpc.health.v1 (for probes that cannot speak
  // TLS, such as the kubelet's); it starts first and says NOT_SERVING until the database is open
  // and the models are loaded. Empty disables it.
  std::string health_listen_address;

  // Limits.
  int max_message_bytes = 64 << 20;  // largest request or response message
  int search_threads = 0;  // Search/Encode/GetStats calls running at once; 0: one per core
  int64_t search_queue =
      256;  // Search/Encode/GetStats calls waiting beyond that: RESOURCE_EXHAUSTED
  int64_t max_collections = 1000;  // CreateCollection beyond that: RESOURCE_EXHAUSTED
  // Bytes an RQ-VAE training job may hold (its estimate, RqVaeJobBytes); 0: no bound.
  int64_t training_memory_bytes = int64_t{8} << 30;
  // Tokenizer versions a collection keeps unless it sets its own, 1..16.
  uint32_t keep_tokenizer_versions = 3;
  std::chrono::milliseconds default_deadline{30000};  // budget of a call without a deadline
  std::chrono::milliseconds max_deadline{600000};     // the most budget any call gets
  // TLS: PEM certificate chain and private key (both or neither; neither = plaintext), and a
  // CA whose signature client certificates must carry (empty: none requested).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // "<role> <token>" lines (see server/auth.h); empty turns authorization off.
  std::string tokens_file;
  // Where Backup writes <backup_dir>/<name>; created with its parents if missing.
  std::string backup_dir = "./var/backups";

  // A server embedded in another program (tests, benchmarks): a free loopback port, no
  // metrics endpoint, data in `data_dir`, backups in `backups` beside it.
  static ServerOptions Embedded(std::string data_dir, bool sync) {
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "";
    const std::string parent = std::filesystem::path(data_dir).parent_path().string();
    options.backup_dir = parent.empty() ? "backups" : parent + "/backups";
    options.data_dir = std::move(data_dir);
    options.sync = sync;
    return options;
  }
};

// Checks the options that are caller settings, before anything starts: the limits, and the
// ports of the listen addresses (0..65535; gRPC would silently wrap 99999 to 34463). An
// INVALID_ARGUMENT names the flag and the value. Start() calls it too.
absl::Status ValidateServerOptions(const ServerOptions& options);

class QuantdServer {
 public:
  static absl::StatusOr<std::unique_ptr<QuantdServer>> Start(const ServerOptions& options);
  ~QuantdServer();  // Shutdown() with no grace, then closes the database

  int port() const { return port_; }
  // The address clients dial, e.g. "127.0.0.1:50051".
  std::string address() const;
  std::string metrics_address() const;
  int health_port() const { return health_port_; }  // 0 without a health server

  // Reports NOT_SERVING and ends every grpc.health.v1 Watch stream, stops accepting calls, lets
  // in-flight calls finish for up to `grace`, cancels the rest, then flushes and closes the
  // database. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  QuantdServer();
  ServerOptions options_;
  // grpc.health.v1 status of both servers; declared first so that it outlives their calls.
  std::unique_ptr<HealthStatus> health_;
  std::unique_ptr<grpc::Service> health_service_;       // on server_
  std::unique_ptr<grpc::Service> health_port_service_;  // on health_server_
  int port_ = 0;
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<WorkQueue> pool_;
  std::unique_ptr<QuantdService> service_;
  std::shared_ptr<StateCollector> state_collector_;  // scraped through exposer_
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // on health_listen_address, if set
  int health_port_ = 0;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SERVER_H_
