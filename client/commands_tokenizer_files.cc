// Files for decoders and other pipelines: export-trie (the SID prefix trie as JSON and CSR
// .npy arrays), export-tokenizer (codebooks, or an RQ-VAE's tensors by PyTorch name, as .npz
// plus the manifest as JSON) and import-tokenizer (the reverse, and PyTorch checkpoints of the
// RQ-VAE pipeline: models trained elsewhere become a tokenizer version).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/commands.h"
#include "client/files.pb.h"
#include "client/output.h"
#include "core/semantic_id.h"
#include "core/sid_trie.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "io/npz.h"
#include "io/vector_file.h"

namespace quantd::quantctl {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Creates directory `dir` (and its parents) if missing.
absl::Status MakeDirectory(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error || !std::filesystem::is_directory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--out %s: cannot create the directory: %s", dir,
                        error ? error.message() : "a file of that name exists"));
  }
  return absl::OkStatus();
}

// The codebooks of an .npz: one K_l x d matrix per level, in level order.
struct Codebooks {
  std::vector<uint32_t> sizes;
  int64_t dimension = 0;
  std::vector<float> values;  // level by level, row-major
};

// The level of member `name` under a naming scheme ("arr_", "level_", "codebook_"), or -1.
int64_t LevelOf(const std::string& name, const std::string& scheme) {
  int64_t level = -1;
  if (!absl::StartsWith(name, scheme) ||
      !absl::SimpleAtoi(absl::string_view(name).substr(scheme.size()), &level) || level < 0 ||
      absl::StrCat(scheme, level) != name) {
    return -1;
  }
  return level;
}

// Reads codebooks from `path`: members arr_<l>, level_<l> or codebook_<l> (one scheme, levels
// 0..L-1), each K_l x d floating-point; or one L x K x d member.
absl::StatusOr<Codebooks> ReadCodebooks(const std::string& path) {
  auto arrays = ReadNpz(path);
  if (!arrays.ok()) return arrays.status();
  if (arrays->empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: the archive holds no arrays", path));
  }
  auto floating = [&](const NpyArray& a) -> absl::Status {
    if (a.type != ElementType::kF32 && a.type != ElementType::kF64) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: member '%s' holds integers; codebooks are float32 or float64", path, a.name));
    }
    return absl::OkStatus();
  };
  Codebooks out;
  std::vector<const NpyArray*> levels;
  if (arrays->size() == 1 && (*arrays)[0].shape.size() == 3) {
    const NpyArray& a = (*arrays)[0];
    if (auto s = floating(a); !s.ok()) return s;
    if (a.shape[0] < 1 || a.shape[0] > kMaxSidLevels || a.shape[1] < 1 || a.shape[2] < 1 ||
        a.shape[1] > UINT32_MAX) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: member '%s' of shape (%s) is not L x K x d with L in 1..%d and K, d >= 1", path,
          a.name, absl::StrJoin(a.shape, ", "), kMaxSidLevels));
    }
    out.sizes.assign(static_cast<size_t>(a.shape[0]), static_cast<uint32_t>(a.shape[1]));
    out.dimension = a.shape[2];
    out.values = a.ToFloat();
  } else {
    std::string scheme;
    for (const char* candidate : {"arr_", "level_", "codebook_"}) {
      if (LevelOf((*arrays)[0].name, candidate) >= 0) scheme = candidate;
    }
    if (scheme.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: member '%s' is not a codebook; expected arr_0.., level_0.. or codebook_0.. "
          "(one K x d array per level) or a single L x K x d array",
          path, (*arrays)[0].name));
    }
    levels.assign(arrays->size(), nullptr);
    for (const NpyArray& a : *arrays) {
      const int64_t level = LevelOf(a.name, scheme);
      if (level < 0 || level >= static_cast<int64_t>(arrays->size())) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: member '%s' does not fit the naming %s0..%s%d of its %d members",
                            path, a.name, scheme, scheme, arrays->size() - 1, arrays->size()));
      }
      levels[static_cast<size_t>(level)] = &a;
    }
    if (levels.size() > static_cast<size_t>(kMaxSidLevels)) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %d levels; a tokenizer has at most %d",
                                                        path, levels.size(), kMaxSidLevels));
    }
    for (size_t l = 0; l < levels.size(); ++l) {
      const NpyArray& a = *levels[l];
      if (auto s = floating(a); !s.ok()) return s;
      if (a.shape.size() != 2 || a.shape[0] < 1 || a.shape[1] < 1 || a.shape[0] > UINT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: member '%s' has shape (%s); a level's codebook is K x d", path,
                            a.name, absl::StrJoin(a.shape, ", ")));
      }
      if (l > 0 && a.shape[1] != out.dimension) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: member '%s' has dimension %d, '%s' has %d", path, a.name,
                            a.shape[1], levels[0]->name, out.dimension));
      }
      out.dimension = a.shape[1];
      out.sizes.push_back(static_cast<uint32_t>(a.shape[0]));
      const std::vector<float> values = a.ToFloat();
      out.values.insert(out.values.end(), values.begin(), values.end());
    }
  }
  // Every value finite, the bad one named by level, row and component.
  size_t at = 0;
  for (size_t l = 0; l < out.sizes.size(); ++l) {
    for (int64_t i = 0; i < static_cast<int64_t>(out.sizes[l]) * out.dimension; ++i, ++at) {
      if (!std::isfinite(out.values[at])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: level %d codebook[row %d, component %d] = %g is not a finite float32", path, l,
            i / out.dimension, i % out.dimension, out.values[at]));
      }
    }
  }
  return out;
}

// The bytes of the file of option --`flag`.
absl::StatusOr<std::string> ReadFileBytes(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s %s: cannot open", flag, path));
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The manifest of --manifest FILE.
absl::StatusOr<v1::TokenizerManifest> ReadManifest(const std::string& path) {
  auto text = ReadFileBytes("manifest", path);
  if (!text.ok()) return text.status();
  v1::TokenizerManifest manifest;
  const auto status = google::protobuf::util::JsonStringToMessage(*text, &manifest);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("--manifest %s: not a TokenizerManifest: %s",
                                                      path, std::string(status.message())));
  }
  return manifest;
}

}  // namespace

absl::Status ExportTrieCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (!args.Has("out")) return cli.Usage("--out DIR is required");
  auto requested = VersionOption(cli);
  if (!requested.ok()) return requested.status();
  const std::string& collection = args.positional[1];
  const std::string dir = args.Get("out");
  const auto start = std::chrono::steady_clock::now();
  auto version = FetchVersion(cli, collection, *requested);
  if (!version.ok()) return version.status();
  // The version by number, so that an activation meanwhile does not mix two versions.
  auto table = ReadSids(cli, collection, version->version(),
                        args.Has("no-progress") ? 0 : static_cast<int64_t>(version->items()));
  if (!table.ok()) return table.status();
  const double streamed = SecondsSince(start);
  const uint32_t levels = table->ids.empty() ? version->levels() : table->levels;
  auto trie = BuildSidTrie(table->ids, table->codes, table->suffixes, static_cast<int>(levels));
  if (!trie.ok()) {
    return absl::DataLossError(absl::StrFormat("the SIDs of version %u of '%s': %s",
                                               version->version(), collection,
                                               trie.status().message()));
  }
  const double built = SecondsSince(start);
  if (auto s = MakeDirectory(dir); !s.ok()) return s;

  client::TrieManifest manifest;
  manifest.set_format("quantd.trie/1");
  manifest.set_collection(collection);
  manifest.set_tokenizer_version(version->version());
  manifest.set_levels(levels);
  manifest.mutable_codebook_sizes()->CopyFrom(version->codebook_sizes());
  manifest.set_items(table->ids.size());
  for (int t = 0; t <= static_cast<int>(levels) + 1; ++t) {
    manifest.add_nodes(static_cast<uint64_t>(trie->nodes(t)));
  }
  for (uint32_t t = 0; t <= levels; ++t) {
    const std::pair<const char*, const std::vector<int64_t>*> arrays[] = {
        {"offsets", &trie->offsets[t]}, {"codes", &trie->codes[t]}, {"counts", &trie->counts[t]}};
    for (const auto& [kind, array] : arrays) {
      const std::string name = absl::StrCat(kind, "_", t, ".npy");
      const std::vector<int64_t>& values = *array;
      if (auto s = WriteNpy(absl::StrCat(dir, "/", name), values.data(),
                            {static_cast<int64_t>(values.size())});
          !s.ok()) {
        return s;
      }
      manifest.add_files(name);
    }
  }
  std::vector<int64_t> leaves;
  leaves.reserve(trie->leaf_items.size());
  for (uint64_t id : trie->leaf_items) {
    if (id > static_cast<uint64_t>(INT64_MAX)) {
      return absl::OutOfRangeError(absl::StrFormat(
          "%s/leaf_items.npy: item id %d does not fit int64 (ids above 2^63-1)", dir, id));
    }
    leaves.push_back(static_cast<int64_t>(id));
  }
  if (auto s =
          WriteNpy(dir + "/leaf_items.npy", leaves.data(), {static_cast<int64_t>(leaves.size())});
      !s.ok()) {
    return s;
  }
  manifest.add_files("leaf_items.npy");
  const double arrays_written = SecondsSince(start);

  client::Trie json;
  auto& fields = *json.mutable_next();
  ForEachSidTrieNode(*trie, [&](const std::string& prefix, const std::vector<std::string>& next) {
    google::protobuf::ListValue& list = fields[prefix];
    for (const std::string& token : next) list.add_values()->set_string_value(token);
  });
  if (auto s = WriteJsonMapFile(dir + "/trie.json", json, "next"); !s.ok()) return s;
  manifest.add_files("trie.json");
  if (auto s = WriteJsonFile(dir + "/manifest.json", manifest); !s.ok()) return s;
  const double total = SecondsSince(start);
  if (cli.json()) {
    PrintJson(manifest);
    return absl::OkStatus();
  }
  std::printf(
      "exported the trie of version %u of '%s' to %s: %s, %u levels + suffix, %lld inner "
      "nodes; %.2f s (streaming %.2f, trie %.2f, arrays %.2f, trie.json %.2f)\n",
      version->version(), collection.c_str(), dir.c_str(), Items(table->ids.size()).c_str(), levels,
      static_cast<long long>(fields.size()), total, streamed, built - streamed,
      arrays_written - built, total - arrays_written);
  return absl::OkStatus();
}

namespace {

// Writes PREFIX.npz (members) and PREFIX.json (the manifest) and says so, naming the export
// `kind` with `detail` after its shape.
absl::Status WriteTokenizerFiles(Cli& cli, const std::string& prefix,
                                 const std::vector<NpzMember>& members,
                                 const v1::TokenizerManifest& manifest, const std::string& kind,
                                 const std::string& detail) {
  const std::string npz_path = prefix + ".npz";
  const std::string json_path = prefix + ".json";
  if (auto s = WriteNpz(npz_path, members); !s.ok()) return s;
  if (auto s = WriteJsonFile(json_path, manifest); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(manifest);
    return absl::OkStatus();
  }
  std::printf("exported %s version %u of '%s' (%d levels [%s], dimension %u%s) to %s and %s\n",
              kind.c_str(), manifest.version(), cli.args().positional[1].c_str(),
              manifest.codebook_sizes_size(), absl::StrJoin(manifest.codebook_sizes(), " ").c_str(),
              manifest.dimension(), detail.c_str(), npz_path.c_str(), json_path.c_str());
  return absl::OkStatus();
}

// An RQ-VAE export: PREFIX.npz with one array per tensor, named as in the PyTorch state dict,
// and the manifest (with the options) as PREFIX.json.
absl::Status WriteRqVaeExport(Cli& cli, const std::string& prefix,
                              const v1::ExportTokenizerResponse& response) {
  std::vector<NpzMember> members;
  for (const v1::Tensor& tensor : response.rqvae().tensors()) {
    int64_t size = 1;
    for (int64_t extent : tensor.shape()) size *= extent;
    if (size != tensor.values_size()) {
      return absl::DataLossError(
          absl::StrFormat("ExportTokenizer sent %d values for tensor %s [%s]", tensor.values_size(),
                          tensor.name(), absl::StrJoin(tensor.shape(), ", ")));
    }
    members.push_back({tensor.name(), ElementType::kF32,
                       std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()),
                       tensor.values().data()});
  }
  return WriteTokenizerFiles(cli, prefix, members, response.manifest(), "RQ-VAE tokenizer",
                             absl::StrFormat(", %d tensors", response.rqvae().tensors_size()));
}

// Whether an .npz holds an RQ-VAE's tensors (export-tokenizer of an RQ-VAE) rather than
// codebooks.
bool IsRqVaeArchive(const std::vector<NpyArray>& arrays) {
  for (const NpyArray& array : arrays) {
    if (absl::StartsWith(array.name, "encoder.")) return true;
  }
  return false;
}

}  // namespace

absl::Status ExportTokenizerCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (!args.Has("out")) return cli.Usage("--out PREFIX is required");
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  const std::string prefix = args.Get("out");
  v1::ExportTokenizerRequest request;
  request.set_collection(args.positional[1]);
  request.set_tokenizer_version(*version);
  v1::ExportTokenizerResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::ExportTokenizer, request, &response); !s.ok()) {
    return s;
  }
  const v1::TokenizerManifest& manifest = response.manifest();
  const int64_t d = manifest.dimension();
  if (response.has_rqvae()) return WriteRqVaeExport(cli, prefix, response);
  int64_t expected = 0;
  for (uint32_t k : manifest.codebook_sizes()) expected += static_cast<int64_t>(k) * d;
  if (manifest.codebook_sizes_size() == 0 || response.codebooks_size() != expected) {
    return absl::DataLossError(absl::StrFormat(
        "ExportTokenizer sent %d codebook values for codebook_sizes [%s] x dimension %d",
        response.codebooks_size(), absl::StrJoin(manifest.codebook_sizes(), ", "), d));
  }
  std::vector<NpzMember> members;
  const float* at = response.codebooks().data();
  for (int l = 0; l < manifest.codebook_sizes_size(); ++l) {
    const int64_t k = manifest.codebook_sizes(l);
    members.push_back({absl::StrCat("arr_", l), ElementType::kF32, {k, d}, at});
    at += k * d;
  }
  return WriteTokenizerFiles(cli, prefix, members, manifest, "tokenizer", "");
}

absl::Status SendImport(Cli& cli, const v1::ImportTokenizerRequest& request);

absl::Status ImportTokenizerCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (args.Has("npz") == args.Has("torch")) {
    return cli.Usage("give --npz FILE (codebooks or an exported RQ-VAE) or --torch FILE");
  }
  auto activation = ActivationOption(cli);
  if (!activation.ok()) return activation.status();
  auto assignment = AssignmentOption(cli);
  if (!assignment.ok()) return assignment.status();
  const std::string& collection = args.positional[1];
  v1::ImportTokenizerRequest request;
  request.set_collection(collection);
  request.set_activation(*activation);
  if (args.Has("manifest")) {
    auto read = ReadManifest(args.Get("manifest"));
    if (!read.ok()) return read.status();
    *request.mutable_manifest() = std::move(*read);
  }
  if (*assignment != v1::ASSIGNMENT_UNSPECIFIED) {
    request.mutable_manifest()->mutable_parameters()->set_assignment(*assignment);
  }
  if (args.Has("torch")) {
    auto bytes = ReadFileBytes("torch", args.Get("torch"));
    if (!bytes.ok()) return bytes.status();
    request.set_torch_checkpoint(std::move(*bytes));
    return SendImport(cli, request);
  }
  const std::string npz_path = args.Get("npz");
  if (auto arrays = ReadNpz(npz_path); arrays.ok() && IsRqVaeArchive(*arrays)) {
    if (!args.Has("manifest")) {
      return cli.Usage(absl::StrFormat(
          "%s holds an RQ-VAE: give --manifest with its architecture (export-tokenizer's .json)",
          npz_path));
    }
    v1::RqVaeModel* model = request.mutable_rqvae();
    model->set_input_dim(request.manifest().dimension());
    *model->mutable_options() = request.manifest().parameters().rqvae();
    for (const NpyArray& array : *arrays) {
      v1::Tensor* tensor = model->add_tensors();
      tensor->set_name(array.name);
      tensor->mutable_shape()->Assign(array.shape.begin(), array.shape.end());
      const std::vector<float> values = array.ToFloat();
      tensor->mutable_values()->Assign(values.begin(), values.end());
    }
    return SendImport(cli, request);
  }
  auto codebooks = ReadCodebooks(npz_path);
  if (!codebooks.ok()) return codebooks.status();
  v1::TokenizerManifest& manifest = *request.mutable_manifest();
  if (args.Has("manifest")) {
    const std::vector<uint32_t> listed(manifest.codebook_sizes().begin(),
                                       manifest.codebook_sizes().end());
    if (!listed.empty() && listed != codebooks->sizes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--manifest %s: codebook_sizes [%s], but %s holds [%s]", args.Get("manifest"),
          absl::StrJoin(listed, ", "), npz_path, absl::StrJoin(codebooks->sizes, ", ")));
    }
    if (manifest.dimension() != 0 && manifest.dimension() != codebooks->dimension) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--manifest %s: dimension %d, but the codebooks of %s have dimension %d",
          args.Get("manifest"), manifest.dimension(), npz_path, codebooks->dimension));
    }
  }
  // The collection's dimension, checked here so that the error names the file.
  v1::DescribeCollectionRequest describe;
  describe.set_name(collection);
  v1::DescribeCollectionResponse described;
  if (auto s = cli.Call(&v1::Quantd::Stub::DescribeCollection, describe, &described); !s.ok()) {
    return s;
  }
  if (described.collection().dimension() != codebooks->dimension) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: codebooks of dimension %d, collection '%s' has dimension %d", npz_path,
                        codebooks->dimension, collection, described.collection().dimension()));
  }
  manifest.set_dimension(static_cast<uint32_t>(codebooks->dimension));
  manifest.mutable_codebook_sizes()->Assign(codebooks->sizes.begin(), codebooks->sizes.end());
  if (manifest.format().empty()) manifest.set_format("quantd.tokenizer/1");
  request.mutable_codebooks()->Assign(codebooks->values.begin(), codebooks->values.end());
  return SendImport(cli, request);
}

absl::Status SendImport(Cli& cli, const v1::ImportTokenizerRequest& request) {
  const Args& args = cli.args();
  v1::Job job;
  if (auto s = cli.Call(&v1::Quantd::Stub::ImportTokenizer, request, &job); !s.ok()) return s;
  if (!args.Has("wait")) {
    PrintJob(cli, job);
    if (!cli.json()) std::printf("follow it with: quantctl job %s\n", job.id().c_str());
    return absl::OkStatus();
  }
  return FollowJob(cli, job);
}

}  // namespace quantd::quantctl
