// NumPy .npz archives: a ZIP file of .npy members, as numpy.savez (stored) and
// numpy.savez_compressed (deflated) write them, ZIP64 records included.
//
// The reader checks every ZIP and .npy header field before trusting it: a hostile or truncated
// file gives INVALID_ARGUMENT naming the file, the member and the problem, never a crash, and
// no allocation beyond what the file's size can hold (deflate expands at most 1032-fold). The
// writer writes stored (uncompressed) archives of float32 and int64 arrays that numpy.load reads.
#ifndef QUANTD_IO_NPZ_H_
#define QUANTD_IO_NPZ_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/vector_file.h"

namespace quantd {

// One array of an archive.
struct NpyArray {
  // The member's name without ".npy" ("arr_0").
  std::string name;
  ElementType type = ElementType::kF32;
  // Byte order of `data` as stored (">" dtypes); ToFloat / ToInt64 convert.
  bool big_endian = false;
  // Extents; empty for a scalar.
  std::vector<int64_t> shape;
  // The elements in C order, ElementSize(type) bytes each.
  std::vector<unsigned char> data;

  // Number of elements: the product of the extents.
  int64_t size() const;
  // The elements converted to float32 (floating and integer types) or int64 (integer types;
  // FAILED_PRECONDITION for floating ones, and for uint64 values above INT64_MAX).
  std::vector<float> ToFloat() const;
  absl::StatusOr<std::vector<int64_t>> ToInt64() const;
};

// Reads every member of the .npz archive `path`, in archive order.
absl::StatusOr<std::vector<NpyArray>> ReadNpz(const std::string& path);

// An array to write: float32 or int64 elements in C order, `shape` giving their extents.
struct NpzMember {
  std::string name;  // without ".npy"
  ElementType type = ElementType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes `members` as a stored .npz archive (each "<name>.npy", with CRC-32s). Types other than
// kF32 and kI64, members of 4 GiB or more and duplicate names are INVALID_ARGUMENT.
absl::Status WriteNpz(const std::string& path, const std::vector<NpzMember>& members);

}  // namespace quantd

#endif  // QUANTD_IO_NPZ_H_
