// The framing of the model blobs stored in the `models` column family: 4 magic bytes, a format
// version (uint32), the CRC-32 of the payload (uint32), then the payload, a serialized record.
#ifndef QUANTD_SERVER_MODEL_BLOB_H_
#define QUANTD_SERVER_MODEL_BLOB_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message_lite.h"

namespace quantd {

struct BlobFormat {
  const char* magic;  // 4 bytes, e.g. "QTOK"
  uint32_t version;
  const char* what;  // for messages, e.g. "tokenizer"
};

std::string FrameModelBlob(const BlobFormat& format, const google::protobuf::MessageLite& record);

// DATA_LOSS naming `format.what` if the magic, version or checksum do not match or the payload
// does not parse into *record.
absl::Status ParseModelBlob(const BlobFormat& format, const std::string& blob,
                            google::protobuf::MessageLite* record);

}  // namespace quantd

#endif  // QUANTD_SERVER_MODEL_BLOB_H_
