#include "server/indexes.h"

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "absl/strings/str_format.h"
#include "server/index.h"

namespace quantd {
namespace {

// Checks a Search request's shape and limits against a collection of dimension d; returns nq.
absl::StatusOr<int64_t> CheckSearchRequest(const CollectionInfo& info,
                                           absl::Span<const float> queries, int64_t k,
                                           int64_t nprobe, int64_t refine) {
  const int64_t d = info.dimension;
  if (queries.empty()) {
    return absl::InvalidArgumentError("queries is empty: give at least one query vector");
  }
  if (queries.size() % static_cast<size_t>(d) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queries has %d values, not a multiple of dimension %d of collection '%s'",
                        queries.size(), d, info.name));
  }
  const int64_t nq = static_cast<int64_t>(queries.size()) / d;
  if (nq > kMaxSearchQueries) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queries holds %d vectors, at most %d per request", nq, kMaxSearchQueries));
  }
  if (k < 1 || k > kMaxSearchK) {
    return absl::InvalidArgumentError(absl::StrFormat("k %d is outside 1..%d", k, kMaxSearchK));
  }
  if (nq * k > kMaxSearchResults) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d queries x k %d = %d results exceed %d per request; split the batch", nq,
                        k, nq * k, kMaxSearchResults));
  }
  if (nprobe < 0) return absl::InvalidArgumentError(absl::StrFormat("nprobe %d < 0", nprobe));
  if (refine < 0 || refine * k > kMaxRefineCandidates) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "refine %d: refine x k (%d) must be at most %d", refine, refine * k, kMaxRefineCandidates));
  }
  if (auto status = CheckVectors(queries.data(), nq, d, info.metric, "queries"); !status.ok()) {
    return status;
  }
  return nq;
}

}  // namespace

absl::Status Indexes::LoadAll() {
  // An unreadable model fails only its collection's calls (and writes); the rest serves.
  for (const std::shared_ptr<Collection>& collection : registry_->All()) {
    absl::Status status =
        collection->index.TakeLoaded(ivf_->LoadCurrent(collection->info.id, collection->info.name));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ServingIndex>> Indexes::GetIndex(
    absl::string_view name) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  auto index = (*collection)
                   ->index.GetOr(absl::FailedPreconditionError(absl::StrFormat(
                       "collection '%s' has no index yet: train one with TrainIndex", name)));
  if (!index.ok()) return index.status();
  return std::shared_ptr<const ServingIndex>(std::move(*index));
}

absl::StatusOr<uint32_t> Indexes::CommitIndex(absl::string_view name, storage::IndexRecord record,
                                              IvfPqIndex trained, const ItemSet& snapshot,
                                              const std::vector<int32_t>& lists,
                                              const std::vector<uint8_t>& codes) {
  const int64_t code_size = trained.code_size();
  if (trained.d() != snapshot.info.dimension || trained.size() != 0 ||
      lists.size() != snapshot.ids.size() ||
      codes.size() != snapshot.ids.size() * static_cast<size_t>(code_size)) {
    return absl::InternalError("index commit with inconsistent shapes");
  }
  auto guard = registry_->LockForWrite(name, snapshot.info.id);
  if (!guard.ok()) return guard.status();
  const uint32_t cid = guard->info().id;
  const int64_t d = guard->info().dimension;
  auto old_version = ivf_->CurrentVersion(cid);
  if (!old_version.ok()) return old_version.status();
  const uint32_t version = *old_version + 1;
  record.set_version(version);
  record.set_model(trained.Serialize(/*include_lists=*/false));

  auto serving = std::make_shared<ServingIndex>();
  serving->index = std::move(trained);
  rocksdb::WriteBatch batch;
  ivf_->AddCommit(cid, *old_version, record, &batch);
  // Every item stored now: the job's entry where the vector is the one it encoded, else
  // encoded here (items written while the job ran).
  absl::Status status = ReconcileWithSnapshot(
      *items_, snapshot,
      [&](uint64_t id, int64_t snapshot_row, const float* vector) -> absl::Status {
        int64_t list = 0;
        const uint8_t* code = nullptr;
        IvfPqEncoded fresh;
        if (snapshot_row >= 0) {
          list = lists[static_cast<size_t>(snapshot_row)];
          code = codes.data() + snapshot_row * code_size;
        } else {
          auto encoded =
              serving->index.EncodeForList(absl::MakeConstSpan(vector, static_cast<size_t>(d)));
          if (!encoded.ok()) return encoded.status();
          fresh = std::move(*encoded);
          list = fresh.list;
          code = fresh.code.data();
        }
        ivf_->AddEntry(cid, version, id, list, code, code_size, &batch);
        return serving->index.AddEncoded(id, list,
                                         absl::MakeConstSpan(code, static_cast<size_t>(code_size)));
      });
  if (!status.ok()) return status;
  if (auto s = db_->Write(batch, "commit index"); !s.ok()) return s;
  guard->MarkWritten();
  record.clear_model();
  serving->record = std::move(record);
  guard->collection().index.Set(std::move(serving));
  return version;
}

absl::StatusOr<Indexes::SearchResult> Indexes::Search(absl::string_view name,
                                                      absl::Span<const float> queries, int64_t k,
                                                      int64_t nprobe, int64_t refine) const {
  auto info = registry_->Describe(name);
  if (!info.ok()) return info.status();
  auto nq = CheckSearchRequest(*info, queries, k, nprobe, refine);
  if (!nq.ok()) return nq.status();
  auto serving = GetIndex(name);
  if (!serving.ok()) return serving.status();
  const ServingIndex& index = **serving;

  IvfPqSearchParams params;
  params.k = k;
  params.nprobe = ResolveNprobe(nprobe, index.index.nlist());
  params.refine = std::max<int64_t>(1, refine);
  params.num_threads = 1;
  if (params.refine > 1) {
    // An item deleted meanwhile is dropped from the candidates.
    params.fetch = [this, cid = info->id, d = info->dimension](uint64_t id, float* out) {
      return items_->Fetch(cid, d, id, out);
    };
  }
  SearchResult result;
  result.index_version = index.record.version();
  result.nprobe = params.nprobe;
  std::shared_lock lock(index.mu);
  auto neighbors = index.index.Search(queries, params);
  if (!neighbors.ok()) return neighbors.status();
  result.neighbors = std::move(*neighbors);
  return result;
}

}  // namespace quantd
