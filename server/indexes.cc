#include "server/indexes.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>

#include "absl/strings/str_format.h"
#include "server/index.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

// Checks a Search request's shape and limits against a collection of dimension d; returns nq.
absl::StatusOr<int64_t> CheckSearchRequest(const CollectionInfo& info,
                                           absl::Span<const float> queries, int64_t k,
                                           int64_t offset, int64_t nprobe, int64_t refine) {
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
  if (offset < 0 || offset > kMaxSearchK - k) {
    return absl::InvalidArgumentError(
        absl::StrFormat("offset %d + k %d = %d exceeds %d: results deeper than that are not served",
                        offset, k, offset + k, kMaxSearchK));
  }
  // The scan gathers offset + k results a query.
  const char* gathered = offset > 0 ? "(offset + k)" : "k";
  k += offset;
  if (nq * k > kMaxSearchResults) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d queries x %s %d = %d results exceed %d per request; split the batch",
                        nq, gathered, k, nq * k, kMaxSearchResults));
  }
  if (nprobe < 0) return absl::InvalidArgumentError(absl::StrFormat("nprobe %d < 0", nprobe));
  if (refine < 0 || refine * k > kMaxRefineCandidates) {
    return absl::InvalidArgumentError(
        absl::StrFormat("refine %d: refine x %s (%d) must be at most %d", refine, gathered,
                        refine * k, kMaxRefineCandidates));
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
                                              const std::vector<uint8_t>& codes,
                                              const std::vector<uint8_t>& refine_codes) {
  const int64_t code_size = trained.code_size();
  const int64_t refine_size = trained.refine_code_size();
  if (trained.d() != snapshot.info.dimension || trained.size() != 0 ||
      lists.size() != snapshot.ids.size() ||
      codes.size() != snapshot.ids.size() * static_cast<size_t>(code_size) ||
      refine_codes.size() != snapshot.ids.size() * static_cast<size_t>(refine_size)) {
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
        absl::Span<const uint8_t> code, refine;
        IvfPqEncoded fresh;
        if (snapshot_row >= 0) {
          list = lists[static_cast<size_t>(snapshot_row)];
          code = absl::MakeConstSpan(codes.data() + snapshot_row * code_size,
                                     static_cast<size_t>(code_size));
          refine = absl::MakeConstSpan(refine_codes.data() + snapshot_row * refine_size,
                                       static_cast<size_t>(refine_size));
        } else {
          auto encoded =
              serving->index.EncodeForList(absl::MakeConstSpan(vector, static_cast<size_t>(d)));
          if (!encoded.ok()) return encoded.status();
          fresh = std::move(*encoded);
          list = fresh.list;
          code = fresh.code;
          refine = fresh.refine_code;
        }
        ivf_->AddEntry(cid, version, id, list, code, refine, &batch);
        return serving->index.AddEncoded(id, list, code, refine);
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
  SearchSpec spec;
  spec.queries = queries;
  spec.k = k;
  spec.nprobe = nprobe;
  spec.refine = refine;
  return Search(name, spec);
}

absl::StatusOr<std::vector<uint64_t>> Indexes::PrefixItems(absl::string_view name,
                                                           absl::Span<const int64_t> prefix,
                                                           const IdSet* allow,
                                                           const IdSet* deny) const {
  auto tokenizer = tokenizers_->GetTokenizer(name);
  if (!tokenizer.ok()) return tokenizer.status();
  const int64_t levels = (*tokenizer)->levels();
  if (static_cast<int64_t>(prefix.size()) > levels) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sid_prefix has %d codes; the active tokenizer (version %d) has %d levels, so 1..%d",
        prefix.size(), (*tokenizer)->version(), levels, levels));
  }
  for (size_t l = 0; l < prefix.size(); ++l) {
    const int64_t size = (*tokenizer)->quantizer().codebook_size(static_cast<int64_t>(l));
    if (prefix[l] < 0 || prefix[l] >= size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sid_prefix[%d] = %d is outside 0..%d", l, prefix[l], size - 1));
    }
  }
  auto sids = tokenizers_->LookupSids(name, **tokenizer, prefix, kMaxPrefixItems);
  if (!sids.ok()) return sids.status();
  if (sids->truncated) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sid_prefix covers more than %d items; give a longer prefix", kMaxPrefixItems));
  }
  std::vector<uint64_t> ids;
  ids.reserve(sids->ids.size());
  for (uint64_t id : sids->ids) {
    if ((allow == nullptr || allow->Contains(id)) && (deny == nullptr || !deny->Contains(id))) {
      ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<std::shared_ptr<const AttributeIndex>> Indexes::AttributesFor(
    absl::string_view name, absl::Span<const AttributeCondition> where) const {
  if (auto status = CheckAttributeConditions(where); !status.ok()) return status;
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  auto attributes = (*collection)
                        ->attributes.GetOr(absl::InvalidArgumentError(absl::StrFormat(
                            "where[0]: unknown attribute key '%s': no item of collection '%s' ever "
                            "carried an attribute",
                            where[0].key, name)));
  if (!attributes.ok()) return attributes.status();
  if (auto status = (*attributes)->Check(where, name); !status.ok()) return status;
  return std::shared_ptr<const AttributeIndex>(*std::move(attributes));
}

absl::StatusOr<Indexes::SearchResult> Indexes::Search(absl::string_view name,
                                                      const SearchSpec& spec) const {
  auto info = registry_->Describe(name);
  if (!info.ok()) return info.status();
  const int64_t d = info->dimension;
  if (spec.allow != nullptr && spec.deny != nullptr) {
    return absl::InvalidArgumentError("allow and deny are both set: give one of them");
  }
  // Search by item: the stored vectors of like_ids are the queries.
  std::vector<float> liked;
  absl::Span<const float> queries = spec.queries;
  if (!spec.like_ids.empty()) {
    if (!spec.queries.empty()) {
      return absl::InvalidArgumentError("queries and like_ids are both given: give one of them");
    }
    if (static_cast<int64_t>(spec.like_ids.size()) > kMaxSearchQueries) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "like_ids has %d ids, at most %d per request", spec.like_ids.size(), kMaxSearchQueries));
    }
    liked.resize(spec.like_ids.size() * static_cast<size_t>(d));
    for (size_t i = 0; i < spec.like_ids.size(); ++i) {
      if (!items_->Fetch(info->id, d, spec.like_ids[i], liked.data() + i * d)) {
        return absl::NotFoundError(
            absl::StrFormat("like_ids[%d] = %d is not an item of '%s'", i, spec.like_ids[i], name));
      }
    }
    queries = liked;
  }
  auto nq = CheckSearchRequest(*info, queries, spec.k, spec.offset, spec.nprobe, spec.refine);
  if (!nq.ok()) return nq.status();
  // Filters, checked before the index is looked up: `where` against the attribute schema, the
  // prefix's items (narrowed by allow / deny).
  std::shared_ptr<const AttributeIndex> attributes;
  if (!spec.where.empty()) {
    auto found = AttributesFor(name, spec.where);
    if (!found.ok()) return found.status();
    attributes = *std::move(found);
  }
  std::optional<std::vector<uint64_t>> narrowed;  // the prefix's and / or where's items
  if (!spec.sid_prefix.empty()) {
    auto ids = PrefixItems(name, spec.sid_prefix, spec.allow, spec.deny);
    if (!ids.ok()) return ids.status();
    narrowed = *std::move(ids);
  }
  auto serving = GetIndex(name);
  if (!serving.ok()) return serving.status();
  const ServingIndex& index = **serving;

  // Like search leaves the query's item out: one more neighbour, then that item dropped. A
  // page at `offset` gathers offset + k and drops the first offset.
  const bool drop_self = !spec.like_ids.empty() && !spec.include_self;
  const int64_t k = spec.offset + spec.k + (drop_self ? 1 : 0);

  SearchResult result;
  result.index_version = index.record.version();
  const int64_t nprobe = ResolveNprobe(spec.nprobe, index.index.nlist());
  std::shared_lock lock(index.mu);
  const int64_t n = index.index.size();

  // `where`: when some condition matches few enough items that exact scoring could be chosen
  // (AttributeMaterializeLimit), its items, tested against the other conditions, join the
  // allowed set; otherwise every condition is broad, and the scan tests each candidate that
  // would enter the top k (a posting or hash lookup per condition) instead of walking hundreds
  // of thousands of matches per request.
  std::function<bool(uint64_t)> attribute_test;
  if (attributes != nullptr) {
    const int64_t limit = AttributeMaterializeLimit(k, nprobe, n, index.index.nlist());
    auto plan = attributes->Plan(spec.where, limit, name);
    if (!plan.ok()) return plan.status();
    if (plan->materialized) {
      std::vector<uint64_t>& ids = plan->ids;
      std::erase_if(ids, [&](uint64_t id) {
        return (spec.allow != nullptr && !spec.allow->Contains(id)) ||
               (spec.deny != nullptr && spec.deny->Contains(id)) ||
               (narrowed && !std::binary_search(narrowed->begin(), narrowed->end(), id));
      });
      narrowed = std::move(ids);
    } else {
      attribute_test = [attributes, where = spec.where](uint64_t id) {
        return attributes->Matches(where, id);
      };
    }
  }
  // The allowed set: allow, or the narrowed items (then allow / deny are in it).
  const IdSet* allowed = spec.allow;
  const IdSet* denied = spec.deny;
  IdSet narrowed_set;
  if (narrowed) {
    narrowed_set = IdSet(*narrowed);
    allowed = &narrowed_set;
    denied = nullptr;
  }
  // A deny-list that leaves few items: its complement (the indexed ids it does not hold) is an
  // allowed set, so that the few items left are scored exactly instead of being looked for by a
  // scan whose probed lists hold about k of them, not the nearest (on the 1M mixture a deny-list
  // leaving 0.1% scanned at recall@10 0.28). Taken only when the deny-list alone shows that few
  // are left (n - |deny| is a lower bound: deny may name ids that are not stored), as it costs a
  // pass over the index's ids, no more than parsing a deny-list of about n ids did.
  IdSet complement;
  if (allowed == nullptr && denied != nullptr) {
    const int64_t left = std::max<int64_t>(0, n - denied->size());
    if (ScoreExactly(left, k, nprobe, n, index.index.nlist())) {
      complement = IdSet(index.index.IdsNotIn(*denied));
      allowed = &complement;
      denied = nullptr;
    }
  }
  if (allowed != nullptr &&
      ScoreExactly(allowed->size(), k, nprobe, index.index.size(), index.index.nlist())) {
    lock.unlock();
    // Exact: score the stored vectors of the allowed items (ids not stored are skipped) that
    // pass the attribute test.
    std::vector<uint64_t> ids = allowed->Sorted();
    if (attribute_test) std::erase_if(ids, [&](uint64_t id) { return !attribute_test(id); });
    auto found = items_->Get(*info, ids);
    if (!found.ok()) return found.status();
    auto neighbors = ExactSearch(info->metric, d, queries, found->ids, found->vectors, k);
    if (!neighbors.ok()) return neighbors.status();
    result.neighbors = std::move(*neighbors);
    result.exact = true;
  } else {
    IvfPqSearchParams params;
    params.k = k;
    params.nprobe = nprobe;
    params.refine = std::max<int64_t>(1, spec.refine);
    params.num_threads = 1;
    // Refine from the in-memory codes when the index keeps them, unless exact is asked for.
    if (params.refine > 1 &&
        (index.index.refine_codes() == RefineCodes::kNone || spec.refine_exact)) {
      // An item deleted meanwhile is dropped from the candidates.
      params.fetch = [this, cid = info->id, d](uint64_t id, float* out) {
        return items_->Fetch(cid, d, id, out);
      };
    }
    IdSelector selector;
    if (allowed != nullptr || denied != nullptr || attribute_test) {
      selector = {allowed != nullptr ? allowed : denied, allowed == nullptr,
                  attribute_test ? &attribute_test : nullptr};
      params.selector = &selector;
    }
    auto neighbors = index.index.Search(queries, params);
    if (!neighbors.ok()) return neighbors.status();
    result.neighbors = std::move(*neighbors);
    result.nprobe = nprobe;
  }
  for (size_t q = 0; q < result.neighbors.size(); ++q) {
    std::vector<IvfPqNeighbor>& row = result.neighbors[q];
    if (drop_self) {
      const uint64_t self = spec.like_ids[q];
      row.erase(
          std::remove_if(row.begin(), row.end(),
                         [self](const IvfPqNeighbor& neighbor) { return neighbor.id == self; }),
          row.end());
    }
    row.erase(row.begin(),
              row.begin() + std::min<int64_t>(spec.offset, static_cast<int64_t>(row.size())));
    if (static_cast<int64_t>(row.size()) > spec.k) row.resize(static_cast<size_t>(spec.k));
  }
  return result;
}

}  // namespace quantd
