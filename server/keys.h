// Key and value codecs of quantd's RocksDB database: the one place that knows how keys are
// spelled. Layout (column families by role, see server/db.h; keys big-endian so that a prefix
// scan walks one collection, one tokenizer version or one code tuple in order):
//
//   meta     "schema_version"          -> uint32 LE (kSchemaVersion; absent in 0.1.0 databases)
//            "next_collection_id"      -> uint32 LE; collection ids are never reused
//            "collection/<name>"       -> quantd.storage.CollectionRecord
//            "count/<cid:be32>"        -> item count, uint64 LE
//            "tokenizer_versions/<cid:be32>" -> quantd.storage.TokenizerVersionsRecord (the
//                                         active, kept, pinned and pending versions)
//            "sid_drift/<cid:be32><version:be32>" -> quantd.storage.SidDriftRecord
//            "index/<cid:be32>"        -> current IVF-PQ index version, uint32 LE
//            "attr_keys/<cid:be32>"    -> quantd.storage.AttributeKeysRecord (attribute key types)
//            "job/<id>"                -> quantd.storage.JobRecord
//   vectors  <cid:be32><item id:be64>  -> dimension float32 values, LE
//   models   <cid:be32><version:be32>  -> tokenizer blob (server/tokenizer.h)
//            <cid:be32>"ivf"<version:be32> -> IVF-PQ index blob (server/index.h)
//   codes    <cid:be32><version:be32><item id:be64> -> uint32 LE: version, L codes, suffix (the
//            item's SID under that tokenizer version)
//   sids     <cid:be32><version:be32><code:be32 x L><suffix:be32> -> item id, uint64 LE
//            (the SID index: prefix scans answer Lookup and find the lowest free suffix)
//   Every row of tokenizer version v in models, codes and sids starts with <cid><v>, so one
//   version's rows go with a range delete.
//   ivf      <cid:be32><item id:be64>  -> the item's index entry: version, list, PQ code
//            (server/index.h); the in-memory inverted lists are rebuilt from it at start-up
//   attrs    <cid:be32><item id:be64>  -> quantd.storage.AttributesRecord (the item's attributes;
//            no row when it has none); the in-memory attribute index is rebuilt from it at
//            start-up (server/attribute_store.h)
//
// Every row a collection owns outside `meta` starts with <cid:be32>, so [CollectionBegin(cid),
// CollectionEnd(cid)) covers exactly them.
#ifndef QUANTD_SERVER_KEYS_H_
#define QUANTD_SERVER_KEYS_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace quantd::keys {

// Version of the layout above. 1: quantd 0.1.0 (CollectionRecord.metric held core's enum
// value); 2: CollectionRecord.metric holds the quantd.v1.Metric value, as records.proto says;
// 3: several tokenizer versions (codes keyed by version, "tokenizer_versions/", drift per
// version; 2 had one version: codes <cid><item id>, "tokenizer/<cid>", "sid_drift/<cid>").
inline constexpr uint32_t kSchemaVersion = 3;

inline constexpr char kSchemaVersionKey[] = "schema_version";
inline constexpr char kNextCollectionIdKey[] = "next_collection_id";
inline constexpr char kCollectionPrefix[] = "collection/";
inline constexpr char kJobPrefix[] = "job/";

inline void AppendBigEndian32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}
inline void AppendBigEndian64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}
inline uint32_t ReadBigEndian32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
inline uint64_t ReadBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Fixed-width little-endian values.
inline std::string EncodeU32(uint32_t v) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &v, 4);
  return out;
}
inline std::string EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &v, 8);
  return out;
}
// nullopt unless `value` has exactly the width.
inline std::optional<uint32_t> DecodeU32(absl::string_view value) {
  if (value.size() != 4) return std::nullopt;
  uint32_t v = 0;
  std::memcpy(&v, value.data(), 4);
  return v;
}
inline std::optional<uint64_t> DecodeU64(absl::string_view value) {
  if (value.size() != 8) return std::nullopt;
  uint64_t v = 0;
  std::memcpy(&v, value.data(), 8);
  return v;
}

// meta keys.
inline std::string CollectionRecordKey(absl::string_view name) {
  return absl::StrCat(kCollectionPrefix, name);
}
inline std::string WithCollectionId(absl::string_view prefix, uint32_t cid) {
  std::string key(prefix);
  AppendBigEndian32(&key, cid);
  return key;
}
inline std::string CountKey(uint32_t cid) { return WithCollectionId("count/", cid); }
inline std::string TokenizerVersionsKey(uint32_t cid) {
  return WithCollectionId("tokenizer_versions/", cid);
}
inline std::string SidDriftKey(uint32_t cid, uint32_t version) {
  std::string key = WithCollectionId("sid_drift/", cid);
  AppendBigEndian32(&key, version);
  return key;
}
// Schema 2's keys (read by the migration only): the current version, its drift counters.
inline std::string LegacyTokenizerVersionKey(uint32_t cid) {
  return WithCollectionId("tokenizer/", cid);
}
inline std::string LegacySidDriftKey(uint32_t cid) { return WithCollectionId("sid_drift/", cid); }
inline std::string IndexVersionKey(uint32_t cid) { return WithCollectionId("index/", cid); }
inline std::string AttributeKeysKey(uint32_t cid) { return WithCollectionId("attr_keys/", cid); }
inline std::string JobKey(absl::string_view id) { return absl::StrCat(kJobPrefix, id); }

// The rows of collection `cid` in every family but meta: [CollectionBegin, CollectionEnd).
inline std::string CollectionBegin(uint32_t cid) { return WithCollectionId("", cid); }
inline std::string CollectionEnd(uint32_t cid) {
  // cid + 1 would wrap for the last id; the 5-byte key sorts after every key of cid.
  return cid == UINT32_MAX ? std::string("\xff\xff\xff\xff\xff", 5) : CollectionBegin(cid + 1);
}

// Key of item `id` in vectors, ivf and attrs (and in schema 2's codes).
inline std::string ItemKey(uint32_t cid, uint64_t id) {
  std::string key;
  key.reserve(12);
  AppendBigEndian32(&key, cid);
  AppendBigEndian64(&key, id);
  return key;
}
inline constexpr size_t kItemKeySize = 12;
// The item id of an ItemKey.
inline uint64_t ItemIdOf(absl::string_view item_key) {
  return ReadBigEndian64(item_key.data() + 4);
}

// Key of tokenizer `version` in models, and the prefix of its entries in sids.
inline std::string TokenizerModelKey(uint32_t cid, uint32_t version) {
  std::string key = CollectionBegin(cid);
  AppendBigEndian32(&key, version);
  return key;
}
// Key of index `version` in models (tokenizer keys there are 8 bytes, these 11).
inline std::string IndexModelKey(uint32_t cid, uint32_t version) {
  std::string key = CollectionBegin(cid);
  key += "ivf";
  AppendBigEndian32(&key, version);
  return key;
}

// Key of item `id`'s SID under tokenizer `version` in codes.
inline std::string CodesKey(uint32_t cid, uint32_t version, uint64_t id) {
  std::string key;
  key.reserve(16);
  AppendBigEndian32(&key, cid);
  AppendBigEndian32(&key, version);
  AppendBigEndian64(&key, id);
  return key;
}
inline constexpr size_t kCodesKeySize = 16;
inline uint64_t ItemIdOfCodesKey(absl::string_view codes_key) {
  return ReadBigEndian64(codes_key.data() + 8);
}

// Prefix in sids of a code tuple (or of its first `count` codes) under a tokenizer version;
// a full key appends the suffix (AppendBigEndian32).
inline std::string SidPrefix(uint32_t cid, uint32_t version, const int32_t* codes, int64_t count) {
  std::string key = TokenizerModelKey(cid, version);
  for (int64_t l = 0; l < count; ++l) AppendBigEndian32(&key, static_cast<uint32_t>(codes[l]));
  return key;
}
inline constexpr size_t kSidKeyHeader = 8;  // <cid><version> before the codes

}  // namespace quantd::keys

#endif  // QUANTD_SERVER_KEYS_H_
