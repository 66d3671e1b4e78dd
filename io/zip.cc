#include "io/zip.h"

#include <zlib.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "io/npy_format.h"

namespace quantd {
namespace {

// ZIP record signatures and fixed sizes (PKWARE APPNOTE 6.3).
constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalHeaderBytes = 30;
constexpr size_t kCentralHeaderBytes = 46;
constexpr size_t kEndBytes = 22;
constexpr size_t kZip64EndBytes = 56;
constexpr size_t kZip64LocatorBytes = 20;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kMethodStored = 0;
constexpr uint16_t kMethodDeflated = 8;
// Deflate's largest expansion ratio: n compressed bytes inflate to at most 1032 n bytes.
constexpr uint64_t kMaxDeflateExpansion = 1032;

// The archive's bytes with bounds-checked little-endian loads.
class Bytes {
 public:
  explicit Bytes(absl::string_view data) : data_(data) {}
  uint64_t size() const { return data_.size(); }
  // Whether [at, at + n) lies inside the archive.
  bool Has(uint64_t at, uint64_t n) const { return at <= size() && n <= size() - at; }
  const unsigned char* At(uint64_t at) const {
    return reinterpret_cast<const unsigned char*>(data_.data()) + at;
  }
  uint16_t U16(uint64_t at) const { return LoadElement<uint16_t>(At(at), false); }
  uint32_t U32(uint64_t at) const { return LoadElement<uint32_t>(At(at), false); }
  uint64_t U64(uint64_t at) const { return LoadElement<uint64_t>(At(at), false); }
  absl::string_view View(uint64_t at, uint64_t n) const { return data_.substr(at, n); }

 private:
  absl::string_view data_;
};

absl::Status Bad(absl::string_view where, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", problem));
}

// The central directory's position and entry count, from the (ZIP64) end record.
struct Directory {
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t entries = 0;
  // Where the end records start: members and the directory lie before it.
  uint64_t end = 0;
};

absl::StatusOr<Directory> FindDirectory(const Bytes& b, absl::string_view where) {
  if (b.size() < kEndBytes) {
    return Bad(where, absl::StrFormat("%d bytes: not a ZIP archive", b.size()));
  }
  // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
  const uint64_t lowest = b.size() >= kEndBytes + 0xffff ? b.size() - kEndBytes - 0xffff : 0;
  uint64_t at = b.size() - kEndBytes;
  for (;; --at) {
    if (b.U32(at) == kEndSig && at + kEndBytes + b.U16(at + 20) == b.size()) break;
    if (at == lowest) {
      return Bad(where, "no ZIP end-of-central-directory record: not a ZIP archive, or truncated");
    }
  }
  Directory d;
  d.end = at;
  const uint16_t disk = b.U16(at + 4);
  const uint16_t directory_disk = b.U16(at + 6);
  const uint16_t disk_entries = b.U16(at + 8);
  d.entries = b.U16(at + 10);
  d.size = b.U32(at + 12);
  d.offset = b.U32(at + 16);
  if (d.entries == 0xffff || d.size == 0xffffffff || d.offset == 0xffffffff) {
    // ZIP64: a locator right before the end record points at the ZIP64 end record.
    if (at < kZip64LocatorBytes || b.U32(at - kZip64LocatorBytes) != kZip64LocatorSig) {
      return Bad(where, "ZIP end record defers to a ZIP64 record, but there is no ZIP64 locator");
    }
    const uint64_t locator = at - kZip64LocatorBytes;
    const uint64_t end64 = b.U64(locator + 8);
    if (end64 > locator || !b.Has(end64, kZip64EndBytes) || b.U32(end64) != kZip64EndSig) {
      return Bad(where, absl::StrFormat("ZIP64 locator points at offset %d, where no ZIP64 end "
                                        "record is",
                                        end64));
    }
    if (b.U32(end64 + 16) != 0 || b.U32(end64 + 20) != 0 ||
        b.U64(end64 + 24) != b.U64(end64 + 32)) {
      return Bad(where, "multi-disk ZIP archives are not supported");
    }
    d.end = end64;
    d.entries = b.U64(end64 + 32);
    d.size = b.U64(end64 + 40);
    d.offset = b.U64(end64 + 48);
  } else if (disk != 0 || directory_disk != 0 || disk_entries != d.entries) {
    return Bad(where, "multi-disk ZIP archives are not supported");
  }
  if (d.offset > d.end || d.size > d.end - d.offset) {
    return Bad(where, absl::StrFormat("ZIP central directory at offset %d of %d bytes runs past "
                                      "its end record at %d",
                                      d.offset, d.size, d.end));
  }
  if (d.entries > d.size / kCentralHeaderBytes) {
    return Bad(where, absl::StrFormat("ZIP end record claims %d entries, more than a %d-byte "
                                      "central directory holds",
                                      d.entries, d.size));
  }
  return d;
}

// Reads the central directory entry at `*at` and advances past it.
absl::StatusOr<ZipEntry> ReadEntry(const Bytes& b, const Directory& d, uint64_t* at,
                                   absl::string_view where, uint64_t index) {
  const uint64_t p = *at;
  const uint64_t directory_end = d.offset + d.size;
  if (p > directory_end || directory_end - p < kCentralHeaderBytes ||
      b.U32(p) != kCentralHeaderSig) {
    return Bad(where, absl::StrFormat("ZIP central directory entry %d at offset %d: bad "
                                      "signature or truncated",
                                      index, p));
  }
  ZipEntry e;
  e.flags = b.U16(p + 8);
  e.method = b.U16(p + 10);
  e.crc = b.U32(p + 16);
  e.compressed = b.U32(p + 20);
  e.uncompressed = b.U32(p + 24);
  const uint16_t name_len = b.U16(p + 28);
  const uint16_t extra_len = b.U16(p + 30);
  const uint16_t comment_len = b.U16(p + 32);
  const uint16_t disk = b.U16(p + 34);
  e.local_offset = b.U32(p + 42);
  const uint64_t variable = uint64_t{name_len} + extra_len + comment_len;
  if (directory_end - p - kCentralHeaderBytes < variable) {
    return Bad(where, absl::StrFormat("ZIP central directory entry %d: name, extra field and "
                                      "comment (%d bytes) run past the directory",
                                      index, variable));
  }
  e.name = std::string(b.View(p + kCentralHeaderBytes, name_len));
  // ZIP64 extra field: the 64-bit values of the fields set to 0xffffffff, in this order.
  uint64_t x = p + kCentralHeaderBytes + name_len;
  const uint64_t extra_end = x + extra_len;
  bool zip64_seen = false;
  while (x + 4 <= extra_end) {
    const uint16_t id = b.U16(x);
    const uint16_t len = b.U16(x + 2);
    if (x + 4 + len > extra_end) {
      return Bad(where, absl::StrFormat("member '%s': ZIP extra field 0x%04x of %d bytes runs "
                                        "past the entry",
                                        e.name, id, len));
    }
    if (id == kZip64ExtraId) {
      zip64_seen = true;
      uint64_t field = x + 4;
      for (uint64_t* value : {&e.uncompressed, &e.compressed, &e.local_offset}) {
        if (*value != 0xffffffff) continue;
        if (field + 8 > x + 4 + len) {
          return Bad(where, absl::StrFormat("member '%s': ZIP64 extra field too short", e.name));
        }
        *value = b.U64(field);
        field += 8;
      }
    }
    x += 4 + len;
  }
  if (!zip64_seen && (e.uncompressed == 0xffffffff || e.compressed == 0xffffffff ||
                      e.local_offset == 0xffffffff)) {
    return Bad(where, absl::StrFormat("member '%s': ZIP sizes defer to a ZIP64 extra field, "
                                      "which is missing",
                                      e.name));
  }
  if (disk != 0 && disk != 0xffff) {
    return Bad(where, "multi-disk ZIP archives are not supported");
  }
  *at = p + kCentralHeaderBytes + variable;
  return e;
}

void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v & 0xffff));
  Put16(out, static_cast<uint16_t>(v >> 16));
}

}  // namespace

absl::StatusOr<ZipArchive> ZipArchive::Open(absl::string_view bytes, std::string where) {
  ZipArchive archive(bytes, std::move(where));
  const Bytes b(bytes);
  auto directory = FindDirectory(b, archive.where_);
  if (!directory.ok()) return directory.status();
  archive.directory_offset_ = directory->offset;
  archive.entries_.reserve(directory->entries);
  uint64_t at = directory->offset;
  for (uint64_t i = 0; i < directory->entries; ++i) {
    auto entry = ReadEntry(b, *directory, &at, archive.where_, i);
    if (!entry.ok()) return entry.status();
    archive.entries_.push_back(std::move(*entry));
  }
  return archive;
}

const ZipEntry* ZipArchive::Find(absl::string_view name) const {
  for (const ZipEntry& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

absl::StatusOr<absl::string_view> ZipArchive::Read(const ZipEntry& e, std::string* scratch) const {
  const Bytes b(bytes_);
  const std::string member = absl::StrFormat("%s: member '%s'", where_, e.name);
  if (e.flags & 1) return Bad(member, "encrypted ZIP members are not supported");
  const uint64_t p = e.local_offset;
  if (!b.Has(p, kLocalHeaderBytes) || p + kLocalHeaderBytes > directory_offset_ ||
      b.U32(p) != kLocalHeaderSig) {
    return Bad(member, absl::StrFormat("no ZIP local header at offset %d", p));
  }
  const uint16_t name_len = b.U16(p + 26);
  const uint16_t extra_len = b.U16(p + 28);
  const uint64_t data = p + kLocalHeaderBytes + name_len + extra_len;
  if (data > directory_offset_ || b.View(p + kLocalHeaderBytes, name_len) != e.name) {
    return Bad(member, "ZIP local header does not match the central directory");
  }
  if (e.compressed > directory_offset_ - data) {
    return Bad(member, absl::StrFormat("%d compressed bytes at offset %d run past the member "
                                       "data (the central directory starts at %d): truncated?",
                                       e.compressed, data, directory_offset_));
  }
  absl::string_view out;
  if (e.method == kMethodStored) {
    if (e.compressed != e.uncompressed) {
      return Bad(member, absl::StrFormat("stored member has compressed size %d but size %d",
                                         e.compressed, e.uncompressed));
    }
    out = b.View(data, e.compressed);
  } else if (e.method == kMethodDeflated) {
    if (e.uncompressed / kMaxDeflateExpansion > e.compressed) {
      return Bad(member, absl::StrFormat("size %d is more than %d compressed bytes can inflate to",
                                         e.uncompressed, e.compressed));
    }
    scratch->resize(e.uncompressed);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("inflateInit2 failed");
    z.next_in = const_cast<unsigned char*>(b.At(data));
    z.next_out = reinterpret_cast<unsigned char*>(scratch->data());
    uint64_t in_left = e.compressed;
    uint64_t out_left = e.uncompressed;
    int rc = Z_OK;
    while (rc == Z_OK) {
      const uInt in_chunk = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      const uInt out_chunk = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
      z.avail_in = in_chunk;
      z.avail_out = out_chunk;
      rc = inflate(&z, Z_NO_FLUSH);
      in_left -= in_chunk - z.avail_in;
      out_left -= out_chunk - z.avail_out;
      if (rc == Z_OK && z.avail_in == in_chunk && z.avail_out == out_chunk) rc = Z_BUF_ERROR;
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END || out_left != 0) {
      return Bad(member, absl::StrFormat("corrupt deflate data (zlib %d, %d of %d bytes "
                                         "inflated)",
                                         rc, e.uncompressed - out_left, e.uncompressed));
    }
    out = *scratch;
  } else {
    return Bad(member, absl::StrFormat("ZIP compression method %d is not supported (stored or "
                                       "deflated only)",
                                       e.method));
  }
  const uint32_t crc = Crc32(out);
  if (crc != e.crc) {
    return Bad(member,
               absl::StrFormat("CRC-32 0x%08x does not match the archive's 0x%08x", crc, e.crc));
  }
  return out;
}

uint32_t Crc32(absl::string_view data, uint32_t crc) {
  uLong c = crc;
  for (size_t at = 0; at < data.size(); at += 1u << 30) {
    const uInt n = static_cast<uInt>(std::min<size_t>(data.size() - at, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(data.data() + at), n);
  }
  return static_cast<uint32_t>(c);
}

absl::StatusOr<std::string> StoredZipWriter::AddMember(absl::string_view name, uint64_t size,
                                                       uint32_t crc) {
  constexpr uint16_t kVersion = 20;                       // ZIP 2.0
  constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01
  if (!names_.insert(std::string(name)).second) {
    return absl::InvalidArgumentError(absl::StrFormat("member '%s' given twice", name));
  }
  if (size >= 0xffffffffu || offset_ >= 0xffffffffu || name.size() > 0xffff ||
      count_ + 1 >= 0xffff) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "member '%s' of %d bytes is too large for a non-ZIP64 archive", name, size));
  }
  // Fields shared by the local and the central header, from "version needed" on.
  std::string common;
  Put16(common, kVersion);
  Put16(common, 0);  // flags
  Put16(common, kMethodStored);
  Put16(common, 0);  // time
  Put16(common, kDosDate);
  Put32(common, crc);
  Put32(common, static_cast<uint32_t>(size));
  Put32(common, static_cast<uint32_t>(size));
  Put16(common, static_cast<uint16_t>(name.size()));
  Put16(common, 0);  // extra length
  std::string local;
  Put32(local, kLocalHeaderSig);
  absl::StrAppend(&local, common, name);
  Put32(directory_, kCentralHeaderSig);
  Put16(directory_, kVersion);  // made by
  directory_ += common;
  Put16(directory_, 0);            // comment length
  Put16(directory_, 0);            // disk
  Put16(directory_, 0);            // internal attributes
  Put32(directory_, 0644u << 16);  // external attributes: a regular file's mode
  Put32(directory_, static_cast<uint32_t>(offset_));
  absl::StrAppend(&directory_, name);
  offset_ += local.size() + size;
  ++count_;
  return local;
}

absl::StatusOr<std::string> StoredZipWriter::Finish() const {
  if (offset_ + directory_.size() >= 0xffffffffu) {
    return absl::InvalidArgumentError("archive too large for a non-ZIP64 archive");
  }
  std::string end = directory_;
  Put32(end, kEndSig);
  Put16(end, 0);
  Put16(end, 0);
  Put16(end, static_cast<uint16_t>(count_));
  Put16(end, static_cast<uint16_t>(count_));
  Put32(end, static_cast<uint32_t>(directory_.size()));
  Put32(end, static_cast<uint32_t>(offset_));
  Put16(end, 0);
  return end;
}

absl::StatusOr<std::string> StoredZip(
    const std::vector<std::pair<std::string, std::string>>& members) {
  StoredZipWriter writer;
  std::string out;
  for (const auto& [name, bytes] : members) {
    auto local = writer.AddMember(name, bytes.size(), Crc32(bytes));
    if (!local.ok()) return local.status();
    absl::StrAppend(&out, *local, bytes);
  }
  auto end = writer.Finish();
  if (!end.ok()) return end.status();
  return out + *end;
}

}  // namespace quantd
