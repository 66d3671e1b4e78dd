#include "server/storage.h"

namespace quantd {

Storage::~Storage() = default;

absl::StatusOr<std::unique_ptr<Storage>> Storage::Open(const Options& options) {
  auto storage = std::unique_ptr<Storage>(new Storage());
  auto db = Db::Open({.path = options.path, .sync = options.sync});
  if (!db.ok()) return db.status();
  storage->db_ = std::move(*db);
  Db* engine = storage->db_.get();
  auto collections = CollectionRegistry::Load(engine, options.max_collections);
  if (!collections.ok()) return collections.status();
  storage->collections_ = std::move(*collections);
  storage->item_store_ = std::make_unique<ItemStore>(engine);
  storage->sid_store_ = std::make_unique<SidStore>(engine);
  storage->ivf_store_ = std::make_unique<IvfStore>(engine);
  storage->job_store_ = std::make_unique<JobStore>(engine);
  storage->attribute_store_ = std::make_unique<AttributeStore>(engine);
  storage->tokenizers_ =
      std::make_unique<Tokenizers>(engine, storage->collections_.get(), storage->item_store_.get(),
                                   storage->sid_store_.get(), options.keep_tokenizer_versions);
  storage->items_ = std::make_unique<ItemService>(
      engine, storage->collections_.get(), storage->item_store_.get(), storage->sid_store_.get(),
      storage->tokenizers_.get(), storage->ivf_store_.get(), storage->attribute_store_.get());
  storage->indexes_ =
      std::make_unique<Indexes>(engine, storage->collections_.get(), storage->item_store_.get(),
                                storage->ivf_store_.get(), storage->tokenizers_.get());
  storage->backups_ = std::make_unique<Backups>(engine);
  if (auto status = storage->tokenizers_->LoadAll(); !status.ok()) return status;
  if (auto status = storage->indexes_->LoadAll(); !status.ok()) return status;
  if (auto status = storage->items_->LoadAttributes(); !status.ok()) return status;
  return storage;
}

}  // namespace quantd
