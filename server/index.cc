#include "server/index.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "server/model_blob.h"

namespace quantd {
namespace {

constexpr BlobFormat kIndexBlob{"QIDX", 1, "index"};
constexpr uint32_t kDefaultCoarseIterations = 10;
constexpr uint32_t kDefaultPqIterations = 25;
constexpr uint32_t kMaxIterations = 1000;
// FAISS warns below 39 training points per coarse centroid.
constexpr int64_t kMinPointsPerList = 39;
constexpr int64_t kMaxDefaultM = 64;

}  // namespace

int64_t ResolveNprobe(int64_t requested, int64_t nlist) {
  return requested == 0 ? std::max<int64_t>(1, nlist / 8) : std::min(requested, nlist);
}

int64_t IndexTrainingRows(const v1::TrainIndexRequest& request, int64_t items) {
  return request.sample_size() > 0 && request.sample_size() < static_cast<uint64_t>(items)
             ? static_cast<int64_t>(request.sample_size())
             : items;
}

absl::StatusOr<IvfPqOptions> IndexOptionsFromRequest(const v1::TrainIndexRequest& request,
                                                     int64_t items, int64_t d, Metric metric) {
  const int64_t n = IndexTrainingRows(request, items);
  if (n < 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' holds no items: upsert some before TrainIndex", request.collection()));
  }
  IvfPqOptions options;
  options.metric = metric;
  options.num_threads = 0;
  options.seed = request.seed();

  if (request.nlist() == 0) {
    const auto rule = static_cast<int64_t>(std::llround(4.0 * std::sqrt(static_cast<double>(n))));
    options.nlist = std::clamp<int64_t>(rule, 1, std::max<int64_t>(1, n / kMinPointsPerList));
  } else {
    options.nlist = request.nlist();
    if (options.nlist > n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("nlist %d exceeds the %d training items", request.nlist(), n));
    }
  }

  if (request.m() == 0) {
    const int64_t cap = std::min<int64_t>(kMaxDefaultM, std::max<int64_t>(1, d / 4));
    options.m = 1;
    for (int64_t m = cap; m >= 1; --m) {
      if (d % m == 0) {
        options.m = m;
        break;
      }
    }
  } else {
    options.m = request.m();
    if (d % options.m != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("m %d does not divide dimension %d", request.m(), d));
    }
  }

  if (request.nbits() == 0) {
    options.nbits = n >= 256 ? 8 : 4;
  } else if (request.nbits() == 4 || request.nbits() == 8) {
    options.nbits = static_cast<int>(request.nbits());
  } else {
    return absl::InvalidArgumentError(absl::StrFormat("nbits %d is not 4 or 8", request.nbits()));
  }
  if (n < (int64_t{1} << options.nbits)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("nbits %d needs at least %d training items, the collection gives %d",
                        options.nbits, int64_t{1} << options.nbits, n));
  }

  const uint32_t coarse =
      request.coarse_iterations() == 0 ? kDefaultCoarseIterations : request.coarse_iterations();
  if (coarse > kMaxIterations) {
    return absl::InvalidArgumentError(absl::StrFormat("coarse_iterations %d exceeds %d",
                                                      request.coarse_iterations(), kMaxIterations));
  }
  const uint32_t pq = request.pq_iterations() == 0 ? kDefaultPqIterations : request.pq_iterations();
  if (pq > kMaxIterations) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pq_iterations %d exceeds %d", request.pq_iterations(), kMaxIterations));
  }
  options.coarse_iterations = static_cast<int>(coarse);
  options.pq_iterations = static_cast<int>(pq);
  return options;
}

std::string SerializeIndexBlob(const storage::IndexRecord& record) {
  return FrameModelBlob(kIndexBlob, record);
}

absl::StatusOr<storage::IndexRecord> ParseIndexBlob(const std::string& blob) {
  storage::IndexRecord record;
  if (absl::Status s = ParseModelBlob(kIndexBlob, blob, &record); !s.ok()) return s;
  return record;
}

std::string EncodeIndexEntry(uint32_t version, int64_t list, const uint8_t* code,
                             int64_t code_size) {
  std::string out(static_cast<size_t>(8 + code_size), '\0');
  const auto list32 = static_cast<uint32_t>(list);
  std::memcpy(out.data(), &version, 4);
  std::memcpy(out.data() + 4, &list32, 4);
  std::memcpy(out.data() + 8, code, static_cast<size_t>(code_size));
  return out;
}

}  // namespace quantd
