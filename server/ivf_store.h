// IvfStore: IVF-PQ index versions on disk: the current version (meta "index/<cid>"), the index
// blobs (models <cid>"ivf"<version>) and every item's entry (ivf <cid><item id>: version, list,
// PQ code; see server/index.h). Writers add their rows to the caller's WriteBatch under the
// collection's write lock; the in-memory lists (ServingIndex) follow right after the write.
//
// Invariant: once a collection has an index, every stored item has exactly one entry, of the
// current version.
#ifndef QUANTD_SERVER_IVF_STORE_H_
#define QUANTD_SERVER_IVF_STORE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/ivf_pq.h"
#include "quantd/storage/records.pb.h"
#include "rocksdb/write_batch.h"
#include "server/db.h"

namespace quantd {

struct ServingIndex;

class IvfStore {
 public:
  explicit IvfStore(Db* db) : db_(db) {}

  // The collection's current index with every stored entry in its lists: null if none was
  // trained; DATA_LOSS (naming `collection`) if its blob or an entry is unreadable.
  absl::StatusOr<std::shared_ptr<ServingIndex>> LoadCurrent(uint32_t cid,
                                                            absl::string_view collection) const;
  // The current version, 0 if none.
  absl::StatusOr<uint32_t> CurrentVersion(uint32_t cid) const;

  void AddEntry(uint32_t cid, uint32_t version, uint64_t id, const IvfPqEncoded& entry,
                rocksdb::WriteBatch* batch) const;
  void AddEntry(uint32_t cid, uint32_t version, uint64_t id, int64_t list,
                absl::Span<const uint8_t> code, absl::Span<const uint8_t> refine_code,
                rocksdb::WriteBatch* batch) const;
  void AddDelete(uint32_t cid, uint64_t id, rocksdb::WriteBatch* batch) const;
  // A new version replacing `old_version` (0: none): `record` (version and model set) as its
  // blob, the version key, and the removal of every entry (the caller adds the new ones).
  void AddCommit(uint32_t cid, uint32_t old_version, const storage::IndexRecord& record,
                 rocksdb::WriteBatch* batch) const;
  // The collection's meta row (its entries and blobs go with Db::AddDeleteRows).
  void AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const;

 private:
  Db* db_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_IVF_STORE_H_
