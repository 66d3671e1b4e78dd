#include "io/npz.h"

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
#include "io/zip.h"

namespace quantd {
namespace {

absl::Status Bad(absl::string_view path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

// Parses one member's .npy bytes.
absl::StatusOr<NpyArray> ParseMember(absl::string_view bytes, const std::string& name,
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
  auto archive = ZipArchive::Open(content, path);
  if (!archive.ok()) return archive.status();
  std::vector<NpyArray> arrays;
  std::set<std::string> names;
  std::string scratch;
  for (const ZipEntry& entry : archive->entries()) {
    if (!absl::EndsWith(entry.name, ".npy")) {
      return Bad(path, absl::StrFormat("member '%s' is not an .npy array", entry.name));
    }
    const std::string name = entry.name.substr(0, entry.name.size() - 4);
    if (!names.insert(name).second) {
      return Bad(path, absl::StrFormat("member '%s' occurs twice", entry.name));
    }
    auto bytes = archive->Read(entry, &scratch);
    if (!bytes.ok()) return bytes.status();
    auto array = ParseMember(*bytes, name, path);
    if (!array.ok()) return array.status();
    arrays.push_back(std::move(*array));
  }
  return arrays;
}

absl::Status WriteNpz(const std::string& path, const std::vector<NpzMember>& members) {
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
  StoredZipWriter zip;
  std::set<std::string> names;
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
    if (count >= 0xffffffffu / ElementSize(m.type)) {
      return fail(Bad(path, absl::StrFormat("member '%s' of %d elements is too large for a "
                                            "non-ZIP64 archive",
                                            m.name, count)));
    }
    const absl::string_view data(static_cast<const char*>(m.data), count * ElementSize(m.type));
    auto local =
        zip.AddMember(m.name + ".npy", header.size() + data.size(), Crc32(data, Crc32(header)));
    if (!local.ok()) return fail(Bad(path, local.status().message()));
    out.write(local->data(), static_cast<std::streamsize>(local->size()));
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  auto end = zip.Finish();
  if (!end.ok()) return fail(Bad(path, end.status().message()));
  out.write(end->data(), static_cast<std::streamsize>(end->size()));
  out.close();
  if (!out) return fail(absl::InvalidArgumentError(absl::StrFormat("%s: write failed", path)));
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot write: %s", path, std::strerror(errno))));
  }
  return absl::OkStatus();
}

}  // namespace quantd
