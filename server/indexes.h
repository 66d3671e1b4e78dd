// Indexes: each collection's current IVF-PQ index (loaded into its model slot, lists and all)
// and Search over it, free of gRPC. A training job commits a new version here: the model and
// every item's entry in one WriteBatch, reconciled with the writes made while it trained.
#ifndef QUANTD_SERVER_INDEXES_H_
#define QUANTD_SERVER_INDEXES_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/id_set.h"
#include "core/ivf_pq.h"
#include "quantd/storage/records.pb.h"
#include "server/attributes.h"
#include "server/collections.h"
#include "server/db.h"
#include "server/item_store.h"
#include "server/ivf_store.h"
#include "server/tokenizers.h"

namespace quantd {

struct ServingIndex;

class Indexes {
 public:
  // Every pointer outlives the service. `tokenizers` resolves SID-prefix filters.
  Indexes(Db* db, CollectionRegistry* registry, const ItemStore* items, const IvfStore* ivf,
          const Tokenizers* tokenizers)
      : db_(db), registry_(registry), items_(items), ivf_(ivf), tokenizers_(tokenizers) {}

  // Loads every collection's current index and its entries into its slot (start-up). An
  // unreadable one fails only its collection's calls (DATA_LOSS); a RocksDB read error fails
  // the load.
  absl::Status LoadAll();

  // The collection's current index: FAILED_PRECONDITION if none was trained, DATA_LOSS if its
  // stored blob or entries are corrupt.
  absl::StatusOr<std::shared_ptr<const ServingIndex>> GetIndex(absl::string_view collection) const;

  // Commits a new index version: `record` (metadata; version assigned here), the `trained`
  // index (no items), and the entries computed for `snapshot`: lists (n), codes (n x
  // code_size) and refine codes (n x refine_code_size) for n = snapshot.ids.size(). Under the
  // collection's write guard, items upserted or changed since the snapshot are encoded anew and
  // deleted ones skipped; the previous version and its entries are replaced. One WriteBatch; the
  // new version serves from the moment it returns. Returns the new version.
  absl::StatusOr<uint32_t> CommitIndex(absl::string_view collection, storage::IndexRecord record,
                                       IvfPqIndex trained, const ItemSet& snapshot,
                                       const std::vector<int32_t>& lists,
                                       const std::vector<uint8_t>& codes,
                                       const std::vector<uint8_t>& refine_codes);

  struct SearchResult {
    uint32_t index_version = 0;
    int64_t nprobe = 0;  // used, after ResolveNprobe (server/index.h); 0 when exact
    bool exact = false;  // the allowed set was scored exactly (the crossover rule below)
    std::vector<std::vector<IvfPqNeighbor>> neighbors;  // one per query, nearest first
  };
  // A Search request past its collection (quantd.proto SearchRequest documents every field).
  struct SearchSpec {
    absl::Span<const float> queries;      // nq x dimension, row-major; or:
    absl::Span<const uint64_t> like_ids;  // nq stored items, each a query
    bool include_self = false;            // like_ids: keep each query's own item
    int64_t k = 0;
    int64_t offset = 0;  // results skipped before the k (a page of the ranking)
    int64_t nprobe = 0;
    int64_t refine = 0;
    bool refine_exact = false;     // refine with the stored vectors even when refine codes exist
    const IdSet* allow = nullptr;  // at most one of allow and deny
    const IdSet* deny = nullptr;
    std::vector<int64_t> sid_prefix;  // codes under the active tokenizer; empty: none
    // A conjunction of attribute conditions (checked with CheckAttributeConditions); empty: none.
    absl::Span<const AttributeCondition> where;
  };
  // The k nearest accepted items of each query. INVALID_ARGUMENT naming the field and value for
  // a bad request (limits in server/index.h), NOT_FOUND for a like id that is not stored,
  // FAILED_PRECONDITION without an index (or, with a prefix, without an active tokenizer).
  // Allowed sets are scored exactly when ScoreExactly (server/index.h) says so.
  absl::StatusOr<SearchResult> Search(absl::string_view collection, const SearchSpec& spec) const;
  // Unfiltered query vectors: refine 0 or 1 is none, else refine * k candidates are re-ranked
  // (with the refine codes when the index keeps them, else the stored vectors).
  absl::StatusOr<SearchResult> Search(absl::string_view collection, absl::Span<const float> queries,
                                      int64_t k, int64_t nprobe, int64_t refine) const;

 private:
  Db* db_;
  CollectionRegistry* registry_;
  const ItemStore* items_;
  const IvfStore* ivf_;
  const Tokenizers* tokenizers_;

  // The collection's attribute index, `where` checked against it (INVALID_ARGUMENT naming the
  // condition; an unknown key when the collection never had an attribute).
  absl::StatusOr<std::shared_ptr<const AttributeIndex>> AttributesFor(
      absl::string_view collection, absl::Span<const AttributeCondition> where) const;
  // The items under `prefix` (active tokenizer) that allow holds / deny does not (ascending).
  absl::StatusOr<std::vector<uint64_t>> PrefixItems(absl::string_view collection,
                                                    absl::Span<const int64_t> prefix,
                                                    const IdSet* allow, const IdSet* deny) const;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_INDEXES_H_
