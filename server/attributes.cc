#include "server/attributes.h"

#include <algorithm>
#include <mutex>
#include <numeric>

#include "absl/strings/str_format.h"

namespace quantd {
namespace {

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

std::string RenderValue(const AttributeValue& value) {
  if (const auto* text = std::get_if<std::string>(&value)) return absl::StrFormat("\"%s\"", *text);
  return absl::StrFormat("%d", std::get<int64_t>(value));
}

absl::string_view KindName(AttributeCondition::Kind kind) {
  switch (kind) {
    case AttributeCondition::Kind::kEqualsString:
      return "a string equality";
    case AttributeCondition::Kind::kEqualsInt:
      return "an int equality";
    case AttributeCondition::Kind::kRange:
      return "an int range";
  }
  return "?";
}

}  // namespace

absl::string_view AttributeTypeName(AttributeType type) {
  return type == AttributeType::kString ? "string" : "int";
}

absl::Status CheckAttributeKey(absl::string_view key, absl::string_view field) {
  if (key.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s: key is empty", field));
  if (key.size() > kMaxAttributeKeyLength) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: key '%s' has %d characters, at most %d",
                                                      field, key.substr(0, 80), key.size(),
                                                      kMaxAttributeKeyLength));
  }
  for (char c : key) {
    if (!IsKeyChar(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: key '%s' has the character '%c'; keys take [A-Za-z0-9_.-] only", field, key, c));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckItemAttributes(const ItemAttributes& attributes, absl::string_view field) {
  if (attributes.size() > kMaxAttributesPerItem) {
    return absl::InvalidArgumentError(absl::StrFormat("%s has %d attributes, at most %d", field,
                                                      attributes.size(), kMaxAttributesPerItem));
  }
  for (const Attribute& attribute : attributes) {
    if (auto status = CheckAttributeKey(attribute.key, field); !status.ok()) return status;
    const auto* text = std::get_if<std::string>(&attribute.value);
    if (text != nullptr && text->size() > kMaxAttributeStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: value of key '%s' has %d bytes, at most %d", field, attribute.key,
                          text->size(), kMaxAttributeStringBytes));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AttributeSchema> NewAttributeKeys(const AttributeSchema& known,
                                                 absl::Span<const uint64_t> ids,
                                                 absl::Span<const ItemAttributes> attributes,
                                                 absl::string_view collection) {
  AttributeSchema added;
  std::map<std::string, size_t, std::less<>> first_row;  // of each added key
  for (size_t i = 0; i < attributes.size(); ++i) {
    for (const Attribute& attribute : attributes[i]) {
      const AttributeType type = TypeOf(attribute.value);
      auto it = known.find(attribute.key);
      if (it != known.end()) {
        if (it->second != type) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "attributes[%d] (id %d): key '%s' is %s in collection '%s' (fixed by its first "
              "write), this row gives %s %s",
              i, ids[i], attribute.key, AttributeTypeName(it->second), collection,
              AttributeTypeName(type), RenderValue(attribute.value)));
        }
        continue;
      }
      auto [added_it, inserted] = added.emplace(attribute.key, type);
      if (inserted) {
        first_row[attribute.key] = i;
      } else if (added_it->second != type) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "attributes[%d] (id %d): key '%s' is %s in row %d of this batch, this row gives %s %s",
            i, ids[i], attribute.key, AttributeTypeName(added_it->second), first_row[attribute.key],
            AttributeTypeName(type), RenderValue(attribute.value)));
      }
    }
  }
  return added;
}

absl::Status CheckAttributeConditions(absl::Span<const AttributeCondition> where) {
  if (where.size() > kMaxAttributeConditions) {
    return absl::InvalidArgumentError(absl::StrFormat("where has %d conditions, at most %d",
                                                      where.size(), kMaxAttributeConditions));
  }
  for (size_t i = 0; i < where.size(); ++i) {
    const std::string field = absl::StrFormat("where[%d]", i);
    if (auto status = CheckAttributeKey(where[i].key, field); !status.ok()) return status;
    if (where[i].min > where[i].max) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: range of key '%s' has min %d > max %d",
                                                        field, where[i].key, where[i].min,
                                                        where[i].max));
    }
  }
  return absl::OkStatus();
}

void AttributeIndex::Add(uint64_t id, const ItemAttributes& attributes) {
  for (const Attribute& attribute : attributes) {
    if (const auto* text = std::get_if<std::string>(&attribute.value)) {
      strings_[attribute.key][*text].insert(id);
    } else {
      ints_[attribute.key].insert({std::get<int64_t>(attribute.value), id});
      int_values_[attribute.key][id] = std::get<int64_t>(attribute.value);
    }
  }
}

void AttributeIndex::Remove(uint64_t id, const ItemAttributes& attributes) {
  for (const Attribute& attribute : attributes) {
    if (const auto* text = std::get_if<std::string>(&attribute.value)) {
      auto& values = strings_[attribute.key];
      auto it = values.find(*text);
      if (it == values.end()) continue;
      it->second.erase(id);
      if (it->second.empty()) values.erase(it);
    } else {
      ints_[attribute.key].erase({std::get<int64_t>(attribute.value), id});
      int_values_[attribute.key].erase(id);
    }
  }
}

void AttributeIndex::Apply(const AttributeSchema& new_keys, absl::Span<const Change> changes) {
  std::unique_lock lock(mu_);
  schema_.insert(new_keys.begin(), new_keys.end());
  for (const Change& change : changes) {
    Remove(change.id, change.before);
    Add(change.id, change.after);
  }
}

AttributeSchema AttributeIndex::schema() const {
  std::shared_lock lock(mu_);
  return schema_;
}

std::vector<AttributeIndex::KeyStats> AttributeIndex::Stats() const {
  std::shared_lock lock(mu_);
  std::vector<KeyStats> out;
  for (const auto& [key, type] : schema_) {
    KeyStats stats{key, type, 0, 0};
    if (type == AttributeType::kString) {
      if (auto it = strings_.find(key); it != strings_.end()) {
        stats.distinct_values = static_cast<int64_t>(it->second.size());
        for (const auto& [value, ids] : it->second) stats.items += static_cast<int64_t>(ids.size());
      }
    } else if (auto it = ints_.find(key); it != ints_.end()) {
      stats.items = static_cast<int64_t>(it->second.size());
      const std::pair<int64_t, uint64_t>* last = nullptr;
      for (const auto& entry : it->second) {
        stats.distinct_values += last == nullptr || last->first != entry.first;
        last = &entry;
      }
    }
    out.push_back(std::move(stats));
  }
  return out;
}

const AttributeIndex::Postings* AttributeIndex::Posting(const AttributeCondition& condition) const {
  auto key = strings_.find(condition.key);
  if (key == strings_.end()) return nullptr;
  auto value = key->second.find(condition.text);
  return value == key->second.end() ? nullptr : &value->second;
}

std::vector<uint64_t> AttributeIndex::Ids(const AttributeCondition& condition, size_t limit,
                                          bool* more) const {
  std::vector<uint64_t> ids;
  *more = false;
  if (condition.kind == AttributeCondition::Kind::kEqualsString) {
    const Postings* posting = Posting(condition);
    if (posting == nullptr) return ids;
    *more = posting->size() > limit;
    if (!*more) ids.assign(posting->begin(), posting->end());
    return ids;
  }
  auto key = ints_.find(condition.key);
  if (key == ints_.end()) return ids;
  const ByValue& by_value = key->second;
  for (auto it = by_value.lower_bound({condition.min, 0});
       it != by_value.end() && it->first <= condition.max; ++it) {
    if (ids.size() == limit) {
      *more = true;
      break;
    }
    ids.push_back(it->second);
  }
  return ids;
}

absl::Status AttributeIndex::CheckLocked(absl::Span<const AttributeCondition> where,
                                         absl::string_view collection) const {
  if (where.empty()) return absl::InternalError("attribute conditions without a condition");
  for (size_t i = 0; i < where.size(); ++i) {
    const AttributeCondition& condition = where[i];
    auto it = schema_.find(condition.key);
    if (it == schema_.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "where[%d]: unknown attribute key '%s': no item of collection '%s' ever carried it", i,
          condition.key, collection));
    }
    const AttributeType wanted = condition.kind == AttributeCondition::Kind::kEqualsString
                                     ? AttributeType::kString
                                     : AttributeType::kInt;
    if (it->second != wanted) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "where[%d]: key '%s' is %s in collection '%s'; %s does not apply to it", i, condition.key,
          AttributeTypeName(it->second), collection, KindName(condition.kind)));
    }
  }
  return absl::OkStatus();
}

absl::Status AttributeIndex::Check(absl::Span<const AttributeCondition> where,
                                   absl::string_view collection) const {
  std::shared_lock lock(mu_);
  return CheckLocked(where, collection);
}

bool AttributeIndex::MatchesLocked(absl::Span<const AttributeCondition> where, uint64_t id) const {
  for (const AttributeCondition& condition : where) {
    if (condition.kind == AttributeCondition::Kind::kEqualsString) {
      const Postings* posting = Posting(condition);
      if (posting == nullptr || !posting->contains(id)) return false;
      continue;
    }
    auto key = int_values_.find(condition.key);
    if (key == int_values_.end()) return false;
    auto value = key->second.find(id);
    if (value == key->second.end() || value->second < condition.min ||
        value->second > condition.max) {
      return false;
    }
  }
  return true;
}

bool AttributeIndex::Matches(absl::Span<const AttributeCondition> where, uint64_t id) const {
  std::shared_lock lock(mu_);
  return MatchesLocked(where, id);
}

absl::StatusOr<AttributeIndex::SearchPlan> AttributeIndex::Plan(
    absl::Span<const AttributeCondition> where, int64_t limit, absl::string_view collection) const {
  std::shared_lock lock(mu_);
  if (auto status = CheckLocked(where, collection); !status.ok()) return status;
  // String equalities first, smallest posting first (sizes known without a walk); ranges are
  // walked up to `limit` each until one is narrow.
  std::vector<size_t> order(where.size());
  std::iota(order.begin(), order.end(), 0);
  auto size_of = [&](size_t c) -> size_t {
    if (where[c].kind != AttributeCondition::Kind::kEqualsString) return SIZE_MAX;
    const Postings* posting = Posting(where[c]);
    return posting == nullptr ? 0 : posting->size();
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return size_of(a) < size_of(b); });
  SearchPlan plan;
  for (size_t c : order) {
    bool more = false;
    std::vector<uint64_t> ids =
        Ids(where[c], static_cast<size_t>(std::max<int64_t>(0, limit)), &more);
    if (more) continue;
    // The narrowest condition: its ids, tested against the others.
    std::vector<AttributeCondition> others;
    for (size_t o = 0; o < where.size(); ++o) {
      if (o != c) others.push_back(where[o]);
    }
    if (!others.empty()) {
      std::erase_if(ids, [&](uint64_t id) { return !MatchesLocked(others, id); });
    }
    plan.materialized = true;
    plan.ids = std::move(ids);
    plan.at_least = static_cast<int64_t>(plan.ids.size());
    return plan;
  }
  plan.at_least = limit + 1;  // limit < the largest int64: some condition was cut at it
  return plan;
}

absl::StatusOr<std::vector<uint64_t>> AttributeIndex::Match(
    absl::Span<const AttributeCondition> where, absl::string_view collection) const {
  auto plan = Plan(where, std::numeric_limits<int64_t>::max(), collection);
  if (!plan.ok()) return plan.status();
  return std::move(plan->ids);
}

}  // namespace quantd
