// quantd: the gRPC server. Flags can also be set by environment variables (a flag on the
// command line wins):
//   --listen         QUANTD_LISTEN         gRPC address, default 127.0.0.1:50051
//   --data_dir       QUANTD_DATA_DIR       RocksDB directory, default ./var/quantd
//   --metrics_addr   QUANTD_METRICS_ADDR   Prometheus /metrics address ("" disables)
//   --sync           QUANTD_SYNC           fsync each write before acknowledging (true/false)
//   --shutdown_grace QUANTD_SHUTDOWN_GRACE seconds in-flight calls get on SIGTERM/SIGINT
//   --health_listen  QUANTD_HEALTH_LISTEN  plaintext grpc.health.v1-only address ("" disables)
// and the limits: --max_message_mb, --search_threads, --search_queue, --max_collections,
// --default_deadline_ms, --max_deadline_ms (QUANTD_MAX_MESSAGE_MB, ...).
//   --tls_cert       QUANTD_TLS_CERT       PEM certificate chain; with --tls_key turns TLS on
//   --tls_key        QUANTD_TLS_KEY        PEM private key of --tls_cert (unencrypted)
//   --tls_client_ca  QUANTD_TLS_CLIENT_CA  PEM CA; clients must present a certificate it signed
//   --tokens_file    QUANTD_TOKENS_FILE    "<read|write> <token>" lines; empty: no authorization
//   --backup_dir     QUANTD_BACKUP_DIR     where Backup writes, default ./var/backups
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/heap.h"
#include "server/log.h"
#include "server/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC listen address (host:port)");
ABSL_FLAG(std::string, data_dir, "./var/quantd", "RocksDB data directory");
ABSL_FLAG(std::string, metrics_addr, "127.0.0.1:9464",
          "Prometheus metrics address (host:port); empty disables");
ABSL_FLAG(bool, sync, true, "fsync the write-ahead log before acknowledging each write");
ABSL_FLAG(std::string, backup_dir, "./var/backups",
          "directory the Backup RPC writes backups into (created if missing)");
ABSL_FLAG(int, shutdown_grace, 20, "seconds in-flight calls may run after SIGTERM/SIGINT");
ABSL_FLAG(std::string, health_listen, "",
          "plaintext gRPC address serving only grpc.health.v1, up before the database opens "
          "(for probes that cannot use TLS); empty disables");
ABSL_FLAG(int, max_message_mb, 64, "largest gRPC request or response message, in MiB (1..1024)");
ABSL_FLAG(int, search_threads, 0,
          "Search and Encode calls running at once (and worker threads for the queued ones); 0 = "
          "one per core");
ABSL_FLAG(int64_t, search_queue, 256,
          "Search/Encode calls that may wait for a worker; beyond that RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_collections, 1000, "most collections; beyond that RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, default_deadline_ms, 30000,
          "budget of a Search/Encode call whose client set no deadline (queued past it: "
          "DEADLINE_EXCEEDED)");
ABSL_FLAG(int64_t, max_deadline_ms, 600000, "the most budget any Search/Encode call gets");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the server; with --tls_key turns TLS on (both or neither)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key (unencrypted) of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s); when set, clients must present a certificate signed by it");
ABSL_FLAG(std::string, tokens_file, "",
          "file of '<read|write> <token>' lines (e.g. a mounted Kubernetes Secret); every call "
          "then needs 'authorization: Bearer <token>'. Empty: no authorization");

namespace {

// Applies QUANTD_<FLAG> environment variables as flag defaults; returns false on a bad value.
bool ApplyEnvironment() {
  const std::pair<const char*, const char*> kEnv[] = {
      {"listen", "QUANTD_LISTEN"},
      {"data_dir", "QUANTD_DATA_DIR"},
      {"metrics_addr", "QUANTD_METRICS_ADDR"},
      {"sync", "QUANTD_SYNC"},
      {"shutdown_grace", "QUANTD_SHUTDOWN_GRACE"},
      {"health_listen", "QUANTD_HEALTH_LISTEN"},
      {"max_message_mb", "QUANTD_MAX_MESSAGE_MB"},
      {"search_threads", "QUANTD_SEARCH_THREADS"},
      {"search_queue", "QUANTD_SEARCH_QUEUE"},
      {"max_collections", "QUANTD_MAX_COLLECTIONS"},
      {"default_deadline_ms", "QUANTD_DEFAULT_DEADLINE_MS"},
      {"max_deadline_ms", "QUANTD_MAX_DEADLINE_MS"},
      {"tls_cert", "QUANTD_TLS_CERT"},
      {"tls_key", "QUANTD_TLS_KEY"},
      {"tls_client_ca", "QUANTD_TLS_CLIENT_CA"},
      {"tokens_file", "QUANTD_TOKENS_FILE"},
      {"backup_dir", "QUANTD_BACKUP_DIR"},
  };
  for (const auto& [flag_name, env_name] : kEnv) {
    const char* value = std::getenv(env_name);
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(flag_name);
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(value, &error)) {
      quantd::LogError("environment %s='%s' is invalid: %s", env_name, value, error);
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "quantd: vector search and semantic-ID service (gRPC). Flags also read QUANTD_<FLAG> "
      "environment variables, e.g. QUANTD_DATA_DIR.");
  if (!ApplyEnvironment()) return 2;
  absl::ParseCommandLine(argc, argv);
  quantd::KeepFreedHeapForReuse();

  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  quantd::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_addr);
  options.sync = absl::GetFlag(FLAGS_sync);
  options.health_listen_address = absl::GetFlag(FLAGS_health_listen);
  const int message_mb = absl::GetFlag(FLAGS_max_message_mb);
  if (message_mb < 1 || message_mb > 1024) {
    quantd::LogError("max_message_mb %d is outside 1..1024", message_mb);
    return 2;
  }
  options.max_message_bytes = message_mb << 20;
  options.search_threads = absl::GetFlag(FLAGS_search_threads);
  options.search_queue = absl::GetFlag(FLAGS_search_queue);
  options.max_collections = absl::GetFlag(FLAGS_max_collections);
  options.default_deadline = std::chrono::milliseconds(absl::GetFlag(FLAGS_default_deadline_ms));
  options.max_deadline = std::chrono::milliseconds(absl::GetFlag(FLAGS_max_deadline_ms));
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.tokens_file = absl::GetFlag(FLAGS_tokens_file);
  options.backup_dir = absl::GetFlag(FLAGS_backup_dir);
  const int grace_seconds = absl::GetFlag(FLAGS_shutdown_grace);
  if (grace_seconds < 0) {
    quantd::LogError("shutdown_grace %d is negative", grace_seconds);
    return 2;
  }

  auto server = quantd::QuantdServer::Start(options);
  if (!server.ok()) {
    quantd::LogError("quantd cannot start: %s", server.status().ToString());
    return 1;
  }
  const std::string metrics = (*server)->metrics_address();
  quantd::LogInfo(
      "quantd %s serving gRPC on %s (port %d), health on %s, metrics on %s, data in %s, sync %s, "
      "backups in %s",
      QUANTD_VERSION, options.listen_address, (*server)->port(),
      options.health_listen_address.empty()
          ? "the gRPC port"
          : absl::StrCat(options.health_listen_address, " (port ", (*server)->health_port(), ")"),
      metrics.empty() ? "(disabled)" : "http://" + metrics + "/metrics", options.data_dir,
      options.sync ? "on" : "off", options.backup_dir);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  quantd::LogInfo("received %s: draining in-flight calls (up to %d s)",
                  signal_number == SIGTERM ? "SIGTERM" : "SIGINT", grace_seconds);
  const auto start = std::chrono::steady_clock::now();
  (*server)->Shutdown(std::chrono::seconds(grace_seconds));
  server->reset();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  quantd::LogInfo("quantd stopped cleanly in %.3f s; database closed", seconds);
  return 0;
}
