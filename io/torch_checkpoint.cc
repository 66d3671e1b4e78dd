#include "io/torch_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <iterator>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "io/npy_format.h"
#include "io/pickle.h"
#include "io/zip.h"

namespace quantd {
namespace {

constexpr char kWhere[] = "torch checkpoint";
// Largest tensor rank accepted (PyTorch's own limit is 64).
constexpr size_t kMaxRank = 64;
// Budget of the materialised state dict: this many times the input, plus kSlackBytes.
constexpr uint64_t kMaterialiseFactor = 4;
constexpr uint64_t kSlackBytes = uint64_t{1} << 20;
// Bytes of torch.save's legacy (pre-1.6) format: protocol 2 and the LONG1 magic number
// 0x1950a86a20f9469cfc6c it pickles first.
constexpr unsigned char kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                          0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

absl::Status Bad(absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(kWhere, ": ", problem));
}

// Allowed globals (PickleValue::i of a kGlobal); storage types are kStorageTypeBase + index
// into kDtypes.
enum GlobalId : int64_t {
  kOrderedDict = 1,
  kNamespace,
  kRebuildTensorV2,
  kRebuildParameter,
  kDevice,
  kCodecsEncode,
  kStorageTypeBase = 100,
};
// Objects the hooks make (PickleValue::i of a kObject): a Namespace (items: its attribute
// dicts, in BUILD order), a storage and a tensor (items[0]: index into the hooks' tables).
enum ObjectId : int64_t { kNamespaceObject = 1, kStorageObject, kTensorObject };

struct DtypeInfo {
  const char* storage;  // torch.<storage>
  TorchDtype dtype;
  uint64_t size;
  const char* name;
};
constexpr DtypeInfo kDtypes[] = {
    {"FloatStorage", TorchDtype::kFloat32, 4, "torch.float32"},
    {"DoubleStorage", TorchDtype::kFloat64, 8, "torch.float64"},
    {"HalfStorage", TorchDtype::kFloat16, 2, "torch.float16"},
    {"BFloat16Storage", TorchDtype::kBFloat16, 2, "torch.bfloat16"},
    {"LongStorage", TorchDtype::kInt64, 8, "torch.int64"},
    {"IntStorage", TorchDtype::kInt32, 4, "torch.int32"},
    {"ShortStorage", TorchDtype::kInt16, 2, "torch.int16"},
    {"CharStorage", TorchDtype::kInt8, 1, "torch.int8"},
    {"ByteStorage", TorchDtype::kUInt8, 1, "torch.uint8"},
    {"BoolStorage", TorchDtype::kBool, 1, "torch.bool"},
    {"ComplexFloatStorage", TorchDtype::kComplex64, 8, "torch.complex64"},
    {"ComplexDoubleStorage", TorchDtype::kComplex128, 16, "torch.complex128"},
    {"UntypedStorage", TorchDtype::kUInt8, 1, "torch.uint8"},
};

const DtypeInfo& Info(TorchDtype dtype) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.dtype == dtype) return d;
  }
  return kDtypes[0];
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

struct StorageRecord {
  std::string key;
  TorchDtype dtype;
  uint64_t numel;
  absl::string_view data;
};

struct TensorRecord {
  size_t storage;
  uint64_t offset;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
  uint64_t numel;
};

PickleValue Object(ObjectId id, const char* name, std::vector<PickleRef> items) {
  PickleValue v;
  v.kind = PickleKind::kObject;
  v.i = id;
  v.s = name;
  v.items = std::move(items);
  return v;
}

// The allow-list, the storages of data/ and the tensors made from them.
class TorchHooks : public PickleHooks {
 public:
  TorchHooks(const ZipArchive& zip, std::string prefix) : zip_(zip), prefix_(std::move(prefix)) {}

  absl::StatusOr<PickleValue> Global(absl::string_view module, absl::string_view name) override {
    PickleValue g;
    g.kind = PickleKind::kGlobal;
    g.s = absl::StrCat(module, ".", name);
    if (module == "collections" && name == "OrderedDict") {
      g.i = kOrderedDict;
    } else if (module == "argparse" && name == "Namespace") {
      g.i = kNamespace;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g.i = kRebuildTensorV2;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      g.i = kRebuildParameter;
    } else if (module == "torch" && name == "device") {
      g.i = kDevice;
    } else if (module == "_codecs" && name == "encode") {
      g.i = kCodecsEncode;
    } else if (module == "torch") {
      for (size_t k = 0; k < std::size(kDtypes); ++k) {
        if (name == kDtypes[k].storage) g.i = kStorageTypeBase + static_cast<int64_t>(k);
      }
    }
    if (g.i == 0) {
      return absl::InvalidArgumentError(absl::StrFormat("pickle global %s is not allowed", g.s));
    }
    return g;
  }

  absl::StatusOr<PickleValue> Call(PickleGraph& graph, PickleRef callable, PickleRef args_ref,
                                   PickleRef kwargs_ref, bool newobj) override {
    const PickleValue& c = graph.at(callable);
    if (c.kind != PickleKind::kGlobal) {
      return absl::InvalidArgumentError(
          absl::StrFormat("calling %s is not allowed", graph.Describe(callable)));
    }
    const std::vector<PickleRef>& args = graph.at(args_ref).items;
    const bool has_kwargs = !graph.at(kwargs_ref).items.empty();
    if (has_kwargs && c.i != kNamespace) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s with keyword arguments is not allowed", c.s));
    }
    switch (c.i) {
      case kOrderedDict: {
        if (!args.empty()) {
          return absl::InvalidArgumentError(
              "collections.OrderedDict with arguments is not "
              "allowed (torch pickles it empty, then SETITEMS)");
        }
        PickleValue d;
        d.kind = PickleKind::kDict;
        d.flag = true;
        return d;
      }
      case kNamespace:
        if (!args.empty()) {
          return absl::InvalidArgumentError("argparse.Namespace with positional arguments");
        }
        return Object(kNamespaceObject, "argparse.Namespace",
                      has_kwargs ? std::vector<PickleRef>{kwargs_ref} : std::vector<PickleRef>{});
      case kRebuildTensorV2:
        return RebuildTensor(graph, args);
      case kRebuildParameter:
        if (args.size() != 3 || graph.at(args[0]).kind != PickleKind::kObject ||
            graph.at(args[0]).i != kTensorObject) {
          return absl::InvalidArgumentError(
              "torch._utils._rebuild_parameter needs (tensor, requires_grad, hooks)");
        }
        if (auto s = NoHooks(graph, args[2]); !s.ok()) return s;
        return graph.at(args[0]);
      case kDevice: {
        const bool typed = !args.empty() && graph.at(args[0]).kind == PickleKind::kStr;
        if (typed && args.size() == 1) return Str(graph.at(args[0]).s);
        if (typed && args.size() == 2 && graph.at(args[1]).kind == PickleKind::kInt) {
          return Str(absl::StrCat(graph.at(args[0]).s, ":", graph.at(args[1]).i));
        }
        return absl::InvalidArgumentError("torch.device needs (type) or (type, index)");
      }
      case kCodecsEncode:
        return Latin1(graph, args);
      default:
        break;
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("calling %s is not allowed%s", c.s, newobj ? " (NEWOBJ)" : ""));
  }

  absl::Status Build(PickleGraph& graph, PickleRef object, PickleRef state) override {
    PickleValue& o = graph.at(object);
    if (o.kind == PickleKind::kDict && o.flag) return absl::OkStatus();  // OrderedDict._metadata
    if (o.kind == PickleKind::kObject && o.i == kNamespaceObject) {
      const PickleValue& s = graph.at(state);
      if (s.kind == PickleKind::kDict) {
        o.items.push_back(state);
        return absl::OkStatus();
      }
      // (state, slotstate): either may be None.
      if (s.kind == PickleKind::kTuple && s.items.size() == 2) {
        for (PickleRef part : s.items) {
          const PickleKind kind = graph.at(part).kind;
          if (kind == PickleKind::kDict) {
            o.items.push_back(part);
          } else if (kind != PickleKind::kNone) {
            return absl::InvalidArgumentError("argparse.Namespace state is not a dict");
          }
        }
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(
          absl::StrFormat("argparse.Namespace state is %s, not a dict", graph.Describe(state)));
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("BUILD (setting the state) of %s is not allowed", graph.Describe(object)));
  }

  absl::StatusOr<PickleValue> PersistentLoad(PickleGraph& graph, PickleRef pid) override {
    const PickleValue& p = graph.at(pid);
    const auto kind = [&](size_t k) { return graph.at(p.items[k]).kind; };
    if (p.kind != PickleKind::kTuple || p.items.size() != 5 || kind(0) != PickleKind::kStr ||
        graph.at(p.items[0]).s != "storage") {
      return absl::InvalidArgumentError(
          absl::StrFormat("persistent id %s is not a ('storage', type, key, location, numel) tuple",
                          graph.Describe(pid)));
    }
    const PickleValue& type = graph.at(p.items[1]);
    if (type.kind != PickleKind::kGlobal || type.i < kStorageTypeBase) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "storage type %s is not a torch storage type", graph.Describe(p.items[1])));
    }
    if (kind(2) != PickleKind::kStr || kind(3) != PickleKind::kStr || kind(4) != PickleKind::kInt ||
        graph.at(p.items[4]).i < 0) {
      return absl::InvalidArgumentError(
          "storage persistent id needs a str key, a str location and a count >= 0");
    }
    const DtypeInfo& info = kDtypes[type.i - kStorageTypeBase];
    const std::string& key = graph.at(p.items[2]).s;
    const auto numel = static_cast<uint64_t>(graph.at(p.items[4]).i);
    auto [it, inserted] = storage_index_.try_emplace(key, storages_.size());
    if (!inserted) {
      const StorageRecord& seen = storages_[it->second];
      if (seen.dtype != info.dtype || seen.numel != numel) {
        return absl::InvalidArgumentError(
            absl::StrFormat("storage '%s' is referenced as %d %s and as %d %s elements", key,
                            seen.numel, Info(seen.dtype).name, numel, info.name));
      }
      return Object(kStorageObject, "torch storage", {static_cast<PickleRef>(it->second)});
    }
    const std::string member = absl::StrCat(prefix_, "/data/", key);
    const ZipEntry* entry = zip_.Find(member);
    if (entry == nullptr) {
      storage_index_.erase(it);
      return absl::InvalidArgumentError(
          absl::StrFormat("storage '%s' (member %s) is not in the archive", key, member));
    }
    scratch_.emplace_back();
    auto data = zip_.Read(*entry, &scratch_.back());
    if (!data.ok()) {
      storage_index_.erase(it);
      // The zip reader's message starts with kWhere, which the caller adds again.
      return absl::InvalidArgumentError(
          absl::StrFormat("storage '%s': %s", key,
                          absl::StripPrefix(data.status().message(), absl::StrCat(kWhere, ": "))));
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, info.size, &bytes) || bytes != data->size()) {
      storage_index_.erase(it);
      return absl::InvalidArgumentError(absl::StrFormat(
          "storage '%s' (member %s) holds %d bytes, its record declares %d %s elements", key,
          member, data->size(), numel, info.name));
    }
    storages_.push_back({key, info.dtype, numel, *data});
    return Object(kStorageObject, "torch storage", {static_cast<PickleRef>(storages_.size() - 1)});
  }

  const std::vector<StorageRecord>& storages() const { return storages_; }
  const std::vector<TensorRecord>& tensors() const { return tensors_; }

 private:
  static PickleValue Str(std::string s) {
    PickleValue v;
    v.kind = PickleKind::kStr;
    v.s = std::move(s);
    return v;
  }

  static absl::Status NoHooks(const PickleGraph& graph, PickleRef hooks) {
    const PickleValue& h = graph.at(hooks);
    if (h.kind != PickleKind::kDict || !h.items.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor backward hooks are %s; only an empty dict is allowed", graph.Describe(hooks)));
    }
    return absl::OkStatus();
  }

  // _codecs.encode(str, "latin1"): protocol 2's bytes.
  static absl::StatusOr<PickleValue> Latin1(const PickleGraph& graph,
                                            const std::vector<PickleRef>& args) {
    if (args.size() != 2 || graph.at(args[0]).kind != PickleKind::kStr ||
        graph.at(args[1]).kind != PickleKind::kStr ||
        (graph.at(args[1]).s != "latin1" && graph.at(args[1]).s != "latin-1")) {
      return absl::InvalidArgumentError("_codecs.encode is allowed as (str, 'latin1') only");
    }
    PickleValue out;
    out.kind = PickleKind::kBytes;
    const std::string& s = graph.at(args[0]).s;  // UTF-8 (checked): code points <= 0xff only
    for (size_t k = 0; k < s.size(); ++k) {
      const auto c = static_cast<unsigned char>(s[k]);
      if (c < 0x80) {
        out.s.push_back(static_cast<char>(c));
      } else if ((c == 0xc2 || c == 0xc3) && k + 1 < s.size()) {
        out.s.push_back(static_cast<char>(((c & 0x03) << 6) | (s[++k] & 0x3f)));
      } else {
        return absl::InvalidArgumentError("_codecs.encode: a code point above U+00FF");
      }
    }
    return out;
  }

  static absl::StatusOr<std::vector<int64_t>> Ints(const PickleGraph& graph, PickleRef ref,
                                                   const char* what) {
    const PickleValue& t = graph.at(ref);
    if (t.kind != PickleKind::kTuple || t.items.size() > kMaxRank) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor %s is %s, not a tuple of at most %d ints", what, graph.Describe(ref), kMaxRank));
    }
    std::vector<int64_t> out;
    for (PickleRef r : t.items) {
      if (graph.at(r).kind != PickleKind::kInt || graph.at(r).i < 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor %s has %s, not an int >= 0", what, graph.Describe(r)));
      }
      out.push_back(graph.at(r).i);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
  // [, metadata]).
  absl::StatusOr<PickleValue> RebuildTensor(const PickleGraph& graph,
                                            const std::vector<PickleRef>& args) {
    if (args.size() != 6 && args.size() != 7) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "torch._utils._rebuild_tensor_v2 takes 6 or 7 arguments, not %d", args.size()));
    }
    const PickleValue& storage = graph.at(args[0]);
    if (storage.kind != PickleKind::kObject || storage.i != kStorageObject) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "torch._utils._rebuild_tensor_v2's storage is %s", graph.Describe(args[0])));
    }
    const PickleValue& offset = graph.at(args[1]);
    if (offset.kind != PickleKind::kInt || offset.i < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor storage offset is %s, not an int >= 0", graph.Describe(args[1])));
    }
    auto shape = Ints(graph, args[2], "size");
    if (!shape.ok()) return shape.status();
    auto stride = Ints(graph, args[3], "stride");
    if (!stride.ok()) return stride.status();
    if (shape->size() != stride->size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor size %s and stride %s differ in rank", ShapeString(*shape),
                          ShapeString(*stride)));
    }
    if (auto s = NoHooks(graph, args[5]); !s.ok()) return s;
    if (args.size() == 7 && graph.at(args[6]).kind != PickleKind::kNone &&
        graph.at(args[6]).kind != PickleKind::kDict) {
      return absl::InvalidArgumentError("tensor metadata is neither None nor a dict");
    }
    const StorageRecord& st = storages_[storage.items[0]];
    TensorRecord t{storage.items[0], static_cast<uint64_t>(offset.i), *shape, *stride, 1};
    uint64_t last = t.offset;  // highest element index, if any element
    bool overflow = false;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      const auto size = static_cast<uint64_t>(t.shape[d]);
      uint64_t reach = 0;
      overflow |= __builtin_mul_overflow(t.numel, size, &t.numel);
      if (size > 0) {
        overflow |= __builtin_mul_overflow(size - 1, static_cast<uint64_t>(t.stride[d]), &reach);
        overflow |= __builtin_add_overflow(last, reach, &last);
      }
    }
    const std::string what =
        absl::StrFormat("tensor of size %s, stride %s, offset %d over storage '%s' of %d elements",
                        ShapeString(t.shape), ShapeString(t.stride), t.offset, st.key, st.numel);
    if (overflow) return absl::InvalidArgumentError(absl::StrCat(what, ": sizes overflow"));
    if (t.numel > 0 && last >= st.numel) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s reaches element %d: the storage is too short", what, last));
    }
    if (t.numel > st.numel) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": more elements than its storage (expanded views are not supported)"));
    }
    tensors_.push_back(std::move(t));
    return Object(kTensorObject, "torch.Tensor", {static_cast<PickleRef>(tensors_.size() - 1)});
  }

  const ZipArchive& zip_;
  std::string prefix_;
  std::deque<std::string> scratch_;  // inflated storages (torch stores them uncompressed)
  std::vector<StorageRecord> storages_;
  absl::flat_hash_map<std::string, size_t> storage_index_;
  std::vector<TensorRecord> tensors_;
};

// Copies a tensor's elements into contiguous row-major order.
template <typename T>
std::vector<T> Gather(const TensorRecord& t, const StorageRecord& st, bool big_endian) {
  std::vector<T> out(t.numel);
  if (t.numel == 0) return out;
  const auto* base = reinterpret_cast<const unsigned char*>(st.data.data());
  const size_t rank = t.shape.size();
  std::vector<int64_t> index(rank, 0);
  uint64_t at = t.offset;
  for (uint64_t k = 0; k < t.numel; ++k) {
    out[k] = LoadElement<T>(base + at * sizeof(T), big_endian);
    // Odometer: the last dimension moves fastest.
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < t.shape[d]) {
        at += static_cast<uint64_t>(t.stride[d]);
        break;
      }
      at -= static_cast<uint64_t>(t.stride[d]) * static_cast<uint64_t>(index[d] - 1);
      index[d] = 0;
    }
  }
  return out;
}

TorchArg ToArg(const PickleGraph& graph, PickleRef ref, bool nested) {
  const PickleValue& v = graph.at(ref);
  TorchArg a;
  switch (v.kind) {
    case PickleKind::kNone:
      return a;
    case PickleKind::kBool:
      a.kind = TorchArg::Kind::kBool;
      a.bool_value = v.flag;
      return a;
    case PickleKind::kInt:
      a.kind = TorchArg::Kind::kInt;
      a.int_value = v.i;
      return a;
    case PickleKind::kFloat:
      a.kind = TorchArg::Kind::kDouble;
      a.double_value = v.f;
      return a;
    case PickleKind::kStr:
      a.kind = TorchArg::Kind::kString;
      a.text = v.s;
      return a;
    case PickleKind::kList:
    case PickleKind::kTuple:
      if (!nested) {
        a.kind = v.kind == PickleKind::kList ? TorchArg::Kind::kList : TorchArg::Kind::kTuple;
        for (PickleRef item : v.items) a.items.push_back(ToArg(graph, item, true));
        return a;
      }
      break;
    default:
      break;
  }
  a.kind = TorchArg::Kind::kOther;
  a.text = graph.Describe(ref);
  return a;
}

absl::Status ReadArgs(const PickleGraph& graph, PickleRef ref, TorchCheckpoint* out) {
  const PickleValue& v = graph.at(ref);
  std::vector<PickleRef> dicts;
  if (v.kind == PickleKind::kObject && v.i == kNamespaceObject) {
    dicts = v.items;
  } else if (v.kind == PickleKind::kDict) {
    dicts = {ref};  // vars(args)
  } else {
    return Bad(absl::StrFormat("args is %s, not an argparse.Namespace", graph.Describe(ref)));
  }
  out->has_args = true;
  absl::flat_hash_map<std::string, size_t> index;
  for (PickleRef d : dicts) {
    const std::vector<PickleRef>& kv = graph.at(d).items;
    for (size_t k = 0; k + 1 < kv.size(); k += 2) {
      if (graph.at(kv[k]).kind != PickleKind::kStr) {
        return Bad(absl::StrFormat("args attribute name is %s", graph.Describe(kv[k])));
      }
      const std::string& name = graph.at(kv[k]).s;
      TorchArg arg = ToArg(graph, kv[k + 1], false);
      auto [it, inserted] = index.try_emplace(name, out->args.size());
      if (inserted) {
        out->args.emplace_back(name, std::move(arg));
      } else {
        out->args[it->second].second = std::move(arg);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ReadStateDict(const PickleGraph& graph, PickleRef ref, const TorchHooks& hooks,
                           bool big_endian, uint64_t budget, TorchCheckpoint* out) {
  const PickleValue& d = graph.at(ref);
  if (d.kind != PickleKind::kDict) {
    return Bad(absl::StrFormat("state_dict is %s, not a dict of tensors", graph.Describe(ref)));
  }
  absl::flat_hash_map<std::string, size_t> index;
  uint64_t spent = 0;
  for (size_t k = 0; k + 1 < d.items.size(); k += 2) {
    const PickleValue& key = graph.at(d.items[k]);
    const PickleValue& value = graph.at(d.items[k + 1]);
    if (key.kind != PickleKind::kStr) {
      return Bad(absl::StrFormat("state_dict key %s is not a str", graph.Describe(d.items[k])));
    }
    if (value.kind != PickleKind::kObject || value.i != kTensorObject) {
      return Bad(absl::StrFormat("state_dict['%s'] is %s, not a tensor", key.s,
                                 graph.Describe(d.items[k + 1])));
    }
    const TensorRecord& t = hooks.tensors()[value.items[0]];
    const StorageRecord& st = hooks.storages()[t.storage];
    TorchTensor tensor;
    tensor.dtype = st.dtype;
    tensor.shape = t.shape;
    if (st.dtype == TorchDtype::kFloat32 || st.dtype == TorchDtype::kInt64) {
      spent += t.numel * Info(st.dtype).size;  // numel <= storage numel: no overflow
      if (spent > budget) {
        return Bad(
            absl::StrFormat("state_dict['%s'] takes the tensors past %d bytes (%d times "
                            "the checkpoint, plus 1 MiB): views repeat storages too often",
                            key.s, budget, kMaterialiseFactor));
      }
      if (st.dtype == TorchDtype::kFloat32) {
        tensor.floats = Gather<float>(t, st, big_endian);
      } else {
        tensor.ints = Gather<int64_t>(t, st, big_endian);
      }
    }
    auto [it, inserted] = index.try_emplace(key.s, out->state_dict.size());
    if (inserted) {
      out->state_dict.emplace_back(key.s, std::move(tensor));
    } else {
      out->state_dict[it->second].second = std::move(tensor);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<double>> Number(const PickleGraph& graph, const PickleRef* ref,
                                             const char* field) {
  if (ref == nullptr || graph.at(*ref).kind == PickleKind::kNone) return std::nullopt;
  const PickleValue& v = graph.at(*ref);
  if (v.kind == PickleKind::kFloat) return v.f;
  if (v.kind == PickleKind::kInt) return static_cast<double>(v.i);
  return Bad(absl::StrFormat("%s is %s, not a number", field, graph.Describe(*ref)));
}

}  // namespace

absl::string_view TorchDtypeName(TorchDtype dtype) { return Info(dtype).name; }

int64_t TorchTensor::numel() const {
  int64_t n = 1;
  for (int64_t extent : shape) n *= extent;
  return n;
}

std::string TorchArg::DebugString() const {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return bool_value ? "True" : "False";
    case Kind::kInt:
      return absl::StrCat(int_value);
    case Kind::kDouble:
      return absl::StrCat(double_value);
    case Kind::kString:
      return absl::StrCat("'", text, "'");
    case Kind::kList:
    case Kind::kTuple: {
      std::vector<std::string> parts;
      for (const TorchArg& item : items) parts.push_back(item.DebugString());
      const bool list = kind == Kind::kList;
      return absl::StrCat(list ? "[" : "(", absl::StrJoin(parts, ", "),
                          !list && items.size() == 1 ? "," : "", list ? "]" : ")");
    }
    case Kind::kOther:
      return absl::StrCat("<", text, ">");
  }
  return "?";
}

const TorchArg* TorchCheckpoint::FindArg(absl::string_view name) const {
  for (const auto& [key, value] : args) {
    if (key == name) return &value;
  }
  return nullptr;
}

const TorchTensor* TorchCheckpoint::FindTensor(absl::string_view name) const {
  for (const auto& [key, value] : state_dict) {
    if (key == name) return &value;
  }
  return nullptr;
}

absl::StatusOr<TorchCheckpoint> ParseTorchCheckpoint(absl::string_view bytes) {
  if (bytes.size() >= sizeof(kLegacyMagic) &&
      std::memcmp(bytes.data(), kLegacyMagic, sizeof(kLegacyMagic)) == 0) {
    return Bad(
        "the legacy torch.save format (torch < 1.6, or "
        "_use_new_zipfile_serialization=False) is not supported: load it in PyTorch and "
        "save it again with torch >= 1.6");
  }
  auto zip = ZipArchive::Open(bytes, kWhere);
  if (!zip.ok()) {
    if (!bytes.empty() && static_cast<unsigned char>(bytes[0]) == 0x80) {
      return Bad("a bare pickle, not the ZIP archive torch.save writes (torch >= 1.6)");
    }
    return zip.status();
  }
  // Deflate could expand members 1032-fold: torch stores them, so hold them to the budget.
  const uint64_t budget = kMaterialiseFactor * bytes.size() + kSlackBytes;
  uint64_t inflated = 0;
  for (const ZipEntry& e : zip->entries()) {
    if (__builtin_add_overflow(inflated, e.uncompressed, &inflated) || inflated > budget) {
      return Bad(
          absl::StrFormat("the members would inflate to more than %d bytes (%d times the "
                          "checkpoint, plus 1 MiB)",
                          budget, kMaterialiseFactor));
    }
  }
  // <folder>/data.pkl, the folder being the same for every member.
  const ZipEntry* pickle = nullptr;
  bool torchscript = false;
  for (const ZipEntry& e : zip->entries()) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos || slash == 0) continue;
    const absl::string_view rest = absl::string_view(e.name).substr(slash + 1);
    torchscript |= rest == "constants.pkl" || absl::StartsWith(rest, "code/");
    if (rest != "data.pkl") continue;
    if (pickle != nullptr) {
      return Bad(absl::StrFormat("two pickles, %s and %s: not a torch.save archive", pickle->name,
                                 e.name));
    }
    pickle = &e;
  }
  if (torchscript) {
    return Bad("a TorchScript archive (torch.jit.save), not a torch.save checkpoint");
  }
  if (pickle == nullptr) {
    return Bad("no <folder>/data.pkl member: not a torch.save checkpoint");
  }
  TorchCheckpoint out;
  out.archive_name = pickle->name.substr(0, pickle->name.find('/'));
  std::string scratch;
  if (const ZipEntry* v = zip->Find(out.archive_name + "/version")) {
    auto text = zip->Read(*v, &scratch);
    if (!text.ok()) return text.status();
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &out.version) || out.version < 1 ||
        out.version > 10) {
      return Bad(absl::StrFormat("%s is '%s', not an archive version 1 to 10", v->name,
                                 absl::CHexEscape(text->substr(0, 20))));
    }
  }
  bool big_endian = false;
  if (const ZipEntry* b = zip->Find(out.archive_name + "/byteorder")) {
    auto text = zip->Read(*b, &scratch);
    if (!text.ok()) return text.status();
    const absl::string_view order = absl::StripAsciiWhitespace(*text);
    if (order != "little" && order != "big") {
      return Bad(absl::StrFormat("%s is '%s', neither 'little' nor 'big'", b->name,
                                 absl::CHexEscape(text->substr(0, 20))));
    }
    big_endian = order == "big";
  }
  std::string pickle_scratch;
  auto pickle_bytes = zip->Read(*pickle, &pickle_scratch);
  if (!pickle_bytes.ok()) return pickle_bytes.status();
  TorchHooks hooks(*zip, out.archive_name);
  PickleGraph graph;
  auto root = RunPickle(*pickle_bytes, hooks, &graph);
  if (!root.ok()) return Bad(absl::StrCat(pickle->name, ": ", root.status().message()));

  const PickleValue& top = graph.at(*root);
  if (top.kind != PickleKind::kDict) {
    return Bad(
        absl::StrFormat("%s holds %s, neither a checkpoint dict with 'state_dict' nor a "
                        "state dict",
                        pickle->name, graph.Describe(*root)));
  }
  const PickleRef* state_dict = graph.FindStrKey(*root, "state_dict");
  if (state_dict == nullptr) {  // a bare state dict
    if (auto s = ReadStateDict(graph, *root, hooks, big_endian, budget, &out); !s.ok()) return s;
    return out;
  }
  if (auto s = ReadStateDict(graph, *state_dict, hooks, big_endian, budget, &out); !s.ok()) {
    return s;
  }
  if (const PickleRef* args = graph.FindStrKey(*root, "args")) {
    if (auto s = ReadArgs(graph, *args, &out); !s.ok()) return s;
  }
  if (const PickleRef* epoch = graph.FindStrKey(*root, "epoch")) {
    if (graph.at(*epoch).kind != PickleKind::kInt) {
      return Bad(absl::StrFormat("epoch is %s, not an int", graph.Describe(*epoch)));
    }
    out.epoch = graph.at(*epoch).i;
  }
  auto best_loss = Number(graph, graph.FindStrKey(*root, "best_loss"), "best_loss");
  if (!best_loss.ok()) return best_loss.status();
  out.best_loss = *best_loss;
  auto best_collision =
      Number(graph, graph.FindStrKey(*root, "best_collision_rate"), "best_collision_rate");
  if (!best_collision.ok()) return best_collision.status();
  out.best_collision_rate = *best_collision;
  out.has_optimizer = graph.FindStrKey(*root, "optimizer") != nullptr;
  return out;
}

namespace {

absl::Status ArgError(const TorchArg& arg, absl::string_view name, absl::string_view wanted) {
  return Bad(absl::StrFormat("args.%s is %s, not %s", name, arg.DebugString(), wanted));
}

absl::Status ReadInt(const TorchArg& arg, absl::string_view name, int64_t* out) {
  if (arg.kind != TorchArg::Kind::kInt) return ArgError(arg, name, "an int");
  *out = arg.int_value;
  return absl::OkStatus();
}

absl::Status ReadDouble(const TorchArg& arg, absl::string_view name, double* out) {
  if (arg.kind == TorchArg::Kind::kInt) {
    *out = static_cast<double>(arg.int_value);
  } else if (arg.kind == TorchArg::Kind::kDouble) {
    *out = arg.double_value;
  } else {
    return ArgError(arg, name, "a number");
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadList(const TorchArg& arg, absl::string_view name, std::vector<T>* out) {
  if (arg.kind != TorchArg::Kind::kList && arg.kind != TorchArg::Kind::kTuple) {
    return ArgError(arg, name, "a list of numbers");
  }
  out->clear();
  for (const TorchArg& item : arg.items) {
    if constexpr (std::is_same_v<T, int64_t>) {
      int64_t v = 0;
      if (!ReadInt(item, name, &v).ok()) return ArgError(arg, name, "a list of ints");
      out->push_back(v);
    } else {
      double v = 0;
      if (!ReadDouble(item, name, &v).ok()) return ArgError(arg, name, "a list of numbers");
      out->push_back(v);
    }
  }
  return absl::OkStatus();
}

// Parameter count of a model (encoder + codebooks + decoder), approximately (the decoder's
// biases are taken as the encoder's): a guard against absurd sizes, in double to not overflow.
double ParameterCount(const RqVaeOptions& o, int64_t input_dim) {
  std::vector<double> dims = {static_cast<double>(input_dim)};
  for (int64_t d : o.layers) dims.push_back(static_cast<double>(d));
  dims.push_back(static_cast<double>(o.e_dim));
  double total = 0;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    const double bn = o.bn && i + 2 < dims.size() ? 4 * dims[i + 1] : 0;
    total += 2 * (dims[i] * dims[i + 1] + dims[i + 1] + bn);
  }
  for (int64_t k : o.num_emb_list) total += static_cast<double>(k) * static_cast<double>(o.e_dim);
  return total;
}

absl::StatusOr<RqVae> Load(const TorchCheckpoint& checkpoint, int64_t input_dim,
                           const RqVaeOptions& options, absl::string_view source) {
  if (auto s = ValidateRqVaeOptions(options, input_dim); !s.ok()) {
    return Bad(absl::StrCat(source, ": ", s.message()));
  }
  // The input dim the checkpoint was trained for: mlp_layers.1 is always the first Linear.
  constexpr char kFirst[] = "encoder.mlp_layers.1.weight";
  if (const TorchTensor* first = checkpoint.FindTensor(kFirst);
      first != nullptr && first->shape.size() == 2 && first->shape[1] != input_dim) {
    return Bad(
        absl::StrFormat("input_dim %d does not match the checkpoint: %s has shape %s, a "
                        "model of %d-d inputs",
                        input_dim, kFirst, ShapeString(first->shape), first->shape[1]));
  }
  bool has_bn = false;
  uint64_t floats = 0;
  for (const auto& [name, tensor] : checkpoint.state_dict) {
    has_bn |= absl::EndsWith(name, ".running_mean");
    floats += tensor.floats.size();
  }
  if (has_bn != options.bn) {
    return Bad(absl::StrFormat(
        "%s.bn is %s but the state_dict %s batch-norm tensors (*.running_mean): the %s and the "
        "weights disagree (note the seed's `--bn False` gives bn True through argparse's "
        "type=bool)",
        source, options.bn ? "True" : "False", has_bn ? "has" : "has no", source));
  }
  // Creating the model allocates what the options say: not beyond what the file could hold.
  const double needed = ParameterCount(options, input_dim);
  if (needed > 2 * static_cast<double>(floats) + static_cast<double>(kSlackBytes)) {
    return Bad(
        absl::StrFormat("%s describe a model of %.0f parameters (layers [%s], e_dim %d, "
                        "num_emb_list [%s]), the state_dict holds %d float32 values",
                        source, needed, absl::StrJoin(options.layers, ", "), options.e_dim,
                        absl::StrJoin(options.num_emb_list, ", "), floats));
  }
  auto model = RqVae::Create(input_dim, options);
  if (!model.ok()) return Bad(absl::StrCat(source, ": ", model.status().message()));
  absl::flat_hash_set<std::string> expected;
  for (const RqVaeParameter& p : model->Parameters()) {
    expected.insert(p.name);
    const TorchTensor* t = checkpoint.FindTensor(p.name);
    if (t == nullptr) return Bad(absl::StrCat("state_dict lacks ", p.name));
    if (t->dtype != TorchDtype::kFloat32) {
      return Bad(absl::StrFormat("%s has unsupported dtype %s (weights must be torch.float32)",
                                 p.name, TorchDtypeName(t->dtype)));
    }
    if (t->shape != p.shape) {
      return Bad(absl::StrFormat("%s has shape %s, the model needs %s", p.name,
                                 ShapeString(t->shape), ShapeString(p.shape)));
    }
    for (size_t k = 0; k < t->floats.size(); ++k) {
      if (!std::isfinite(t->floats[k])) {
        return Bad(absl::StrFormat("%s element %d is %f: weights must be finite", p.name, k,
                                   t->floats[k]));
      }
    }
    std::memcpy(p.data, t->floats.data(), t->floats.size() * sizeof(float));
  }
  for (const auto& [name, tensor] : checkpoint.state_dict) {
    if (expected.contains(name)) continue;
    constexpr absl::string_view kTracked = ".num_batches_tracked";
    if (absl::EndsWith(name, kTracked) &&
        expected.contains(
            absl::StrCat(name.substr(0, name.size() - kTracked.size()), ".running_mean"))) {
      continue;
    }
    return Bad(
        absl::StrFormat("state_dict has %s, which the model (layers [%s], e_dim %d, "
                        "num_emb_list [%s], bn %s) does not",
                        name, absl::StrJoin(options.layers, ", "), options.e_dim,
                        absl::StrJoin(options.num_emb_list, ", "), options.bn ? "True" : "False"));
  }
  return model;
}

}  // namespace

absl::StatusOr<RqVaeOptions> RqVaeOptionsFromCheckpoint(const TorchCheckpoint& checkpoint) {
  if (!checkpoint.has_args) {
    return Bad("the checkpoint has no args (a bare state dict): the model options must be given");
  }
  RqVaeOptions o;
  for (const char* required : {"layers", "e_dim", "num_emb_list"}) {
    if (checkpoint.FindArg(required) == nullptr) {
      return Bad(absl::StrFormat("args lacks %s", required));
    }
  }
  if (auto s = ReadList(*checkpoint.FindArg("layers"), "layers", &o.layers); !s.ok()) return s;
  if (auto s = ReadInt(*checkpoint.FindArg("e_dim"), "e_dim", &o.e_dim); !s.ok()) return s;
  if (auto s = ReadList(*checkpoint.FindArg("num_emb_list"), "num_emb_list", &o.num_emb_list);
      !s.ok()) {
    return s;
  }
  o.sk_epsilons.clear();
  if (const TorchArg* a = checkpoint.FindArg("sk_epsilons")) {
    if (auto s = ReadList(*a, "sk_epsilons", &o.sk_epsilons); !s.ok()) return s;
    // The seed zips num_emb_list with sk_epsilons: the shorter one sets the level count.
    if (o.sk_epsilons.empty()) {
      return Bad(
          "args.sk_epsilons is []: the seed's quantizer zips num_emb_list with it and "
          "has no level");
    }
    const size_t levels = std::min(o.sk_epsilons.size(), o.num_emb_list.size());
    o.sk_epsilons.resize(levels);
    o.num_emb_list.resize(levels);
  }
  for (auto [name, field] :
       {std::pair{"beta", &o.beta}, std::pair{"quant_loss_weight", &o.quant_loss_weight},
        std::pair{"dropout_prob", &o.dropout_prob}}) {
    if (const TorchArg* a = checkpoint.FindArg(name)) {
      if (auto s = ReadDouble(*a, name, field); !s.ok()) return s;
    }
  }
  if (const TorchArg* a = checkpoint.FindArg("sk_iters")) {
    int64_t iters = 0;
    if (auto s = ReadInt(*a, "sk_iters", &iters); !s.ok()) return s;
    if (iters < 1 || iters > (int64_t{1} << 30)) return ArgError(*a, "sk_iters", "in [1, 2^30]");
    o.sk_iters = static_cast<int>(iters);
  }
  if (const TorchArg* a = checkpoint.FindArg("bn")) {
    if (a->kind == TorchArg::Kind::kBool) {
      o.bn = a->bool_value;
    } else if (a->kind == TorchArg::Kind::kInt && (a->int_value == 0 || a->int_value == 1)) {
      o.bn = a->int_value == 1;
    } else {
      return ArgError(*a, "bn", "a bool");
    }
  }
  if (const TorchArg* a = checkpoint.FindArg("activation")) {
    if (a->kind == TorchArg::Kind::kNone) {
      o.activation = "none";  // the seed's activation_layer(None) adds no module
    } else if (a->kind == TorchArg::Kind::kString) {
      o.activation = a->text;
    } else {
      return ArgError(*a, "activation", "a str");
    }
  }
  if (const TorchArg* a = checkpoint.FindArg("loss_type");
      a != nullptr && a->kind != TorchArg::Kind::kString) {
    return ArgError(*a, "loss_type", "a str");  // read, then ignored: training only
  }
  return o;
}

absl::StatusOr<RqVae> RqVaeFromCheckpoint(const TorchCheckpoint& checkpoint, int64_t input_dim) {
  auto options = RqVaeOptionsFromCheckpoint(checkpoint);
  if (!options.ok()) return options.status();
  return Load(checkpoint, input_dim, *options, "args");
}

absl::StatusOr<RqVae> RqVaeFromCheckpoint(const TorchCheckpoint& checkpoint, int64_t input_dim,
                                          const RqVaeOptions& options) {
  return Load(checkpoint, input_dim, options, "options");
}

}  // namespace quantd
