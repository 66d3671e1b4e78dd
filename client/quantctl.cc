// quantctl: command-line client of quantd. `quantctl --help` lists the commands,
// `quantctl COMMAND --help` explains one.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "core/vectors.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "io/vector_file.h"

namespace quantd {
namespace {

constexpr char kUsage[] = R"(quantctl: command-line client of the quantd vector service

Usage: quantctl [--addr HOST:PORT] [--timeout SECONDS] [--json] COMMAND [ARGS] [OPTIONS]

Commands:
  create NAME --dim D [--metric l2|ip|cosine]   create a collection
  list                                          list collections
  describe NAME                                 show a collection and its item count
  drop NAME                                     delete a collection and all its items
  upsert NAME FILE [--id-offset N | --ids FILE] stream a vector file into a collection
  get NAME ID... | --ids FILE                   read vectors back
  delete NAME ID... | --ids FILE                delete items
  inspect FILE                                  show a local vector file's format and shape

Semantic IDs:
  train NAME [--levels 256,256,256] [--balanced]  train a tokenizer; follows the job
  encode NAME ID... | --vectors FILE            semantic IDs of items, or codes of vectors
  lookup NAME SID                               items under a SID or prefix: "<a_3><b_7>", 3,7
  stats NAME                                    tokenizer and index health
  export-sids NAME --index FILE [--codes FILE]  LC-Rec / LETTER index JSON, .npy of codes
  jobs [NAME]  |  job ID  |  cancel ID          training jobs

Operations:
  backup NAME                                   consistent copy of the database on the server,
                                                in its --backup_dir/NAME
  health [--service NAME]                       grpc.health.v1 check: exit 0 when SERVING

Nearest-neighbour search (IVF-PQ):
  train-index NAME [--nlist N] [--m M] [--nbits 4|8]  train an index; follows the job
  search NAME --queries FILE [--k 10] [--nprobe N] [--refine R] [--output FILE]
                                                the k nearest items of each query

Global options:
  --addr HOST:PORT   server address (env QUANTD_ADDR, default 127.0.0.1:50051)
  --timeout SECONDS  deadline per call (default 30; upsert streams have none)
  --json             print the response message in proto3 JSON form (field names as in
                     quantd.proto; 64-bit integers as strings, enums by name), for scripts

Security (a flag wins over its environment variable):
  --tls_ca FILE          PEM CA verifying the server; turns TLS on (env QUANTCTL_TLS_CA)
  --tls                  TLS verified against the system's CA roots (env QUANTCTL_TLS=true)
  --tls_cert FILE        client certificate, for a server with --tls_client_ca
  --tls_key FILE         its private key (env QUANTCTL_TLS_CERT, QUANTCTL_TLS_KEY)
  --tls_server_name N    name expected in the server certificate instead of the --addr host
                         (env QUANTCTL_TLS_SERVER_NAME)
  --token_file FILE      bearer token for a server with --tokens_file: the file's first line
                         (env QUANTCTL_TOKEN_FILE; or the token itself in QUANTCTL_TOKEN,
                         which wins over QUANTCTL_TOKEN_FILE but not over --token_file)

Vector files: .npy (float32/float64/integer types), .fvecs, .bvecs, .ivecs, IDX (MNIST), the
latter two also gzipped. `quantctl COMMAND --help` explains one command.
)";

// Parsed command line: positional arguments and --options.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
  bool Has(const std::string& name) const { return options.contains(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
};

const std::set<std::string> kGlobalOptions = {
    "addr",    "timeout",         "json",      "help", "tls", "tls_ca", "tls_cert",
    "tls_key", "tls_server_name", "token_file"};

const std::set<std::string> kBoolOptions = {"json",     "help",   "no-progress",
                                            "balanced", "detach", "tls"};

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

absl::StatusOr<int64_t> IntOption(const Args& args, const std::string& name, int64_t fallback) {
  if (!args.Has(name)) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(args.Get(name), &value)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s '%s' is not an integer", name, args.Get(name)));
  }
  return value;
}

// "1.5 KiB", "187.9 MiB", "2.0 GiB"; plain bytes under 1 KiB.
std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return absl::StrFormat("%d B", bytes);
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

// Names come from core's one table (MetricName / ParseMetric in core/vectors.h).
std::string MetricText(v1::Metric metric) {
  switch (metric) {
    case v1::METRIC_L2:
      return std::string(MetricName(Metric::kL2));
    case v1::METRIC_INNER_PRODUCT:
      return std::string(MetricName(Metric::kInnerProduct));
    case v1::METRIC_COSINE:
      return std::string(MetricName(Metric::kCosine));
    default:
      return "unspecified";
  }
}

// Prints `message` in proto3 JSON form (field names as in the .proto, zero values included; 64-bit
// integers are strings, enums their names), one line: what --json prints.
void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) out = absl::StrCat("{\"error\":\"", status.ToString(), "\"}");
  std::printf("%s\n", out.c_str());
}

// A JSON object of client-side figures (upsert and inspect summaries), printed as PrintJson does.
class JsonObject {
 public:
  JsonObject& Set(const std::string& key, const std::string& value) {
    (*object_.mutable_fields())[key].set_string_value(value);
    return *this;
  }
  JsonObject& Set(const std::string& key, double value) {
    (*object_.mutable_fields())[key].set_number_value(value);
    return *this;
  }
  void Print() const { PrintJson(object_); }

 private:
  google::protobuf::Struct object_;
};

// "1 item", "2 items".
std::string Items(uint64_t n) { return absl::StrCat(n, n == 1 ? " item" : " items"); }

// A creation time as UTC, e.g. "2026-12-04T13:05:43Z".
std::string UtcTime(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

// Draws "[#####.....]  45.0%  27000/60000 rows  12345 rows/s  48.3 MB/s" on a terminal.
class ProgressBar {
 public:
  ProgressBar(int64_t total, int64_t bytes_per_row, bool enabled)
      : total_(total),
        bytes_per_row_(bytes_per_row),
        enabled_(enabled && isatty(STDERR_FILENO)),
        start_(std::chrono::steady_clock::now()) {}

  void Update(int64_t done) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double seconds = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
    const double fraction = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::fprintf(stderr, "\r[%s%s] %5.1f%%  %lld/%lld rows  %.0f rows/s  %.1f MB/s   ",
                 std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                 100 * fraction, static_cast<long long>(done), static_cast<long long>(total_),
                 done / seconds, done * static_cast<double>(bytes_per_row_) / seconds / 1e6);
    std::fflush(stderr);
  }
  void Finish() {
    if (enabled_) std::fprintf(stderr, "\n");
  }

 private:
  int64_t total_;
  int64_t bytes_per_row_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

class Cli {
 public:
  explicit Cli(const Args& args) : args_(args), json_(args.Has("json")) {}

  // The command table: every command's name, help (the text of `quantctl NAME --help`), the
  // options it takes besides the global ones, and its handler. Dispatch, help and option
  // checking all read it.
  struct Command {
    std::string name;
    std::string help;
    std::set<std::string> options;
    absl::Status (Cli::*run)();
  };
  static const std::vector<Command>& Commands();
  static const Command* Find(const std::string& name) {
    for (const Command& command : Commands()) {
      if (command.name == name) return &command;
    }
    return nullptr;
  }

  int Run(const Command& command) {
    absl::Status status;
    for (const auto& [name, value] : args_.options) {
      if (!command.options.contains(name) && !kGlobalOptions.contains(name)) {
        status = Usage(absl::StrFormat("unknown option --%s", name));
        break;
      }
    }
    if (status.ok()) status = (this->*command.run)();
    const std::string& name = command.name;
    if (!status.ok()) {
      std::fprintf(stderr, "quantctl %s: %s: %s\n", name.c_str(),
                   absl::StatusCodeToString(status.code()).c_str(),
                   std::string(status.message()).c_str());
      return status.code() == absl::StatusCode::kInvalidArgument && usage_error_ ? 2 : 1;
    }
    return 0;
  }

 private:
  absl::Status Usage(absl::string_view message) {
    usage_error_ = true;
    return absl::InvalidArgumentError(
        absl::StrCat(message, " (see quantctl ", args_.positional[0], " --help)"));
  }

  absl::Status NeedPositional(size_t count, absl::string_view what) {
    if (args_.positional.size() != count + 1) {
      return Usage(absl::StrFormat("expected %s", what));
    }
    return absl::OkStatus();
  }

  // The channel to --addr (QUANTD_ADDR) with the TLS and token settings; a bad setting ends
  // quantctl with exit code 2.
  std::shared_ptr<grpc::Channel> channel() {
    if (channel_ == nullptr) {
      const char* env = std::getenv("QUANTD_ADDR");
      const std::string address = args_.Get("addr", env != nullptr ? env : "127.0.0.1:50051");
      auto options = SecurityOptions();
      auto channel = options.ok()
                         ? Connect(address, *options)
                         : absl::StatusOr<std::shared_ptr<grpc::Channel>>(options.status());
      if (!channel.ok()) {
        std::fprintf(stderr, "quantctl: %s\n", std::string(channel.status().message()).c_str());
        std::exit(2);
      }
      channel_ = *channel;
    }
    return channel_;
  }

  v1::Quantd::Stub& stub() {
    if (stub_ == nullptr) stub_ = v1::Quantd::NewStub(channel());
    return *stub_;
  }

  // --name, else the environment variable `env`, else "".
  std::string FlagOrEnv(const std::string& name, const char* env) const {
    if (args_.Has(name)) return args_.Get(name);
    const char* value = std::getenv(env);
    return value != nullptr ? value : "";
  }

  // TLS files and the bearer token from the flags and QUANTCTL_* variables.
  absl::StatusOr<ConnectOptions> SecurityOptions() const {
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
        return absl::InvalidArgumentError(absl::StrFormat("%s '%s' cannot be read: %s", source,
                                                          token_file, std::strerror(errno)));
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

  // A context with the --timeout deadline (`fallback_seconds` without one).
  std::unique_ptr<grpc::ClientContext> Context(double fallback_seconds = 30) {
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

  absl::Status Create() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    if (!args_.Has("dim")) return Usage("--dim is required");
    auto dim = IntOption(args_, "dim", 0);
    if (!dim.ok()) return Usage(dim.status().message());
    v1::CreateCollectionRequest request;
    request.set_name(args_.positional[1]);
    if (*dim < 0 || *dim > UINT32_MAX) {
      return Usage(absl::StrFormat("--dim %d is outside 1..65536", *dim));
    }
    request.set_dimension(static_cast<uint32_t>(*dim));
    const std::string metric = args_.Get("metric", "l2");
    const auto parsed = ParseMetric(metric);
    if (!parsed) return Usage(absl::StrFormat("--metric '%s' is not l2, ip or cosine", metric));
    request.set_metric(*parsed == Metric::kL2             ? v1::METRIC_L2
                       : *parsed == Metric::kInnerProduct ? v1::METRIC_INNER_PRODUCT
                                                          : v1::METRIC_COSINE);
    v1::CreateCollectionResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().CreateCollection(context.get(), request, &response));
        !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
    } else {
      std::printf("created collection '%s' (dimension %d, metric %s)\n",
                  response.collection().name().c_str(), response.collection().dimension(),
                  MetricText(response.collection().metric()).c_str());
    }
    return absl::OkStatus();
  }

  absl::Status List() {
    if (auto s = NeedPositional(0, "no arguments"); !s.ok()) return s;
    v1::ListCollectionsResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(
            stub().ListCollections(context.get(), v1::ListCollectionsRequest(), &response));
        !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
      return absl::OkStatus();
    }
    std::printf("%-32s %9s %-13s %12s\n", "NAME", "DIMENSION", "METRIC", "ITEMS");
    for (const auto& c : response.collections()) {
      std::printf("%-32s %9u %-13s %12llu\n", c.name().c_str(), c.dimension(),
                  MetricText(c.metric()).c_str(), static_cast<unsigned long long>(c.item_count()));
    }
    return absl::OkStatus();
  }

  absl::Status Describe() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    auto collection = FetchCollection(args_.positional[1]);
    if (!collection.ok()) return collection.status();
    if (json_) {
      v1::DescribeCollectionResponse response;
      *response.mutable_collection() = *collection;
      PrintJson(response);
    } else {
      std::printf(
          "name:       %s\ndimension:  %u\nmetric:     %s\nitems:      %llu\n"
          "created:    %s\n",
          collection->name().c_str(), collection->dimension(),
          MetricText(collection->metric()).c_str(),
          static_cast<unsigned long long>(collection->item_count()),
          UtcTime(collection->create_time_ms()).c_str());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::Collection> FetchCollection(const std::string& name) {
    v1::DescribeCollectionRequest request;
    request.set_name(name);
    v1::DescribeCollectionResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().DescribeCollection(context.get(), request, &response));
        !s.ok()) {
      return s;
    }
    return response.collection();
  }

  absl::Status Drop() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    v1::DropCollectionRequest request;
    request.set_name(args_.positional[1]);
    v1::DropCollectionResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().DropCollection(context.get(), request, &response));
        !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
    } else {
      std::printf("dropped collection '%s' (%llu items)\n", args_.positional[1].c_str(),
                  static_cast<unsigned long long>(response.items_deleted()));
    }
    return absl::OkStatus();
  }

  absl::Status Upsert() {
    if (auto s = NeedPositional(2, "a collection NAME and a FILE"); !s.ok()) return s;
    if (args_.Has("ids") && args_.Has("id-offset")) {
      return Usage("--ids and --id-offset exclude each other");
    }
    auto id_offset = IntOption(args_, "id-offset", 0);
    auto max_rows = IntOption(args_, "max-rows", -1);
    auto batch_rows = IntOption(args_, "batch-rows", 0);
    for (const auto* v : {&id_offset, &max_rows, &batch_rows}) {
      if (!v->ok()) return Usage(v->status().message());
    }
    if (*id_offset < 0) return Usage(absl::StrFormat("--id-offset %d is negative", *id_offset));
    if (*batch_rows < 0) return Usage(absl::StrFormat("--batch-rows %d is negative", *batch_rows));
    const std::string& name = args_.positional[1];
    const std::string& path = args_.positional[2];

    auto reader = VectorReader::Open(path);
    if (!reader.ok()) return reader.status();
    auto collection = FetchCollection(name);
    if (!collection.ok()) return collection.status();
    if ((*reader)->dim() != collection->dimension()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s has dimension %d but collection '%s' has dimension %d", path,
                          (*reader)->dim(), name, collection->dimension()));
    }
    std::vector<uint64_t> ids;
    UploadOptions options;
    options.id_offset = static_cast<uint64_t>(*id_offset);
    options.max_rows = *max_rows;
    options.batch_rows = *batch_rows;
    const int64_t total =
        *max_rows < 0 ? (*reader)->rows() : std::min(*max_rows, (*reader)->rows());
    if (args_.Has("ids")) {
      auto read = ReadIds(args_.Get("ids"));
      if (!read.ok()) return read.status();
      ids = std::move(*read);
      const bool all_rows = *max_rows < 0 || *max_rows >= (*reader)->rows();
      if (static_cast<int64_t>(ids.size()) < total ||
          (all_rows && static_cast<int64_t>(ids.size()) != total)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--ids %s has %d ids for %d rows: give one id per row",
                            args_.Get("ids"), ids.size(), total));
      }
      ids.resize(static_cast<size_t>(total));
      options.ids = &ids;
    }
    ProgressBar bar(total, (*reader)->dim() * 4, !args_.Has("no-progress"));
    options.on_progress = [&bar](int64_t done) { bar.Update(done); };
    auto result = UploadVectors(stub(), name, **reader, options);
    bar.Finish();
    if (!result.ok()) return result.status();
    const double mb = static_cast<double>(result->rows) * (*reader)->dim() * 4 / 1e6;
    if (json_) {
      JsonObject()
          .Set("collection", name)
          .Set("rows", static_cast<double>(result->rows))
          .Set("inserted", static_cast<double>(result->inserted))
          .Set("batches", static_cast<double>(result->batches))
          .Set("item_count", static_cast<double>(result->item_count))
          .Set("seconds", result->seconds)
          .Set("rows_per_second", result->rows / std::max(1e-9, result->seconds))
          .Set("mb_per_second", mb / std::max(1e-9, result->seconds))
          .Print();
    } else {
      std::printf(
          "upserted %lld rows (%lld new) into '%s' in %lld batches, %.2f s: %.0f rows/s, "
          "%.1f MB/s; collection now has %llu items\n",
          static_cast<long long>(result->rows), static_cast<long long>(result->inserted),
          name.c_str(), static_cast<long long>(result->batches), result->seconds,
          result->rows / std::max(1e-9, result->seconds), mb / std::max(1e-9, result->seconds),
          static_cast<unsigned long long>(result->item_count));
    }
    return absl::OkStatus();
  }

  // Ids from positional arguments after NAME, or from --ids FILE.
  absl::StatusOr<std::vector<uint64_t>> IdsArgument() {
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

  absl::Status Get() {
    if (args_.positional.size() < 2) return Usage("expected a collection NAME");
    auto ids = IdsArgument();
    if (!ids.ok()) return ids.status();
    v1::GetItemsRequest request;
    request.set_collection(args_.positional[1]);
    request.mutable_ids()->Add(ids->begin(), ids->end());
    v1::GetItemsResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().GetItems(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    const int d = static_cast<int>(response.dimension());
    if (json_) {
      PrintJson(response);
      return absl::OkStatus();
    }
    for (int i = 0; i < response.ids_size(); ++i) {
      std::vector<std::string> shown;
      for (int j = 0; j < std::min(d, 8); ++j) {
        shown.push_back(absl::StrFormat("%.6g", response.vectors(i * d + j)));
      }
      std::printf("%llu\t[%s%s] (%d values)\n", static_cast<unsigned long long>(response.ids(i)),
                  absl::StrJoin(shown, ", ").c_str(), d > 8 ? ", ..." : "", d);
    }
    if (response.missing_ids_size() > 0) {
      std::printf("missing: %s\n", absl::StrJoin(response.missing_ids(), " ").c_str());
    }
    return absl::OkStatus();
  }

  absl::Status Delete() {
    if (args_.positional.size() < 2) return Usage("expected a collection NAME");
    auto ids = IdsArgument();
    if (!ids.ok()) return ids.status();
    v1::DeleteItemsRequest request;
    request.set_collection(args_.positional[1]);
    request.mutable_ids()->Add(ids->begin(), ids->end());
    v1::DeleteItemsResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().DeleteItems(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
    } else {
      std::printf("deleted %llu items (%llu did not exist); collection now has %llu items\n",
                  static_cast<unsigned long long>(response.deleted()),
                  static_cast<unsigned long long>(response.missing()),
                  static_cast<unsigned long long>(response.item_count()));
    }
    return absl::OkStatus();
  }

  // "256,256,256" -> {256, 256, 256}.
  absl::StatusOr<std::vector<uint64_t>> ListOption(const std::string& name) {
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

  static std::string JobStateText(v1::JobState state) {
    std::string name = v1::JobState_Name(state);
    return absl::AsciiStrToLower(absl::StripPrefix(name, "JOB_STATE_"));
  }

  void PrintJob(const v1::Job& job) {
    if (json_) {
      PrintJson(job);
      return;
    }
    std::printf(
        "%s  %-15s %-10s %-9s %5.1f%%  %-22s %8.1f s  %s%s\n", job.id().c_str(), job.kind().c_str(),
        job.collection().c_str(), JobStateText(job.state()).c_str(), 100 * job.progress(),
        job.phase().c_str(), job.elapsed_seconds(),
        job.result_version() > 0 ? absl::StrCat("version ", job.result_version()).c_str() : "",
        job.error().empty() ? "" : absl::StrCat("  ", job.error()).c_str());
  }

  absl::Status Train() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    v1::TrainTokenizerRequest request;
    request.set_collection(args_.positional[1]);
    if (args_.Has("levels")) {
      auto levels = ListOption("levels");
      if (!levels.ok()) return levels.status();
      for (uint64_t k : *levels)
        request.add_codebook_sizes(static_cast<uint32_t>(std::min<uint64_t>(k, UINT32_MAX)));
    }
    request.set_balanced(args_.Has("balanced"));
    if (args_.Has("slack")) {
      double slack = 0;
      if (!absl::SimpleAtod(args_.Get("slack"), &slack)) {
        return Usage(absl::StrFormat("--slack '%s' is not a number", args_.Get("slack")));
      }
      request.set_balance_slack(slack);
    }
    if (args_.Has("size-min") != args_.Has("size-max")) {
      return Usage("--size-min and --size-max go together");
    }
    if (args_.Has("size-min")) {
      auto mins = ListOption("size-min");
      if (!mins.ok()) return mins.status();
      auto maxs = ListOption("size-max");
      if (!maxs.ok()) return maxs.status();
      if (mins->size() != maxs->size()) return Usage("--size-min and --size-max differ in length");
      for (size_t i = 0; i < mins->size(); ++i) {
        v1::SizeBounds* bounds = request.add_size_bounds();
        bounds->set_size_min((*mins)[i]);
        bounds->set_size_max((*maxs)[i]);
      }
    }
    auto iterations = IntOption(args_, "iterations", 0);
    auto seed = IntOption(args_, "seed", 0);
    auto sample = IntOption(args_, "sample", 0);
    for (const auto* v : {&iterations, &seed, &sample}) {
      if (!v->ok()) return Usage(v->status().message());
      if (**v < 0) return Usage("--iterations, --seed and --sample must be non-negative");
    }
    request.set_max_iterations(static_cast<uint32_t>(std::min<int64_t>(*iterations, UINT32_MAX)));
    request.set_seed(static_cast<uint64_t>(*seed));
    request.set_sample_size(static_cast<uint64_t>(*sample));
    v1::Job job;
    {
      auto context = Context();
      if (auto s = FromGrpcStatus(stub().TrainTokenizer(context.get(), request, &job)); !s.ok()) {
        return s;
      }
    }
    return FollowJob(job);
  }

  // Prints a just-started job (--detach) or polls it to its end with a progress bar; an error
  // unless it succeeded.
  absl::Status FollowJob(v1::Job job) {
    if (args_.Has("detach")) {
      PrintJob(job);
      return absl::OkStatus();
    }
    const bool bar = !args_.Has("no-progress") && isatty(STDERR_FILENO);
    if (!json_)
      std::fprintf(stderr, "started %s on '%s'\n", job.id().c_str(), job.collection().c_str());
    while (job.state() == v1::JOB_STATE_PENDING || job.state() == v1::JOB_STATE_RUNNING) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      v1::GetJobRequest get;
      get.set_id(job.id());
      auto context = Context();
      if (auto s = FromGrpcStatus(stub().GetJob(context.get(), get, &job)); !s.ok()) return s;
      if (bar) {
        constexpr int kWidth = 30;
        const int filled = static_cast<int>(job.progress() * kWidth);
        std::fprintf(stderr, "\r[%s%s] %5.1f%%  %-22s %6.1f s   ", std::string(filled, '#').c_str(),
                     std::string(kWidth - filled, '.').c_str(), 100 * job.progress(),
                     job.phase().c_str(), job.elapsed_seconds());
        std::fflush(stderr);
      }
    }
    if (bar) std::fprintf(stderr, "\n");
    PrintJob(job);
    if (job.state() != v1::JOB_STATE_SUCCEEDED) {
      return absl::AbortedError(
          absl::StrFormat("job %s ended %s: %s", job.id(), JobStateText(job.state()), job.error()));
    }
    return absl::OkStatus();
  }

  absl::Status TrainIndex() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    v1::TrainIndexRequest request;
    request.set_collection(args_.positional[1]);
    const std::vector<std::string> names = {"nlist", "m", "nbits", "coarse-iterations",
                                            "pq-iterations"};
    std::vector<uint32_t> small(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      auto value = IntOption(args_, names[i], 0);
      if (!value.ok()) return Usage(value.status().message());
      if (*value < 0 || *value > UINT32_MAX) {
        return Usage(absl::StrFormat("--%s %d is outside 0..%d", names[i], *value, UINT32_MAX));
      }
      small[i] = static_cast<uint32_t>(*value);
    }
    request.set_nlist(small[0]);
    request.set_m(small[1]);
    request.set_nbits(small[2]);
    request.set_coarse_iterations(small[3]);
    request.set_pq_iterations(small[4]);
    auto seed = IntOption(args_, "seed", 0);
    auto sample = IntOption(args_, "sample", 0);
    for (const auto* v : {&seed, &sample}) {
      if (!v->ok()) return Usage(v->status().message());
      if (**v < 0) return Usage("--seed and --sample must be non-negative");
    }
    request.set_seed(static_cast<uint64_t>(*seed));
    request.set_sample_size(static_cast<uint64_t>(*sample));
    v1::Job job;
    {
      auto context = Context();
      if (auto s = FromGrpcStatus(stub().TrainIndex(context.get(), request, &job)); !s.ok()) {
        return s;
      }
    }
    return FollowJob(job);
  }

  absl::Status Search() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    if (!args_.Has("queries")) return Usage("--queries FILE is required");
    auto k = IntOption(args_, "k", 10);
    auto nprobe = IntOption(args_, "nprobe", 0);
    auto refine = IntOption(args_, "refine", 0);
    auto max_rows = IntOption(args_, "max-rows", -1);
    for (const auto* v : {&k, &nprobe, &refine, &max_rows}) {
      if (!v->ok()) return Usage(v->status().message());
    }
    if (*k < 1 || *k > UINT32_MAX) return Usage(absl::StrFormat("--k %d must be positive", *k));
    if (*nprobe < 0 || *nprobe > UINT32_MAX || *refine < 0 || *refine > UINT32_MAX) {
      return Usage("--nprobe and --refine must be non-negative");
    }
    auto queries = ReadMatrix(args_.Get("queries"), *max_rows);
    if (!queries.ok()) return queries.status();
    if (queries->rows == 0) {
      return Usage(absl::StrFormat("--queries '%s' holds no rows", args_.Get("queries")));
    }
    // Batches of at most kBatch queries keep each request well under the message limit.
    constexpr int64_t kBatch = 1000;
    v1::SearchResponse all;
    for (int64_t first = 0; first < queries->rows; first += kBatch) {
      const int64_t rows = std::min(kBatch, queries->rows - first);
      v1::SearchRequest request;
      request.set_collection(args_.positional[1]);
      request.mutable_queries()->Add(queries->values.begin() + first * queries->dim,
                                     queries->values.begin() + (first + rows) * queries->dim);
      request.set_k(static_cast<uint32_t>(*k));
      request.set_nprobe(static_cast<uint32_t>(*nprobe));
      request.set_refine(static_cast<uint32_t>(*refine));
      v1::SearchResponse response;
      auto context = Context();
      if (auto s = FromGrpcStatus(stub().Search(context.get(), request, &response)); !s.ok()) {
        return first == 0 ? s
                          : absl::Status(s.code(), absl::StrFormat("queries from row %d: %s", first,
                                                                   s.message()));
      }
      all.set_index_version(response.index_version());
      all.set_nprobe(response.nprobe());
      for (v1::SearchResult& result : *response.mutable_results()) {
        *all.add_results() = std::move(result);
      }
    }
    if (args_.Has("output")) return WriteIvecs(args_.Get("output"), all);
    if (json_) {
      PrintJson(all);
      return absl::OkStatus();
    }
    for (int q = 0; q < all.results_size(); ++q) {
      const v1::SearchResult& result = all.results(q);
      std::vector<std::string> pairs;
      for (int i = 0; i < result.ids_size(); ++i) {
        pairs.push_back(absl::StrFormat("%d:%.6g", result.ids(i), result.distances(i)));
      }
      std::printf("query %d: %s\n", q, absl::StrJoin(pairs, " ").c_str());
    }
    return absl::OkStatus();
  }

  // Writes the ids of `response` as .ivecs: per query a little-endian int32 count, then the
  // ids as int32 (ids above 2^31 - 1 do not fit the format and are refused).
  absl::Status WriteIvecs(const std::string& path, const v1::SearchResponse& response) {
    std::string bytes;
    for (const v1::SearchResult& result : response.results()) {
      const auto count = static_cast<int32_t>(result.ids_size());
      bytes.append(reinterpret_cast<const char*>(&count), 4);
      for (uint64_t id : result.ids()) {
        if (id > static_cast<uint64_t>(INT32_MAX)) {
          return absl::InvalidArgumentError(
              absl::StrFormat("id %d does not fit .ivecs (int32); use --json", id));
        }
        const auto value = static_cast<int32_t>(id);
        bytes.append(reinterpret_cast<const char*>(&value), 4);
      }
    }
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (file == nullptr) {
      return absl::FailedPreconditionError(absl::StrFormat("cannot write '%s'", path));
    }
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
    if (std::fclose(file) != 0 || !written) {
      return absl::UnavailableError(absl::StrFormat("writing '%s' failed", path));
    }
    if (!json_) {
      std::printf("wrote %d queries to %s\n", response.results_size(), path.c_str());
    }
    return absl::OkStatus();
  }

  absl::Status Jobs() {
    if (args_.positional.size() > 2) return Usage("expected at most a collection NAME");
    v1::ListJobsRequest request;
    if (args_.positional.size() == 2) request.set_collection(args_.positional[1]);
    v1::ListJobsResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().ListJobs(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
      return absl::OkStatus();
    }
    for (const v1::Job& job : response.jobs()) PrintJob(job);
    return absl::OkStatus();
  }

  absl::Status Job() { return JobCommand(/*cancel=*/false); }
  absl::Status Cancel() { return JobCommand(/*cancel=*/true); }

  absl::Status JobCommand(bool cancel) {
    if (auto s = NeedPositional(1, "a job ID"); !s.ok()) return s;
    v1::Job job;
    auto context = Context();
    grpc::Status status;
    if (cancel) {
      v1::CancelJobRequest request;
      request.set_id(args_.positional[1]);
      status = stub().CancelJob(context.get(), request, &job);
    } else {
      v1::GetJobRequest request;
      request.set_id(args_.positional[1]);
      status = stub().GetJob(context.get(), request, &job);
    }
    if (auto s = FromGrpcStatus(status); !s.ok()) return s;
    PrintJob(job);
    return absl::OkStatus();
  }

  absl::Status Encode() {
    if (args_.positional.size() < 2) return Usage("expected a collection NAME");
    v1::EncodeResponse response;
    if (args_.Has("vectors")) {
      if (args_.positional.size() > 2 || args_.Has("ids")) {
        return Usage("give ids or --vectors, not both");
      }
      auto encoded = EncodeVectors(args_.Get("vectors"));
      if (!encoded.ok()) return encoded.status();
      response = std::move(*encoded);
    } else {
      if (args_.Has("max-rows") || args_.Has("batch-rows")) {
        return Usage("--max-rows and --batch-rows go with --vectors");
      }
      auto ids = IdsArgument();
      if (!ids.ok()) return ids.status();
      v1::EncodeRequest request;
      request.set_collection(args_.positional[1]);
      request.mutable_ids()->Add(ids->begin(), ids->end());
      auto context = Context();
      if (auto s = FromGrpcStatus(stub().Encode(context.get(), request, &response)); !s.ok()) {
        return s;
      }
    }
    if (json_) {
      PrintJson(response);
      return absl::OkStatus();
    }
    for (int i = 0; i < response.ids_size(); ++i) {
      std::printf("%llu\t%s\n", static_cast<unsigned long long>(response.ids(i)),
                  response.sids(i).tokens().c_str());
    }
    if (response.missing_ids_size() > 0) {
      std::printf("not stored: %s\n", absl::StrJoin(response.missing_ids(), " ").c_str());
    }
    for (int i = 0; i < response.encoded_size(); ++i) {
      const v1::EncodedVector& e = response.encoded(i);
      std::printf("row %d\t%s\t%s\n", i, e.tokens().c_str(),
                  e.items_with_codes() == 0
                      ? "free"
                      : absl::StrCat("taken by ", Items(e.items_with_codes())).c_str());
    }
    return absl::OkStatus();
  }

  // The codes of every row of vector file `path` (or its first --max-rows rows), sent in
  // requests of --batch-rows rows (default: about 1 MiB each, at most the server's 100000), one
  // response with the rows in file order. An error names the file rows of the failed request.
  absl::StatusOr<v1::EncodeResponse> EncodeVectors(const std::string& path) {
    constexpr int64_t kMaxEncodeRows = 100000;  // the server's Encode limit per request
    auto max_rows = IntOption(args_, "max-rows", -1);
    auto batch_rows = IntOption(args_, "batch-rows", 0);
    for (const auto* v : {&max_rows, &batch_rows}) {
      if (!v->ok()) return Usage(v->status().message());
    }
    if (*batch_rows < 0 || *batch_rows > kMaxEncodeRows) {
      return Usage(
          absl::StrFormat("--batch-rows %d is outside 1..%d", *batch_rows, kMaxEncodeRows));
    }
    auto reader = VectorReader::Open(path);
    if (!reader.ok()) return reader.status();
    const int64_t dim = (*reader)->dim();
    const int64_t total =
        *max_rows < 0 ? (*reader)->rows() : std::min(*max_rows, (*reader)->rows());
    const int64_t batch =
        *batch_rows > 0 ? *batch_rows : std::min(kMaxEncodeRows, BatchRowsFor(dim));
    v1::EncodeResponse all;
    std::vector<float> buffer;
    for (int64_t first = 0; first < total; first += batch) {
      const int64_t n = std::min(batch, total - first);
      buffer.resize(static_cast<size_t>(n * dim));
      auto got = (*reader)->Read(n, buffer.data());
      if (!got.ok()) return got.status();
      if (*got != n) {
        return absl::DataLossError(absl::StrFormat("%s ended after %d rows", path, first + *got));
      }
      v1::EncodeRequest request;
      request.set_collection(args_.positional[1]);
      request.mutable_vectors()->Assign(buffer.begin(), buffer.end());
      v1::EncodeResponse response;
      auto context = Context();
      if (auto s = FromGrpcStatus(stub().Encode(context.get(), request, &response)); !s.ok()) {
        return absl::Status(s.code(), absl::StrFormat("%s rows %d..%d: %s", path, first,
                                                      first + n - 1, s.message()));
      }
      all.set_tokenizer_version(response.tokenizer_version());
      for (v1::EncodedVector& e : *response.mutable_encoded()) {
        *all.add_encoded() = std::move(e);
      }
    }
    return all;
  }

  absl::Status Lookup() {
    if (auto s = NeedPositional(2, "a collection NAME and a SID or prefix"); !s.ok()) return s;
    v1::LookupRequest request;
    request.set_collection(args_.positional[1]);
    const std::string& sid = args_.positional[2];
    if (!sid.empty() && sid[0] == '<') {
      request.set_tokens(sid);
    } else {
      for (absl::string_view part : absl::StrSplit(sid, ',')) {
        uint32_t code = 0;
        if (!absl::SimpleAtoi(part, &code)) {
          return Usage(absl::StrFormat("SID '%s': '%s' is not a code", sid, part));
        }
        request.add_codes(code);
      }
    }
    auto limit = IntOption(args_, "limit", 0);
    if (!limit.ok() || *limit < 0 || *limit > UINT32_MAX) return Usage("--limit must be 0..2^32-1");
    request.set_limit(static_cast<uint32_t>(*limit));
    v1::LookupResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().Lookup(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
      return absl::OkStatus();
    }
    for (int i = 0; i < response.ids_size(); ++i) {
      std::printf("%llu\t%s\n", static_cast<unsigned long long>(response.ids(i)),
                  response.sids(i).tokens().c_str());
    }
    std::printf("%d items%s\n", response.ids_size(), response.truncated() ? " (truncated)" : "");
    return absl::OkStatus();
  }

  absl::Status Stats() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    v1::GetStatsRequest request;
    request.set_collection(args_.positional[1]);
    v1::GetStatsResponse response;
    auto context = Context();
    if (auto s = FromGrpcStatus(stub().GetStats(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    const v1::Collection& c = response.collection();
    const v1::TokenizerStats& t = response.tokenizer();
    if (json_) {
      PrintJson(response);
      return absl::OkStatus();
    }
    std::printf("collection %s: %llu items, dimension %u, metric %s\n", c.name().c_str(),
                static_cast<unsigned long long>(c.item_count()), c.dimension(),
                MetricText(c.metric()).c_str());
    if (response.has_index()) {
      const v1::IndexStats& x = response.index();
      std::printf(
          "index version %u: IVF%llu,PQ%ux%u on %llu items (%llu bytes/vector, %.1f MiB in "
          "memory), trained on %llu items in %.2f s by %s\n"
          "  lists: min %llu, max %llu, mean %.1f, imbalance factor %.3f\n",
          x.version(), static_cast<unsigned long long>(x.nlist()), x.m(), x.nbits(),
          static_cast<unsigned long long>(x.items()),
          static_cast<unsigned long long>(x.bytes_per_vector()),
          static_cast<double>(x.memory_bytes()) / (1 << 20),
          static_cast<unsigned long long>(x.trained_items()), x.train_seconds(), x.job_id().c_str(),
          static_cast<unsigned long long>(x.list_size_min()),
          static_cast<unsigned long long>(x.list_size_max()), x.list_size_mean(),
          x.imbalance_factor());
    } else {
      std::printf("no index trained yet (quantctl train-index %s)\n", c.name().c_str());
    }
    if (!response.has_tokenizer()) {
      std::printf("no tokenizer trained yet (quantctl train %s)\n", c.name().c_str());
      return absl::OkStatus();
    }
    std::printf(
        "tokenizer version %u (%s): %u levels [%s], seed %llu, %u iterations, trained on "
        "%llu items in %.2f s by %s\n",
        t.version(), t.balanced() ? "balanced" : "plain", t.levels(),
        absl::StrJoin(t.codebook_sizes(), " ").c_str(), static_cast<unsigned long long>(t.seed()),
        t.max_iterations(), static_cast<unsigned long long>(t.trained_items()), t.train_seconds(),
        t.job_id().c_str());
    std::printf("%-6s %6s %6s %10s %8s %8s %9s %8s %12s %14s\n", "level", "K", "used", "perplexity",
                "size min", "max", "mean", "std", "mse after", "bounds");
    for (int l = 0; l < t.level_stats_size(); ++l) {
      const v1::LevelStats& s = t.level_stats(l);
      const std::string bounds =
          s.balanced() ? absl::StrFormat("[%d, %d]", s.bounds().size_min(), s.bounds().size_max())
                       : "-";
      std::printf("%-6c %6u %6u %10.1f %8llu %8llu %9.1f %8.1f %12.6g %14s\n",
                  static_cast<char>('a' + l), s.codebook_size(), s.codes_used(), s.perplexity(),
                  static_cast<unsigned long long>(s.size_min()),
                  static_cast<unsigned long long>(s.size_max()), s.size_mean(), s.size_std(),
                  s.reconstruction_mse(), bounds.c_str());
    }
    std::printf(
        "collisions: rate %.4f (%llu unique code tuples for %llu items), %llu groups, "
        "largest %llu\n",
        t.collision_rate(), static_cast<unsigned long long>(t.unique_tuples()),
        static_cast<unsigned long long>(t.items()),
        static_cast<unsigned long long>(t.collision_groups()),
        static_cast<unsigned long long>(t.largest_group()));
    return absl::OkStatus();
  }

  absl::Status ExportSids() {
    if (auto s = NeedPositional(1, "a collection NAME"); !s.ok()) return s;
    const std::string json_path = args_.Get("index");
    const std::string npy_path = args_.Get("codes");
    if (json_path.empty()) return Usage("--index FILE is required");
    v1::ExportSidsRequest request;
    request.set_collection(args_.positional[1]);
    grpc::ClientContext context;
    auto reader = stub().ExportSids(&context, request);
    v1::ExportSidsResponse batch;
    std::vector<uint64_t> ids;
    std::vector<int64_t> rows;  // ids.size() x (levels + 1)
    uint32_t levels = 0;
    uint32_t version = 0;
    while (reader->Read(&batch)) {
      levels = batch.levels();
      version = batch.tokenizer_version();
      for (int i = 0; i < batch.ids_size(); ++i) {
        ids.push_back(batch.ids(i));
        for (uint32_t l = 0; l < levels; ++l) rows.push_back(batch.codes(i * levels + l));
        rows.push_back(batch.suffixes(i));
      }
    }
    if (auto s = FromGrpcStatus(reader->Finish()); !s.ok()) return s;
    std::FILE* out = std::fopen(json_path.c_str(), "w");
    if (out == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat("--index %s: cannot write", json_path));
    }
    std::fputs("{", out);
    for (size_t i = 0; i < ids.size(); ++i) {
      std::fprintf(out, "%s\"%llu\": [", i == 0 ? "" : ", ",
                   static_cast<unsigned long long>(ids[i]));
      for (uint32_t l = 0; l <= levels; ++l) {
        std::fprintf(out, "%s\"<%c_%lld>\"", l == 0 ? "" : ", ", static_cast<char>('a' + l),
                     static_cast<long long>(rows[i * (levels + 1) + l]));
      }
      std::fputs("]", out);
    }
    std::fputs("}\n", out);
    if (std::fclose(out) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat("--index %s: write failed", json_path));
    }
    if (!npy_path.empty()) {
      if (auto s = WriteNpy(npy_path, rows.data(), static_cast<int64_t>(ids.size()), levels + 1);
          !s.ok()) {
        return s;
      }
    }
    std::printf("exported %zu semantic IDs (tokenizer version %u, %u levels + suffix) to %s%s\n",
                ids.size(), version, levels, json_path.c_str(),
                npy_path.empty() ? "" : (" and " + npy_path).c_str());
    return absl::OkStatus();
  }

  absl::Status Backup() {
    if (auto s = NeedPositional(1, "a backup NAME"); !s.ok()) return s;
    v1::BackupRequest request;
    request.set_name(args_.positional[1]);
    v1::BackupResponse response;
    auto context = Context(/*fallback_seconds=*/3600);
    if (auto s = FromGrpcStatus(stub().Backup(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    if (json_) {
      PrintJson(response);
    } else {
      std::printf("backup '%s' written to %s: %s in %llu files, %.2f s (sequence %llu)\n",
                  request.name().c_str(), response.path().c_str(),
                  HumanBytes(response.bytes()).c_str(),
                  static_cast<unsigned long long>(response.files()), response.seconds(),
                  static_cast<unsigned long long>(response.sequence()));
    }
    return absl::OkStatus();
  }

  // grpc.health.v1.Health/Check: exit code 0 when SERVING, 1 otherwise (NOT_SERVING, an
  // unknown service, no answer), for container health checks and scripts.
  absl::Status Health() {
    if (auto s = NeedPositional(0, "no arguments"); !s.ok()) return s;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(args_.Get("service"));
    grpc::health::v1::HealthCheckResponse response;
    auto context = Context(/*fallback_seconds=*/5);
    const auto health = grpc::health::v1::Health::NewStub(channel());
    if (auto s = FromGrpcStatus(health->Check(context.get(), request, &response)); !s.ok()) {
      return s;
    }
    const std::string status =
        grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
    const std::string service = request.service().empty() ? "server" : request.service();
    if (json_) {
      PrintJson(response);
    } else {
      std::printf("%s: %s\n", service.c_str(), status.c_str());
    }
    if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::UnavailableError(absl::StrFormat("%s is %s", service, status));
    }
    return absl::OkStatus();
  }

  absl::Status Inspect() {
    if (auto s = NeedPositional(1, "a FILE"); !s.ok()) return s;
    auto reader = VectorReader::Open(args_.positional[1]);
    if (!reader.ok()) return reader.status();
    static constexpr const char* kTypes[] = {"uint8", "int8",   "uint16", "int16",   "uint32",
                                             "int32", "uint64", "int64",  "float32", "float64"};
    const char* type = kTypes[static_cast<int>((*reader)->element_type())];
    const std::string format(VectorFileFormatName((*reader)->format()));
    if (json_) {
      JsonObject()
          .Set("path", args_.positional[1])
          .Set("format", format)
          .Set("element_type", type)
          .Set("rows", static_cast<double>((*reader)->rows()))
          .Set("dimension", static_cast<double>((*reader)->dim()))
          .Print();
    } else {
      std::printf("%s: %s, %s, %lld rows x %lld dimensions\n", args_.positional[1].c_str(),
                  format.c_str(), type, static_cast<long long>((*reader)->rows()),
                  static_cast<long long>((*reader)->dim()));
    }
    return absl::OkStatus();
  }

  const Args& args_;
  bool json_;
  bool usage_error_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantd::Stub> stub_;
};

const std::vector<Cli::Command>& Cli::Commands() {
  static const auto* commands = new std::vector<Command>{
      {"create",
       R"(Usage: quantctl create NAME --dim D [--metric l2|ip|cosine]

Creates a collection. NAME: 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit.
  --dim D        vector dimension, 1..65536 (required)
  --metric M     l2 (default), ip (inner product) or cosine
)",
       {"dim", "metric"},
       &Cli::Create},
      {"list",
       "Usage: quantctl list\n\nLists collections with dimension, metric and item count.\n",
       {},
       &Cli::List},
      {"describe",
       "Usage: quantctl describe NAME\n\nShows one collection and its item count.\n",
       {},
       &Cli::Describe},
      {"drop",
       "Usage: quantctl drop NAME\n\nDeletes a collection and all of its items.\n",
       {},
       &Cli::Drop},
      {"upsert",
       R"(Usage: quantctl upsert NAME FILE [OPTIONS]

Streams the rows of FILE into collection NAME, in batches of about 1 MiB, each acknowledged by
the server once durable. Shows a progress bar on a terminal.
  --id-offset N    item id of row r is N + r (default 0)
  --ids FILE       item ids, one per row: .npy/.ivecs of integers or text, one id per line
  --max-rows N     upload only the first N rows
  --batch-rows N   rows per batch (default: about 1 MiB per batch)
  --no-progress    no progress bar
)",
       {"id-offset", "ids", "max-rows", "batch-rows", "no-progress"},
       &Cli::Upsert},
      {"get",
       R"(Usage: quantctl get NAME ID... | --ids FILE

Reads stored vectors. Prints one line per item (first values only) or, with --json, every value.
  --ids FILE     ids to read (as for upsert)
)",
       {"ids"},
       &Cli::Get},
      {"delete",
       R"(Usage: quantctl delete NAME ID... | --ids FILE

Deletes items atomically; reports how many were deleted and how many did not exist.
  --ids FILE     ids to delete (as for upsert)
)",
       {"ids"},
       &Cli::Delete},
      {"train",
       R"(Usage: quantctl train NAME [OPTIONS]

Trains a semantic-ID tokenizer (residual k-means) on the collection's items, then encodes every
item and commits the new version atomically. Follows the job with a progress bar (Ctrl-C
leaves it running; `quantctl cancel ID` stops it).
  --levels K1,K2,..   codes per level; the count is the number of levels (default 256,256,256)
  --balanced          balanced k-means: every code's item count within bounds (hard)
  --slack S           balanced bounds floor(n/K*(1-S)) .. ceil(n/K*(1+S)) (default 0.1)
  --size-min A,B,..   explicit per-level bounds instead of --slack (with --size-max)
  --size-max A,B,..
  --iterations N      k-means iterations per level (default 25)
  --seed N            random seed (default 0)
  --sample N          train on a seeded sample of N items (default: all); all get SIDs
    --detach            print the job id and return at once
  --no-progress       no progress bar
)",
       {"levels", "balanced", "slack", "size-min", "size-max", "iterations", "seed", "sample",
        "detach", "no-progress"},
       &Cli::Train},
      {"train-index",
       R"(Usage: quantctl train-index NAME [OPTIONS]

Trains an IVF-PQ index (coarse k-means, then a product quantizer on the residuals) on the
collection's items, then encodes every item and commits the new version atomically; searches
use the previous version until then. Follows the job with a progress bar (Ctrl-C leaves it
running; `quantctl cancel ID` stops it).
  --nlist N           inverted lists (default round(4 sqrt(n)) clamped to [1, n/39])
  --m M               PQ sub-quantizers, dividing the dimension (default: largest divisor
                      <= min(64, d/4))
  --nbits 4|8         bits per sub-code (default 8; 4 under 256 training items)
  --coarse-iterations N   coarse k-means iterations (default 10)
  --pq-iterations N   PQ k-means iterations (default 25)
  --seed N            random seed (default 0)
  --sample N          train on a seeded sample of N items (default: all); all are indexed
  --detach            print the job id and return at once
  --no-progress       no progress bar
)",
       {"nlist", "m", "nbits", "coarse-iterations", "pq-iterations", "seed", "sample", "detach",
        "no-progress"},
       &Cli::TrainIndex},
      {"search",
       R"(Usage: quantctl search NAME --queries FILE [OPTIONS]

Searches the collection's index with every row of a vector file (.npy, .fvecs, ...) and prints,
per query, the ids and distances of its nearest items, nearest first (L2: squared distance;
ip / cosine: similarity).
  --k N               neighbours per query, 1..1024 (default 10)
  --nprobe N          lists scanned per query (default nlist/8; above nlist scans all)
  --refine R          re-rank R x k candidates by exact distance to the stored vectors
  --max-rows N        use the first N queries only
  --output FILE       write the ids as .ivecs (a row per query, shorter when fewer than k
                      items were found) instead of printing them
)",
       {"queries", "k", "nprobe", "refine", "max-rows", "output"},
       &Cli::Search},
      {"encode",
       R"(Usage: quantctl encode NAME ID... | --ids FILE | --vectors FILE [OPTIONS]

Prints the semantic IDs of stored items, or the codes a tokenizer gives to new vectors (with
how many stored items already have those codes). --vectors encodes every row of the file,
sent in batches.
  --ids FILE          ids of stored items (as for upsert)
  --vectors FILE      a vector file (.npy, .fvecs, ...): one line of codes per row
  --max-rows N        encode only the first N rows of --vectors (default: all)
  --batch-rows N      rows per Encode request, 1..100000 (default: about 1 MiB per request)
)",
       {"ids", "vectors", "max-rows", "batch-rows"},
       &Cli::Encode},
      {"lookup",
       R"(Usage: quantctl lookup NAME SID [--limit N]

Lists the items under a semantic ID or a prefix of one, written as tokens ("<a_12><b_201>")
or as comma-separated integers ("12,201"). --limit caps the answer (default 1000).
)",
       {"limit"},
       &Cli::Lookup},
      {"stats",
       "Usage: quantctl stats NAME\n\nShows item count, tokenizer parameters, per-level "
       "codebook usage, perplexity, cluster sizes and reconstruction MSE, and collisions; index "
       "shape, list sizes and imbalance, bytes per vector and memory.\n",
       {},
       &Cli::Stats},
      {"export-sids",
       R"(Usage: quantctl export-sids NAME --index FILE [--codes FILE]

Writes every item's semantic ID as LC-Rec / LETTER index JSON to --index,
{"<item id>": ["<a_12>", "<b_201>", ..., "<d_0>"]}, and with --codes an .npy of int64 codes of
shape (items, levels + 1), rows in item-id order (the last column is the dedup suffix).
)",
       {"index", "codes"},
       &Cli::ExportSids},
      {"jobs",
       "Usage: quantctl jobs [NAME]\n\nLists training jobs, newest first.\n",
       {},
       &Cli::Jobs},
      {"job",
       "Usage: quantctl job ID\n\nShows one job: state, phase, progress, elapsed time.\n",
       {},
       &Cli::Job},
      {"cancel",
       "Usage: quantctl cancel ID\n\nCancels a pending or running job; the "
       "previous tokenizer keeps serving.\n",
       {},
       &Cli::Cancel},
      {"backup",
       R"(Usage: quantctl backup NAME

Asks the server for a consistent backup of its whole database (every collection, item,
tokenizer, index and job, as of one instant) in <backup_dir>/NAME on the server's filesystem
(quantd --backup_dir, default ./var/backups). The server keeps serving meanwhile. NAME is one
path component of [A-Za-z0-9._-]. Prints the path, size, number of files and duration. Restore by
starting quantd with --data_dir on a copy of that directory. The call's deadline is --timeout
(default 3600 s here).
)",
       {},
       &Cli::Backup},
      {"health",
       R"(Usage: quantctl health [--service NAME]

Asks the server's grpc.health.v1 service (the main port, or quantd's plaintext --health_listen
port) whether it serves, and prints SERVING or NOT_SERVING. Exit code 0 when SERVING, 1
otherwise (NOT_SERVING while starting or draining, an unknown service, no answer): a container
health check. TLS and token options apply as for every command; the health port needs none.
The deadline is --timeout (default 5 s here).
  --service NAME   a service instead of the whole server, e.g. quantd.v1.Quantd
)",
       {"service"},
       &Cli::Health},
      {"inspect",
       "Usage: quantctl inspect FILE\n\nShows the format, element type and shape of "
       "a local vector file without contacting a server.\n",
       {},
       &Cli::Inspect},
  };
  return *commands;
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  auto args = quantd::ParseArgs(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "quantctl: %s\n", std::string(args.status().message()).c_str());
    return 2;
  }
  if (args->positional.empty()) {
    std::fputs(quantd::kUsage, args->Has("help") ? stdout : stderr);
    return args->Has("help") ? 0 : 2;
  }
  const auto* command = quantd::Cli::Find(args->positional[0]);
  if (command == nullptr) {
    std::fprintf(stderr, "quantctl: unknown command '%s'\n\n%s", args->positional[0].c_str(),
                 quantd::kUsage);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(command->help.c_str(), stdout);
    return 0;
  }
  return quantd::Cli(*args).Run(*command);
}
