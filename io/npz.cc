#include "io/npz.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
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

// The bytes of a whole file with bounds-checked little-endian loads.
class Bytes {
 public:
  explicit Bytes(std::string data) : data_(std::move(data)) {}
  uint64_t size() const { return data_.size(); }
  // Whether [at, at + n) lies inside the file.
  bool Has(uint64_t at, uint64_t n) const { return at <= size() && n <= size() - at; }
  const unsigned char* At(uint64_t at) const {
    return reinterpret_cast<const unsigned char*>(data_.data()) + at;
  }
  uint16_t U16(uint64_t at) const { return LoadElement<uint16_t>(At(at), false); }
  uint32_t U32(uint64_t at) const { return LoadElement<uint32_t>(At(at), false); }
  uint64_t U64(uint64_t at) const { return LoadElement<uint64_t>(At(at), false); }
  absl::string_view View(uint64_t at, uint64_t n) const {
    return absl::string_view(data_.data() + at, n);
  }

 private:
  std::string data_;
};

absl::Status Bad(absl::string_view path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

// A central directory entry, sizes and offset resolved through its ZIP64 extra field.
struct Entry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t local_offset = 0;
};

// The central directory's position and entry count, from the (ZIP64) end record.
struct Directory {
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t entries = 0;
  // Where the end records start: members and the directory lie before it.
  uint64_t end = 0;
};

absl::StatusOr<Directory> FindDirectory(const Bytes& b, absl::string_view path) {
  if (b.size() < kEndBytes) {
    return Bad(path, absl::StrFormat("%d bytes: not a ZIP archive (an .npz is one)", b.size()));
  }
  // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
  const uint64_t lowest = b.size() >= kEndBytes + 0xffff ? b.size() - kEndBytes - 0xffff : 0;
  uint64_t at = b.size() - kEndBytes;
  for (;; --at) {
    if (b.U32(at) == kEndSig && at + kEndBytes + b.U16(at + 20) == b.size()) break;
    if (at == lowest) {
      return Bad(path, "no ZIP end-of-central-directory record: not an .npz, or truncated");
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
      return Bad(path, "ZIP end record defers to a ZIP64 record, but there is no ZIP64 locator");
    }
    const uint64_t locator = at - kZip64LocatorBytes;
    const uint64_t end64 = b.U64(locator + 8);
    if (end64 > locator || !b.Has(end64, kZip64EndBytes) || b.U32(end64) != kZip64EndSig) {
      return Bad(path, absl::StrFormat("ZIP64 locator points at offset %d, where no ZIP64 end "
                                       "record is",
                                       end64));
    }
    if (b.U32(end64 + 16) != 0 || b.U32(end64 + 20) != 0 ||
        b.U64(end64 + 24) != b.U64(end64 + 32)) {
      return Bad(path, "multi-disk ZIP archives are not supported");
    }
    d.end = end64;
    d.entries = b.U64(end64 + 32);
    d.size = b.U64(end64 + 40);
    d.offset = b.U64(end64 + 48);
  } else if (disk != 0 || directory_disk != 0 || disk_entries != d.entries) {
    return Bad(path, "multi-disk ZIP archives are not supported");
  }
  if (d.offset > d.end || d.size > d.end - d.offset) {
    return Bad(path, absl::StrFormat("ZIP central directory at offset %d of %d bytes runs past "
                                     "its end record at %d",
                                     d.offset, d.size, d.end));
  }
  if (d.entries > d.size / kCentralHeaderBytes) {
    return Bad(path, absl::StrFormat("ZIP end record claims %d entries, more than a %d-byte "
                                     "central directory holds",
                                     d.entries, d.size));
  }
  return d;
}

// Reads the central directory entry at `*at` and advances past it.
absl::StatusOr<Entry> ReadEntry(const Bytes& b, const Directory& d, uint64_t* at,
                                absl::string_view path, uint64_t index) {
  const uint64_t p = *at;
  const uint64_t directory_end = d.offset + d.size;
  if (p > directory_end || directory_end - p < kCentralHeaderBytes ||
      b.U32(p) != kCentralHeaderSig) {
    return Bad(path, absl::StrFormat("ZIP central directory entry %d at offset %d: bad signature "
                                     "or truncated",
                                     index, p));
  }
  Entry e;
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
    return Bad(path, absl::StrFormat("ZIP central directory entry %d: name, extra field and "
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
      return Bad(path, absl::StrFormat("member '%s': ZIP extra field 0x%04x of %d bytes runs "
                                       "past the entry",
                                       e.name, id, len));
    }
    if (id == kZip64ExtraId) {
      zip64_seen = true;
      uint64_t field = x + 4;
      for (uint64_t* value : {&e.uncompressed, &e.compressed, &e.local_offset}) {
        if (*value != 0xffffffff) continue;
        if (field + 8 > x + 4 + len) {
          return Bad(path, absl::StrFormat("member '%s': ZIP64 extra field too short", e.name));
        }
        *value = b.U64(field);
        field += 8;
      }
    }
    x += 4 + len;
  }
  if (!zip64_seen && (e.uncompressed == 0xffffffff || e.compressed == 0xffffffff ||
                      e.local_offset == 0xffffffff)) {
    return Bad(path, absl::StrFormat("member '%s': ZIP sizes defer to a ZIP64 extra field, "
                                     "which is missing",
                                     e.name));
  }
  if (disk != 0 && disk != 0xffff) {
    return Bad(path, "multi-disk ZIP archives are not supported");
  }
  *at = p + kCentralHeaderBytes + variable;
  return e;
}

// The member's bytes, inflated if deflated, checked against the entry's CRC-32.
absl::StatusOr<std::string> MemberData(const Bytes& b, const Directory& d, const Entry& e,
                                       absl::string_view path) {
  const std::string member = absl::StrFormat("%s: member '%s'", path, e.name);
  if (e.flags & 1) return Bad(member, "encrypted ZIP members are not supported");
  const uint64_t p = e.local_offset;
  if (!b.Has(p, kLocalHeaderBytes) || p + kLocalHeaderBytes > d.offset ||
      b.U32(p) != kLocalHeaderSig) {
    return Bad(member, absl::StrFormat("no ZIP local header at offset %d", p));
  }
  const uint16_t name_len = b.U16(p + 26);
  const uint16_t extra_len = b.U16(p + 28);
  const uint64_t data = p + kLocalHeaderBytes + name_len + extra_len;
  if (data > d.offset || b.View(p + kLocalHeaderBytes, name_len) != e.name) {
    return Bad(member, "ZIP local header does not match the central directory");
  }
  if (e.compressed > d.offset - data) {
    return Bad(member, absl::StrFormat("%d compressed bytes at offset %d run past the member "
                                       "data (the central directory starts at %d): truncated?",
                                       e.compressed, data, d.offset));
  }
  std::string out;
  if (e.method == kMethodStored) {
    if (e.compressed != e.uncompressed) {
      return Bad(member, absl::StrFormat("stored member has compressed size %d but size %d",
                                         e.compressed, e.uncompressed));
    }
    out = std::string(b.View(data, e.compressed));
  } else if (e.method == kMethodDeflated) {
    if (e.uncompressed / kMaxDeflateExpansion > e.compressed) {
      return Bad(member, absl::StrFormat("size %d is more than %d compressed bytes can inflate to",
                                         e.uncompressed, e.compressed));
    }
    out.resize(e.uncompressed);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("inflateInit2 failed");
    z.next_in = const_cast<unsigned char*>(b.At(data));
    z.next_out = reinterpret_cast<unsigned char*>(out.data());
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
  } else {
    return Bad(member, absl::StrFormat("ZIP compression method %d is not supported (stored or "
                                       "deflated only)",
                                       e.method));
  }
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t at = 0; at < out.size(); at += 1u << 30) {
    const uInt n = static_cast<uInt>(std::min<size_t>(out.size() - at, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(out.data() + at), n);
  }
  if (crc != e.crc) {
    return Bad(member,
               absl::StrFormat("CRC-32 0x%08x does not match the archive's 0x%08x", crc, e.crc));
  }
  return out;
}

// Parses one member's .npy bytes.
absl::StatusOr<NpyArray> ParseMember(const std::string& bytes, const std::string& name,
                                     absl::string_view path) {
  const std::string where = absl::StrFormat("%s: member '%s.npy'", path, name);
  size_t offset = 0;
  auto header = ReadNpyHeader(
      [&](void* dst, size_t n) -> absl::Status {
        if (n > bytes.size() - offset) {
          return Bad(where, absl::StrFormat("truncated .npy: needed %d bytes at offset %d, the "
                                            "member has %d",
                                            n, offset, bytes.size()));
        }
        std::memcpy(dst, bytes.data() + offset, n);
        offset += n;
        return absl::OkStatus();
      },
      where);
  if (!header.ok()) return header.status();
  NpyArray array;
  array.name = name;
  array.type = header->type;
  array.big_endian = header->big_endian;
  array.shape = header->shape;
  uint64_t count = 1;
  for (int64_t extent : array.shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(extent), &count)) {
      return Bad(where, "shape overflows");
    }
  }
  const uint64_t item = ElementSize(array.type);
  const uint64_t payload = bytes.size() - offset;
  if (count > payload / item || count * item != payload) {
    return Bad(where, absl::StrFormat("the header promises %d elements (%d bytes), the member "
                                      "holds %d bytes after the header",
                                      count, count > payload / item ? 0 : count * item, payload));
  }
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(offset), bytes.end());
  return array;
}

}  // namespace

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (int64_t extent : shape) n *= extent;
  return n;
}

std::vector<float> NpyArray::ToFloat() const {
  std::vector<float> out(static_cast<size_t>(size()));
  ConvertElements(data.data(), type, big_endian, size(), out.data());
  return out;
}

absl::StatusOr<std::vector<int64_t>> NpyArray::ToInt64() const {
  if (type == ElementType::kF32 || type == ElementType::kF64) {
    return absl::FailedPreconditionError(
        absl::StrFormat("array '%s' holds floating-point values, not integers", name));
  }
  std::vector<int64_t> out(static_cast<size_t>(size()));
  ConvertElements(data.data(), type, big_endian, size(), out.data());
  if (type == ElementType::kU64) {
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] < 0) {
        return absl::FailedPreconditionError(
            absl::StrFormat("array '%s' element %d exceeds the int64 range", name, i));
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<NpyArray>> ReadNpz(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot open: %s", path, std::strerror(errno)));
  }
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::InvalidArgumentError(absl::StrFormat("%s: read error", path));
  const Bytes b(std::move(content));
  auto directory = FindDirectory(b, path);
  if (!directory.ok()) return directory.status();
  std::vector<NpyArray> arrays;
  std::set<std::string> names;
  uint64_t at = directory->offset;
  for (uint64_t i = 0; i < directory->entries; ++i) {
    auto entry = ReadEntry(b, *directory, &at, path, i);
    if (!entry.ok()) return entry.status();
    if (!absl::EndsWith(entry->name, ".npy")) {
      return Bad(path, absl::StrFormat("member '%s' is not an .npy array", entry->name));
    }
    const std::string name = entry->name.substr(0, entry->name.size() - 4);
    if (!names.insert(name).second) {
      return Bad(path, absl::StrFormat("member '%s' occurs twice", entry->name));
    }
    auto bytes = MemberData(b, *directory, *entry, path);
    if (!bytes.ok()) return bytes.status();
    auto array = ParseMember(*bytes, name, path);
    if (!array.ok()) return array.status();
    arrays.push_back(std::move(*array));
  }
  return arrays;
}

namespace {

void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v & 0xffff));
  Put16(out, static_cast<uint16_t>(v >> 16));
}

}  // namespace

absl::Status WriteNpz(const std::string& path, const std::vector<NpzMember>& members) {
  constexpr uint16_t kVersion = 20;                       // ZIP 2.0
  constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01
  // Written beside `path` and renamed at the end, so that an error leaves no partial archive.
  const std::string partial = path + ".partial";
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot write: %s", path, std::strerror(errno)));
  }
  auto fail = [&](absl::Status status) {
    out.close();
    std::remove(partial.c_str());
    return status;
  };
  std::string directory;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const NpzMember& m : members) {
    if (m.type != ElementType::kF32 && m.type != ElementType::kI64) {
      return fail(absl::InvalidArgumentError(absl::StrFormat(
          "%s: member '%s': only float32 and int64 arrays are written", path, m.name)));
    }
    if (!names.insert(m.name).second) {
      return fail(
          absl::InvalidArgumentError(absl::StrFormat("%s: member '%s' given twice", path, m.name)));
    }
    uint64_t count = 1;
    for (int64_t extent : m.shape) {
      if (extent < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(extent), &count)) {
        return fail(absl::InvalidArgumentError(
            absl::StrFormat("%s: member '%s': bad extent %d", path, m.name, extent)));
      }
    }
    const std::string header = NpyHeaderBytes(NpyDescr(m.type), m.shape);
    const uint64_t bytes = count * ElementSize(m.type);
    const uint64_t size = header.size() + bytes;
    const std::string file_name = m.name + ".npy";
    if (count >= 0xffffffffu || size >= 0xffffffffu || offset >= 0xffffffffu ||
        file_name.size() > 0xffff) {
      return fail(absl::InvalidArgumentError(absl::StrFormat(
          "%s: member '%s' of %d bytes is too large for a non-ZIP64 archive", path, m.name, size)));
    }
    uLong crc =
        crc32(0L, reinterpret_cast<const Bytef*>(header.data()), static_cast<uInt>(header.size()));
    crc = crc32(crc, static_cast<const Bytef*>(m.data), static_cast<uInt>(bytes));
    // Fields shared by the local and the central header, from "version needed" on.
    std::string common;
    Put16(common, kVersion);
    Put16(common, 0);  // flags
    Put16(common, kMethodStored);
    Put16(common, 0);  // time
    Put16(common, kDosDate);
    Put32(common, static_cast<uint32_t>(crc));
    Put32(common, static_cast<uint32_t>(size));
    Put32(common, static_cast<uint32_t>(size));
    Put16(common, static_cast<uint16_t>(file_name.size()));
    Put16(common, 0);  // extra length
    std::string local;
    Put32(local, kLocalHeaderSig);
    local += common;
    local += file_name;
    out.write(local.data(), static_cast<std::streamsize>(local.size()));
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(m.data), static_cast<std::streamsize>(bytes));
    Put32(directory, kCentralHeaderSig);
    Put16(directory, kVersion);  // made by
    directory += common;
    Put16(directory, 0);            // comment length
    Put16(directory, 0);            // disk
    Put16(directory, 0);            // internal attributes
    Put32(directory, 0644u << 16);  // external attributes: a regular file's mode
    Put32(directory, static_cast<uint32_t>(offset));
    directory += file_name;
    offset += local.size() + size;
  }
  if (offset + directory.size() >= 0xffffffffu || members.size() >= 0xffff) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("%s: archive too large for a non-ZIP64 archive", path)));
  }
  std::string end;
  Put32(end, kEndSig);
  Put16(end, 0);
  Put16(end, 0);
  Put16(end, static_cast<uint16_t>(members.size()));
  Put16(end, static_cast<uint16_t>(members.size()));
  Put32(end, static_cast<uint32_t>(directory.size()));
  Put32(end, static_cast<uint32_t>(offset));
  Put16(end, 0);
  out.write(directory.data(), static_cast<std::streamsize>(directory.size()));
  out.write(end.data(), static_cast<std::streamsize>(end.size()));
  out.close();
  if (!out) return fail(absl::InvalidArgumentError(absl::StrFormat("%s: write failed", path)));
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot write: %s", path, std::strerror(errno))));
  }
  return absl::OkStatus();
}

}  // namespace quantd
