// Nearest-neighbour search commands: train-index (IVF-PQ) and search.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
  v1::Job job;
  if (auto s = cli.Call(&v1::Quantd::Stub::TrainIndex, request, &job); !s.ok()) return s;
  return FollowJob(cli, job);
}

absl::Status SearchCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (!args.Has("queries")) return cli.Usage("--queries FILE is required");
  auto k = IntOption(args, "k", 10);
  auto nprobe = IntOption(args, "nprobe", 0);
  auto refine = IntOption(args, "refine", 0);
  auto max_rows = IntOption(args, "max-rows", -1);
  for (const auto* v : {&k, &nprobe, &refine, &max_rows}) {
    if (!v->ok()) return cli.Usage(v->status().message());
  }
  if (*k < 1 || *k > UINT32_MAX) return cli.Usage(absl::StrFormat("--k %d must be positive", *k));
  if (*nprobe < 0 || *nprobe > UINT32_MAX || *refine < 0 || *refine > UINT32_MAX) {
    return cli.Usage("--nprobe and --refine must be non-negative");
  }
  auto queries = ReadMatrix(args.Get("queries"), *max_rows);
  if (!queries.ok()) return queries.status();
  if (queries->rows == 0) {
    return cli.Usage(absl::StrFormat("--queries '%s' holds no rows", args.Get("queries")));
  }
  // Batches of at most kBatch queries keep each request well under the message limit.
  constexpr int64_t kBatch = 1000;
  v1::SearchResponse all;
  for (int64_t first = 0; first < queries->rows; first += kBatch) {
    const int64_t rows = std::min(kBatch, queries->rows - first);
    v1::SearchRequest request;
    request.set_collection(args.positional[1]);
    request.mutable_queries()->Add(queries->values.begin() + first * queries->dim,
                                   queries->values.begin() + (first + rows) * queries->dim);
    request.set_k(static_cast<uint32_t>(*k));
    request.set_nprobe(static_cast<uint32_t>(*nprobe));
    request.set_refine(static_cast<uint32_t>(*refine));
    v1::SearchResponse response;
    if (auto s = cli.Call(&v1::Quantd::Stub::Search, request, &response); !s.ok()) {
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
    std::printf("query %d: %s\n", q, absl::StrJoin(pairs, " ").c_str());
  }
  return absl::OkStatus();
}

}  // namespace quantd::quantctl
