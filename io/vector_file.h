// Readers for the files embeddings come in: NumPy .npy, texmex .fvecs / .bvecs / .ivecs, and the
// IDX format of (Fashion-)MNIST, plain or gzip-compressed.
//
// A file is a matrix of `rows` x `dim` elements. Files are memory-mapped (gzip files are
// streamed) and read sequentially in chunks, so a file of any size is read once with bounded
// memory. Every header field is checked before it is trusted: hostile or truncated files give
// INVALID_ARGUMENT naming the file and the problem, never a crash or a huge allocation.
#ifndef QUANTD_IO_VECTOR_FILE_H_
#define QUANTD_IO_VECTOR_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quantd {

enum class VectorFileFormat { kNpy, kFvecs, kBvecs, kIvecs, kIdx };
absl::string_view VectorFileFormatName(VectorFileFormat format);

// Element type stored in the file.
enum class ElementType { kU8, kI8, kU16, kI16, kU32, kI32, kU64, kI64, kF32, kF64 };

// Bytes of one element of type t.
size_t ElementSize(ElementType t);

class VectorReader {
 public:
  virtual ~VectorReader() = default;

  // Opens `path`. The format comes from the content's magic bytes (.npy, IDX, gzip around
  // either) or else from the extension (.fvecs, .bvecs, .ivecs). NumPy files of more than two
  // dimensions and IDX image files (n x 28 x 28) are flattened to rows of their trailing size.
  static absl::StatusOr<std::unique_ptr<VectorReader>> Open(const std::string& path);

  VectorFileFormat format() const { return format_; }
  ElementType element_type() const { return element_type_; }
  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }
  int64_t rows_read() const { return next_row_; }
  const std::string& path() const { return path_; }

  // Reads the next min(max_rows, rows() - rows_read()) rows, converted to float32, into `out`
  // (size at least max_rows x dim(), row-major). Returns the number of rows read; 0 at the end.
  absl::StatusOr<int64_t> Read(int64_t max_rows, float* out);

  // As Read, for files of integer elements, without the float rounding of large values.
  // FAILED_PRECONDITION for floating-point files.
  absl::StatusOr<int64_t> ReadIntegers(int64_t max_rows, int64_t* out);

 protected:
  VectorReader() = default;

  // Copies the next `n` bytes of the file into `dst`; INVALID_ARGUMENT if the file ends first.
  virtual absl::Status ReadBytes(void* dst, size_t n) = 0;

  std::string path_;
  VectorFileFormat format_ = VectorFileFormat::kNpy;
  ElementType element_type_ = ElementType::kF32;
  bool big_endian_ = false;
  // texmex files prefix every row with its dimension as an int32.
  bool row_prefix_ = false;
  int64_t rows_ = 0;
  int64_t dim_ = 0;
  int64_t next_row_ = 0;

 private:
  // Reads `n` raw rows into scratch_, checking texmex row prefixes.
  absl::Status ReadRawRows(int64_t n);
  // Reads n (<= rows left) rows converted to Out, in bounded steps.
  template <typename Out>
  absl::StatusOr<int64_t> ReadConverted(int64_t n, Out* out);
  std::vector<unsigned char> scratch_;

  friend class VectorReaderFactory;
};

// Reads a whole file into a row-major float32 matrix (for tests, benchmarks and small files).
struct Matrix {
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<float> values;  // size rows x dim
};
absl::StatusOr<Matrix> ReadMatrix(const std::string& path, int64_t max_rows = -1);

// Reads a whole integer file (e.g. ground truth .ivecs) into a row-major int64 matrix.
struct IntMatrix {
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<int64_t> values;  // size rows x dim
};
absl::StatusOr<IntMatrix> ReadIntMatrix(const std::string& path);

// Reads item ids: a .npy or .ivecs of non-negative integers (one column, or any shape read in
// row-major order), or a text file with one decimal id per line (blank lines ignored).
absl::StatusOr<std::vector<uint64_t>> ReadIds(const std::string& path);

// Writes a row-major rows x dim matrix as a NumPy 1.0 .npy file ('<f4' or '<i8', C order).
absl::Status WriteNpy(const std::string& path, const float* values, int64_t rows, int64_t dim);
absl::Status WriteNpy(const std::string& path, const int64_t* values, int64_t rows, int64_t dim);
// An int64 array of any shape, e.g. {n} for a 1-D array.
absl::Status WriteNpy(const std::string& path, const int64_t* values,
                      absl::Span<const int64_t> shape);

}  // namespace quantd

#endif  // QUANTD_IO_VECTOR_FILE_H_
