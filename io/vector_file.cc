#include "io/vector_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "io/npy_format.h"

namespace quantd {
namespace {

static_assert(std::endian::native == std::endian::little, "quantd assumes a little-endian host");

// Upper bounds that keep hostile headers from causing huge allocations or overflow.
constexpr int64_t kMaxFileDim = int64_t{1} << 24;
// Deflate's largest expansion ratio: a gzip file of n bytes decompresses to at most 1032 n bytes.
constexpr int64_t kMaxGzipExpansion = 1032;

bool IsFloating(ElementType t) { return t == ElementType::kF32 || t == ElementType::kF64; }

absl::Status Truncated(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: truncated file: %s", path, what));
}

}  // namespace

size_t ElementSize(ElementType t) {
  switch (t) {
    case ElementType::kU8:
    case ElementType::kI8:
      return 1;
    case ElementType::kU16:
    case ElementType::kI16:
      return 2;
    case ElementType::kU32:
    case ElementType::kI32:
    case ElementType::kF32:
      return 4;
    case ElementType::kU64:
    case ElementType::kI64:
    case ElementType::kF64:
      return 8;
  }
  return 1;
}

absl::string_view VectorFileFormatName(VectorFileFormat format) {
  switch (format) {
    case VectorFileFormat::kNpy:
      return "npy";
    case VectorFileFormat::kFvecs:
      return "fvecs";
    case VectorFileFormat::kBvecs:
      return "bvecs";
    case VectorFileFormat::kIvecs:
      return "ivecs";
    case VectorFileFormat::kIdx:
      return "idx";
  }
  return "unknown";
}

// A memory-mapped file, read front to back.
class MappedVectorReader : public VectorReader {
 public:
  ~MappedVectorReader() override {
    if (data_ != nullptr && size_ > 0) munmap(const_cast<unsigned char*>(data_), size_);
  }
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
  size_t offset_ = 0;

  absl::Status ReadBytes(void* dst, size_t n) override {
    if (n > size_ - offset_) {
      return Truncated(
          path_, absl::StrFormat("needed %d bytes at offset %d, file has %d", n, offset_, size_));
    }
    std::memcpy(dst, data_ + offset_, n);
    offset_ += n;
    return absl::OkStatus();
  }
};

// A gzip-compressed file, decompressed as it is read.
class GzipVectorReader : public VectorReader {
 public:
  ~GzipVectorReader() override {
    if (file_ != nullptr) gzclose(file_);
  }
  gzFile file_ = nullptr;
  uint64_t offset_ = 0;
  // Size of the compressed file, which bounds what its header may promise.
  int64_t compressed_size_ = 0;

  absl::Status ReadBytes(void* dst, size_t n) override {
    auto* out = static_cast<unsigned char*>(dst);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
      const int got = gzread(file_, out, chunk);
      if (got < 0) {
        int err = 0;
        const char* message = gzerror(file_, &err);
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: corrupt gzip stream: %s", path_, message));
      }
      if (got == 0) {
        return Truncated(path_, absl::StrFormat("gzip data ends at %d bytes", offset_));
      }
      out += got;
      n -= static_cast<size_t>(got);
      offset_ += static_cast<uint64_t>(got);
    }
    return absl::OkStatus();
  }
};

// Parses headers and sets up readers; a friend of VectorReader.
class VectorReaderFactory {
 public:
  static absl::StatusOr<std::unique_ptr<VectorReader>> Open(const std::string& path);

 private:
  static absl::Status ParseNpy(VectorReader& r, int64_t payload_size);
  static absl::Status ParseIdx(VectorReader& r, int64_t payload_size);
  static absl::Status ParseXvecs(MappedVectorReader& r);
  static absl::Status CheckPayload(VectorReader& r, int64_t header_bytes, int64_t file_size);
};

namespace {

bool MulOverflows(int64_t a, int64_t b, int64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

absl::Status VectorReaderFactory::CheckPayload(VectorReader& r, int64_t header_bytes,
                                               int64_t file_size) {
  int64_t payload = 0;
  if (MulOverflows(r.rows_, r.dim_, &payload) ||
      MulOverflows(payload, static_cast<int64_t>(ElementSize(r.element_type_)), &payload)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: shape %d x %d overflows", r.path_, r.rows_, r.dim_));
  }
  if (file_size < 0) {
    // Streamed (gzip, the only reader opened without a size): its data size is unknown until
    // read, but a header promising more than the stream can expand to is refused now, before any
    // buffer is sized from it. Other truncations show while reading.
    const int64_t compressed = static_cast<const GzipVectorReader&>(r).compressed_size_;
    int64_t most = 0;
    if (MulOverflows(compressed, kMaxGzipExpansion, &most) || payload <= most - header_bytes) {
      return absl::OkStatus();
    }
    return Truncated(r.path_, absl::StrFormat("header promises %d x %d elements (%d bytes), more "
                                              "than a %d-byte gzip file can hold",
                                              r.rows_, r.dim_, payload, compressed));
  }
  const int64_t available = file_size - header_bytes;
  if (available < payload) {
    return Truncated(r.path_, absl::StrFormat("header promises %d x %d elements (%d bytes), "
                                              "file holds %d bytes after the header",
                                              r.rows_, r.dim_, payload, available));
  }
  if (available > payload) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d unexpected bytes after the %d x %d elements the header describes",
                        r.path_, available - payload, r.rows_, r.dim_));
  }
  return absl::OkStatus();
}

absl::Status VectorReaderFactory::ParseNpy(VectorReader& r, int64_t file_size) {
  auto header = ReadNpyHeader([&r](void* dst, size_t n) { return r.ReadBytes(dst, n); }, r.path_);
  if (!header.ok()) return header.status();
  r.element_type_ = header->type;
  r.big_endian_ = header->big_endian;
  // Trailing dimensions are flattened into rows.
  const std::vector<int64_t>& extents = header->shape;
  const std::string shape = absl::StrCat("(", absl::StrJoin(extents, ", "), ")");
  if (extents.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: .npy holds a scalar (shape ()), not a matrix", r.path_));
  }
  r.rows_ = extents[0];
  r.dim_ = 1;
  for (size_t i = 1; i < extents.size(); ++i) {
    if (MulOverflows(r.dim_, extents[i], &r.dim_) || r.dim_ > kMaxFileDim) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: row size of shape %s exceeds %d", r.path_, shape, kMaxFileDim));
    }
  }
  if (r.dim_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: shape %s has rows of 0 elements", r.path_, shape));
  }
  r.format_ = VectorFileFormat::kNpy;
  return CheckPayload(r, header->header_bytes, file_size);
}

absl::Status VectorReaderFactory::ParseIdx(VectorReader& r, int64_t file_size) {
  unsigned char magic[4];
  if (auto s = r.ReadBytes(magic, 4); !s.ok()) return s;
  const int ndim = magic[3];
  switch (magic[2]) {
    case 0x08:
      r.element_type_ = ElementType::kU8;
      break;
    case 0x09:
      r.element_type_ = ElementType::kI8;
      break;
    case 0x0B:
      r.element_type_ = ElementType::kI16;
      break;
    case 0x0C:
      r.element_type_ = ElementType::kI32;
      break;
    case 0x0D:
      r.element_type_ = ElementType::kF32;
      break;
    case 0x0E:
      r.element_type_ = ElementType::kF64;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: unknown IDX element type 0x%02x", r.path_, magic[2]));
  }
  if (ndim < 1 || ndim > 8) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: IDX dimension count %d outside 1..8", r.path_, ndim));
  }
  r.big_endian_ = true;
  std::vector<unsigned char> raw(4 * ndim);
  if (auto s = r.ReadBytes(raw.data(), raw.size()); !s.ok()) return s;
  r.rows_ = LoadElement<uint32_t>(raw.data(), true);
  r.dim_ = 1;
  for (int i = 1; i < ndim; ++i) {
    const int64_t extent = LoadElement<uint32_t>(raw.data() + 4 * i, true);
    if (MulOverflows(r.dim_, extent, &r.dim_) || r.dim_ > kMaxFileDim) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: IDX row size exceeds %d", r.path_, kMaxFileDim));
    }
  }
  if (r.dim_ == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: IDX rows have 0 elements", r.path_));
  }
  r.format_ = VectorFileFormat::kIdx;
  return CheckPayload(r, 4 + 4 * ndim, file_size);
}

absl::Status VectorReaderFactory::ParseXvecs(MappedVectorReader& r) {
  if (r.size_ < 4) return Truncated(r.path_, "no room for the first row's dimension");
  const int32_t d = LoadElement<int32_t>(r.data_, false);
  if (d <= 0 || d > kMaxFileDim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: first row claims dimension %d (expected 1..%d)", r.path_, d, kMaxFileDim));
  }
  r.dim_ = d;
  const size_t row_bytes = 4 + static_cast<size_t>(d) * ElementSize(r.element_type_);
  if (r.size_ % row_bytes != 0) {
    return Truncated(r.path_, absl::StrFormat("%d bytes is not a whole number of %d-byte rows "
                                              "(dimension %d)",
                                              r.size_, row_bytes, d));
  }
  r.rows_ = static_cast<int64_t>(r.size_ / row_bytes);
  r.row_prefix_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<VectorReader>> VectorReaderFactory::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message = absl::StrFormat("%s: %s", path, std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a regular file", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  unsigned char head[6] = {0};
  const ssize_t head_len = ::pread(fd, head, sizeof(head), 0);
  if (head_len < 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("%s: cannot read", path));
  }

  std::string lower_path = absl::AsciiStrToLower(path);
  if (head_len >= 2 && head[0] == 0x1f && head[1] == 0x8b) {
    auto reader = std::unique_ptr<GzipVectorReader>(new GzipVectorReader());
    reader->path_ = path;
    reader->compressed_size_ = static_cast<int64_t>(size);
    reader->file_ = gzdopen(fd, "rb");
    if (reader->file_ == nullptr) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrFormat("%s: cannot open gzip stream", path));
    }
    gzbuffer(reader->file_, 1 << 17);
    unsigned char inner[6] = {0};
    const int got = gzread(reader->file_, inner, sizeof(inner));
    if (got < 4) return Truncated(path, "gzip stream shorter than any header");
    gzrewind(reader->file_);
    absl::Status status;
    if (got >= 6 && std::memcmp(inner, "\x93NUMPY", 6) == 0) {
      status = ParseNpy(*reader, -1);
    } else if (inner[0] == 0 && inner[1] == 0) {
      status = ParseIdx(*reader, -1);
    } else {
      status = absl::InvalidArgumentError(absl::StrFormat(
          "%s: gzip content is neither .npy nor IDX (decompress .fvecs/.bvecs/.ivecs first)",
          path));
    }
    if (!status.ok()) return status;
    return std::unique_ptr<VectorReader>(std::move(reader));
  }

  auto reader = std::unique_ptr<MappedVectorReader>(new MappedVectorReader());
  reader->path_ = path;
  reader->size_ = size;
  if (size > 0) {
    void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrFormat("%s: mmap failed", path));
    }
    madvise(map, size, MADV_SEQUENTIAL);
    reader->data_ = static_cast<const unsigned char*>(map);
  }
  ::close(fd);

  absl::Status status;
  if (head_len >= 6 && std::memcmp(head, "\x93NUMPY", 6) == 0) {
    status = ParseNpy(*reader, static_cast<int64_t>(size));
  } else if (absl::EndsWith(lower_path, ".fvecs")) {
    reader->format_ = VectorFileFormat::kFvecs;
    reader->element_type_ = ElementType::kF32;
    status = ParseXvecs(*reader);
  } else if (absl::EndsWith(lower_path, ".ivecs")) {
    reader->format_ = VectorFileFormat::kIvecs;
    reader->element_type_ = ElementType::kI32;
    status = ParseXvecs(*reader);
  } else if (absl::EndsWith(lower_path, ".bvecs")) {
    reader->format_ = VectorFileFormat::kBvecs;
    reader->element_type_ = ElementType::kU8;
    status = ParseXvecs(*reader);
  } else if (absl::EndsWith(lower_path, ".npy")) {
    status = absl::InvalidArgumentError(absl::StrFormat("%s: bad .npy magic", path));
  } else if (head_len >= 4 && head[0] == 0 && head[1] == 0) {
    status = ParseIdx(*reader, static_cast<int64_t>(size));
  } else {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "%s: unknown format (expected .npy, .fvecs, .bvecs, .ivecs or IDX, optionally gzipped)",
        path));
  }
  if (!status.ok()) return status;
  return std::unique_ptr<VectorReader>(std::move(reader));
}

absl::StatusOr<std::unique_ptr<VectorReader>> VectorReader::Open(const std::string& path) {
  return VectorReaderFactory::Open(path);
}

absl::Status VectorReader::ReadRawRows(int64_t n) {
  const size_t row_bytes = static_cast<size_t>(dim_) * ElementSize(element_type_);
  scratch_.resize(static_cast<size_t>(n) * row_bytes);
  if (!row_prefix_) return ReadBytes(scratch_.data(), scratch_.size());
  for (int64_t i = 0; i < n; ++i) {
    unsigned char prefix[4];
    if (auto s = ReadBytes(prefix, 4); !s.ok()) return s;
    const int32_t d = LoadElement<int32_t>(prefix, false);
    if (d != dim_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: row %d has dimension %d, the first row %d", path_, next_row_ + i, d, dim_));
    }
    if (auto s = ReadBytes(scratch_.data() + i * row_bytes, row_bytes); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> VectorReader::Read(int64_t max_rows, float* out) {
  const int64_t n = std::min(max_rows, rows_ - next_row_);
  if (n <= 0) return 0;
  if (element_type_ == ElementType::kF32 && !big_endian_ && !row_prefix_) {
    // Native float32: copy straight into the caller's buffer.
    if (auto s = ReadBytes(out, static_cast<size_t>(n * dim_) * sizeof(float)); !s.ok()) {
      return s;
    }
    next_row_ += n;
    return n;
  }
  return ReadConverted(n, out);
}

absl::StatusOr<int64_t> VectorReader::ReadIntegers(int64_t max_rows, int64_t* out) {
  if (IsFloating(element_type_)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: holds floating-point values, integers expected", path_));
  }
  const int64_t n = std::min(max_rows, rows_ - next_row_);
  if (n <= 0) return 0;
  return ReadConverted(n, out);
}

template <typename Out>
absl::StatusOr<int64_t> VectorReader::ReadConverted(int64_t n, Out* out) {
  // Converts through a scratch buffer of at most ~4 MiB, whatever n is.
  const int64_t row_bytes = dim_ * static_cast<int64_t>(ElementSize(element_type_));
  const int64_t step = std::max<int64_t>(1, (int64_t{4} << 20) / row_bytes);
  for (int64_t done = 0; done < n;) {
    const int64_t rows = std::min(step, n - done);
    if (auto s = ReadRawRows(rows); !s.ok()) return s;
    ConvertElements(scratch_.data(), element_type_, big_endian_, rows * dim_, out + done * dim_);
    done += rows;
    next_row_ += rows;
  }
  return n;
}

namespace {

// Reads `rows` rows of `reader` into *values (rows x dim) with `read`, growing the vector as
// the data arrives: a streamed (gzip) file whose header lies about its size fails as truncated
// instead of forcing a huge allocation up front.
template <typename T, typename ReadFn>
absl::Status ReadAllRows(VectorReader& reader, int64_t rows, std::vector<T>* values, ReadFn read) {
  const int64_t dim = reader.dim();
  const int64_t step = std::max<int64_t>(1, (int64_t{16} << 20) / (dim * int64_t{sizeof(T)}));
  for (int64_t done = 0; done < rows;) {
    const int64_t n = std::min(step, rows - done);
    values->resize(static_cast<size_t>((done + n) * dim));
    auto got = read(n, values->data() + done * dim);
    if (!got.ok()) return got.status();
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Matrix> ReadMatrix(const std::string& path, int64_t max_rows) {
  auto reader = VectorReader::Open(path);
  if (!reader.ok()) return reader.status();
  Matrix m;
  m.dim = (*reader)->dim();
  m.rows = max_rows < 0 ? (*reader)->rows() : std::min(max_rows, (*reader)->rows());
  VectorReader& r = **reader;
  if (auto s =
          ReadAllRows(r, m.rows, &m.values, [&r](int64_t n, float* out) { return r.Read(n, out); });
      !s.ok()) {
    return s;
  }
  return m;
}

absl::StatusOr<IntMatrix> ReadIntMatrix(const std::string& path) {
  auto reader = VectorReader::Open(path);
  if (!reader.ok()) return reader.status();
  IntMatrix m;
  m.dim = (*reader)->dim();
  m.rows = (*reader)->rows();
  VectorReader& r = **reader;
  if (auto s = ReadAllRows(r, m.rows, &m.values,
                           [&r](int64_t n, int64_t* out) { return r.ReadIntegers(n, out); });
      !s.ok()) {
    return s;
  }
  return m;
}

absl::StatusOr<std::vector<uint64_t>> ReadIds(const std::string& path) {
  const std::string lower = absl::AsciiStrToLower(path);
  const bool binary = absl::EndsWith(lower, ".npy") || absl::EndsWith(lower, ".ivecs") ||
                      absl::EndsWith(lower, ".npy.gz");
  std::vector<uint64_t> ids;
  if (binary) {
    auto reader = VectorReader::Open(path);
    if (!reader.ok()) return reader.status();
    VectorReader& r = **reader;
    const bool is_unsigned64 = r.element_type() == ElementType::kU64;
    if (IsFloating(r.element_type())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: ids must be integers, the file holds floating-point values", path));
    }
    if (r.dim() != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: ids must be one column (one id per row), the file has %d per row", path, r.dim()));
    }
    std::vector<int64_t> values;
    if (auto s = ReadAllRows(r, r.rows(), &values,
                             [&r](int64_t n, int64_t* out) { return r.ReadIntegers(n, out); });
        !s.ok()) {
      return s;
    }
    ids.reserve(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i] < 0 && !is_unsigned64) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: id #%d is negative (%d)", path, i, values[i]));
      }
      ids.push_back(static_cast<uint64_t>(values[i]));
    }
    return ids;
  }
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s: cannot open", path));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty()) continue;
    uint64_t id = 0;
    if (!absl::SimpleAtoi(text, &id)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: '%s' is not an unsigned 64-bit id", path, line_no, text));
    }
    ids.push_back(id);
  }
  return ids;
}

namespace {

// Writes a NumPy 1.0 file of `rows` x `dim` elements of `item_size` bytes described by `descr`.
absl::Status WriteNpyFile(const std::string& path, absl::string_view descr, const void* values,
                          absl::Span<const int64_t> shape, int64_t item_size) {
  const std::string prefix = NpyHeaderBytes(descr, shape);
  int64_t count = 1;
  for (int64_t extent : shape) count *= extent;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  out.write(static_cast<const char*>(values), static_cast<std::streamsize>(count * item_size));
  out.close();
  if (!out) return absl::InvalidArgumentError(absl::StrFormat("%s: cannot write", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteNpy(const std::string& path, const float* values, int64_t rows, int64_t dim) {
  return WriteNpyFile(path, "<f4", values, {rows, dim}, sizeof(float));
}

absl::Status WriteNpy(const std::string& path, const int64_t* values, int64_t rows, int64_t dim) {
  return WriteNpyFile(path, "<i8", values, {rows, dim}, sizeof(int64_t));
}

absl::Status WriteNpy(const std::string& path, const int64_t* values,
                      absl::Span<const int64_t> shape) {
  return WriteNpyFile(path, "<i8", values, shape, sizeof(int64_t));
}

}  // namespace quantd
