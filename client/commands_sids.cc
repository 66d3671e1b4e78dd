// Semantic-ID commands: train (a tokenizer), encode, lookup, stats and export-sids, and the
// ExportSids reader that export-trie shares.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
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
#include "client/output.h"
#include "core/semantic_id.h"
#include "google/protobuf/util/json_util.h"
#include "io/vector_file.h"

namespace quantd::quantctl {
namespace {

// One line per item: its id, a tab, its SID's tokens.
void PrintItemSids(const google::protobuf::RepeatedField<uint64_t>& ids,
                   const google::protobuf::RepeatedPtrField<v1::Sid>& sids) {
  for (int i = 0; i < ids.size(); ++i) {
    std::printf("%llu\t%s\n", static_cast<unsigned long long>(ids[i]), sids[i].tokens().c_str());
  }
}

// The codes of every row of vector file `path` (or its first --max-rows rows), sent in
// requests of --batch-rows rows (default: about 1 MiB each, at most the server's 100000), one
// response with the rows in file order. An error names the file rows of the failed request.
absl::StatusOr<v1::EncodeResponse> EncodeVectors(Cli& cli, const std::string& path,
                                                 uint32_t version) {
  const Args& args = cli.args();
  constexpr int64_t kMaxEncodeRows = 100000;  // the server's Encode limit per request
  auto max_rows = IntOption(args, "max-rows", -1);
  auto batch_rows = IntOption(args, "batch-rows", 0);
  for (const auto* v : {&max_rows, &batch_rows}) {
    if (!v->ok()) return cli.Usage(v->status().message());
  }
  if (*batch_rows < 0 || *batch_rows > kMaxEncodeRows) {
    return cli.Usage(
        absl::StrFormat("--batch-rows %d is outside 1..%d", *batch_rows, kMaxEncodeRows));
  }
  auto reader = VectorReader::Open(path);
  if (!reader.ok()) return reader.status();
  const int64_t dim = (*reader)->dim();
  const int64_t total = *max_rows < 0 ? (*reader)->rows() : std::min(*max_rows, (*reader)->rows());
  const int64_t batch = *batch_rows > 0 ? *batch_rows : std::min(kMaxEncodeRows, BatchRowsFor(dim));
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
    request.set_collection(args.positional[1]);
    request.set_tokenizer_version(version);
    request.mutable_vectors()->Assign(buffer.begin(), buffer.end());
    v1::EncodeResponse response;
    if (auto s = cli.Call(&v1::Quantd::Stub::Encode, request, &response); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrFormat("%s rows %d..%d: %s", path, first, first + n - 1, s.message()));
    }
    all.set_tokenizer_version(response.tokenizer_version());
    for (v1::EncodedVector& e : *response.mutable_encoded()) {
      *all.add_encoded() = std::move(e);
    }
  }
  return all;
}

// --method and the RQ-VAE options of train: --rqvae JSON (a quantd.v1.RqVaeOptions in
// protobuf's JSON form), then --epochs, --layers, --e-dim, --batch-size and --lr over it.
absl::Status RqVaeTrainOptions(Cli& cli, v1::TrainTokenizerRequest* request) {
  const Args& args = cli.args();
  const std::string method = args.Has("method") ? args.Get("method") : "rq-kmeans";
  if (method == "rq-vae" || method == "rqvae") {
    request->set_method(v1::TOKENIZER_METHOD_RQ_VAE);
  } else if (method != "rq-kmeans" && method != "rqkmeans") {
    return cli.Usage(absl::StrFormat("--method '%s': expected rq-kmeans or rq-vae", method));
  }
  const bool any = args.Has("rqvae") || args.Has("epochs") || args.Has("layers") ||
                   args.Has("e-dim") || args.Has("batch-size") || args.Has("lr");
  if (!any) return absl::OkStatus();
  if (request->method() != v1::TOKENIZER_METHOD_RQ_VAE) {
    return cli.Usage(
        "--rqvae, --epochs, --layers, --e-dim, --batch-size and --lr need --method rq-vae");
  }
  v1::RqVaeOptions* options = request->mutable_rqvae();
  if (args.Has("rqvae")) {
    const auto status = google::protobuf::util::JsonStringToMessage(args.Get("rqvae"), options);
    if (!status.ok()) {
      return cli.Usage(
          absl::StrFormat("--rqvae is not RqVaeOptions JSON: %s", std::string(status.message())));
    }
  }
  if (args.Has("layers")) {
    auto layers = cli.ListOption("layers");
    if (!layers.ok()) return layers.status();
    options->clear_layers();
    for (uint64_t size : *layers) {
      options->add_layers(static_cast<uint32_t>(std::min<uint64_t>(size, UINT32_MAX)));
    }
  }
  const std::pair<const char*, void (v1::RqVaeOptions::*)(uint32_t)> counts[] = {
      {"epochs", &v1::RqVaeOptions::set_epochs},
      {"e-dim", &v1::RqVaeOptions::set_e_dim},
      {"batch-size", &v1::RqVaeOptions::set_batch_size}};
  for (const auto& [name, set] : counts) {
    if (!args.Has(name)) continue;
    auto value = IntOption(args, name, 0);
    if (!value.ok()) return cli.Usage(value.status().message());
    if (*value < 1) return cli.Usage(absl::StrFormat("--%s must be positive", name));
    (options->*set)(static_cast<uint32_t>(std::min<int64_t>(*value, UINT32_MAX)));
  }
  if (args.Has("lr")) {
    double lr = 0;
    if (!absl::SimpleAtod(args.Get("lr"), &lr)) {
      return cli.Usage(absl::StrFormat("--lr '%s' is not a number", args.Get("lr")));
    }
    options->set_lr(lr);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TrainCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  v1::TrainTokenizerRequest request;
  request.set_collection(args.positional[1]);
  if (args.Has("levels")) {
    auto levels = cli.ListOption("levels");
    if (!levels.ok()) return levels.status();
    for (uint64_t k : *levels)
      request.add_codebook_sizes(static_cast<uint32_t>(std::min<uint64_t>(k, UINT32_MAX)));
  }
  request.set_balanced(args.Has("balanced"));
  if (args.Has("slack")) {
    double slack = 0;
    if (!absl::SimpleAtod(args.Get("slack"), &slack)) {
      return cli.Usage(absl::StrFormat("--slack '%s' is not a number", args.Get("slack")));
    }
    request.set_balance_slack(slack);
  }
  if (args.Has("size-min") != args.Has("size-max")) {
    return cli.Usage("--size-min and --size-max go together");
  }
  if (args.Has("size-min")) {
    auto mins = cli.ListOption("size-min");
    if (!mins.ok()) return mins.status();
    auto maxs = cli.ListOption("size-max");
    if (!maxs.ok()) return maxs.status();
    if (mins->size() != maxs->size())
      return cli.Usage("--size-min and --size-max differ in length");
    for (size_t i = 0; i < mins->size(); ++i) {
      v1::SizeBounds* bounds = request.add_size_bounds();
      bounds->set_size_min((*mins)[i]);
      bounds->set_size_max((*maxs)[i]);
    }
  }
  if (args.Has("balanced-levels")) {
    auto levels = cli.ListOption("balanced-levels");
    if (!levels.ok()) return levels.status();
    for (uint64_t b : *levels) {
      if (b > 1) return cli.Usage("--balanced-levels takes 0 or 1 per level");
      request.add_level_balanced(b == 1);
    }
  }
  if (args.Has("tolerance")) {
    double tolerance = 0;
    if (!absl::SimpleAtod(args.Get("tolerance"), &tolerance)) {
      return cli.Usage(absl::StrFormat("--tolerance '%s' is not a number", args.Get("tolerance")));
    }
    request.set_tolerance(tolerance);
  }
  auto assignment = AssignmentOption(cli);
  if (!assignment.ok()) return assignment.status();
  request.set_assignment(*assignment);
  auto activation = ActivationOption(cli);
  if (!activation.ok()) return activation.status();
  request.set_activation(*activation);
  auto iterations = IntOption(args, "iterations", 0);
  auto seed = IntOption(args, "seed", 0);
  auto sample = IntOption(args, "sample", 0);
  auto restarts = IntOption(args, "restarts", 0);
  auto beam_width = IntOption(args, "beam-width", 0);
  auto suffix_cap = IntOption(args, "suffix-cap", 0);
  for (const auto* v : {&iterations, &seed, &sample, &restarts, &beam_width, &suffix_cap}) {
    if (!v->ok()) return cli.Usage(v->status().message());
    if (**v < 0) {
      return cli.Usage(
          "--iterations, --seed, --sample, --restarts, --beam-width and --suffix-cap must be "
          "non-negative");
    }
  }
  // Out-of-range values go to the server, whose error names the field.
  request.set_restarts(static_cast<uint32_t>(std::min<int64_t>(*restarts, UINT32_MAX)));
  if (args.Has("beam-width")) {
    request.set_beam_width(static_cast<uint32_t>(std::min<int64_t>(*beam_width, UINT32_MAX)));
  }
  if (args.Has("suffix-cap")) {
    request.set_suffix_cap(static_cast<uint32_t>(std::min<int64_t>(*suffix_cap, UINT32_MAX)));
  }
  request.set_max_iterations(static_cast<uint32_t>(std::min<int64_t>(*iterations, UINT32_MAX)));
  request.set_seed(static_cast<uint64_t>(*seed));
  request.set_sample_size(static_cast<uint64_t>(*sample));
  if (auto s = RqVaeTrainOptions(cli, &request); !s.ok()) return s;
  v1::Job job;
  if (auto s = cli.Call(&v1::Quantd::Stub::TrainTokenizer, request, &job); !s.ok()) return s;
  return FollowJob(cli, job);
}

absl::Status EncodeCommand(Cli& cli) {
  const Args& args = cli.args();
  if (args.positional.size() < 2) return cli.Usage("expected a collection NAME");
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  v1::EncodeResponse response;
  if (args.Has("vectors")) {
    if (args.positional.size() > 2 || args.Has("ids")) {
      return cli.Usage("give ids or --vectors, not both");
    }
    auto encoded = EncodeVectors(cli, args.Get("vectors"), *version);
    if (!encoded.ok()) return encoded.status();
    response = std::move(*encoded);
  } else {
    if (args.Has("max-rows") || args.Has("batch-rows")) {
      return cli.Usage("--max-rows and --batch-rows go with --vectors");
    }
    auto ids = cli.IdsArgument();
    if (!ids.ok()) return ids.status();
    v1::EncodeRequest request;
    request.set_collection(args.positional[1]);
    request.set_tokenizer_version(*version);
    request.mutable_ids()->Add(ids->begin(), ids->end());
    if (auto s = cli.Call(&v1::Quantd::Stub::Encode, request, &response); !s.ok()) return s;
  }
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  PrintItemSids(response.ids(), response.sids());
  if (response.missing_ids_size() > 0) {
    std::printf("not stored: %s\n", absl::StrJoin(response.missing_ids(), " ").c_str());
  }
  for (int i = 0; i < response.encoded_size(); ++i) {
    const v1::EncodedVector& e = response.encoded(i);
    std::string note;
    if (e.displaced() || e.overflow()) {
      std::vector<int32_t> nearest(e.nearest_codes().begin(), e.nearest_codes().end());
      note = absl::StrFormat("\t%s from nearest %s (error %.6g)",
                             e.overflow() ? "overflow" : "displaced", RenderSidTokens(nearest),
                             e.nearest_error());
    }
    std::printf("row %d\t%s\terror %.6g\t%s%s\n", i, e.tokens().c_str(), e.error(),
                e.items_with_codes() == 0
                    ? "free"
                    : absl::StrCat("taken by ", Items(e.items_with_codes())).c_str(),
                note.c_str());
  }
  return absl::OkStatus();
}

absl::Status LookupCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(2, "a collection NAME and a SID or prefix"); !s.ok()) return s;
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  v1::LookupRequest request;
  request.set_collection(args.positional[1]);
  request.set_tokenizer_version(*version);
  const std::string& sid = args.positional[2];
  if (!sid.empty() && sid[0] == '<') {
    request.set_tokens(sid);
  } else {
    for (absl::string_view part : absl::StrSplit(sid, ',')) {
      uint32_t code = 0;
      if (!absl::SimpleAtoi(part, &code)) {
        return cli.Usage(absl::StrFormat("SID '%s': '%s' is not a code", sid, part));
      }
      request.add_codes(code);
    }
  }
  auto limit = IntOption(args, "limit", 0);
  if (!limit.ok() || *limit < 0 || *limit > UINT32_MAX)
    return cli.Usage("--limit must be 0..2^32-1");
  request.set_limit(static_cast<uint32_t>(*limit));
  v1::LookupResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::Lookup, request, &response); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  PrintItemSids(response.ids(), response.sids());
  std::printf("%d items%s\n", response.ids_size(), response.truncated() ? " (truncated)" : "");
  return absl::OkStatus();
}

absl::Status StatsCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  v1::GetStatsRequest request;
  request.set_collection(args.positional[1]);
  request.set_tokenizer_version(*version);
  v1::GetStatsResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::GetStats, request, &response); !s.ok()) return s;
  const v1::Collection& c = response.collection();
  const v1::TokenizerStats& t = response.tokenizer();
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  std::printf("collection %s: %llu items, dimension %u, metric %s\n", c.name().c_str(),
              static_cast<unsigned long long>(c.item_count()), c.dimension(),
              MetricText(c.metric()).c_str());
  for (const v1::AttributeKeyStats& key : response.attribute_keys()) {
    std::printf("attribute %s (%s): %llu items, %llu distinct values\n", key.key().c_str(),
                key.type() == v1::ATTRIBUTE_TYPE_INT ? "int" : "string",
                static_cast<unsigned long long>(key.items()),
                static_cast<unsigned long long>(key.distinct_values()));
  }
  if (response.has_index()) {
    const v1::IndexStats& x = response.index();
    std::printf(
        "index version %u: IVF%llu,PQ%ux%u%s on %llu items (%llu bytes/vector, %.1f MiB in "
        "memory), trained on %llu items in %.2f s by %s\n"
        "  lists: min %llu, max %llu, mean %.1f, imbalance factor %.3f\n",
        x.version(), static_cast<unsigned long long>(x.nlist()), x.m(), x.nbits(),
        absl::StrCat(x.layout() == v1::INDEX_LAYOUT_FAST_SCAN ? "fs" : "",
                     x.refine_codes() == v1::REFINE_CODES_SQ8 ? "+SQ8" : "")
            .c_str(),
        static_cast<unsigned long long>(x.items()),
        static_cast<unsigned long long>(x.bytes_per_vector()),
        static_cast<double>(x.memory_bytes()) / (1 << 20),
        static_cast<unsigned long long>(x.trained_items()), x.train_seconds(), x.job_id().c_str(),
        static_cast<unsigned long long>(x.list_size_min()),
        static_cast<unsigned long long>(x.list_size_max()), x.list_size_mean(),
        x.imbalance_factor());
    const v1::IndexMemory& mem = x.memory();
    const auto mib = [](uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
    std::printf(
        "  memory (MiB): codes %.2f, ids %.2f, refine codes %.2f, id map %.2f, centroids %.2f, "
        "tables %.2f\n",
        mib(mem.codes()), mib(mem.ids()), mib(mem.refine_codes()), mib(mem.id_map()),
        mib(mem.centroids()), mib(mem.tables()));
  } else {
    std::printf("no index trained yet (quantctl train-index %s)\n", c.name().c_str());
  }
  if (!response.has_tokenizer()) {
    std::printf("no tokenizer trained yet (quantctl train %s)\n", c.name().c_str());
    return absl::OkStatus();
  }
  const v1::TokenizerVersions& kept = response.tokenizer_versions();
  std::vector<std::string> kept_list;
  for (const v1::TokenizerVersion& v : kept.versions()) {
    kept_list.push_back(
        absl::StrCat(v.version(), v.active() ? " (active)" : "", v.pinned() ? " (pinned)" : ""));
  }
  std::printf("versions kept: %s; keeps %u (quantctl versions %s)\n",
              absl::StrJoin(kept_list, ", ").c_str(), kept.keep_versions(), c.name().c_str());
  const bool capacity = t.assignment() == v1::ASSIGNMENT_CAPACITY;
  if (t.method() == v1::TOKENIZER_METHOD_RQ_VAE) {
    const v1::RqVaeStats& r = t.rqvae();
    std::printf(
        "tokenizer version %u (RQ-VAE, %s): %u levels [%s], layers [%s], e_dim %u, %llu "
        "parameters, seed %llu; %u epochs (%.3f s each), kept epoch %u (%s): loss %.6g "
        "(reconstruction %.6g, quantization %.6g), collision rate %.4f; by %s\n",
        t.version(), r.source().c_str(), t.levels(), absl::StrJoin(t.codebook_sizes(), " ").c_str(),
        absl::StrJoin(r.options().layers(), " ").c_str(), r.options().e_dim(),
        static_cast<unsigned long long>(r.parameters()), static_cast<unsigned long long>(t.seed()),
        r.epochs(), r.seconds_per_epoch(), r.model_epoch(),
        v1::RqVaeCheckpoint_Name(r.keep()).c_str(), r.loss(), r.reconstruction_loss(),
        r.quantization_loss(), r.collision_rate(), t.job_id().c_str());
    std::printf(
        "index generation (%s): collisions %llu -> %llu (%llu items moved, %u rounds); decoder "
        "reconstruction mse %.6g; level mse below is in latent space\n",
        v1::IndexGeneration_Name(r.index_generation()).c_str(),
        static_cast<unsigned long long>(r.collisions_before()),
        static_cast<unsigned long long>(r.collisions_after()),
        static_cast<unsigned long long>(r.moved()), r.rounds(), r.reconstruction_mse());
  } else {
    std::printf(
        "tokenizer version %u (%s): %u levels [%s], seed %llu, %u iterations (tolerance %g, "
        "restarts %u), trained on %llu items in %.2f s by %s\n",
        t.version(), t.balanced() ? "balanced" : "plain", t.levels(),
        absl::StrJoin(t.codebook_sizes(), " ").c_str(), static_cast<unsigned long long>(t.seed()),
        t.max_iterations(), t.tolerance(), t.restarts(),
        static_cast<unsigned long long>(t.trained_items()), t.train_seconds(), t.job_id().c_str());
  }
  if (capacity) {
    std::printf(
        "assignment: capacity, beam width %u, suffix cap %u; training collisions %llu -> %llu "
        "(%llu items moved, mse %.6g -> %.6g)\n",
        t.beam_width(), t.suffix_cap(),
        static_cast<unsigned long long>(t.collisions_before_resolution()),
        static_cast<unsigned long long>(t.collisions_after_resolution()),
        static_cast<unsigned long long>(t.resolution_moved()), t.mse_before_resolution(),
        t.mse_after_resolution());
  } else {
    std::printf("assignment: nearest\n");
  }
  std::printf("%-6s %6s %6s %10s %8s %8s %9s %8s %12s %14s %9s\n", "level", "K", "used",
              "perplexity", "size min", "max", "mean", "std", "mse after", "bounds now", "over");
  for (int l = 0; l < t.level_stats_size(); ++l) {
    const v1::LevelStats& s = t.level_stats(l);
    const std::string bounds =
        s.balanced() ? absl::StrFormat("[%d, %d]", s.bounds().size_min(), s.bounds().size_max())
                     : "-";
    const std::string over = s.balanced() ? absl::StrCat(s.clusters_over_bound()) : "-";
    std::printf("%-6c %6u %6u %10.1f %8llu %8llu %9.1f %8.1f %12.6g %14s %9s\n",
                static_cast<char>('a' + l), s.codebook_size(), s.codes_used(), s.perplexity(),
                static_cast<unsigned long long>(s.size_min()),
                static_cast<unsigned long long>(s.size_max()), s.size_mean(), s.size_std(),
                s.reconstruction_mse(), bounds.c_str(), over.c_str());
  }
  std::printf(
      "collisions: rate %.4f (%llu unique code tuples for %llu items), %llu groups, "
      "largest %llu\n",
      t.collision_rate(), static_cast<unsigned long long>(t.unique_tuples()),
      static_cast<unsigned long long>(t.items()),
      static_cast<unsigned long long>(t.collision_groups()),
      static_cast<unsigned long long>(t.largest_group()));
  const v1::TokenizerDrift& drift = t.drift();
  std::printf(
      "drift: %llu items assigned since training (%.1f%% displaced, %.1f%% overflow), their "
      "mse %.6g vs %.6g at training; largest suffix %u; %.2fx the items at training\n",
      static_cast<unsigned long long>(drift.assigned_since_training()),
      100 * drift.displaced_fraction(), 100 * drift.overflow_fraction(), drift.assigned_mse(),
      drift.training_mse(), drift.largest_suffix(), drift.growth());
  if (drift.retrain_recommended()) {
    std::printf("retrain recommended: %s\n", absl::StrJoin(drift.reasons(), "; ").c_str());
  } else {
    std::printf("retrain not needed\n");
  }
  return absl::OkStatus();
}

absl::StatusOr<SidTable> ReadSids(Cli& cli, const std::string& collection, uint32_t version,
                                  int64_t expected_items) {
  v1::ExportSidsRequest request;
  request.set_collection(collection);
  request.set_tokenizer_version(version);
  grpc::ClientContext context;
  auto reader = cli.stub().ExportSids(&context, request);
  ProgressBar bar(expected_items, sizeof(uint64_t), expected_items > 0);
  v1::ExportSidsResponse batch;
  SidTable table;
  while (reader->Read(&batch)) {
    if (!table.ids.empty() &&
        (batch.levels() != table.levels || batch.tokenizer_version() != table.version)) {
      context.TryCancel();
      reader->Finish();
      return absl::DataLossError(absl::StrFormat(
          "ExportSids of '%s': a batch of version %u with %u levels after version %u with %u",
          collection, batch.tokenizer_version(), batch.levels(), table.version, table.levels));
    }
    table.levels = batch.levels();
    table.version = batch.tokenizer_version();
    if (batch.codes_size() != batch.ids_size() * static_cast<int64_t>(table.levels) ||
        batch.suffixes_size() != batch.ids_size()) {
      context.TryCancel();
      reader->Finish();
      return absl::DataLossError(absl::StrFormat(
          "ExportSids of '%s': a batch of %d ids with %d codes and %d suffixes (%u levels)",
          collection, batch.ids_size(), batch.codes_size(), batch.suffixes_size(), table.levels));
    }
    table.ids.insert(table.ids.end(), batch.ids().begin(), batch.ids().end());
    table.codes.insert(table.codes.end(), batch.codes().begin(), batch.codes().end());
    table.suffixes.insert(table.suffixes.end(), batch.suffixes().begin(), batch.suffixes().end());
    bar.Update(static_cast<int64_t>(table.ids.size()));
  }
  bar.Finish();
  if (auto s = FromGrpcStatus(reader->Finish()); !s.ok()) return s;
  return table;
}

absl::Status ExportSidsCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  const std::string json_path = args.Get("index");
  const std::string npy_path = args.Get("codes");
  if (json_path.empty()) return cli.Usage("--index FILE is required");
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  auto table = ReadSids(cli, args.positional[1], *version, /*expected_items=*/0);
  if (!table.ok()) return table.status();
  const std::vector<uint64_t>& ids = table->ids;
  const uint32_t levels = table->levels;
  std::vector<int64_t> rows;  // ids.size() x (levels + 1)
  rows.reserve(ids.size() * (levels + 1));
  for (size_t i = 0; i < ids.size(); ++i) {
    for (uint32_t l = 0; l < levels; ++l) rows.push_back(table->codes[i * levels + l]);
    rows.push_back(table->suffixes[i]);
  }
  std::FILE* out = std::fopen(json_path.c_str(), "w");
  if (out == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("--index %s: cannot write", json_path));
  }
  std::fputs("{", out);
  for (size_t i = 0; i < ids.size(); ++i) {
    std::fprintf(out, "%s\"%llu\": [", i == 0 ? "" : ", ", static_cast<unsigned long long>(ids[i]));
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
              ids.size(), table->version, levels, json_path.c_str(),
              npy_path.empty() ? "" : (" and " + npy_path).c_str());
  return absl::OkStatus();
}

}  // namespace quantd::quantctl
