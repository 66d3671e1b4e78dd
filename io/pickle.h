// A restricted Python pickle interpreter: it builds the plain value graph a pickle describes
// (None, bool, int, float, str, bytes, list, tuple, dict, set) and hands every reference to code
// (GLOBAL, STACK_GLOBAL, INST's class) and every call (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST),
// BUILD and persistent id to a PickleHooks object, which allows a fixed set of names and
// refuses everything else. Nothing is ever executed: a "call" is the hooks making a value.
//
// Opcodes: every opcode of protocols 0 to 5 that such a graph uses (text and binary forms),
// FRAME and MEMOIZE. Refused with INVALID_ARGUMENT naming the opcode and its offset: the
// extension registry (EXT1/2/4), out-of-band buffers (NEXT_BUFFER, READONLY_BUFFER), unknown
// opcodes, a PROTO above 5, and any structural misuse (stack underflow, a missing MARK, APPEND
// to a non-list, a memo key never set, a length running past the input).
//
// Bounds, all checked against the input: at most one value per input byte (plus a few), a
// stack of at most PickleLimits::max_stack entries and max_marks open MARKs, a memo of at most
// one entry per input byte (and max_memo), lengths never beyond the bytes left. Integers
// wider than int64 are kept as kBigInt (their width only). Values live in a PickleGraph arena
// and refer to each other by index, so cycles (a list appended to itself) cost nothing and
// nothing here recurses over the graph.
#ifndef QUANTD_IO_PICKLE_H_
#define QUANTD_IO_PICKLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

// Index of a value in its PickleGraph.
using PickleRef = uint32_t;

enum class PickleKind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,  // an integer outside int64: i holds its width in bytes
  kFloat,
  kStr,  // s: UTF-8
  kBytes,
  kList,
  kTuple,
  kDict,  // items: key, value, key, value... in insertion order (a repeated key repeats)
  kSet,   // set and frozenset
  kGlobal,
  kObject,
};

struct PickleValue {
  PickleKind kind = PickleKind::kNone;
  // kBool: the value; kDict: an OrderedDict.
  bool flag = false;
  // kInt: the value; kBigInt: width in bytes; kGlobal, kObject: the hooks' type id.
  int64_t i = 0;
  double f = 0;  // kFloat
  // kStr, kBytes: the contents; kGlobal, kObject: the qualified name ("argparse.Namespace").
  std::string s;
  // kList, kTuple, kSet: the elements; kDict: keys and values alternating; kObject: the hooks'.
  std::vector<PickleRef> items;
};

class PickleGraph {
 public:
  const PickleValue& at(PickleRef r) const { return values_[r]; }
  PickleValue& at(PickleRef r) { return values_[r]; }
  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  PickleRef Add(PickleValue v) {
    values_.push_back(std::move(v));
    return static_cast<PickleRef>(values_.size() - 1);
  }
  // What a value is, for messages: "None", "an int (3)", "a str ('mse')", "a list of 3",
  // "a dict of 2 entries", "argparse.Namespace": never recursive, at most ~60 characters.
  std::string Describe(PickleRef r) const;
  // For a kDict: the value of the last entry whose key is the str `key`, or null.
  const PickleRef* FindStrKey(PickleRef dict, absl::string_view key) const;

 private:
  std::vector<PickleValue> values_;
};

// What the pickle may reference and call. Errors they return end the run, prefixed with the
// opcode's offset.
class PickleHooks {
 public:
  virtual ~PickleHooks() = default;
  // GLOBAL / STACK_GLOBAL / INST: the value standing for module.name (usually a kGlobal with
  // an id), or an error refusing it ("pickle global os.system is not allowed").
  virtual absl::StatusOr<PickleValue> Global(absl::string_view module, absl::string_view name) = 0;
  // REDUCE (callable(*args)), NEWOBJ / NEWOBJ_EX (cls.__new__(cls, *args, **kwargs); kwargs is
  // an empty dict for NEWOBJ), OBJ and INST: args is a tuple. `newobj` tells the two apart.
  virtual absl::StatusOr<PickleValue> Call(PickleGraph& graph, PickleRef callable, PickleRef args,
                                           PickleRef kwargs, bool newobj) = 0;
  // BUILD: object.__setstate__(state) or its __dict__ update; may change graph.at(object).
  virtual absl::Status Build(PickleGraph& graph, PickleRef object, PickleRef state) = 0;
  // BINPERSID / PERSID: the object for the persistent id pid.
  virtual absl::StatusOr<PickleValue> PersistentLoad(PickleGraph& graph, PickleRef pid) = 0;
};

struct PickleLimits {
  int64_t max_stack = int64_t{1} << 20;
  int64_t max_marks = 1000;
  int64_t max_memo = int64_t{1} << 22;
};

// Runs the pickle in `bytes` up to its STOP (anything after it is ignored, as pickle.loads
// does) and returns the result's reference in *graph (which it fills).
absl::StatusOr<PickleRef> RunPickle(absl::string_view bytes, PickleHooks& hooks, PickleGraph* graph,
                                    const PickleLimits& limits = {});

}  // namespace quantd

#endif  // QUANTD_IO_PICKLE_H_
