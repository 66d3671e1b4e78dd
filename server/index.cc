#include "server/index.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "server/model_blob.h"

namespace quantd {
namespace {

constexpr BlobFormat kIndexBlob{"QIDX", 1, "index"};

}  // namespace

int64_t ResolveNprobe(int64_t requested, int64_t nlist) {
  return requested == 0 ? std::max<int64_t>(1, nlist / 8) : std::min(requested, nlist);
}

bool ScoreExactly(int64_t allowed, int64_t k, int64_t nprobe, int64_t n, int64_t nlist) {
  const int64_t probed = nprobe * n / std::max<int64_t>(1, nlist);
  const int64_t widened = kAllowedPerResult * k * n / std::max<int64_t>(1, allowed);
  return allowed * kExactCostPerItem <= std::max(probed, widened);
}

int64_t AttributeMaterializeLimit(int64_t k, int64_t nprobe, int64_t n, int64_t nlist) {
  int64_t limit = 4096;
  while (limit < n && ScoreExactly(limit, k, nprobe, n, nlist)) limit *= 2;
  const auto balance = static_cast<int64_t>(4.0 * std::sqrt(static_cast<double>(k) * n));
  return std::max(limit, balance);
}

std::string SerializeIndexBlob(const storage::IndexRecord& record) {
  return FrameModelBlob(kIndexBlob, record);
}

absl::StatusOr<storage::IndexRecord> ParseIndexBlob(const std::string& blob) {
  storage::IndexRecord record;
  if (absl::Status s = ParseModelBlob(kIndexBlob, blob, &record); !s.ok()) return s;
  return record;
}

std::string EncodeIndexEntry(uint32_t version, int64_t list, absl::Span<const uint8_t> code,
                             absl::Span<const uint8_t> refine_code) {
  std::string out(8 + code.size() + refine_code.size(), '\0');
  const auto list32 = static_cast<uint32_t>(list);
  std::memcpy(out.data(), &version, 4);
  std::memcpy(out.data() + 4, &list32, 4);
  if (!code.empty()) std::memcpy(out.data() + 8, code.data(), code.size());
  if (!refine_code.empty()) {
    std::memcpy(out.data() + 8 + code.size(), refine_code.data(), refine_code.size());
  }
  return out;
}

}  // namespace quantd
