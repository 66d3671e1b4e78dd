#include "server/page_token.h"

#include <openssl/evp.h>

#include <array>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/keys.h"

namespace quantd {
namespace {

constexpr char kMagic[] = "QLT1";
constexpr size_t kBodySize = 4 + 4 + 8;
constexpr size_t kCheckSize = 8;

std::string Check(absl::string_view body) {
  const std::string text = absl::StrCat("quantd.v1.ListItems page token\n", body);
  std::array<unsigned char, 32> digest{};
  unsigned int size = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest.data()), kCheckSize);
}

}  // namespace

std::string EncodePageToken(uint32_t cid, uint64_t last_id) {
  std::string body = kMagic;
  keys::AppendBigEndian32(&body, cid);
  keys::AppendBigEndian64(&body, last_id);
  return absl::WebSafeBase64Escape(absl::StrCat(body, Check(body)));
}

absl::StatusOr<uint64_t> DecodePageToken(absl::string_view token, uint32_t cid,
                                         absl::string_view collection, absl::string_view field) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw) || raw.size() != kBodySize + kCheckSize ||
      !absl::StartsWith(raw, kMagic) ||
      raw.substr(kBodySize) != Check(absl::string_view(raw).substr(0, kBodySize))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not a page token of ListItems (altered or truncated): start from an empty token",
        field));
  }
  if (keys::ReadBigEndian32(raw.data() + 4) != cid) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s belongs to another collection than '%s' (or to one dropped since)", field, collection));
  }
  return keys::ReadBigEndian64(raw.data() + 8);
}

}  // namespace quantd
