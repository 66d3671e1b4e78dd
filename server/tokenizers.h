// Tokenizers: each collection's current tokenizer version (loaded into its model slot) and the
// reads of its SIDs, free of gRPC. A training job commits a new version here: the model and
// every item's SID in one WriteBatch, reconciled with the writes made while it trained.
#ifndef QUANTD_SERVER_TOKENIZERS_H_
#define QUANTD_SERVER_TOKENIZERS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/residual_quantizer.h"
#include "quantd/storage/records.pb.h"
#include "server/collections.h"
#include "server/db.h"
#include "server/item_store.h"
#include "server/sid_ledger.h"
#include "server/sid_store.h"

namespace quantd {

class Tokenizer;

class Tokenizers {
 public:
  // Every pointer outlives the service.
  Tokenizers(Db* db, CollectionRegistry* registry, const ItemStore* items, const SidStore* sids)
      : db_(db), registry_(registry), items_(items), sids_(sids) {}

  // Loads every collection's current tokenizer into its slot (start-up). An unreadable one
  // fails only its collection's calls (DATA_LOSS); a RocksDB read error fails the load.
  absl::Status LoadAll();

  // The collection's current tokenizer: FAILED_PRECONDITION if none was trained, DATA_LOSS if
  // its stored blob is corrupt.
  absl::StatusOr<std::shared_ptr<const Tokenizer>> GetTokenizer(absl::string_view collection) const;

  // Commits a new tokenizer version: `record` (metadata; version is assigned here), the trained
  // `quantizer`, and codes (snapshot.ids.size() x L) computed for `snapshot`. Under the
  // collection's write guard, items upserted or changed since the snapshot get codes anew
  // under the new tokenizer's assignment rule (after every snapshot item took its place) and
  // deleted ones are skipped; suffixes are assigned fresh in id order; the old version's SIDs
  // are replaced. One WriteBatch. Returns the new version.
  absl::StatusOr<uint32_t> CommitTokenizer(absl::string_view collection,
                                           storage::TokenizerRecord record,
                                           ResidualQuantizer quantizer, const ItemSet& snapshot,
                                           const std::vector<int32_t>& codes);

  // The SID side of item writes, under the collection's write guard (cid) and with the
  // tokenizer's ledger held by `change` (server/sid_ledger.h), rows added to `batch`.
  //
  // Items ids (n, distinct) get codes for their new vectors (n x d, each differing from the
  // stored one) under the tokenizer's assignment rule for a collection of `items_after` items:
  // their previous tuples free their capacity first, then each row in order takes the tuple
  // the rule gives (capacity: the best with room within the beam). The drift counters count
  // them. An item whose codes come out unchanged keeps its suffix.
  absl::Status AddItemUpserts(uint32_t cid, const Tokenizer& tokenizer,
                              absl::Span<const uint64_t> ids, absl::Span<const float> vectors,
                              int64_t items_after, LedgerChange* change,
                              rocksdb::WriteBatch* batch) const;
  // The removal of the SIDs of `ids` (distinct; ids without one are skipped), freeing capacity.
  absl::Status AddItemDeletes(uint32_t cid, const Tokenizer& tokenizer,
                              absl::Span<const uint64_t> ids, LedgerChange* change,
                              rocksdb::WriteBatch* batch) const;

  // Readers of SIDs under `tokenizer` (the caller's one snapshot of GetTokenizer). If a
  // retraining commits meanwhile they return ABORTED (retry) rather than mix versions.
  //
  // SIDs of stored items (found ones in request order, each once).
  absl::StatusOr<SidList> GetSids(absl::string_view collection, const Tokenizer& tokenizer,
                                  absl::Span<const uint64_t> ids) const;
  // Items whose SID starts with `prefix` (1..L codes, or L codes and a suffix), in SID order.
  absl::StatusOr<SidList> LookupSids(absl::string_view collection, const Tokenizer& tokenizer,
                                     absl::Span<const int64_t> prefix, int64_t limit) const;
  // Every SID of the collection, in item-id order.
  absl::StatusOr<SidList> ExportSids(absl::string_view collection,
                                     const Tokenizer& tokenizer) const;

 private:
  // Fills the ledger of `tokenizer` (collection cid's current one) from the stored SIDs and
  // drift counters.
  absl::Status LoadLedger(const CollectionInfo& info, const Tokenizer& tokenizer) const;

  Db* db_;
  CollectionRegistry* registry_;
  const ItemStore* items_;
  const SidStore* sids_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKENIZERS_H_
