// quantctl's frame: the parsed command line, the per-run context every command handler gets
// (arguments, usage errors, the channel and stub, deadlines) and the command table's entry type.
#ifndef QUANTD_CLIENT_CLI_H_
#define QUANTD_CLIENT_CLI_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"
#include "quantd/v1/quantd.grpc.pb.h"

namespace quantd::quantctl {

// Parsed command line: positional arguments (the command first) and --options.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
  bool Has(const std::string& name) const { return options.contains(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
};

// Splits argv into positional arguments and options. Before the command only the global options
// (--addr, --json, the TLS and token options, ...) are accepted.
absl::StatusOr<Args> ParseArgs(int argc, char** argv);

// Whether --name is valid with every command.
bool IsGlobalOption(const std::string& name);

// The integer value of --name, `fallback` without one.
absl::StatusOr<int64_t> IntOption(const Args& args, const std::string& name, int64_t fallback);

// What a command handler works with: the arguments, usage errors, and the connection to the
// server (made on first use).
class Cli {
 public:
  explicit Cli(const Args& args) : args_(args), json_(args.Has("json")) {}

  const Args& args() const { return args_; }
  // --json: print response messages in proto3 JSON form.
  bool json() const { return json_; }
  // Whether the command failed through Usage (exit code 2 rather than 1).
  bool usage_error() const { return usage_error_; }

  // An INVALID_ARGUMENT error pointing at `quantctl COMMAND --help`; marks a usage error.
  absl::Status Usage(absl::string_view message);
  // A usage error unless exactly `count` arguments follow the command.
  absl::Status NeedPositional(size_t count, absl::string_view what);
  // Ids from positional arguments after NAME, or from --ids FILE.
  absl::StatusOr<std::vector<uint64_t>> IdsArgument();
  // "256,256,256" -> {256, 256, 256}.
  absl::StatusOr<std::vector<uint64_t>> ListOption(const std::string& name);

  // The channel to --addr (QUANTD_ADDR) with the TLS and token settings; a bad setting ends
  // quantctl with exit code 2.
  std::shared_ptr<grpc::Channel> channel();
  v1::Quantd::Stub& stub();
  // A context with the --timeout deadline (`fallback_seconds` without one).
  std::unique_ptr<grpc::ClientContext> Context(double fallback_seconds = 30);
  // One unary call of `method` (e.g. &v1::Quantd::Stub::GetStats) with Context()'s deadline
  // and credentials, its status as an absl::Status.
  template <typename Request, typename Response>
  absl::Status Call(grpc::Status (v1::Quantd::Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                    const Request& request, Response* response) {
    auto context = Context();
    return FromGrpcStatus((stub().*method)(context.get(), request, response));
  }

 private:
  // --name, else the environment variable `env`, else "".
  std::string FlagOrEnv(const std::string& name, const char* env) const;
  // TLS files and the bearer token from the flags and QUANTCTL_* variables.
  absl::StatusOr<ConnectOptions> SecurityOptions() const;

  const Args& args_;
  bool json_;
  bool usage_error_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantd::Stub> stub_;
};

// The sections of the command overview in `quantctl --help`, in the order they are printed.
enum class Section { kCollections, kSemanticIds, kOperations, kSearch };

// One entry of the command table (command_table.cc): dispatch, the overview of `quantctl --help`,
// `quantctl NAME --help` and option checking all read it.
struct Command {
  std::string name;
  // The overview's line: its section, the arguments shown after the name, and a summary (a
  // "\n" in it continues the summary on the next line, under the first).
  Section section;
  std::string arguments;
  std::string summary;
  // The text of `quantctl NAME --help`.
  std::string help;
  // The options it takes besides the global ones.
  std::set<std::string> options;
  absl::Status (*run)(Cli& cli);
};

// Runs `command` with `args`: checks its options, calls its handler and prints an error.
// Returns the exit code: 0, 1 on failure, 2 on a usage error.
int RunCommand(const Command& command, const Args& args);

}  // namespace quantd::quantctl

#endif  // QUANTD_CLIENT_CLI_H_
