// Storage: the composition root of quantd's persistent state, and nothing more. It opens the
// database and wires the layers, top-down:
//
//   domain services   ItemService (items.h)   Tokenizers (tokenizers.h)   Indexes (indexes.h)
//                     Backups (backup.h)      CollectionRegistry (collections.h: write guard)
//   stores            ItemStore   SidStore   IvfStore   JobStore   AttributeStore  (each adds
//                                                          its rows to the caller's WriteBatch)
//   engine            Db (db.h: column families, scans, atomic writes; keys.h: key layout)
//
// An Upsert, for example, reads top-down: ItemService::Upsert takes the collection's write
// guard, ItemStore, SidStore and IvfStore add their rows to one WriteBatch, Db writes it.
#ifndef QUANTD_SERVER_STORAGE_H_
#define QUANTD_SERVER_STORAGE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/attribute_store.h"
#include "server/backup.h"
#include "server/collections.h"
#include "server/db.h"
#include "server/indexes.h"
#include "server/item_store.h"
#include "server/items.h"
#include "server/ivf_store.h"
#include "server/job_store.h"
#include "server/sid_store.h"
#include "server/tokenizers.h"

namespace quantd {

class Storage {
 public:
  struct Options {
    std::string path;  // database directory; created if missing
    bool sync = true;  // fsync the WAL before acknowledging a write
    // CreateCollection refuses (RESOURCE_EXHAUSTED) once this many collections exist.
    int64_t max_collections = 1000;
    // Tokenizer versions a collection keeps unless it sets its own, 1..16.
    uint32_t keep_tokenizer_versions = 3;
  };
  // Opens the database, loads the collections and every committed model.
  static absl::StatusOr<std::unique_ptr<Storage>> Open(const Options& options);
  ~Storage();  // flushes the WAL and closes the database

  CollectionRegistry& collections() { return *collections_; }
  const CollectionRegistry& collections() const { return *collections_; }
  ItemService& items() { return *items_; }
  const ItemService& items() const { return *items_; }
  Tokenizers& tokenizers() { return *tokenizers_; }
  const Tokenizers& tokenizers() const { return *tokenizers_; }
  Indexes& indexes() { return *indexes_; }
  const Indexes& indexes() const { return *indexes_; }
  JobStore& jobs() { return *job_store_; }
  Backups& backups() { return *backups_; }
  const Db& db() const { return *db_; }

 private:
  Storage() = default;

  // Declared in construction order (destroyed in reverse: the Db last).
  std::unique_ptr<Db> db_;
  std::unique_ptr<CollectionRegistry> collections_;
  std::unique_ptr<ItemStore> item_store_;
  std::unique_ptr<SidStore> sid_store_;
  std::unique_ptr<IvfStore> ivf_store_;
  std::unique_ptr<JobStore> job_store_;
  std::unique_ptr<AttributeStore> attribute_store_;
  std::unique_ptr<ItemService> items_;
  std::unique_ptr<Tokenizers> tokenizers_;
  std::unique_ptr<Indexes> indexes_;
  std::unique_ptr<Backups> backups_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_STORAGE_H_
