#include "server/model_blob.h"

#include <zlib.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace quantd {
namespace {

constexpr size_t kHeaderBytes = 12;

uint32_t Crc32(const std::string& bytes) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

}  // namespace

std::string FrameModelBlob(const BlobFormat& format, const google::protobuf::MessageLite& record) {
  const std::string payload = record.SerializeAsString();
  std::string blob(format.magic, 4);
  const uint32_t header[2] = {format.version, Crc32(payload)};
  blob.append(reinterpret_cast<const char*>(header), sizeof(header));
  blob += payload;
  return blob;
}

absl::Status ParseModelBlob(const BlobFormat& format, const std::string& blob,
                            google::protobuf::MessageLite* record) {
  if (blob.size() < kHeaderBytes || std::memcmp(blob.data(), format.magic, 4) != 0) {
    return absl::DataLossError(
        absl::StrFormat("%s blob has no %s magic", format.what, std::string(format.magic, 4)));
  }
  uint32_t header[2];
  std::memcpy(header, blob.data() + 4, sizeof(header));
  if (header[0] != format.version) {
    return absl::DataLossError(
        absl::StrFormat("%s blob format %d is not %d", format.what, header[0], format.version));
  }
  const std::string payload = blob.substr(kHeaderBytes);
  if (Crc32(payload) != header[1]) {
    return absl::DataLossError(absl::StrFormat("%s blob checksum mismatch", format.what));
  }
  if (!record->ParseFromString(payload)) {
    return absl::DataLossError(absl::StrFormat("%s blob payload does not parse", format.what));
  }
  return absl::OkStatus();
}

}  // namespace quantd
