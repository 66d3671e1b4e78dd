// quantd: the gRPC server. Flags can also be set by environment variables (a flag on the
// command line wins):
//   --listen         QUANTD_LISTEN         gRPC address, default 127.0.0.1:50051
//   --data_dir       QUANTD_DATA_DIR       RocksDB directory, default ./var/quantd
//   --metrics_addr   QUANTD_METRICS_ADDR   Prometheus /metrics address ("" disables)
//   --sync           QUANTD_SYNC           fsync each write before acknowledging (true/false)
//   --shutdown_grace QUANTD_SHUTDOWN_GRACE seconds in-flight calls get on SIGTERM/SIGINT
//   --health_listen  QUANTD_HEALTH_LISTEN  plaintext grpc.health.v1-only address ("" disables)
// and the limits: --max_message_mb, --search_threads, --search_queue, --max_collections,
// --default_deadline_ms, --max_deadline_ms, --training_memory_mb (QUANTD_MAX_MESSAGE_MB, ...).
//   --tls_cert       QUANTD_TLS_CERT       PEM certificate chain; with --tls_key turns TLS on
//   --tls_key        QUANTD_TLS_KEY        PEM private key of --tls_cert (unencrypted)
//   --tls_client_ca  QUANTD_TLS_CLIENT_CA  PEM CA; clients must present a certificate it signed
//   --tokens_file    QUANTD_TOKENS_FILE    "<read|write> <token>" lines; empty: no authorization
//   --backup_dir     QUANTD_BACKUP_DIR     where Backup writes, default ./var/backups
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/fastscan.h"
#include "core/pq8_scan.h"
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
          "Search, Encode and GetStats calls running at once (and worker threads for the queued "
          "ones); 0 = "
          "one per core");
ABSL_FLAG(
    int64_t, search_queue, 256,
    "Search/Encode/GetStats calls that may wait for a worker; beyond that RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_collections, 1000, "most collections; beyond that RESOURCE_EXHAUSTED");
ABSL_FLAG(uint32_t, keep_tokenizer_versions, 3,
          "tokenizer versions a collection keeps (1..16) unless it sets its own; older ones are "
          "dropped when a new one commits (never the active or a pinned one)");
ABSL_FLAG(int64_t, training_memory_mb, 8192,
          "memory an RQ-VAE training job may hold, in MiB (its estimate: parameters, optimizer "
          "state, a batch's activations, the items); larger jobs are refused before they start; "
          "0: no bound");
ABSL_FLAG(int64_t, default_deadline_ms, 30000,
          "budget of a Search/Encode/GetStats call whose client set no deadline (queued past it: "
          "DEADLINE_EXCEEDED)");
ABSL_FLAG(int64_t, max_deadline_ms, 600000, "the most budget any Search/Encode/GetStats call gets");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the server; with --tls_key turns TLS on (both or neither)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key (unencrypted) of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s); when set, clients must present a certificate signed by it");
ABSL_FLAG(std::string, tokens_file, "",
          "file of '<read|write> <token>' lines (e.g. a mounted Kubernetes Secret); every call "
          "then needs 'authorization: Bearer <token>'. Empty: no authorization");

namespace {

// quantd's own flags are the ones defined in this file; Abseil's built-in flags (--flagfile,
// --fromenv, ...) live in Abseil's files. Abseil passes the file name through
// normalize_filename below first.
constexpr absl::string_view kFlagFile = "server/main.cc";
bool IsQuantdFlagFile(absl::string_view filename) {
  return filename == kFlagFile || absl::EndsWith(filename, absl::StrCat("/", kFlagFile));
}

std::string EnvironmentName(absl::string_view flag_name) {
  return absl::StrCat("QUANTD_", absl::AsciiStrToUpper(flag_name));
}

// quantd's flags, sorted by name.
std::vector<absl::CommandLineFlag*> QuantdFlags() {
  std::vector<absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsQuantdFlagFile(flag->Filename())) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  return flags;
}

// Applies QUANTD_<FLAG> environment variables as flag values (the command line, parsed after,
// wins); returns false on a bad value.
bool ApplyEnvironment() {
  for (absl::CommandLineFlag* flag : QuantdFlags()) {
    const std::string env_name = EnvironmentName(flag->Name());
    const char* value = std::getenv(env_name.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      quantd::LogError("environment %s='%s' is invalid: %s", env_name, value, error);
      return false;
    }
  }
  return true;
}

void PrintHelp() {
  std::string out = absl::StrCat("quantd ", QUANTD_VERSION, ": ", absl::ProgramUsageMessage(),
                                 "\n\nUsage: quantd [--flag=value ...]\n\nFlags (each also read "
                                 "from the environment variable shown; the command line wins):\n");
  for (const absl::CommandLineFlag* flag : QuantdFlags()) {
    const std::string default_value = flag->DefaultValue();
    absl::StrAppend(&out, "  --", flag->Name(), "  (", EnvironmentName(flag->Name()), ", default ",
                    default_value.empty() ? "\"\"" : default_value, ")\n      ", flag->Help(),
                    "\n");
  }
  absl::StrAppend(&out,
                  "  --help, -h  this help\n  --version  the version\n\nExit codes: 0 after a "
                  "clean stop, 1 when start-up fails, 2 for a bad flag or environment value.\n");
  std::fputs(out.c_str(), stdout);
}

enum class Action { kRun, kHelp, kVersion };

// Checks and applies the command line before absl::ParseCommandLine sees it, because Abseil
// 20220623 ends the process with exit code 1 both for --help and for a bad flag: here --help
// and --version are answered (exit 0) and a mistake is an INVALID_ARGUMENT naming the argument
// (exit 2). Arguments for Abseil's own flags (--flagfile, --helpfull, ...) are left to it.
absl::StatusOr<Action> CheckCommandLine(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    absl::string_view body = arg;
    if (arg == "-" || !absl::ConsumePrefix(&body, "-")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "': quantd takes only flags"));
    }
    absl::ConsumePrefix(&body, "-");
    if (body.empty()) {
      if (i + 1 < argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected argument '", argv[i + 1], "': quantd takes only flags"));
      }
      break;
    }
    const size_t eq = body.find('=');
    const absl::string_view name = body.substr(0, eq);
    const bool has_value = eq != absl::string_view::npos;
    if (name == "help" || name == "h" || name == "helpshort" || name == "helpfull") {
      return Action::kHelp;
    }
    if (name == "version") return Action::kVersion;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr && flag->IsOfType<bool>();
      if (!negated) flag = nullptr;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '", arg, "' (quantd --help lists the flags)"));
    }
    const bool is_bool = flag->IsOfType<bool>();
    std::string value;
    if (has_value) {
      if (negated) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", arg, "': --no", flag->Name(), " takes no value"));
      }
      value = std::string(body.substr(eq + 1));
    } else if (is_bool) {
      value = negated ? "false" : "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
    }
    if (!IsQuantdFlagFile(flag->Filename())) continue;  // Abseil's own, parsed by Abseil
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", flag->Name(), "='", value, "' is invalid: ", error));
    }
  }
  return Action::kRun;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "vector search and semantic-ID service (gRPC). Every flag can also be set by the "
      "environment variable QUANTD_<FLAG>, e.g. QUANTD_DATA_DIR.");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = IsQuantdFlagFile;
  usage.contains_helpshort_flags = IsQuantdFlagFile;
  usage.contains_helppackage_flags = IsQuantdFlagFile;
  usage.version_string = [] { return absl::StrCat("quantd ", QUANTD_VERSION, "\n"); };
  // "server/main.cc" rather than the build machine's path of it.
  usage.normalize_filename = [](absl::string_view filename) -> std::string {
    return IsQuantdFlagFile(filename) ? std::string(kFlagFile) : std::string(filename);
  };
  absl::SetFlagsUsageConfig(usage);

  if (!ApplyEnvironment()) return 2;
  auto action = CheckCommandLine(argc, argv);
  if (!action.ok()) {
    quantd::LogError("%s", action.status().message());
    return 2;
  }
  if (*action == Action::kHelp) {
    PrintHelp();
    return 0;
  }
  if (*action == Action::kVersion) {
    std::fputs(usage.version_string().c_str(), stdout);
    return 0;
  }
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
  options.keep_tokenizer_versions = absl::GetFlag(FLAGS_keep_tokenizer_versions);
  const int64_t training_mb = absl::GetFlag(FLAGS_training_memory_mb);
  if (training_mb < 0 || training_mb > (int64_t{1} << 30)) {
    quantd::LogError("training_memory_mb %d is outside 0..2^30", training_mb);
    return 2;
  }
  options.training_memory_bytes = training_mb << 20;
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

  // Flag values the server would refuse (a port above 65535, limits out of range) are bad
  // flags: exit code 2, like the checks above; failures of start-up itself are 1.
  if (auto status = quantd::ValidateServerOptions(options); !status.ok()) {
    quantd::LogError("%s", status.message());
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
  // Which SIMD kernels the search runs on this CPU (chosen at start; results do not depend on it).
  quantd::LogInfo("search kernels: fast-scan %s%s, 8-bit scan %s",
                  quantd::fastscan::KernelName(quantd::fastscan::ActiveKernel()),
                  quantd::fastscan::ActiveKernel() == quantd::fastscan::Kernel::kHighway
                      ? absl::StrCat(" (", quantd::fastscan::HighwayTargetName(), ")")
                      : std::string(),
                  quantd::pq8::KernelName(quantd::pq8::ActiveKernel()));

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
