// The command table, the one place that lists quantctl's commands, and the overview of
// `quantctl --help`.
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/commands.h"

namespace quantd::quantctl {
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

}  // namespace

const char* UsageText() { return kUsage; }

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"create",
       R"(Usage: quantctl create NAME --dim D [--metric l2|ip|cosine]

Creates a collection. NAME: 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit.
  --dim D        vector dimension, 1..65536 (required)
  --metric M     l2 (default), ip (inner product) or cosine
)",
       {"dim", "metric"},
       CreateCommand},
      {"list",
       "Usage: quantctl list\n\nLists collections with dimension, metric and item count.\n",
       {},
       ListCommand},
      {"describe",
       "Usage: quantctl describe NAME\n\nShows one collection and its item count.\n",
       {},
       DescribeCommand},
      {"drop",
       "Usage: quantctl drop NAME\n\nDeletes a collection and all of its items.\n",
       {},
       DropCommand},
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
       UpsertCommand},
      {"get",
       R"(Usage: quantctl get NAME ID... | --ids FILE

Reads stored vectors. Prints one line per item (first values only) or, with --json, every value.
  --ids FILE     ids to read (as for upsert)
)",
       {"ids"},
       GetCommand},
      {"delete",
       R"(Usage: quantctl delete NAME ID... | --ids FILE

Deletes items atomically; reports how many were deleted and how many did not exist.
  --ids FILE     ids to delete (as for upsert)
)",
       {"ids"},
       DeleteCommand},
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
       TrainCommand},
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
       TrainIndexCommand},
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
       SearchCommand},
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
       EncodeCommand},
      {"lookup",
       R"(Usage: quantctl lookup NAME SID [--limit N]

Lists the items under a semantic ID or a prefix of one, written as tokens ("<a_12><b_201>")
or as comma-separated integers ("12,201"). --limit caps the answer (default 1000).
)",
       {"limit"},
       LookupCommand},
      {"stats",
       "Usage: quantctl stats NAME\n\nShows item count, tokenizer parameters, per-level "
       "codebook usage, perplexity, cluster sizes and reconstruction MSE, and collisions; index "
       "shape, list sizes and imbalance, bytes per vector and memory.\n",
       {},
       StatsCommand},
      {"export-sids",
       R"(Usage: quantctl export-sids NAME --index FILE [--codes FILE]

Writes every item's semantic ID as LC-Rec / LETTER index JSON to --index,
{"<item id>": ["<a_12>", "<b_201>", ..., "<d_0>"]}, and with --codes an .npy of int64 codes of
shape (items, levels + 1), rows in item-id order (the last column is the dedup suffix).
)",
       {"index", "codes"},
       ExportSidsCommand},
      {"jobs",
       "Usage: quantctl jobs [NAME]\n\nLists training jobs, newest first.\n",
       {},
       JobsCommand},
      {"job",
       "Usage: quantctl job ID\n\nShows one job: state, phase, progress, elapsed time.\n",
       {},
       JobCommand},
      {"cancel",
       "Usage: quantctl cancel ID\n\nCancels a pending or running job; the "
       "previous tokenizer keeps serving.\n",
       {},
       CancelCommand},
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
       BackupCommand},
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
       HealthCommand},
      {"inspect",
       "Usage: quantctl inspect FILE\n\nShows the format, element type and shape of "
       "a local vector file without contacting a server.\n",
       {},
       InspectCommand},
  };
  return *commands;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

}  // namespace quantd::quantctl
