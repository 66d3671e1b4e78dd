// Internals shared by store.cc (collections, items) and store_sids.cc (semantic IDs, jobs):
// the in-memory collection state and the key encodings. Not for use outside Store.
#ifndef QUANTD_SERVER_STORE_INTERNAL_H_
#define QUANTD_SERVER_STORE_INTERNAL_H_

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "rocksdb/db.h"
#include "rocksdb/status.h"
#include "server/index.h"
#include "server/store.h"
#include "server/tokenizer.h"

namespace quantd {

// In-memory state of one collection. `info` is immutable but for item_count, which changes
// under write_mu; `dropped` tells writers that raced with a drop to give up. The tokenizer is
// replaced only under write_mu (so a writer holding write_mu sees a stable one) and read by
// anyone under tokenizer_mu.
struct Store::Collection {
  CollectionInfo info;
  std::mutex write_mu;
  bool dropped = false;  // guarded by write_mu
  std::atomic<uint64_t> item_count{0};

  mutable std::mutex tokenizer_mu;
  std::shared_ptr<const Tokenizer> tokenizer;  // null until trained; guarded by tokenizer_mu
  absl::Status tokenizer_error;                // DATA_LOSS if the stored blob is corrupt

  // Same rules for the IVF-PQ index (its item lists change under the ServingIndex's own mutex).
  mutable std::mutex index_mu;
  std::shared_ptr<ServingIndex> index;  // null until trained; guarded by index_mu
  absl::Status index_error;             // DATA_LOSS if the stored index is corrupt
};

namespace store_internal {

inline constexpr char kCollectionPrefix[] = "collection/";
inline constexpr char kCountPrefix[] = "count/";
inline constexpr char kTokenizerPrefix[] = "tokenizer/";
inline constexpr char kJobPrefix[] = "job/";
inline constexpr char kIndexPrefix[] = "index/";
inline constexpr char kNextCollectionIdKey[] = "next_collection_id";
inline constexpr char kMetaFamily[] = "meta";
inline constexpr char kVectorsFamily[] = "vectors";
inline constexpr char kModelsFamily[] = "models";
inline constexpr char kCodesFamily[] = "codes";
inline constexpr char kSidsFamily[] = "sids";
inline constexpr char kIvfFamily[] = "ivf";

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

inline std::string CollectionKey(absl::string_view name) {
  return absl::StrCat(kCollectionPrefix, name);
}
inline std::string CountKey(uint32_t cid) {
  std::string key = kCountPrefix;
  AppendBigEndian32(&key, cid);
  return key;
}
inline std::string TokenizerKey(uint32_t cid) {
  std::string key = kTokenizerPrefix;
  AppendBigEndian32(&key, cid);
  return key;
}
// Prefix of every row of collection `cid` in vectors, codes and sids.
inline std::string CollectionPrefix(uint32_t cid) {
  std::string key;
  AppendBigEndian32(&key, cid);
  return key;
}
// Key of item `id` in vectors and codes.
inline std::string ItemKey(uint32_t cid, uint64_t id) {
  std::string key;
  key.reserve(12);
  AppendBigEndian32(&key, cid);
  AppendBigEndian64(&key, id);
  return key;
}
// Key of tokenizer `version` in models, and the prefix of its entries in sids.
inline std::string VersionKey(uint32_t cid, uint32_t version) {
  std::string key;
  AppendBigEndian32(&key, cid);
  AppendBigEndian32(&key, version);
  return key;
}
inline std::string IndexKey(uint32_t cid) {
  std::string key = kIndexPrefix;
  AppendBigEndian32(&key, cid);
  return key;
}
// Key of index `version` in models (tokenizer keys there are 8 bytes, these 11).
inline std::string IndexModelKey(uint32_t cid, uint32_t version) {
  std::string key;
  AppendBigEndian32(&key, cid);
  key += "ivf";
  AppendBigEndian32(&key, version);
  return key;
}
inline std::string EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &v, 8);
  return out;
}
inline std::string EncodeU32(uint32_t v) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &v, 4);
  return out;
}

// Maps a RocksDB status to ours: corruption is DATA_LOSS, I/O trouble UNAVAILABLE.
inline absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsInvalidArgument() || s.IsNotSupported()) return absl::InternalError(message);
  return absl::UnavailableError(message);
}

// The values of `keys` in `family`, read with one MultiGet (one consistent snapshot):
// values[i] and statuses[i] belong to keys[i].
struct PointReads {
  std::vector<rocksdb::PinnableSlice> values;
  std::vector<rocksdb::Status> statuses;
};
inline PointReads MultiGet(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family,
                           const std::vector<std::string>& keys) {
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  PointReads reads;
  reads.values.resize(keys.size());
  reads.statuses.resize(keys.size());
  db->MultiGet(rocksdb::ReadOptions(), family, slices.size(), slices.data(), reads.values.data(),
               reads.statuses.data());
  return reads;
}

// The first key after every key starting with `prefix`.
inline std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff) prefix.pop_back();
  if (!prefix.empty()) prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

// Visits every key/value of `family` starting with `prefix`, in key order, until `visit`
// returns false.
template <typename Visit>
inline absl::Status ScanPrefix(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family,
                               const std::string& prefix, Visit visit) {
  const std::string end = PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, family));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    if (!visit(it->key(), it->value())) break;
  }
  return FromRocks(it->status(), "scan");
}

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace store_internal
}  // namespace quantd

#endif  // QUANTD_SERVER_STORE_INTERNAL_H_
