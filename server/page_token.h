// Page tokens of ListItems: opaque to clients, bound to one collection (its internal id, so a
// token of a dropped and re-created collection of the same name is refused) and checked: a
// token that was altered or truncated is refused rather than read as some other position.
//
// Form: web-safe base64 of "QLT1", collection id (be32), the last id of the page (be64), then
// the first 8 bytes of SHA-256 over a fixed context string and those 16 bytes.
#ifndef QUANTD_SERVER_PAGE_TOKEN_H_
#define QUANTD_SERVER_PAGE_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

// The token that continues after item `last_id` of collection `cid`.
std::string EncodePageToken(uint32_t cid, uint64_t last_id);
// The last id of the previous page. INVALID_ARGUMENT naming `field` for a token that is not one
// of ours, was altered, or belongs to another collection (`collection` names this one).
absl::StatusOr<uint64_t> DecodePageToken(absl::string_view token, uint32_t cid,
                                         absl::string_view collection,
                                         absl::string_view field = "page_token");

}  // namespace quantd

#endif  // QUANTD_SERVER_PAGE_TOKEN_H_
