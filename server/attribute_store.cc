#include "server/attribute_store.h"

#include "absl/strings/str_format.h"
#include "quantd/storage/records.pb.h"
#include "server/keys.h"

namespace quantd {
namespace {

std::string Serialize(const ItemAttributes& attributes) {
  storage::AttributesRecord record;
  for (const Attribute& attribute : attributes) {
    auto* out = record.add_attributes();
    out->set_key(attribute.key);
    if (const auto* text = std::get_if<std::string>(&attribute.value)) {
      out->set_s(*text);
    } else {
      out->set_i(std::get<int64_t>(attribute.value));
    }
  }
  return record.SerializeAsString();
}

absl::StatusOr<ItemAttributes> Parse(absl::string_view bytes, uint64_t id,
                                     absl::string_view collection) {
  storage::AttributesRecord record;
  auto corrupt = [&] {
    return absl::DataLossError(absl::StrFormat(
        "the attributes of item %d of collection '%s' are unreadable", id, collection));
  };
  if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return corrupt();
  ItemAttributes attributes;
  attributes.reserve(static_cast<size_t>(record.attributes_size()));
  for (const auto& attribute : record.attributes()) {
    switch (attribute.value_case()) {
      case storage::AttributesRecord::Attribute::kS:
        attributes.push_back({attribute.key(), attribute.s()});
        break;
      case storage::AttributesRecord::Attribute::kI:
        attributes.push_back({attribute.key(), attribute.i()});
        break;
      default:
        return corrupt();
    }
  }
  return attributes;
}

}  // namespace

absl::StatusOr<std::vector<ItemAttributes>> AttributeStore::Get(
    uint32_t cid, absl::string_view collection, absl::Span<const uint64_t> ids,
    const rocksdb::Snapshot* view) const {
  std::vector<std::string> item_keys;
  item_keys.reserve(ids.size());
  for (uint64_t id : ids) item_keys.push_back(keys::ItemKey(cid, id));
  auto [values, statuses] = db_->MultiGet(ColumnFamily::kAttrs, item_keys, view);
  std::vector<ItemAttributes> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read attributes");
    auto parsed = Parse(View(values[i]), ids[i], collection);
    if (!parsed.ok()) return parsed.status();
    out[i] = std::move(*parsed);
  }
  return out;
}

void AttributeStore::AddPut(uint32_t cid, uint64_t id, const ItemAttributes& attributes,
                            rocksdb::WriteBatch* batch) const {
  if (attributes.empty()) {
    AddDelete(cid, id, batch);
    return;
  }
  batch->Put(db_->handle(ColumnFamily::kAttrs), keys::ItemKey(cid, id), Serialize(attributes));
}

void AttributeStore::AddDelete(uint32_t cid, uint64_t id, rocksdb::WriteBatch* batch) const {
  batch->Delete(db_->handle(ColumnFamily::kAttrs), keys::ItemKey(cid, id));
}

void AttributeStore::AddSchema(uint32_t cid, const AttributeSchema& schema,
                               rocksdb::WriteBatch* batch) const {
  storage::AttributeKeysRecord record;
  for (const auto& [key, type] : schema) (*record.mutable_types())[key] = static_cast<int>(type);
  batch->Put(db_->handle(ColumnFamily::kMeta), keys::AttributeKeysKey(cid),
             record.SerializeAsString());
}

void AttributeStore::AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const {
  batch->Delete(db_->handle(ColumnFamily::kMeta), keys::AttributeKeysKey(cid));
}

absl::StatusOr<std::shared_ptr<AttributeIndex>> AttributeStore::Load(
    const CollectionInfo& info) const {
  auto stored = db_->Get(ColumnFamily::kMeta, keys::AttributeKeysKey(info.id), "read attributes");
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return std::shared_ptr<AttributeIndex>();
  storage::AttributeKeysRecord record;
  if (!record.ParseFromString(**stored)) {
    return absl::DataLossError(
        absl::StrFormat("the attribute keys of collection '%s' are unreadable", info.name));
  }
  AttributeSchema schema;
  for (const auto& [key, type] : record.types()) {
    if (type != static_cast<int>(AttributeType::kString) &&
        type != static_cast<int>(AttributeType::kInt)) {
      return absl::DataLossError(absl::StrFormat(
          "attribute key '%s' of collection '%s' has type %d", key, info.name, type));
    }
    schema.emplace(key, static_cast<AttributeType>(type));
  }
  std::vector<AttributeIndex::Change> items;
  absl::Status status = db_->ScanPrefix(
      ColumnFamily::kAttrs, keys::CollectionBegin(info.id),
      [&](absl::string_view key, absl::string_view value) -> absl::Status {
        const uint64_t id = keys::ItemIdOf(key);
        auto attributes = Parse(value, id, info.name);
        if (!attributes.ok()) return attributes.status();
        for (const Attribute& attribute : *attributes) {
          auto it = schema.find(attribute.key);
          if (it == schema.end() || it->second != TypeOf(attribute.value)) {
            return absl::DataLossError(absl::StrFormat(
                "item %d of collection '%s' has attribute '%s' outside the collection's schema", id,
                info.name, attribute.key));
          }
        }
        items.push_back({id, {}, std::move(*attributes)});
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  auto index = std::make_shared<AttributeIndex>();
  index->Apply(schema, items);
  return index;
}

}  // namespace quantd
