// A committed IVF-PQ index version as the server serves it, the request-to-options rules of
// TrainIndex, and the on-disk formats:
//   model blob (models family): "QIDX" magic, format version (uint32), CRC-32 of the payload
//     (uint32), then a serialized quantd.storage.IndexRecord whose `model` is the core index
//     serialized without lists. A blob that fails any check is DATA_LOSS.
//   item entry (ivf family, key <cid:be32><item id:be64>): uint32 LE index version, uint32 LE
//     list, code_size bytes of PQ code, then refine_code_size bytes of refine code (none when
//     the index keeps none): exactly what IvfPqIndex::AddEncoded takes.
#ifndef QUANTD_SERVER_INDEX_H_
#define QUANTD_SERVER_INDEX_H_

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "absl/status/statusor.h"
#include "core/ivf_pq.h"
#include "quantd/storage/records.pb.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd {

// Limits of a Search request (documented in quantd.proto).
inline constexpr int64_t kMaxSearchK = 1024;
inline constexpr int64_t kMaxSearchQueries = 10000;
inline constexpr int64_t kMaxRefineCandidates = 65536;  // refine * k
// nq * k: keeps an answer (12 bytes per neighbour) far below the 64 MiB message limit.
inline constexpr int64_t kMaxSearchResults = int64_t{1} << 20;
// Filters (SearchRequest.allow / deny / sid_prefix): most ids of a packed list, most bitmap
// bytes (2^26 ids of span), most items under a SID prefix.
inline constexpr int64_t kMaxFilterIds = 1000000;
inline constexpr int64_t kMaxFilterBitmapBytes = int64_t{1} << 23;
inline constexpr int64_t kMaxPrefixItems = 1000000;
// The crossover of filtered search. A scan with an allowed set of `allowed` ids reads about
// max(nprobe x n / nlist, k x n / allowed) codes per query (the nprobe lists, or more lists when
// they hold fewer than k allowed ids: the scan widens); exact scoring reads and scores `allowed`
// stored vectors. But a scan whose lists hold only about k allowed ids returns whichever allowed
// ids happen to be in them, not the nearest ones: on the 1M mixture an allow-list of 0.1% (15
// allowed ids expected in the 16 probed lists) scanned at recall@10 0.27 against 1.00 exact,
// while 1% (156 expected) scanned at 0.87. So the scan is credited with reading the lists that
// hold kAllowedPerResult x k allowed ids: ScoreExactly says exact when
//   allowed x kExactCostPerItem <= max(nprobe x n / nlist, kAllowedPerResult x k x n / allowed):
// scoring one item exactly (a RocksDB read of its vector and d multiply-adds in double) costs
// about as much as kExactCostPerItem scanned codes (filter_bench's crossover sweep).
inline constexpr int64_t kExactCostPerItem = 64;
inline constexpr int64_t kAllowedPerResult = 10;
bool ScoreExactly(int64_t allowed, int64_t k, int64_t nprobe, int64_t n, int64_t nlist);
// Search's `where`: a condition matching at most this many items is walked into the allowed
// set (AttributeIndex::Plan), broader ones are tested per candidate in the scan. At least the
// first power of two >= 4096 at which ScoreExactly says scan, so every set that could be scored
// exactly is walked; and at least 4 sqrt(k n): a scan tests about k / s candidates at
// selectivity s (a lookup per condition, ~100 ns) before k pass, a walk costs s n ids (~10 ns
// each), and the two meet near s = sqrt(10 k / n) (on the 1M mixture, a 1% condition tested
// per candidate ran at 784 q/s, a third of the same set walked).
int64_t AttributeMaterializeLimit(int64_t k, int64_t nprobe, int64_t n, int64_t nlist);

// One committed index version. `record` is immutable (its `model` bytes cleared); `index` holds
// every item of the collection and changes with item writes: writers (who also hold the
// collection's write lock) take `mu` exclusively around Add / Remove, searches take it shared.
// A retraining publishes a new ServingIndex instead of changing this one, so a search that
// holds it keeps a consistent version.
struct ServingIndex {
  storage::IndexRecord record;
  mutable std::shared_mutex mu;
  IvfPqIndex index;
};

// The search policy of a serving index: nprobe 0 asks for the default max(1, nlist / 8), and a
// value above nlist scans every list (clamped to nlist).
int64_t ResolveNprobe(int64_t requested, int64_t nlist);

// `record` with `model` set, as a checksummed blob, and back.
std::string SerializeIndexBlob(const storage::IndexRecord& record);
absl::StatusOr<storage::IndexRecord> ParseIndexBlob(const std::string& blob);

// Item entry value: version, list, code, refine code.
std::string EncodeIndexEntry(uint32_t version, int64_t list, absl::Span<const uint8_t> code,
                             absl::Span<const uint8_t> refine_code);

}  // namespace quantd

#endif  // QUANTD_SERVER_INDEX_H_
