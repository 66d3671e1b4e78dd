// Byte blobs of core's trained models (IvfPqIndex, ResidualQuantizer): values appended in host
// (little-endian) byte order, read back with a bounds check on every read. A short blob is
// INVALID_ARGUMENT naming the blob, the field, the offset and the bytes left; never a read past
// the end. Callers check each size against remaining() before allocating for it.
#ifndef QUANTD_CORE_BLOB_CODEC_H_
#define QUANTD_CORE_BLOB_CODEC_H_

#include <cstddef>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace quantd {

class BlobWriter {
 public:
  template <typename T>
  void Put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  template <typename T>
  void PutArray(const T* values, size_t count) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(values), count * sizeof(T));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class BlobReader {
 public:
  // `blob_name` names the blob in messages, e.g. "IVF-PQ". `in` must outlive the reader.
  BlobReader(absl::string_view in, absl::string_view blob_name) : in_(in), name_(blob_name) {}

  size_t remaining() const { return in_.size() - pos_; }

  template <typename T>
  absl::Status Get(T* value, absl::string_view what) {
    return GetArray(value, 1, what);
  }
  // Reads count values into values[0, count); INVALID_ARGUMENT (nothing read) if fewer bytes
  // are left.
  template <typename T>
  absl::Status GetArray(T* values, size_t count, absl::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (count > remaining() / sizeof(T)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s blob truncated: %s needs %d bytes at offset %d, %d left", name_, what,
                          count * sizeof(T), pos_, remaining()));
    }
    std::memcpy(values, in_.data() + pos_, count * sizeof(T));
    pos_ += count * sizeof(T);
    return absl::OkStatus();
  }

 private:
  absl::string_view in_;
  absl::string_view name_;
  size_t pos_ = 0;
};

}  // namespace quantd

#endif  // QUANTD_CORE_BLOB_CODEC_H_
