// ZIP archives in memory (PKWARE APPNOTE 6.3): the reader behind NumPy .npz files (io/npz.h) and
// PyTorch checkpoints (io/torch_checkpoint.h), and a writer of stored (uncompressed) archives.
//
// The reader checks every field before trusting it: a hostile or truncated archive gives
// INVALID_ARGUMENT prefixed with the caller's `where` (a path, or "torch checkpoint") and the
// member, never a crash, and allocates nothing beyond what the archive's size can hold (its
// directory entries, and a deflated member's data, which expands at most 1032-fold). Stored
// and deflated members, ZIP64 records, extra fields (e.g. PyTorch's alignment padding) are
// read; encrypted, multi-disk and other compression methods are refused.
#ifndef QUANTD_IO_ZIP_H_
#define QUANTD_IO_ZIP_H_

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

// One member, from its central directory entry (ZIP64 fields resolved).
struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t local_offset = 0;
};

// An archive's directory over bytes the caller keeps alive (and unchanged) while it is used.
class ZipArchive {
 public:
  // Finds the (ZIP64) end record and reads every central directory entry. Errors name `where`.
  static absl::StatusOr<ZipArchive> Open(absl::string_view bytes, std::string where);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  // The entry named `name`, or null (the first one if the name occurs twice).
  const ZipEntry* Find(absl::string_view name) const;
  // The member's bytes, checked against the entry's CRC-32: a view into the archive for a
  // stored member, else inflated into *scratch, which the view then points into.
  absl::StatusOr<absl::string_view> Read(const ZipEntry& entry, std::string* scratch) const;

 private:
  ZipArchive(absl::string_view bytes, std::string where)
      : bytes_(bytes), where_(std::move(where)) {}
  absl::string_view bytes_;
  std::string where_;
  uint64_t directory_offset_ = 0;  // members lie before it
  std::vector<ZipEntry> entries_;
};

// CRC-32 (zlib's) of data, continuing `crc`.
uint32_t Crc32(absl::string_view data, uint32_t crc = 0);

// Writes a stored archive without ZIP64 records, which unzip, numpy.load and torch.load read:
// for every member, write AddMember's local header and then its `size` bytes; after the last,
// write Finish(). Errors (INVALID_ARGUMENT, naming the member): a name given twice or longer
// than 65535 bytes, a member, an offset or the directory reaching 4 GiB, 65535 members.
class StoredZipWriter {
 public:
  absl::StatusOr<std::string> AddMember(absl::string_view name, uint64_t size, uint32_t crc);
  absl::StatusOr<std::string> Finish() const;

 private:
  std::set<std::string, std::less<>> names_;
  std::string directory_;
  uint64_t offset_ = 0;  // bytes written so far: headers and member data
  uint64_t count_ = 0;
};

// A whole stored archive of (name, bytes) members, in order. Errors as StoredZipWriter.
absl::StatusOr<std::string> StoredZip(
    const std::vector<std::pair<std::string, std::string>>& members);

}  // namespace quantd

#endif  // QUANTD_IO_ZIP_H_
