// Item attributes (issue #15 part 4): a few small string or int key-values per item, set with
// the item's vector in the same write, and the per-collection in-memory index that turns a
// Search's conjunction of conditions (equality, int range) into the set of matching items.
//
// Model: an item holds at most kMaxAttributesPerItem keys, one value each. A key's type is fixed
// per collection by its first write (the collection's schema, persisted with the attributes) and
// never changes. Not supported: OR, negation, string ranges, floats, multi-valued attributes.
//
// Storage (server/attribute_store.h) is the truth; an AttributeIndex mirrors it and is changed
// only after the WriteBatch that changed the rows was written, under the collection's write lock.
#ifndef QUANTD_SERVER_ATTRIBUTES_H_
#define QUANTD_SERVER_ATTRIBUTES_H_

#include <cstdint>
#include <limits>
#include <map>
#include <shared_mutex>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quantd {

// Limits (documented at quantd.proto Attributes and SearchRequest.where).
inline constexpr size_t kMaxAttributesPerItem = 16;
inline constexpr size_t kMaxAttributeKeyLength = 64;
inline constexpr size_t kMaxAttributeStringBytes = 256;
inline constexpr size_t kMaxAttributeConditions = 16;

// Values match quantd.v1.AttributeType.
enum class AttributeType : int { kString = 1, kInt = 2 };
absl::string_view AttributeTypeName(AttributeType type);

using AttributeValue = std::variant<std::string, int64_t>;  // kString, kInt
inline AttributeType TypeOf(const AttributeValue& value) {
  return std::holds_alternative<std::string>(value) ? AttributeType::kString : AttributeType::kInt;
}

struct Attribute {
  std::string key;
  AttributeValue value;
  bool operator==(const Attribute&) const = default;
};
// One item's attributes, ascending by key, each key once; empty: none.
using ItemAttributes = std::vector<Attribute>;

// A collection's keys and their types.
using AttributeSchema = std::map<std::string, AttributeType, std::less<>>;

// Checks a key: 1..64 characters of [A-Za-z0-9_.-]. Errors name `field`.
absl::Status CheckAttributeKey(absl::string_view key, absl::string_view field);
// Checks one item's attributes (sorted, distinct keys given) against the limits; errors name
// `field` (e.g. "attributes[3] (id 7)").
absl::Status CheckItemAttributes(const ItemAttributes& attributes, absl::string_view field);

// The keys that rows (ids[i] with attributes[i], i < n) add to `known`, with their types (the
// first row of a key in the batch fixes it). INVALID_ARGUMENT naming the key, the row, its id and
// both types when a row gives a key the other type than `known` or an earlier row.
absl::StatusOr<AttributeSchema> NewAttributeKeys(const AttributeSchema& known,
                                                 absl::Span<const uint64_t> ids,
                                                 absl::Span<const ItemAttributes> attributes,
                                                 absl::string_view collection);

// One condition of a Search's conjunction: the key's value equals `text` (kEqualsString), or lies
// in [min, max] (kEqualsInt has min == max; kRange either bound may be the type's extreme).
struct AttributeCondition {
  enum class Kind { kEqualsString, kEqualsInt, kRange };
  std::string key;
  Kind kind = Kind::kEqualsString;
  std::string text;
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
};
// Checks a conjunction's shape (count, keys, min <= max); the keys' types are checked by Match.
absl::Status CheckAttributeConditions(absl::Span<const AttributeCondition> where);

// The in-memory attribute index of one collection: the schema, and per key the items by value
// (string keys: value -> ascending ids; int keys: ascending (value, id) pairs, which answer both
// equality and ranges). Thread safety: writers (holding the collection's write lock) call
// Apply; readers call Match / schema concurrently (a shared mutex inside).
class AttributeIndex {
 public:
  // An item's attributes before and after a committed write (either may be empty).
  struct Change {
    uint64_t id = 0;
    ItemAttributes before;
    ItemAttributes after;
  };
  // Adds `new_keys` to the schema and moves each changed item between postings.
  void Apply(const AttributeSchema& new_keys, absl::Span<const Change> changes);

  AttributeSchema schema() const;

  struct KeyStats {
    std::string key;
    AttributeType type = AttributeType::kString;
    int64_t items = 0;            // items carrying the key
    int64_t distinct_values = 0;  // among them
  };
  // Per schema key, ascending. Walks the int keys' pairs (O(items)) to count their values.
  std::vector<KeyStats> Stats() const;

  // OK when every condition of `where` (1..kMaxAttributeConditions, checked with
  // CheckAttributeConditions) names a key of the schema with a test of its type, else
  // INVALID_ARGUMENT naming where[i] ("unknown attribute key", or the types).
  absl::Status Check(absl::Span<const AttributeCondition> where,
                     absl::string_view collection) const;

  // The items meeting every condition of `where` (checked as by Check), distinct, in no
  // particular order. Costs O(matches of the narrowest condition): it is walked and the others
  // are tested per id.
  absl::StatusOr<std::vector<uint64_t>> Match(absl::Span<const AttributeCondition> where,
                                              absl::string_view collection) const;

  // How a search takes `where` (checked as by Check): when some condition matches at most
  // `limit` items, `ids` are the matches (as Match) and `materialized` is set; otherwise every
  // condition is broad and the scan tests candidates with Matches instead of walking more than
  // `limit` items a condition (`at_least` is then a lower bound of the narrowest condition's
  // count, so of nothing: the conjunction may match fewer).
  struct SearchPlan {
    bool materialized = false;
    std::vector<uint64_t> ids;
    int64_t at_least = 0;
  };
  absl::StatusOr<SearchPlan> Plan(absl::Span<const AttributeCondition> where, int64_t limit,
                                  absl::string_view collection) const;

  // Whether item `id` meets every condition of `where` (checked as by Check): a posting lookup
  // per string equality, a hash lookup of the item's value per int condition.
  bool Matches(absl::Span<const AttributeCondition> where, uint64_t id) const;

 private:
  using Postings = absl::btree_set<uint64_t>;
  using ByValue = absl::btree_set<std::pair<int64_t, uint64_t>>;
  void Add(uint64_t id, const ItemAttributes& attributes);
  void Remove(uint64_t id, const ItemAttributes& attributes);
  // The ids of one condition (its key known and typed right), at most `limit` (then *more
  // tells whether there were more), ascending for string equality.
  std::vector<uint64_t> Ids(const AttributeCondition& condition, size_t limit, bool* more) const;
  // With mu_ held: Check, Matches, and the count of a condition's matches if at most `limit`.
  absl::Status CheckLocked(absl::Span<const AttributeCondition> where,
                           absl::string_view collection) const;
  bool MatchesLocked(absl::Span<const AttributeCondition> where, uint64_t id) const;
  const Postings* Posting(const AttributeCondition& condition) const;

  mutable std::shared_mutex mu_;
  AttributeSchema schema_;
  absl::flat_hash_map<std::string, absl::btree_map<std::string, Postings>> strings_;
  absl::flat_hash_map<std::string, ByValue> ints_;
  // Per int key, each carrying item's value (the per-id test of broad conditions).
  absl::flat_hash_map<std::string, absl::flat_hash_map<uint64_t, int64_t>> int_values_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_ATTRIBUTES_H_
