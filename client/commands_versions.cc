// Tokenizer versions (versions, activate, drop-version, pin, unpin, retention), the old -> new
// SID map (sid-map) and constrained decoding's next tokens (next-codes), with the option parsers
// several commands share.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/commands.h"
#include "client/files.pb.h"
#include "client/output.h"
#include "core/semantic_id.h"
#include "io/vector_file.h"

namespace quantd::quantctl {
namespace {

// A version number given as an argument: 1..2^32-1.
absl::StatusOr<uint32_t> ParseVersion(Cli& cli, const std::string& text, const std::string& what) {
  uint32_t version = 0;
  if (!absl::SimpleAtoi(text, &version)) {
    return cli.Usage(absl::StrFormat("%s '%s' is not a version number", what, text));
  }
  return version;
}

// "3x256" when every level has the same K, else "256,256,128".
std::string LevelsText(const google::protobuf::RepeatedField<uint32_t>& sizes) {
  if (sizes.empty()) return "-";
  if (std::all_of(sizes.begin(), sizes.end(), [&](uint32_t k) { return k == sizes[0]; })) {
    return absl::StrCat(sizes.size(), "x", sizes[0]);
  }
  return absl::StrJoin(sizes, ",");
}

// The kept versions as a table (the message with --json).
void PrintVersions(Cli& cli, const v1::TokenizerVersions& versions) {
  if (cli.json()) {
    PrintJson(versions);
    return;
  }
  std::printf(
      "collection %s: active version %s, keeps %u\n", versions.collection().c_str(),
      versions.active_version() == 0 ? "none" : absl::StrCat(versions.active_version()).c_str(),
      versions.keep_versions());
  if (versions.versions_size() == 0) {
    std::printf("no tokenizer versions (quantctl train %s)\n", versions.collection().c_str());
    return;
  }
  std::printf("%7s %-6s %-6s %-8s %-12s %9s %9s %12s %9s  %-20s  %s\n", "version", "active",
              "pinned", "source", "levels x K", "items", "collision", "mse", "carried", "created",
              "decision");
  for (const v1::TokenizerVersion& v : versions.versions()) {
    std::printf("%7u %-6s %-6s %-8s %-12s %9llu %9.4f %12.6g %9llu  %-20s  %s\n", v.version(),
                v.active() ? "yes" : "-", v.pinned() ? "yes" : "-", v.source().c_str(),
                LevelsText(v.codebook_sizes()).c_str(), static_cast<unsigned long long>(v.items()),
                v.collision_rate(), v.committed_mse(),
                static_cast<unsigned long long>(v.suffixes_carried()),
                UtcTime(v.create_time_ms()).c_str(), v.decision().c_str());
  }
}

// `quantctl activate|drop-version|pin|unpin NAME VERSION`: sends `method` the collection and
// the version (and for pin / unpin `pinned`), then prints "<done> version V of 'NAME'" and the
// versions the server answers.
template <typename Request>
absl::Status ChangeVersion(Cli& cli,
                           grpc::Status (v1::Quantd::Stub::*method)(grpc::ClientContext*,
                                                                    const Request&,
                                                                    v1::TokenizerVersions*),
                           const char* done, bool pinned = false) {
  if (auto s = cli.NeedPositional(2, "a collection NAME and a VERSION"); !s.ok()) return s;
  auto version = ParseVersion(cli, cli.args().positional[2], "VERSION");
  if (!version.ok()) return version.status();
  Request request;
  request.set_collection(cli.args().positional[1]);
  request.set_version(*version);
  if constexpr (std::is_same_v<Request, v1::PinTokenizerVersionRequest>) {
    request.set_pinned(pinned);
  }
  v1::TokenizerVersions response;
  if (auto s = cli.Call(method, request, &response); !s.ok()) return s;
  if (!cli.json()) {
    std::printf("%s version %u of '%s'\n", done, *version, request.collection().c_str());
  }
  PrintVersions(cli, response);
  return absl::OkStatus();
}

// An item id as the int64 the .npy files hold; an error beyond INT64_MAX.
absl::StatusOr<int64_t> IdAsInt64(uint64_t id, const std::string& file) {
  if (id > static_cast<uint64_t>(INT64_MAX)) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s: item id %d does not fit the file's int64 (ids above 2^63-1)", file, id));
  }
  return static_cast<int64_t>(id);
}

// A SID's token string from its codes (levels of them) and suffix.
std::string SidText(const uint32_t* codes, uint32_t levels, uint32_t suffix) {
  std::string out;
  for (uint32_t l = 0; l < levels; ++l) out += RenderSidToken(l, codes[l]);
  return out + RenderSidToken(levels, suffix);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<uint32_t> VersionOption(Cli& cli, const std::string& name) {
  if (!cli.args().Has(name)) return 0;
  return ParseVersion(cli, cli.args().Get(name), "--" + name);
}

absl::StatusOr<v1::Activation> ActivationOption(Cli& cli) {
  if (!cli.args().Has("activation")) return v1::ACTIVATION_UNSPECIFIED;
  const std::string value = cli.args().Get("activation");
  if (value == "always") return v1::ACTIVATION_ALWAYS;
  if (value == "never") return v1::ACTIVATION_NEVER;
  if (value == "if-better") return v1::ACTIVATION_IF_BETTER;
  return cli.Usage(
      absl::StrFormat("--activation '%s': expected always, never or if-better", value));
}

absl::StatusOr<v1::Assignment> AssignmentOption(Cli& cli) {
  if (!cli.args().Has("assignment")) return v1::ASSIGNMENT_UNSPECIFIED;
  const std::string mode = cli.args().Get("assignment");
  if (mode == "nearest") return v1::ASSIGNMENT_NEAREST;
  if (mode == "capacity") return v1::ASSIGNMENT_CAPACITY;
  return cli.Usage(absl::StrFormat("--assignment '%s': expected nearest or capacity", mode));
}

absl::StatusOr<v1::TokenizerVersion> FetchVersion(Cli& cli, const std::string& collection,
                                                  uint32_t version) {
  v1::ListTokenizerVersionsRequest request;
  request.set_collection(collection);
  v1::TokenizerVersions versions;
  if (auto s = cli.Call(&v1::Quantd::Stub::ListTokenizerVersions, request, &versions); !s.ok()) {
    return s;
  }
  const uint32_t wanted = version == 0 ? versions.active_version() : version;
  if (wanted == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("collection '%s' has no active tokenizer version (quantctl train %s)",
                        collection, collection));
  }
  std::vector<uint32_t> kept;
  for (const v1::TokenizerVersion& v : versions.versions()) {
    if (v.version() == wanted) return v;
    kept.push_back(v.version());
  }
  return absl::NotFoundError(absl::StrFormat("tokenizer version %u of '%s' is not kept (kept: %s)",
                                             wanted, collection,
                                             kept.empty() ? "none" : absl::StrJoin(kept, ", ")));
}

absl::Status VersionsCommand(Cli& cli) {
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  v1::ListTokenizerVersionsRequest request;
  request.set_collection(cli.args().positional[1]);
  v1::TokenizerVersions response;
  if (auto s = cli.Call(&v1::Quantd::Stub::ListTokenizerVersions, request, &response); !s.ok()) {
    return s;
  }
  PrintVersions(cli, response);
  return absl::OkStatus();
}

absl::Status ActivateCommand(Cli& cli) {
  return ChangeVersion(cli, &v1::Quantd::Stub::ActivateTokenizer, "activated");
}

absl::Status DropVersionCommand(Cli& cli) {
  return ChangeVersion(cli, &v1::Quantd::Stub::DropTokenizerVersion, "dropped");
}

absl::Status PinCommand(Cli& cli) {
  return ChangeVersion(cli, &v1::Quantd::Stub::PinTokenizerVersion, "pinned", /*pinned=*/true);
}

absl::Status UnpinCommand(Cli& cli) {
  return ChangeVersion(cli, &v1::Quantd::Stub::PinTokenizerVersion, "unpinned", /*pinned=*/false);
}

absl::Status RetentionCommand(Cli& cli) {
  if (auto s = cli.NeedPositional(2, "a collection NAME and N"); !s.ok()) return s;
  uint32_t keep = 0;
  if (!absl::SimpleAtoi(cli.args().positional[2], &keep)) {
    return cli.Usage(
        absl::StrFormat("N '%s' is not a number of versions", cli.args().positional[2]));
  }
  v1::SetTokenizerRetentionRequest request;
  request.set_collection(cli.args().positional[1]);
  request.set_keep_versions(keep);
  v1::TokenizerVersions response;
  if (auto s = cli.Call(&v1::Quantd::Stub::SetTokenizerRetention, request, &response); !s.ok()) {
    return s;
  }
  if (!cli.json()) {
    std::printf("'%s' keeps %u tokenizer versions\n", request.collection().c_str(),
                response.keep_versions());
  }
  PrintVersions(cli, response);
  return absl::OkStatus();
}

absl::Status SidMapCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (!args.Has("from")) return cli.Usage("--from VERSION is required");
  if (!args.Has("out")) return cli.Usage("--out PREFIX is required");
  auto from = VersionOption(cli, "from");
  if (!from.ok()) return from.status();
  auto to = VersionOption(cli, "to");
  if (!to.ok()) return to.status();
  const std::string& collection = args.positional[1];
  const std::string prefix = args.Get("out");
  const std::string json_path = prefix + ".json";
  const std::string npy_path = prefix + ".npy";
  const auto start = std::chrono::steady_clock::now();
  // The progress bar's total: the items under the source version.
  auto from_version = FetchVersion(cli, collection, *from);
  if (!from_version.ok()) return from_version.status();

  v1::MapSidsRequest request;
  request.set_collection(collection);
  request.set_from_version(*from);
  request.set_to_version(*to);
  grpc::ClientContext context;
  auto reader = cli.stub().MapSids(&context, request);
  ProgressBar bar(static_cast<int64_t>(from_version->items()), sizeof(uint64_t),
                  !args.Has("no-progress"));
  client::SidMap map;
  auto& fields = *map.mutable_sids();
  std::vector<int64_t> rows;
  v1::MapSidsResponse batch;
  uint32_t from_levels = 0;
  uint32_t to_levels = 0;
  uint32_t from_number = 0;
  uint32_t to_number = 0;
  int64_t items = 0;
  int64_t changed = 0;
  absl::Status failure;
  while (failure.ok() && reader->Read(&batch)) {
    if (items > 0 && (batch.from_levels() != from_levels || batch.to_levels() != to_levels)) {
      failure = absl::DataLossError("MapSids: levels changed between batches");
      break;
    }
    from_levels = batch.from_levels();
    to_levels = batch.to_levels();
    from_number = batch.from_version();
    to_number = batch.to_version();
    const int n = batch.ids_size();
    if (batch.from_codes_size() != n * static_cast<int64_t>(from_levels) ||
        batch.to_codes_size() != n * static_cast<int64_t>(to_levels) ||
        batch.from_suffixes_size() != n || batch.to_suffixes_size() != n) {
      failure = absl::DataLossError(
          absl::StrFormat("MapSids: a batch of %d ids with %d/%d codes and %d/%d suffixes", n,
                          batch.from_codes_size(), batch.to_codes_size(),
                          batch.from_suffixes_size(), batch.to_suffixes_size()));
      break;
    }
    for (int i = 0; i < n; ++i) {
      auto id = IdAsInt64(batch.ids(i), npy_path);
      if (!id.ok()) {
        failure = id.status();
        break;
      }
      const uint32_t* old_codes = batch.from_codes().data() + i * from_levels;
      const uint32_t* new_codes = batch.to_codes().data() + i * to_levels;
      std::string old_sid = SidText(old_codes, from_levels, batch.from_suffixes(i));
      std::string new_sid = SidText(new_codes, to_levels, batch.to_suffixes(i));
      if (old_sid != new_sid) ++changed;
      auto [it, fresh] = fields.try_emplace(std::move(old_sid));
      if (!fresh) {
        failure = absl::DataLossError(
            absl::StrFormat("MapSids: two items hold %s under version %u (item %d is the second)",
                            it->first, from_number, batch.ids(i)));
        break;
      }
      it->second = std::move(new_sid);
      rows.push_back(*id);
      rows.insert(rows.end(), old_codes, old_codes + from_levels);
      rows.push_back(batch.from_suffixes(i));
      rows.insert(rows.end(), new_codes, new_codes + to_levels);
      rows.push_back(batch.to_suffixes(i));
      ++items;
    }
    bar.Update(items);
  }
  bar.Finish();
  if (!failure.ok()) {
    context.TryCancel();
    reader->Finish();
    return failure;
  }
  if (auto s = FromGrpcStatus(reader->Finish()); !s.ok()) return s;
  const double streamed = SecondsSince(start);
  if (auto s = WriteJsonMapFile(json_path, map, "sids"); !s.ok()) return s;
  const int64_t width = 1 + (from_levels + 1) + (to_levels + 1);
  if (auto s = WriteNpy(npy_path, rows.data(), items, width); !s.ok()) return s;
  const double total = SecondsSince(start);
  if (cli.json()) {
    JsonObject()
        .Set("items", static_cast<double>(items))
        .Set("changed", static_cast<double>(changed))
        .Set("from_version", from_number)
        .Set("to_version", to_number)
        .Set("json", json_path)
        .Set("npy", npy_path)
        .Set("seconds", total)
        .Print();
    return absl::OkStatus();
  }
  std::printf(
      "%s from version %u to %u: %s changed their SID; wrote %s and %s (%lld x %lld int64: id, "
      "%u codes + suffix, %u codes + suffix) in %.2f s (%.2f s streaming)\n",
      Items(static_cast<uint64_t>(items)).c_str(), from_number, to_number,
      Items(static_cast<uint64_t>(changed)).c_str(), json_path.c_str(), npy_path.c_str(),
      static_cast<long long>(items), static_cast<long long>(width), from_levels, to_levels, total,
      streamed);
  return absl::OkStatus();
}

absl::Status NextCodesCommand(Cli& cli) {
  const Args& args = cli.args();
  if (args.positional.size() < 2 || args.positional.size() > 3) {
    return cli.Usage("expected a collection NAME and optionally a PREFIX");
  }
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  v1::NextCodesRequest request;
  request.set_collection(args.positional[1]);
  request.set_tokenizer_version(*version);
  const std::string prefix = args.positional.size() == 3 ? args.positional[2] : "";
  if (!prefix.empty() && prefix[0] == '<') {
    request.set_tokens(prefix);
  } else if (!prefix.empty()) {
    for (absl::string_view part : absl::StrSplit(prefix, ',')) {
      uint32_t code = 0;
      if (!absl::SimpleAtoi(part, &code)) {
        return cli.Usage(absl::StrFormat("PREFIX '%s': '%s' is not a code", prefix, part));
      }
      request.add_prefix(code);
    }
  }
  v1::NextCodesResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::NextCodes, request, &response); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  const bool suffixes = response.ids_size() > 0;
  for (int i = 0; i < response.codes_size(); ++i) {
    const std::string token = i < response.tokens_size()
                                  ? response.tokens(i)
                                  : RenderSidToken(response.level(), response.codes(i));
    if (i < response.ids_size()) {
      std::printf("%s\titem %llu\n", token.c_str(),
                  static_cast<unsigned long long>(response.ids(i)));
    } else {
      std::printf("%s\t%s\n", token.c_str(),
                  Items(i < response.items_size() ? response.items(i) : 0).c_str());
    }
  }
  std::printf("%d next %s at level %u (tokenizer version %u)\n", response.codes_size(),
              suffixes ? "suffixes" : (response.codes_size() == 1 ? "token" : "tokens"),
              response.level(), response.tokenizer_version());
  return absl::OkStatus();
}

}  // namespace quantd::quantctl
