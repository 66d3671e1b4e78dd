// The NumPy .npy format's pieces shared by the .npy reader (vector_file.cc) and the .npz
// archive reader and writer (npz.cc): the header (magic, version, dict literal), element types
// and their byte order, and the header NumPy writes.
//
// Format: "\x93NUMPY", major and minor version bytes, the header length (2 bytes little-endian
// in version 1, 4 bytes in versions 2 and 3), then a Python dict literal such as
// "{'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }" padded with spaces and a
// newline, then the elements in C order.
#ifndef QUANTD_IO_NPY_FORMAT_H_
#define QUANTD_IO_NPY_FORMAT_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "io/vector_file.h"

namespace quantd {

// Loads a T stored at `p` in the given byte order.
template <typename T>
T LoadElement(const unsigned char* p, bool big_endian) {
  using U = std::conditional_t<
      sizeof(T) == 1, uint8_t,
      std::conditional_t<sizeof(T) == 2, uint16_t,
                         std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>>;
  U bits;
  std::memcpy(&bits, p, sizeof(U));
  if (big_endian) {
    if constexpr (sizeof(U) == 2) bits = __builtin_bswap16(bits);
    if constexpr (sizeof(U) == 4) bits = __builtin_bswap32(bits);
    if constexpr (sizeof(U) == 8) bits = __builtin_bswap64(bits);
  }
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Converts `count` elements of type `t` in the given byte order at `src` to float32 / int64.
void ConvertElements(const unsigned char* src, ElementType t, bool big_endian, int64_t count,
                     float* out);
void ConvertElements(const unsigned char* src, ElementType t, bool big_endian, int64_t count,
                     int64_t* out);

// A parsed .npy header.
struct NpyHeader {
  ElementType type = ElementType::kF32;
  bool big_endian = false;
  // The extents; empty for a scalar.
  std::vector<int64_t> shape;
  // Bytes before the elements (magic, version, length and the dict).
  int64_t header_bytes = 0;
};

// Reads and checks a .npy header through `read` (which copies the next n bytes into dst or
// fails if the data ends first). Errors are INVALID_ARGUMENT and start with `name` (the file,
// or the file and the archive member). Supports versions 1-3, byte orders < > | =, the kinds
// u i f of sizes 1 2 4 8 (f: 4 and 8), C order; rejects anything else by name.
absl::StatusOr<NpyHeader> ReadNpyHeader(absl::FunctionRef<absl::Status(void*, size_t)> read,
                                        absl::string_view name);

// The bytes NumPy writes before the elements of a C-order array of dtype `descr` ("<f4") and
// `shape`: version 1.0, the dict padded with spaces to a multiple of 64 bytes, ended by '\n'.
std::string NpyHeaderBytes(absl::string_view descr, absl::Span<const int64_t> shape);

// "<f4" for kF32, "<i8" for kI64, ... (little-endian).
std::string NpyDescr(ElementType type);

}  // namespace quantd

#endif  // QUANTD_IO_NPY_FORMAT_H_
