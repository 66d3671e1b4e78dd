#include "io/npy_format.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace quantd {
namespace {

// Longest .npy header dict accepted (NumPy's own limit for version 1 is 65535 bytes).
constexpr uint32_t kMaxNpyHeaderBytes = 1 << 16;

template <typename Out>
void Convert(const unsigned char* src, ElementType t, bool big_endian, int64_t count, Out* out) {
  auto loop = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < count; ++i) {
      out[i] = static_cast<Out>(LoadElement<T>(src + i * sizeof(T), big_endian));
    }
  };
  switch (t) {
    case ElementType::kU8:
      return loop(uint8_t{});
    case ElementType::kI8:
      return loop(int8_t{});
    case ElementType::kU16:
      return loop(uint16_t{});
    case ElementType::kI16:
      return loop(int16_t{});
    case ElementType::kU32:
      return loop(uint32_t{});
    case ElementType::kI32:
      return loop(int32_t{});
    case ElementType::kU64:
      return loop(uint64_t{});
    case ElementType::kI64:
      return loop(int64_t{});
    case ElementType::kF32:
      return loop(float{});
    case ElementType::kF64:
      return loop(double{});
  }
}

// Parses the value of `key` in a NumPy header dict literal such as
// "{'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }".
std::optional<std::string> NpyHeaderValue(absl::string_view header, absl::string_view key) {
  for (const char quote : {'\'', '"'}) {
    const std::string needle = absl::StrCat(std::string(1, quote), key, std::string(1, quote));
    const size_t at = header.find(needle);
    if (at == absl::string_view::npos) continue;
    size_t pos = header.find(':', at + needle.size());
    if (pos == absl::string_view::npos) return std::nullopt;
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(header.substr(pos + 1));
    if (rest.empty()) return std::nullopt;
    if (rest[0] == '\'' || rest[0] == '"') {
      const size_t end = rest.find(rest[0], 1);
      if (end == absl::string_view::npos) return std::nullopt;
      return std::string(rest.substr(1, end - 1));
    }
    if (rest[0] == '(') {
      const size_t end = rest.find(')');
      if (end == absl::string_view::npos) return std::nullopt;
      return std::string(rest.substr(0, end + 1));
    }
    const size_t end = rest.find_first_of(",}");
    return std::string(absl::StripAsciiWhitespace(rest.substr(0, end)));
  }
  return std::nullopt;
}

struct TypeCode {
  char kind;
  int size;
  ElementType type;
};
constexpr TypeCode kTypes[] = {{'u', 1, ElementType::kU8},  {'i', 1, ElementType::kI8},
                               {'u', 2, ElementType::kU16}, {'i', 2, ElementType::kI16},
                               {'u', 4, ElementType::kU32}, {'i', 4, ElementType::kI32},
                               {'u', 8, ElementType::kU64}, {'i', 8, ElementType::kI64},
                               {'f', 4, ElementType::kF32}, {'f', 8, ElementType::kF64}};

}  // namespace

void ConvertElements(const unsigned char* src, ElementType t, bool big_endian, int64_t count,
                     float* out) {
  Convert(src, t, big_endian, count, out);
}

void ConvertElements(const unsigned char* src, ElementType t, bool big_endian, int64_t count,
                     int64_t* out) {
  Convert(src, t, big_endian, count, out);
}

absl::StatusOr<NpyHeader> ReadNpyHeader(absl::FunctionRef<absl::Status(void*, size_t)> read,
                                        absl::string_view name) {
  unsigned char magic[8];
  if (auto s = read(magic, 8); !s.ok()) return s;
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: bad .npy magic", name));
  }
  const int major = magic[6];
  if (major < 1 || major > 3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unsupported .npy format version %d.%d", name, major, magic[7]));
  }
  NpyHeader out;
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char len[2];
    if (auto s = read(len, 2); !s.ok()) return s;
    header_len = LoadElement<uint16_t>(len, false);
    out.header_bytes = 10;
  } else {
    unsigned char len[4];
    if (auto s = read(len, 4); !s.ok()) return s;
    header_len = LoadElement<uint32_t>(len, false);
    out.header_bytes = 12;
  }
  if (header_len > kMaxNpyHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: .npy header length %d exceeds %d", name,
                                                      header_len, kMaxNpyHeaderBytes));
  }
  out.header_bytes += header_len;
  std::string header(header_len, '\0');
  if (auto s = read(header.data(), header_len); !s.ok()) return s;

  const auto descr = NpyHeaderValue(header, "descr");
  const auto fortran = NpyHeaderValue(header, "fortran_order");
  const auto shape = NpyHeaderValue(header, "shape");
  if (!descr || !fortran || !shape) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: .npy header lacks descr, fortran_order or shape: %s", name, header));
  }
  if (*fortran != "False") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: Fortran-order arrays are not supported; save with np.ascontiguousarray", name));
  }
  // descr: byte order, kind, item size, e.g. "<f4", "|u1", ">i8" (object arrays: "|O", no size).
  if (descr->size() < 2 || descr->find_first_of("<>|=") != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unsupported .npy dtype '%s'", name, *descr));
  }
  const char kind = (*descr)[1];
  int size = 0;
  if (!absl::SimpleAtoi(descr->substr(2), &size)) size = -1;
  bool found = false;
  for (const TypeCode& t : kTypes) {
    if (t.kind == kind && t.size == size) {
      out.type = t.type;
      found = true;
    }
  }
  if (!found) {
    const char* why = kind == 'O' ? " (object arrays hold Python objects, not numbers)" : "";
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: unsupported .npy dtype '%s'%s; use float32, float64 or an integer type", name, *descr,
        why));
  }
  out.big_endian = (*descr)[0] == '>';

  // shape: "()", "(n,)", "(n, d)", "(n, a, b)".
  absl::string_view dims = *shape;
  dims = absl::StripPrefix(absl::StripSuffix(dims, ")"), "(");
  const std::vector<absl::string_view> parts = absl::StrSplit(dims, ',');
  for (size_t i = 0; i < parts.size(); ++i) {
    const absl::string_view part = absl::StripAsciiWhitespace(parts[i]);
    // Only a one-element tuple's trailing comma, "(n,)", leaves an empty part (and "()").
    if (part.empty() && i + 1 == parts.size() && (i > 0 || parts.size() == 1)) break;
    int64_t extent = 0;
    if (!absl::SimpleAtoi(part, &extent) || extent < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: bad .npy shape %s", name, *shape));
    }
    out.shape.push_back(extent);
  }
  return out;
}

std::string NpyDescr(ElementType type) {
  for (const TypeCode& t : kTypes) {
    if (t.type == type) {
      return absl::StrFormat("%c%c%d", t.size == 1 ? '|' : '<', t.kind, t.size);
    }
  }
  return "";
}

std::string NpyHeaderBytes(absl::string_view descr, absl::Span<const int64_t> shape) {
  const std::string extents =
      shape.size() == 1 ? absl::StrCat(shape[0], ",") : absl::StrJoin(shape, ", ");
  std::string header =
      absl::StrFormat("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, extents);
  // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64 and
  // ended by a newline, as NumPy writes it.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  std::string prefix("\x93NUMPY\x01\x00", 8);
  const uint16_t length = static_cast<uint16_t>(header.size());
  prefix.push_back(static_cast<char>(length & 0xff));
  prefix.push_back(static_cast<char>(length >> 8));
  return prefix + header;
}

}  // namespace quantd
