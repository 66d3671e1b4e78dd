// Nearest-neighbour search commands: train-index (IVF-PQ) and search.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/attributes.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/commands.h"
#include "client/output.h"
#include "io/vector_file.h"

namespace quantd::quantctl {
namespace {

// Writes the ids of `response` as .ivecs: per query a little-endian int32 count, then the
// ids as int32 (ids above 2^31 - 1 do not fit the format and are refused).
absl::Status WriteIvecs(Cli& cli, const std::string& path, const v1::SearchResponse& response) {
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
  if (!cli.json()) {
    std::printf("wrote %d queries to %s\n", response.results_size(), path.c_str());
  }
  return absl::OkStatus();
}

// The ids of --allow / --deny: a file of ids (one decimal id per line, or .npy / .ivecs with
// one column) when `value` names one, else comma-separated ids; sorted and de-duplicated, as
// SearchRequest's packed IdList requires.
absl::StatusOr<std::vector<uint64_t>> FilterIds(Cli& cli, const std::string& name) {
  const std::string value = cli.args().Get(name);
  std::FILE* file = std::fopen(value.c_str(), "rb");
  absl::StatusOr<std::vector<uint64_t>> ids =
      file != nullptr ? ReadIds(value) : cli.ListOption(name);
  if (file != nullptr) std::fclose(file);
  if (!ids.ok()) return ids.status();
  std::sort(ids->begin(), ids->end());
  ids->erase(std::unique(ids->begin(), ids->end()), ids->end());
  return ids;
}

// Sets the filters of --allow, --deny, --prefix, --where and --include-self on `request`.
absl::Status SetFilters(Cli& cli, v1::SearchRequest* request) {
  const Args& args = cli.args();
  if (args.Has("allow") && args.Has("deny")) return cli.Usage("give --allow or --deny, not both");
  for (const char* name : {"allow", "deny"}) {
    if (!args.Has(name)) continue;
    auto ids = FilterIds(cli, name);
    if (!ids.ok()) return ids.status();
    v1::IdList* list =
        std::string(name) == "allow" ? request->mutable_allow() : request->mutable_deny();
    list->mutable_ids()->Add(ids->begin(), ids->end());
  }
  if (args.Has("prefix")) {
    const std::string prefix = args.Get("prefix");
    if (!prefix.empty() && prefix[0] == '<') {
      request->set_sid_prefix_tokens(prefix);
    } else {
      auto codes = cli.ListOption("prefix");
      if (!codes.ok()) return codes.status();
      for (uint64_t code : *codes) {
        if (code > UINT32_MAX) return cli.Usage(absl::StrFormat("--prefix code %d", code));
        request->add_sid_prefix(static_cast<uint32_t>(code));
      }
    }
  }
  if (args.Has("where")) {
    auto where = ParseWhere(args.Get("where"));
    if (!where.ok()) return cli.Usage(where.status().message());
    for (v1::AttributeCondition& condition : *where) *request->add_where() = std::move(condition);
  }
  request->set_include_self(args.Has("include-self"));
  return absl::OkStatus();
}

// The value of --name among `choices` (word, value), `fallback` when the option is absent;
// INVALID_ARGUMENT naming the option, the word and the accepted words otherwise.
template <typename Value>
absl::StatusOr<Value> ChoiceOption(const Args& args, const std::string& name,
                                   std::initializer_list<std::pair<const char*, Value>> choices,
                                   Value fallback) {
  if (!args.Has(name)) return fallback;
  const std::string word = args.Get(name);
  std::vector<std::string> words;
  for (const auto& [choice, value] : choices) {
    if (word == choice) return value;
    words.push_back(choice);
  }
  const std::string last = words.back();
  words.pop_back();
  return absl::InvalidArgumentError(
      absl::StrFormat("--%s '%s' is not %s or %s", name, word, absl::StrJoin(words, ", "), last));
}

}  // namespace

absl::Status TrainIndexCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  v1::TrainIndexRequest request;
  request.set_collection(args.positional[1]);
  const std::vector<std::string> names = {"nlist", "m", "nbits", "coarse-iterations",
                                          "pq-iterations"};
  std::vector<uint32_t> small(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    auto value = IntOption(args, names[i], 0);
    if (!value.ok()) return cli.Usage(value.status().message());
    if (*value < 0 || *value > UINT32_MAX) {
      return cli.Usage(absl::StrFormat("--%s %d is outside 0..%d", names[i], *value, UINT32_MAX));
    }
    small[i] = static_cast<uint32_t>(*value);
  }
  request.set_nlist(small[0]);
  request.set_m(small[1]);
  request.set_nbits(small[2]);
  request.set_coarse_iterations(small[3]);
  request.set_pq_iterations(small[4]);
  auto seed = IntOption(args, "seed", 0);
  auto sample = IntOption(args, "sample", 0);
  for (const auto* v : {&seed, &sample}) {
    if (!v->ok()) return cli.Usage(v->status().message());
    if (**v < 0) return cli.Usage("--seed and --sample must be non-negative");
  }
  request.set_seed(static_cast<uint64_t>(*seed));
  request.set_sample_size(static_cast<uint64_t>(*sample));
  auto layout =
      ChoiceOption(args, "layout",
                   {{"plain", v1::INDEX_LAYOUT_PLAIN}, {"fast-scan", v1::INDEX_LAYOUT_FAST_SCAN}},
                   v1::INDEX_LAYOUT_UNSPECIFIED);
  if (!layout.ok()) return cli.Usage(layout.status().message());
  request.set_layout(*layout);
  auto refine_codes = ChoiceOption(args, "refine-codes",
                                   {{"sq8", v1::REFINE_CODES_SQ8}, {"none", v1::REFINE_CODES_NONE}},
                                   v1::REFINE_CODES_UNSPECIFIED);
  if (!refine_codes.ok()) return cli.Usage(refine_codes.status().message());
  request.set_refine_codes(*refine_codes);
  v1::Job job;
  if (auto s = cli.Call(&v1::Quantd::Stub::TrainIndex, request, &job); !s.ok()) return s;
  return FollowJob(cli, job);
}

absl::Status SearchCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (args.Has("queries") == args.Has("like")) {
    return cli.Usage("give --queries FILE or --like ID[,ID...] (one of them)");
  }
  auto k = IntOption(args, "k", 10);
  auto nprobe = IntOption(args, "nprobe", 0);
  auto refine = IntOption(args, "refine", 0);
  auto offset = IntOption(args, "offset", 0);
  auto max_rows = IntOption(args, "max-rows", -1);
  for (const auto* v : {&k, &nprobe, &refine, &offset, &max_rows}) {
    if (!v->ok()) return cli.Usage(v->status().message());
  }
  if (*k < 1 || *k > UINT32_MAX) return cli.Usage(absl::StrFormat("--k %d must be positive", *k));
  for (const auto* v : {&nprobe, &refine, &offset}) {
    if (**v < 0 || **v > UINT32_MAX) {
      return cli.Usage("--nprobe, --refine and --offset must be non-negative");
    }
  }
  Matrix queries;
  std::vector<uint64_t> like;
  if (args.Has("like")) {
    auto ids = cli.ListOption("like");
    if (!ids.ok()) return ids.status();
    like = std::move(*ids);
    if (*max_rows >= 0 && static_cast<int64_t>(like.size()) > *max_rows) like.resize(*max_rows);
  } else {
    auto read = ReadMatrix(args.Get("queries"), *max_rows);
    if (!read.ok()) return read.status();
    if (read->rows == 0) {
      return cli.Usage(absl::StrFormat("--queries '%s' holds no rows", args.Get("queries")));
    }
    queries = std::move(*read);
  }
  v1::SearchRequest filtered;
  if (auto s = SetFilters(cli, &filtered); !s.ok()) return s;
  // Batches of at most kBatch queries keep each request well under the message limit.
  constexpr int64_t kBatch = 1000;
  const int64_t total = like.empty() ? queries.rows : static_cast<int64_t>(like.size());
  v1::SearchResponse all;
  for (int64_t first = 0; first < total; first += kBatch) {
    const int64_t rows = std::min(kBatch, total - first);
    v1::SearchRequest request = filtered;
    request.set_collection(args.positional[1]);
    if (like.empty()) {
      request.mutable_queries()->Add(queries.values.begin() + first * queries.dim,
                                     queries.values.begin() + (first + rows) * queries.dim);
    } else {
      request.mutable_like_ids()->Add(like.begin() + first, like.begin() + first + rows);
    }
    request.set_k(static_cast<uint32_t>(*k));
    request.set_nprobe(static_cast<uint32_t>(*nprobe));
    request.set_refine(static_cast<uint32_t>(*refine));
    request.set_refine_exact(args.Has("refine-exact"));
    request.set_offset(static_cast<uint32_t>(*offset));
    v1::SearchResponse response;
    if (auto s = cli.Call(&v1::Quantd::Stub::Search, request, &response); !s.ok()) {
      return first == 0 ? s
                        : absl::Status(s.code(), absl::StrFormat("queries from row %d: %s", first,
                                                                 s.message()));
    }
    all.set_index_version(response.index_version());
    all.set_nprobe(response.nprobe());
    all.set_exact(response.exact());
    for (v1::SearchResult& result : *response.mutable_results()) {
      *all.add_results() = std::move(result);
    }
  }
  if (args.Has("output")) return WriteIvecs(cli, args.Get("output"), all);
  if (cli.json()) {
    PrintJson(all);
    return absl::OkStatus();
  }
  for (int q = 0; q < all.results_size(); ++q) {
    const v1::SearchResult& result = all.results(q);
    std::vector<std::string> pairs;
    for (int i = 0; i < result.ids_size(); ++i) {
      pairs.push_back(absl::StrFormat("%d:%.6g", result.ids(i), result.distances(i)));
    }
    if (like.empty()) {
      std::printf("query %d: %s\n", q, absl::StrJoin(pairs, " ").c_str());
    } else {
      std::printf("like %s: %s\n", absl::StrCat(like[q]).c_str(),
                  absl::StrJoin(pairs, " ").c_str());
    }
  }
  return absl::OkStatus();
}

}  // namespace quantd::quantctl
