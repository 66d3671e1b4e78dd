// The command table, the one place that lists quantctl's commands (in the order of the overview),
// and `quantctl --help`, whose command overview is generated from it.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/cli.h"
#include "client/commands.h"

namespace quantd::quantctl {
namespace {

// `quantctl --help` is this head, the command overview and the tail.
constexpr char kUsageHead[] = R"(quantctl: command-line client of the quantd vector service

Usage: quantctl [--addr HOST:PORT] [--timeout SECONDS] [--json] COMMAND [ARGS] [OPTIONS]
)";

constexpr char kUsageTail[] = R"(
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

// The overview's sections, in order, with their titles.
struct SectionTitle {
  Section section;
  const char* title;
};
constexpr SectionTitle kSections[] = {
    {Section::kCollections, "Commands"},
    {Section::kSemanticIds, "Semantic IDs"},
    {Section::kOperations, "Operations"},
    {Section::kSearch, "Nearest-neighbour search (IVF-PQ)"},
};

// Summaries start in this column; a longer synopsis gets two spaces before its summary, or the
// summary goes on the next line if the line would pass kLineWidth.
constexpr size_t kSummaryColumn = 48;
constexpr size_t kLineWidth = 100;

// The overview line(s) of `command`, e.g.
// "  create NAME --dim D [--metric l2|ip|cosine]   create a collection\n".
std::string OverviewLines(const Command& command) {
  std::string lines = absl::StrCat("  ", command.name);
  if (!command.arguments.empty()) absl::StrAppend(&lines, " ", command.arguments);
  const std::vector<absl::string_view> summary = absl::StrSplit(command.summary, '\n');
  const std::string indent(kSummaryColumn, ' ');
  if (lines.size() < kSummaryColumn) {
    lines.resize(kSummaryColumn, ' ');
  } else if (lines.size() + 2 + summary[0].size() <= kLineWidth) {
    lines += "  ";
  } else {
    absl::StrAppend(&lines, "\n", indent);
  }
  absl::StrAppend(&lines, summary[0], "\n");
  for (size_t i = 1; i < summary.size(); ++i) absl::StrAppend(&lines, indent, summary[i], "\n");
  return lines;
}

}  // namespace

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"create",
       Section::kCollections,
       "NAME --dim D [--metric l2|ip|cosine]",
       "create a collection",
       R"(Usage: quantctl create NAME --dim D [--metric l2|ip|cosine] [--keep-versions N]

Creates a collection. NAME: 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit.
  --dim D             vector dimension, 1..65536 (required)
  --metric M          l2 (default), ip (inner product) or cosine
  --keep-versions N   tokenizer versions to keep, 1..16 (default: the server's
                      --keep_tokenizer_versions, 3); `quantctl retention` changes it later
)",
       {"dim", "metric", "keep-versions"},
       CreateCommand},
      {"list",
       Section::kCollections,
       "",
       "list collections",
       "Usage: quantctl list\n\nLists collections with dimension, metric and item count.\n",
       {},
       ListCommand},
      {"describe",
       Section::kCollections,
       "NAME",
       "show a collection and its item count",
       "Usage: quantctl describe NAME\n\nShows one collection and its item count.\n",
       {},
       DescribeCommand},
      {"drop",
       Section::kCollections,
       "NAME",
       "delete a collection and all its items",
       "Usage: quantctl drop NAME\n\nDeletes a collection and all of its items.\n",
       {},
       DropCommand},
      {"upsert",
       Section::kCollections,
       "NAME FILE [--id-offset N | --ids FILE] [--attributes FILE]",
       "stream a vector file into a collection",
       R"(Usage: quantctl upsert NAME FILE [OPTIONS]

Streams the rows of FILE into collection NAME, in batches of about 1 MiB, each acknowledged by
the server once durable. Shows a progress bar on a terminal.
  --id-offset N    item id of row r is N + r (default 0)
  --ids FILE       item ids, one per row: .npy/.ivecs of integers or text, one id per line
  --attributes FILE
                   item attributes, one JSON object per line for each row, e.g.
                   {"genre": "jazz", "year": 1959} (strings and integers; an empty line or
                   {} for none); they replace each item's stored attributes. Without it,
                   stored attributes stay
  --max-rows N     upload only the first N rows
  --batch-rows N   rows per batch (default: about 1 MiB per batch)
  --no-progress    no progress bar
)",
       {"id-offset", "ids", "attributes", "max-rows", "batch-rows", "no-progress"},
       UpsertCommand},
      {"get",
       Section::kCollections,
       "NAME ID... | --ids FILE",
       "read vectors back",
       R"(Usage: quantctl get NAME ID... | --ids FILE

Reads stored items. Prints one line per item (first values only, then its attributes) or, with
--json, every value.
  --ids FILE     ids to read (as for upsert)
)",
       {"ids"},
       GetCommand},
      {"list-items",
       Section::kCollections,
       "NAME [--page-size N] [--page-token T | --all] [--with-vectors] [--with-sids]",
       "page through items in id order",
       R"(Usage: quantctl list-items NAME [--page-size N] [--page-token T | --all] [--with-vectors]
                          [--with-sids [--version V]] [--with-attributes]

Lists items in id order, one page (or with --all every page), one line per item: its id, with
--with-vectors its first values, with --with-sids its semantic ID, with --with-attributes its
attributes. After a page that is not the
last it prints the token of the next one. With --json, the ListItems responses.
  --page-size N    items per page, 1..10000 (default 1000)
  --page-token T   continue after the page that gave this token
  --all            every page from the start (or from --page-token)
  --with-vectors   with each item's vector
  --with-sids      with each item's SID under --version (default: the active tokenizer)
  --with-attributes  with each item's attributes
)",
       {"page-size", "page-token", "all", "with-vectors", "with-sids", "with-attributes",
        "version"},
       ListItemsCommand},
      {"delete",
       Section::kCollections,
       "NAME ID... | --ids FILE",
       "delete items",
       R"(Usage: quantctl delete NAME ID... | --ids FILE

Deletes items atomically; reports how many were deleted and how many did not exist.
  --ids FILE     ids to delete (as for upsert)
)",
       {"ids"},
       DeleteCommand},
      {"inspect",
       Section::kCollections,
       "FILE",
       "show a local vector file's format and shape",
       "Usage: quantctl inspect FILE\n\nShows the format, element type and shape of "
       "a local vector file without contacting a server.\n",
       {},
       InspectCommand},
      {"train",
       Section::kSemanticIds,
       "NAME [--levels 256,256,256] [--balanced | --method rq-vae]",
       "train a tokenizer; follows the job",
       R"(Usage: quantctl train NAME [OPTIONS]

Trains a semantic-ID tokenizer (residual k-means) on the collection's items, then encodes every
item and commits the new version atomically. Follows the job with a progress bar (Ctrl-C
leaves it running; `quantctl cancel ID` stops it).
  --levels K1,K2,..   codes per level; the count is the number of levels (default 256,256,256)
  --balanced          balanced k-means: every code's item count within bounds (hard)
  --balanced-levels B1,B2,..
                      per level 1 (balanced) or 0 (plain), e.g. 0,0,1 balances the last level
  --slack S           balanced bounds floor(n/K*(1-S)) .. ceil(n/K*(1+S)) (default 0.1)
  --size-min A,B,..   explicit per-level bounds instead of --slack (with --size-max)
  --size-max A,B,..
  --iterations N      k-means iterations per level (default 25)
  --tolerance T       stop a level when k-means improves by less than T (default 1e-4; 0: never)
  --restarts N        k-means runs per level, keeping the best (default 1; max 10)
  --assignment MODE   how new items get codes: nearest or capacity (default: capacity when a
                      level is balanced, else nearest)
  --beam-width N      capacity: tuples kept per level by the beam search (default 4; max 64)
  --suffix-cap N      capacity: most items per code tuple (default: the largest suffix of the
                      training assignment, at least 1); training items beyond it move
  --seed N            random seed (default 0)
  --sample N          train on a seeded sample of N items (default: all); all get SIDs
  --activation A      whether the new version becomes the active one: always (default), never
                      (train and evaluate only), if-better (only if its collision rate and MSE
                      over the same items are no worse than the active version's, one
                      better); the job's last line says what was decided and why
  --method M          rq-kmeans (default) or rq-vae: an MLP autoencoder whose latent is
                      quantized (the k-means options above do not apply); its progress shows
                      loss, collision rate and codes used per level every epoch
  --epochs N          rq-vae: epochs (default: about 3000 optimizer steps, 20..1000)
  --layers A,B,..     rq-vae: encoder hidden sizes (default 512,256,128,64)
  --e-dim N           rq-vae: latent size (default 32)
  --batch-size N      rq-vae: rows per step (default 1024)
  --lr X              rq-vae: AdamW learning rate (default 1e-3)
  --rqvae JSON        rq-vae: any RqVaeOptions field in protobuf JSON, e.g.
                      '{"skEpsilons":[0,0,0.003],"bn":true,"keep":"RQ_VAE_CHECKPOINT_BEST_LOSS"}'
                      (the flags above override it)
  --detach            print the job id and return at once
  --no-progress       no progress bar
)",
       {"levels",     "balanced",  "balanced-levels", "slack",      "size-min",    "size-max",
        "iterations", "tolerance", "restarts",        "assignment", "beam-width",  "suffix-cap",
        "seed",       "sample",    "activation",      "detach",     "no-progress", "method",
        "epochs",     "layers",    "e-dim",           "batch-size", "lr",          "rqvae"},
       TrainCommand},
      {"encode",
       Section::kSemanticIds,
       "NAME ID... | --vectors FILE",
       "semantic IDs of items, or codes of vectors",
       R"(Usage: quantctl encode NAME ID... | --ids FILE | --vectors FILE [OPTIONS]

Prints the stored semantic IDs of items, or the codes a new item with each vector would get
now: the assigned codes, the nearest codes when capacity moved it (displaced) or none had room
(overflow), the squared quantization error of each, and how many stored items already have
the assigned codes. --vectors encodes every row of the file, sent in batches.
  --ids FILE          ids of stored items (as for upsert)
  --vectors FILE      a vector file (.npy, .fvecs, ...): one line of codes per row
  --max-rows N        encode only the first N rows of --vectors (default: all)
  --batch-rows N      rows per Encode request, 1..100000 (default: about 1 MiB per request)
  --version V         a kept tokenizer version (default: the active one)
)",
       {"ids", "vectors", "max-rows", "batch-rows", "version"},
       EncodeCommand},
      {"lookup",
       Section::kSemanticIds,
       "NAME SID",
       "items under a SID or prefix: \"<a_3><b_7>\", 3,7",
       R"(Usage: quantctl lookup NAME SID [--limit N] [--version V]

Lists the items under a semantic ID or a prefix of one, written as tokens ("<a_12><b_201>")
or as comma-separated integers ("12,201"). --limit caps the answer (default 1000); --version
asks a kept tokenizer version (default: the active one).
)",
       {"limit", "version"},
       LookupCommand},
      {"stats",
       Section::kSemanticIds,
       "NAME",
       "tokenizer and index health",
       "Usage: quantctl stats NAME [--version V]\n\nShows item count, tokenizer parameters, "
       "per-level codebook usage, perplexity, cluster sizes and reconstruction MSE, and "
       "collisions (of the active tokenizer version, or of kept version V); the versions kept; "
       "index shape, list sizes and imbalance, bytes per vector and memory.\n",
       {"version"},
       StatsCommand},
      {"export-sids",
       Section::kSemanticIds,
       "NAME --index FILE [--codes FILE]",
       "LC-Rec / LETTER index JSON, .npy of codes",
       R"(Usage: quantctl export-sids NAME --index FILE [--codes FILE] [--version V]

Writes every item's semantic ID as LC-Rec / LETTER index JSON to --index,
{"<item id>": ["<a_12>", "<b_201>", ..., "<d_0>"]}, and with --codes an .npy of int64 codes of
shape (items, levels + 1), rows in item-id order (the last column is the dedup suffix).
--version exports a kept tokenizer version (default: the active one).
)",
       {"index", "codes", "version"},
       ExportSidsCommand},
      {"versions",
       Section::kSemanticIds,
       "NAME",
       "kept tokenizer versions: quality, decisions",
       R"(Usage: quantctl versions NAME

Lists the tokenizer versions the collection keeps, oldest first: number, whether active or
pinned, source (trained or imported), levels x K, items with a SID under it now, their
collision rate, the MSE at its commit, suffixes carried over from its parent version, creation
time (UTC) and the activation decision of its job.
)",
       {},
       VersionsCommand},
      {"activate",
       Section::kSemanticIds,
       "NAME VERSION",
       "make a kept version the active one (rollback)",
       R"(Usage: quantctl activate NAME VERSION

Makes kept tokenizer version VERSION the active one, atomically: Encode, Lookup, ExportSids,
NextCodes and GetStats default to it from then on. Rolling back is activating the previous one.
)",
       {},
       ActivateCommand},
      {"drop-version",
       Section::kSemanticIds,
       "NAME VERSION",
       "drop a kept version and its SIDs",
       R"(Usage: quantctl drop-version NAME VERSION

Drops a kept tokenizer version and every SID under it. The active version and pinned ones
cannot be dropped.
)",
       {},
       DropVersionCommand},
      {"pin",
       Section::kSemanticIds,
       "NAME VERSION",
       "keep a version whatever the retention",
       R"(Usage: quantctl pin NAME VERSION

Pins a kept tokenizer version: new versions never drop it to make room (`quantctl unpin`
undoes it).
)",
       {},
       PinCommand},
      {"unpin",
       Section::kSemanticIds,
       "NAME VERSION",
       "let retention drop a version again",
       "Usage: quantctl unpin NAME VERSION\n\nUnpins a tokenizer version: retention may drop it "
       "again when newer versions commit.\n",
       {},
       UnpinCommand},
      {"retention",
       Section::kSemanticIds,
       "NAME N",
       "keep the last N tokenizer versions",
       R"(Usage: quantctl retention NAME N

Sets how many tokenizer versions the collection keeps, 1..16 (0: the server's default). If
more are kept now, the oldest that are neither active nor pinned are dropped at once.
)",
       {},
       RetentionCommand},
      {"sid-map",
       Section::kSemanticIds,
       "NAME --from V [--to W] --out PREFIX",
       "old -> new SID of every item, as JSON and .npy",
       R"(Usage: quantctl sid-map NAME --from V [--to W] --out PREFIX

Streams every item's SID under kept versions V and W (default: the active one) and writes
PREFIX.json, an object from the old SID's tokens to the new one's,
{"<a_1><b_2><c_3><d_0>": "<a_7><b_0><c_5><d_1>", ...}, for relabelling a generative model's
training data, and PREFIX.npy, int64 of shape (items, 1 + (Lv + 1) + (Lw + 1)): item id, old
codes and suffix, new codes and suffix, rows in item-id order. Prints how many items changed
their SID. Item ids above 2^63-1 do not fit the .npy and are an error.
  --no-progress    no progress bar
)",
       {"from", "to", "out", "no-progress"},
       SidMapCommand},
      {"next-codes",
       Section::kSemanticIds,
       "NAME [PREFIX] [--version V]",
       "valid next tokens under a prefix, with items",
       R"(Usage: quantctl next-codes NAME [PREFIX] [--version V]

Prints the tokens that may follow PREFIX under a tokenizer version (constrained decoding), each
with the items under it; after all L levels the tokens are the dedup suffixes, each with its
item. PREFIX is tokens ("<a_12><b_7>") or codes ("12,7"); without it, the first level's codes.
  --version V      a kept tokenizer version (default: the active one)
)",
       {"version"},
       NextCodesCommand},
      {"export-trie",
       Section::kSemanticIds,
       "NAME --out DIR [--version V]",
       "the SID prefix trie for constrained decoding",
       R"(Usage: quantctl export-trie NAME --out DIR [--version V]

Reads every SID of a tokenizer version (default: the active one) and writes its prefix trie to
DIR (created if missing), in two forms that agree with export-sids of the same version:
  trie.json          {"<token prefix>": ["<next token>", ...]} for every node, the root "" too;
                     after L levels the next tokens are the suffixes ("<d_0>" with 3 levels)
  offsets_<t>.npy    for t = 0..L, int64: node j of depth t has children offsets[j]..
                     offsets[j+1]-1 (depth 0 is the root; depth L+1 the leaves, one per item)
  codes_<t>.npy      int64: each child's code (at t = L its suffix), increasing per node
  counts_<t>.npy     int64: the items under each child
  leaf_items.npy     int64: the item of each leaf, in trie order
  manifest.json      version, levels, codebook sizes, items, nodes per depth, files
  --no-progress    no progress bar
)",
       {"out", "version", "no-progress"},
       ExportTrieCommand},
      {"export-tokenizer",
       Section::kSemanticIds,
       "NAME --out PREFIX [--version V]",
       "codebooks (or an RQ-VAE's tensors) as .npz, parameters as JSON",
       R"(Usage: quantctl export-tokenizer NAME --out PREFIX [--version V]

Writes a tokenizer version's codebooks (default: the active version's) to PREFIX.npz, arrays
arr_0 .. arr_{L-1} of K_l x d float32 (what np.savez(path, *codebooks) writes; np.load reads
it), and its manifest (dimension, metric, codebook sizes, training parameters, version,
source) to PREFIX.json.
)",
       {"out", "version"},
       ExportTokenizerCommand},
      {"import-tokenizer",
       Section::kSemanticIds,
       "NAME (--npz FILE [--manifest FILE] | --torch FILE.pth) [--wait]",
       "codebooks or an RQ-VAE trained elsewhere become a version",
       R"(Usage: quantctl import-tokenizer NAME (--npz FILE | --torch FILE) [OPTIONS]

Creates a tokenizer version from a model trained elsewhere: the server encodes every item
with it and commits the version like a training (a job of kind import_tokenizer).
  --npz FILE          the codebooks: arrays arr_<l>, level_<l> or codebook_<l> (one scheme,
                      levels 0..L-1), each K_l x d float32/float64; or one L x K x d array;
                      or an RQ-VAE as export-tokenizer writes it (tensors by PyTorch name,
                      with --manifest giving its architecture)
  --torch FILE        a PyTorch checkpoint of the RQ-VAE pipeline (LC-Rec's index/, e.g.
                      best_collision_model.pth: args, state_dict, ...), read by the server
                      without running pickle code; the architecture comes from its args
  --manifest FILE     a manifest JSON as export-tokenizer writes it (assignment, beam width,
                      suffix cap, balance bounds, seed, RQ-VAE options); its sizes must match
  --assignment MODE   nearest or capacity (overrides the manifest's)
  --activation A      always (default), never or if-better, as for train
  --wait              follow the job with a progress bar until it ends (else print the job)
  --no-progress       no progress bar
)",
       {"npz", "torch", "manifest", "assignment", "activation", "wait", "no-progress"},
       ImportTokenizerCommand},
      {"jobs",
       Section::kSemanticIds,
       "[NAME]",
       "training jobs, newest first",
       "Usage: quantctl jobs [NAME]\n\nLists training jobs, newest first.\n",
       {},
       JobsCommand},
      {"job",
       Section::kSemanticIds,
       "ID",
       "a job's state, phase, progress and elapsed time",
       "Usage: quantctl job ID\n\nShows one job: state, phase, progress, elapsed time.\n",
       {},
       JobCommand},
      {"cancel",
       Section::kSemanticIds,
       "ID",
       "cancel a pending or running job",
       "Usage: quantctl cancel ID\n\nCancels a pending or running job; the "
       "previous tokenizer keeps serving.\n",
       {},
       CancelCommand},
      {"backup",
       Section::kOperations,
       "NAME",
       "consistent copy of the database on the server,\nin its --backup_dir/NAME",
       R"(Usage: quantctl backup NAME

Asks the server for a consistent backup of its whole database (every collection, item,
tokenizer, index and job, as of one instant) in <backup_dir>/NAME on the server's filesystem
(quantd --backup_dir, default ./var/backups). The server keeps serving meanwhile. NAME is one
path component of [A-Za-z0-9._-]. Prints the path, size, number of files and duration. Restore by
starting quantd with --data_dir on a copy of that directory. The call's deadline is --timeout
(default 3600 s here).
)",
       {},
       BackupCommand},
      {"health",
       Section::kOperations,
       "[--service NAME]",
       "grpc.health.v1 check: exit 0 when SERVING",
       R"(Usage: quantctl health [--service NAME]

Asks the server's grpc.health.v1 service (the main port, or quantd's plaintext --health_listen
port) whether it serves, and prints SERVING or NOT_SERVING. Exit code 0 when SERVING, 1
otherwise (NOT_SERVING while starting or draining, an unknown service, no answer): a container
health check. TLS and token options apply as for every command; the health port needs none.
The deadline is --timeout (default 5 s here).
  --service NAME   a service instead of the whole server, e.g. quantd.v1.Quantd
)",
       {"service"},
       HealthCommand},
      {"train-index",
       Section::kSearch,
       "NAME [--layout plain|fast-scan] [--nlist N] [--m M] [--nbits 4|8]",
       "train an index; follows the job",
       R"(Usage: quantctl train-index NAME [OPTIONS]

Trains an IVF-PQ index (coarse k-means, then a product quantizer on the residuals) on the
collection's items, then encodes every item and commits the new version atomically; searches
use the previous version until then. Follows the job with a progress bar (Ctrl-C leaves it
running; `quantctl cancel ID` stops it).
  --layout L          plain or fast-scan (default: fast-scan from 200000 items, else
                      plain; the job says what it chose and why)
  --refine-codes C    sq8 or none: the finer code kept in memory for search --refine
                      (default: sq8 with fast-scan, none with plain)
  --nlist N           inverted lists (default round(4 sqrt(n)) clamped to [1, n/39])
  --m M               PQ sub-quantizers, dividing the dimension (default: largest divisor
                      <= min(64, d/4); fast-scan: twice that when it divides d, <= 256)
  --nbits 4|8         bits per sub-code (default 8; 4 for fast-scan or under 256 items)
  --coarse-iterations N   coarse k-means iterations (default 10)
  --pq-iterations N   PQ k-means iterations (default 25)
  --seed N            random seed (default 0)
  --sample N          train on a seeded sample of N items (default: all); all are indexed
  --detach            print the job id and return at once
  --no-progress       no progress bar
)",
       {"layout", "refine-codes", "nlist", "m", "nbits", "coarse-iterations", "pq-iterations",
        "seed", "sample", "detach", "no-progress"},
       TrainIndexCommand},
      {"search",
       Section::kSearch,
       "NAME --queries FILE | --like ID[,ID...] [--k 10] [--allow|--deny IDS] [--prefix P] "
       "[--where C]",
       "the k nearest items of each query",
       R"(Usage: quantctl search NAME (--queries FILE | --like ID[,ID...]) [OPTIONS]

Searches the collection's index with every row of a vector file (.npy, .fvecs, ...) and prints,
per query, the ids and distances of its nearest items, nearest first (L2: squared distance;
ip / cosine: similarity).
  --like ID[,ID...]   search by item: each stored item's vector is a query; the item itself
                      is left out of its results unless --include-self
  --k N               neighbours per query, 1..1024 (default 10)
  --nprobe N          lists scanned per query (default nlist/8; above nlist scans all)
  --refine R          re-rank R x k candidates: with the index's in-memory refine codes
                      (fast-scan's SQ8 by default), else by exact distance to the stored
                      vectors
  --refine-exact      with --refine, always the stored vectors (exact distances)
  --offset N          results start after each query's first N (the next page of k: --offset
                      N+k); offset + k at most 1024
  --allow FILE|IDS    only these items: a file of ids (one per line, .npy or .ivecs) or
                      comma-separated ids (at most 1000000); small sets are scored exactly
  --deny FILE|IDS     never these items (same forms; not with --allow)
  --prefix P          only items under a semantic-ID prefix of the active tokenizer:
                      tokens "<a_12><b_7>" or codes 12,7
  --where CONDS       only items whose attributes meet every condition (comma-separated):
                      KEY=VALUE (an int when VALUE is an integer, else a string),
                      KEY="TEXT" (a string), KEY=MIN..MAX (ints; a bound may be left out:
                      year=1990..)
  --max-rows N        use the first N queries only
  --output FILE       write the ids as .ivecs (a row per query, shorter when fewer than k
                      items were found) instead of printing them
)",
       {"queries", "like", "include-self", "k", "nprobe", "refine", "refine-exact", "offset",
        "allow", "deny", "prefix", "where", "max-rows", "output"},
       SearchCommand},
  };
  return *commands;
}

const std::string& UsageText() {
  static const std::string* text = [] {
    std::string out = kUsageHead;
    for (const auto& [section, title] : kSections) {
      absl::StrAppend(&out, "\n", title, ":\n");
      for (const Command& command : Commands()) {
        if (command.section == section) out += OverviewLines(command);
      }
    }
    out += kUsageTail;
    return new std::string(std::move(out));
  }();
  return *text;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

}  // namespace quantd::quantctl
