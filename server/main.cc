// quantd: the gRPC server. Flags can also be set by environment variables (a flag on the
// command line wins):
//   --listen         QUANTD_LISTEN         gRPC address, default 127.0.0.1:50051
//   --data_dir       QUANTD_DATA_DIR       RocksDB directory, default ./var/quantd
//   --metrics_addr   QUANTD_METRICS_ADDR   Prometheus /metrics address ("" disables)
//   --sync           QUANTD_SYNC           fsync each write before acknowledging (true/false)
//   --shutdown_grace QUANTD_SHUTDOWN_GRACE seconds in-flight calls get on SIGTERM/SIGINT
//   --backup_dir     QUANTD_BACKUP_DIR     where Backup writes, default ./var/backups
#include <signal.h>

#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
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

namespace {

// Applies QUANTD_<FLAG> environment variables as flag defaults; returns false on a bad value.
bool ApplyEnvironment() {
  const std::pair<const char*, const char*> kEnv[] = {
      {"listen", "QUANTD_LISTEN"},
      {"data_dir", "QUANTD_DATA_DIR"},
      {"metrics_addr", "QUANTD_METRICS_ADDR"},
      {"sync", "QUANTD_SYNC"},
      {"shutdown_grace", "QUANTD_SHUTDOWN_GRACE"},
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
      "quantd %s serving gRPC on %s (port %d), metrics on %s, data in %s, sync %s, backups in %s",
      QUANTD_VERSION, options.listen_address, (*server)->port(),
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
