#include "client/cli.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "io/vector_file.h"

namespace quantd::quantctl {
namespace {

const std::set<std::string> kGlobalOptions = {
    "addr",    "timeout",         "json",      "help", "tls", "tls_ca", "tls_cert",
    "tls_key", "tls_server_name", "token_file"};

const std::set<std::string> kBoolOptions = {
    "json",           "help", "no-progress",  "balanced",  "detach",       "tls",
    "wait",           "all",  "with-vectors", "with-sids", "include-self", "refine-exact",
    "with-attributes"};

}  // namespace

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h") arg = "--help";
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      args.positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) name = name.substr(0, eq);
    // Before the command only global options are valid; naming a stranger here keeps it from
    // swallowing the command as its value.
    if (args.positional.empty() && !kGlobalOptions.contains(name)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown option --%s (global options come before the command, its own options after "
          "it; see quantctl --help)",
          name));
    }
    if (eq != std::string::npos) {
      value = arg.substr(2 + eq + 1);
    } else if (kBoolOptions.contains(name)) {
      value = "true";
    } else {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    args.options[name] = value;
  }
  return args;
}

bool IsGlobalOption(const std::string& name) { return kGlobalOptions.contains(name); }

absl::StatusOr<int64_t> IntOption(const Args& args, const std::string& name, int64_t fallback) {
  if (!args.Has(name)) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(args.Get(name), &value)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s '%s' is not an integer", name, args.Get(name)));
  }
  return value;
}

absl::Status Cli::Usage(absl::string_view message) {
  usage_error_ = true;
  return absl::InvalidArgumentError(
      absl::StrCat(message, " (see quantctl ", args_.positional[0], " --help)"));
}

absl::Status Cli::NeedPositional(size_t count, absl::string_view what) {
  if (args_.positional.size() != count + 1) {
    return Usage(absl::StrFormat("expected %s", what));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> Cli::IdsArgument() {
  std::vector<uint64_t> ids;
  if (args_.Has("ids")) {
    if (args_.positional.size() > 2) return Usage("give ids as arguments or --ids, not both");
    return ReadIds(args_.Get("ids"));
  }
  for (size_t i = 2; i < args_.positional.size(); ++i) {
    uint64_t id = 0;
    if (!absl::SimpleAtoi(args_.positional[i], &id)) {
      return Usage(
          absl::StrFormat("id '%s' is not an unsigned 64-bit integer", args_.positional[i]));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return Usage("expected at least one ID or --ids FILE");
  return ids;
}

absl::StatusOr<std::vector<uint64_t>> Cli::ListOption(const std::string& name) {
  std::vector<uint64_t> values;
  for (absl::string_view part : absl::StrSplit(args_.Get(name), ',')) {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(part, &value)) {
      return Usage(absl::StrFormat("--%s '%s': '%s' is not a non-negative integer", name,
                                   args_.Get(name), part));
    }
    values.push_back(value);
  }
  return values;
}

std::shared_ptr<grpc::Channel> Cli::channel() {
  if (channel_ == nullptr) {
    const char* env = std::getenv("QUANTD_ADDR");
    const std::string address = args_.Get("addr", env != nullptr ? env : "127.0.0.1:50051");
    auto options = SecurityOptions();
    auto channel = options.ok() ? Connect(address, *options)
                                : absl::StatusOr<std::shared_ptr<grpc::Channel>>(options.status());
    if (!channel.ok()) {
      std::fprintf(stderr, "quantctl: %s\n", std::string(channel.status().message()).c_str());
      std::exit(2);
    }
    channel_ = *channel;
  }
  return channel_;
}

v1::Quantd::Stub& Cli::stub() {
  if (stub_ == nullptr) stub_ = v1::Quantd::NewStub(channel());
  return *stub_;
}

std::string Cli::FlagOrEnv(const std::string& name, const char* env) const {
  if (args_.Has(name)) return args_.Get(name);
  const char* value = std::getenv(env);
  return value != nullptr ? value : "";
}

absl::StatusOr<ConnectOptions> Cli::SecurityOptions() const {
  ConnectOptions options;
  options.tls = FlagOrEnv("tls", "QUANTCTL_TLS") == "true";
  options.tls_ca = FlagOrEnv("tls_ca", "QUANTCTL_TLS_CA");
  options.tls_cert = FlagOrEnv("tls_cert", "QUANTCTL_TLS_CERT");
  options.tls_key = FlagOrEnv("tls_key", "QUANTCTL_TLS_KEY");
  options.tls_server_name = FlagOrEnv("tls_server_name", "QUANTCTL_TLS_SERVER_NAME");
  const char* env_token = std::getenv("QUANTCTL_TOKEN");
  std::string token_file;
  std::string source;
  if (args_.Has("token_file")) {
    token_file = args_.Get("token_file");
    source = "--token_file";
  } else if (env_token != nullptr && *env_token != '\0') {
    options.token = std::string(absl::StripAsciiWhitespace(env_token));
    source = "QUANTCTL_TOKEN";
  } else {
    token_file = FlagOrEnv("token_file", "QUANTCTL_TOKEN_FILE");
    source = "QUANTCTL_TOKEN_FILE";
  }
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s '%s' cannot be read: %s", source, token_file, std::strerror(errno)));
    }
    std::string line;
    std::getline(in, line);
    options.token = std::string(absl::StripAsciiWhitespace(line));
    if (options.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s '%s': the first line holds no token", source, token_file));
    }
  } else if (source == "QUANTCTL_TOKEN" && options.token.empty()) {
    return absl::InvalidArgumentError("QUANTCTL_TOKEN holds only whitespace");
  }
  return options;
}

std::unique_ptr<grpc::ClientContext> Cli::Context(double fallback_seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  double seconds = fallback_seconds;
  if (args_.Has("timeout") &&
      (!absl::SimpleAtod(args_.Get("timeout"), &seconds) || !(seconds > 0))) {
    std::fprintf(stderr, "quantctl: --timeout '%s' is not a positive number of seconds\n",
                 args_.Get("timeout").c_str());
    std::exit(2);
  }
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return context;
}

int RunCommand(const Command& command, const Args& args) {
  Cli cli(args);
  absl::Status status;
  for (const auto& [name, value] : args.options) {
    if (!command.options.contains(name) && !IsGlobalOption(name)) {
      status = cli.Usage(absl::StrFormat("unknown option --%s", name));
      break;
    }
  }
  if (status.ok()) status = command.run(cli);
  const std::string& name = command.name;
  if (!status.ok()) {
    std::fprintf(stderr, "quantctl %s: %s: %s\n", name.c_str(),
                 absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument && cli.usage_error() ? 2 : 1;
  }
  return 0;
}

}  // namespace quantd::quantctl
