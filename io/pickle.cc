#include "io/pickle.h"

#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "io/npy_format.h"

namespace quantd {
namespace {

// Values made before the first opcode (singletons) and per opcode at most: the arena's bound
// is one value per input byte plus this.
constexpr int64_t kSpareValues = 16;
constexpr int kHighestProtocol = 5;

// Appends code point cp as UTF-8.
void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// Whether s is UTF-8 as Python's "utf-8" codec with "surrogatepass" takes it (pickle's
// BINUNICODE): well-formed sequences, shortest forms, code points up to U+10FFFF.
bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= static_cast<size_t>(n)) return false;
    for (int k = 1; k <= n; ++k) {
      const auto t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (t & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff) return false;
    i += n + 1;
  }
  return true;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python's raw-unicode-escape decoding (protocol 0's UNICODE): \uXXXX and \UXXXXXXXX escapes,
// every other byte a Latin-1 code point. False for a bad escape.
bool RawUnicodeEscape(absl::string_view in, std::string* out) {
  for (size_t i = 0; i < in.size(); ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c == '\\' && i + 1 < in.size() && (in[i + 1] == 'u' || in[i + 1] == 'U')) {
      const size_t n = in[i + 1] == 'u' ? 4 : 8;
      if (in.size() - i - 2 < n) return false;
      uint32_t cp = 0;
      for (size_t k = 0; k < n; ++k) {
        const int h = HexDigit(in[i + 2 + k]);
        if (h < 0) return false;
        cp = cp * 16 + static_cast<uint32_t>(h);
      }
      if (cp > 0x10ffff) return false;
      AppendUtf8(cp, out);
      i += n + 1;
    } else {
      AppendUtf8(c, out);
    }
  }
  return true;
}

// Protocol 0's STRING: a Python bytes literal body in quotes, with its backslash escapes
// (codecs.escape_decode). False when unquoted or a \x escape is cut short.
bool EscapeDecode(absl::string_view line, std::string* out) {
  if (line.size() < 2 || line.front() != line.back() ||
      (line.front() != '\'' && line.front() != '"')) {
    return false;
  }
  const absl::string_view in = line.substr(1, line.size() - 2);
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\' || i + 1 == in.size()) {
      out->push_back(in[i]);
      continue;
    }
    const char e = in[++i];
    switch (e) {
      case '\n':
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'a':
        out->push_back('\a');
        break;
      case 'b':
        out->push_back('\b');
        break;
      case 'f':
        out->push_back('\f');
        break;
      case 'v':
        out->push_back('\v');
        break;
      case 'x': {
        if (in.size() - i - 1 < 2) return false;
        const int hi = HexDigit(in[i + 1]);
        const int lo = HexDigit(in[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out->push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0';
          for (int k = 0; k < 2 && i + 1 < in.size() && in[i + 1] >= '0' && in[i + 1] <= '7'; ++k) {
            v = v * 8 + (in[++i] - '0');
          }
          out->push_back(static_cast<char>(v & 0xff));
        } else {
          out->push_back('\\');  // unknown escapes stay as they are
          out->push_back(e);
        }
    }
  }
  return true;
}

const char* OpcodeName(uint8_t op) {
  switch (op) {
    case 'R':
      return "REDUCE";
    case 'b':
      return "BUILD";
    case 0x81:
      return "NEWOBJ";
    case 0x92:
      return "NEWOBJ_EX";
    case 'o':
      return "OBJ";
    case 'i':
      return "INST";
    case 'c':
      return "GLOBAL";
    case 0x93:
      return "STACK_GLOBAL";
    case 'Q':
      return "BINPERSID";
    case 'P':
      return "PERSID";
    default:
      return "opcode";
  }
}

class Machine {
 public:
  Machine(absl::string_view bytes, PickleHooks& hooks, PickleGraph* graph,
          const PickleLimits& limits)
      : in_(bytes), hooks_(hooks), graph_(*graph), limits_(limits) {}

  absl::StatusOr<PickleRef> Run();

 private:
  // An error at the current opcode.
  absl::Status Fail(absl::string_view problem) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s (pickle opcode 0x%02x at offset %d)", problem, op_, op_at_));
  }
  absl::Status Need(uint64_t n) const {
    if (n > in_.size() - pos_) {
      return Fail(absl::StrFormat("needs %d more bytes, the pickle has %d left: truncated?", n,
                                  in_.size() - pos_));
    }
    return absl::OkStatus();
  }
  // Little-endian unsigned of n bytes (n <= 8), after Need(n).
  uint64_t Unsigned(int n) {
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<unsigned char>(in_[pos_ + k]);
    pos_ += n;
    return v;
  }
  absl::StatusOr<uint64_t> Length(int n) {
    if (auto s = Need(n); !s.ok()) return s;
    const uint64_t len = Unsigned(n);
    if (auto s = Need(len); !s.ok()) return s;
    return len;
  }
  // A protocol 0 argument: the bytes up to the next newline (consumed, not returned).
  absl::StatusOr<absl::string_view> Line() {
    const size_t nl = in_.find('\n', pos_);
    if (nl == absl::string_view::npos) return Fail("text argument without a newline: truncated?");
    const absl::string_view line = in_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    return line;
  }

  absl::StatusOr<PickleRef> New(PickleValue v) {
    if (graph_.size() >= static_cast<int64_t>(in_.size()) + kSpareValues) {
      return Fail("more values than the pickle's bytes can describe");
    }
    return graph_.Add(std::move(v));
  }
  absl::Status Push(PickleRef r) {
    if (static_cast<int64_t>(stack_.size()) >= limits_.max_stack) {
      return Fail(absl::StrFormat("stack deeper than %d", limits_.max_stack));
    }
    stack_.push_back(r);
    return absl::OkStatus();
  }
  absl::Status PushNew(PickleValue v) {
    auto r = New(std::move(v));
    if (!r.ok()) return r.status();
    return Push(*r);
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  // The top of the stack above the last MARK.
  absl::StatusOr<PickleRef> Top() const {
    if (stack_.size() <= Floor()) return Fail("stack underflow");
    return stack_.back();
  }
  absl::StatusOr<PickleRef> Pop() {
    auto r = Top();
    if (r.ok()) stack_.pop_back();
    return r;
  }
  // The items above the last MARK, which is removed with them.
  absl::StatusOr<std::vector<PickleRef>> PopMark() {
    if (marks_.empty()) return Fail("no MARK to pop to");
    std::vector<PickleRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()),
                                 stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  absl::Status Memo(uint64_t key) {
    auto top = Top();
    if (!top.ok()) return top.status();
    if (static_cast<int64_t>(memo_.size()) >= limits_.max_memo || memo_.size() > in_.size()) {
      return Fail(absl::StrFormat("memo larger than %d entries", limits_.max_memo));
    }
    memo_[key] = *top;
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Fail(absl::StrFormat("memo key %d was never set", key));
    return Push(it->second);
  }
  absl::Status PushInt(int64_t v) {
    PickleValue p;
    p.kind = PickleKind::kInt;
    p.i = v;
    return PushNew(std::move(p));
  }
  // A decimal integer (protocol 0's INT and LONG), int64 or kBigInt.
  absl::Status PushDecimal(absl::string_view text) {
    text = absl::StripAsciiWhitespace(text);
    int64_t v = 0;
    if (absl::SimpleAtoi(text, &v)) return PushInt(v);
    absl::string_view digits = text;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) digits.remove_prefix(1);
    if (digits.empty() || digits.find_first_not_of("0123456789") != absl::string_view::npos) {
      return Fail("bad decimal integer");
    }
    PickleValue p;
    p.kind = PickleKind::kBigInt;
    p.i = static_cast<int64_t>(digits.size() * 10 / 24 + 1);
    return PushNew(std::move(p));
  }
  // LONG1 / LONG4: n bytes of little-endian two's complement.
  absl::Status PushLong(uint64_t n) {
    if (n > 8) {
      PickleValue p;
      p.kind = PickleKind::kBigInt;
      p.i = static_cast<int64_t>(n);
      pos_ += n;
      return PushNew(std::move(p));
    }
    if (n == 0) return PushInt(0);
    uint64_t v = Unsigned(static_cast<int>(n));
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    return PushInt(static_cast<int64_t>(v));
  }
  absl::Status PushString(PickleKind kind, std::string s) {
    if (kind == PickleKind::kStr && !IsUtf8(s)) return Fail("string is not valid UTF-8");
    PickleValue p;
    p.kind = kind;
    p.s = std::move(s);
    return PushNew(std::move(p));
  }
  absl::Status PushSized(PickleKind kind, int length_bytes) {
    auto len = Length(length_bytes);
    if (!len.ok()) return len.status();
    std::string s(in_.substr(pos_, *len));
    pos_ += *len;
    return PushString(kind, std::move(s));
  }
  absl::Status PushContainer(PickleKind kind, std::vector<PickleRef> items) {
    PickleValue p;
    p.kind = kind;
    p.items = std::move(items);
    return PushNew(std::move(p));
  }
  absl::Status PushGlobal(absl::string_view module, absl::string_view name) {
    auto g = hooks_.Global(module, name);
    if (!g.ok()) return Fail(g.status().message());
    return PushNew(std::move(*g));
  }
  // Appends items to the list (or set, for ADDITEMS) `target`.
  absl::Status Extend(PickleRef target, PickleKind kind, const std::vector<PickleRef>& items) {
    PickleValue& t = graph_.at(target);
    if (t.kind != kind) {
      return Fail(absl::StrFormat("cannot add items to %s", graph_.Describe(target)));
    }
    t.items.insert(t.items.end(), items.begin(), items.end());
    return absl::OkStatus();
  }
  absl::Status SetItems(PickleRef target, const std::vector<PickleRef>& kv) {
    if (kv.size() % 2 != 0) return Fail("SETITEMS with an odd number of items");
    return Extend(target, PickleKind::kDict, kv);
  }
  absl::Status Call(PickleRef callable, PickleRef args, PickleRef kwargs, bool newobj) {
    if (graph_.at(args).kind != PickleKind::kTuple) {
      return Fail(absl::StrFormat("%s arguments are %s, not a tuple", OpcodeName(op_),
                                  graph_.Describe(args)));
    }
    if (graph_.at(kwargs).kind != PickleKind::kDict) {
      return Fail(absl::StrFormat("%s keyword arguments are %s, not a dict", OpcodeName(op_),
                                  graph_.Describe(kwargs)));
    }
    auto v = hooks_.Call(graph_, callable, args, kwargs, newobj);
    if (!v.ok()) return Fail(v.status().message());
    return PushNew(std::move(*v));
  }
  absl::StatusOr<PickleRef> EmptyDict() {
    PickleValue p;
    p.kind = PickleKind::kDict;
    return New(std::move(p));
  }

  absl::Status Step();

  absl::string_view in_;
  PickleHooks& hooks_;
  PickleGraph& graph_;
  const PickleLimits& limits_;
  size_t pos_ = 0;
  uint8_t op_ = 0;
  size_t op_at_ = 0;
  bool stopped_ = false;
  std::vector<PickleRef> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, PickleRef> memo_;
};

absl::StatusOr<PickleRef> Machine::Run() {
  while (!stopped_) {
    if (pos_ >= in_.size()) {
      op_at_ = pos_;
      return Fail("the pickle ends without STOP: truncated?");
    }
    op_at_ = pos_;
    op_ = static_cast<uint8_t>(in_[pos_++]);
    if (auto s = Step(); !s.ok()) return s;
  }
  if (stack_.size() != 1 || !marks_.empty()) {
    return Fail(absl::StrFormat("STOP with %d values and %d MARKs on the stack, not one value",
                                stack_.size(), marks_.size()));
  }
  return stack_.back();
}

absl::Status Machine::Step() {
  switch (op_) {
    case 0x80: {  // PROTO
      if (auto s = Need(1); !s.ok()) return s;
      const int proto = static_cast<unsigned char>(in_[pos_++]);
      if (proto > kHighestProtocol) {
        return Fail(absl::StrFormat("pickle protocol %d is not supported (0 to %d)", proto,
                                    kHighestProtocol));
      }
      return absl::OkStatus();
    }
    case 0x95: {  // FRAME: a length prefix, nothing to do with it
      auto len = Length(8);
      return len.ok() ? absl::OkStatus() : len.status();
    }
    case '.':  // STOP
      stopped_ = true;
      return absl::OkStatus();
    case '(':  // MARK
      if (static_cast<int64_t>(marks_.size()) >= limits_.max_marks) {
        return Fail(absl::StrFormat("more than %d nested MARKs", limits_.max_marks));
      }
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case '0':  // POP
      return Pop().status();
    case '1':  // POP_MARK
      return PopMark().status();
    case '2': {  // DUP
      auto top = Top();
      if (!top.ok()) return top.status();
      return Push(*top);
    }
    case 'N':
      return PushNew(PickleValue{});
    case 0x88:
    case 0x89: {  // NEWTRUE, NEWFALSE
      PickleValue p;
      p.kind = PickleKind::kBool;
      p.flag = op_ == 0x88;
      return PushNew(std::move(p));
    }
    case 'J':  // BININT
      if (auto s = Need(4); !s.ok()) return s;
      return PushInt(static_cast<int32_t>(static_cast<uint32_t>(Unsigned(4))));
    case 'K':  // BININT1
      if (auto s = Need(1); !s.ok()) return s;
      return PushInt(static_cast<int64_t>(Unsigned(1)));
    case 'M':  // BININT2
      if (auto s = Need(2); !s.ok()) return s;
      return PushInt(static_cast<int64_t>(Unsigned(2)));
    case 0x8a: {  // LONG1
      auto n = Length(1);
      if (!n.ok()) return n.status();
      return PushLong(*n);
    }
    case 0x8b: {  // LONG4
      if (auto s = Need(4); !s.ok()) return s;
      const auto n = static_cast<int32_t>(static_cast<uint32_t>(Unsigned(4)));
      if (n < 0) return Fail("LONG4 with a negative length");
      if (auto s = Need(static_cast<uint64_t>(n)); !s.ok()) return s;
      return PushLong(static_cast<uint64_t>(n));
    }
    case 'I': {  // INT (text; "00" / "01" are False / True)
      auto line = Line();
      if (!line.ok()) return line.status();
      if (*line == "00" || *line == "01") {
        PickleValue p;
        p.kind = PickleKind::kBool;
        p.flag = *line == "01";
        return PushNew(std::move(p));
      }
      return PushDecimal(*line);
    }
    case 'L': {  // LONG (text, with an optional trailing L)
      auto line = Line();
      if (!line.ok()) return line.status();
      absl::string_view text = *line;
      if (!text.empty() && text.back() == 'L') text.remove_suffix(1);
      return PushDecimal(text);
    }
    case 'G': {  // BINFLOAT: big-endian double
      if (auto s = Need(8); !s.ok()) return s;
      PickleValue p;
      p.kind = PickleKind::kFloat;
      p.f = LoadElement<double>(reinterpret_cast<const unsigned char*>(in_.data() + pos_), true);
      pos_ += 8;
      return PushNew(std::move(p));
    }
    case 'F': {  // FLOAT (text)
      auto line = Line();
      if (!line.ok()) return line.status();
      PickleValue p;
      p.kind = PickleKind::kFloat;
      if (!absl::SimpleAtod(*line, &p.f)) return Fail("bad FLOAT text");
      return PushNew(std::move(p));
    }
    case 'X':  // BINUNICODE
      return PushSized(PickleKind::kStr, 4);
    case 0x8c:  // SHORT_BINUNICODE
      return PushSized(PickleKind::kStr, 1);
    case 0x8d:  // BINUNICODE8
      return PushSized(PickleKind::kStr, 8);
    case 'T': {  // BINSTRING: signed 4-byte length; Python 3 decodes it (ASCII) to str
      if (auto s = Need(4); !s.ok()) return s;
      if (static_cast<unsigned char>(in_[pos_ + 3]) & 0x80) {
        return Fail("BINSTRING with a negative length");
      }
      return PushSized(PickleKind::kStr, 4);
    }
    case 'U':  // SHORT_BINSTRING
      return PushSized(PickleKind::kStr, 1);
    case 'B':  // BINBYTES
      return PushSized(PickleKind::kBytes, 4);
    case 'C':  // SHORT_BINBYTES
      return PushSized(PickleKind::kBytes, 1);
    case 0x8e:  // BINBYTES8
    case 0x96:  // BYTEARRAY8
      return PushSized(PickleKind::kBytes, 8);
    case 'V': {  // UNICODE (text, raw-unicode-escape)
      auto line = Line();
      if (!line.ok()) return line.status();
      std::string s;
      if (!RawUnicodeEscape(*line, &s)) return Fail("bad \\u escape in UNICODE");
      return PushString(PickleKind::kStr, std::move(s));
    }
    case 'S': {  // STRING (text, a quoted bytes literal)
      auto line = Line();
      if (!line.ok()) return line.status();
      std::string s;
      if (!EscapeDecode(*line, &s)) return Fail("STRING argument is not a quoted string");
      return PushString(PickleKind::kStr, std::move(s));
    }
    case '}':  // EMPTY_DICT
      return PushContainer(PickleKind::kDict, {});
    case ']':  // EMPTY_LIST
      return PushContainer(PickleKind::kList, {});
    case ')':  // EMPTY_TUPLE
      return PushContainer(PickleKind::kTuple, {});
    case 0x8f:  // EMPTY_SET
      return PushContainer(PickleKind::kSet, {});
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
      const size_t n = op_ - 0x84;
      if (stack_.size() < Floor() + n) return Fail("stack underflow");
      std::vector<PickleRef> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
      stack_.resize(stack_.size() - n);
      return PushContainer(PickleKind::kTuple, std::move(items));
    }
    case 't':    // TUPLE
    case 'l':    // LIST
    case 0x91:   // FROZENSET
    case 'd': {  // DICT
      auto items = PopMark();
      if (!items.ok()) return items.status();
      if (op_ == 'd' && items->size() % 2 != 0) return Fail("DICT with an odd number of items");
      const PickleKind kind = op_ == 't'   ? PickleKind::kTuple
                              : op_ == 'l' ? PickleKind::kList
                              : op_ == 'd' ? PickleKind::kDict
                                           : PickleKind::kSet;
      return PushContainer(kind, std::move(*items));
    }
    case 'a': {  // APPEND
      auto item = Pop();
      if (!item.ok()) return item.status();
      auto list = Top();
      if (!list.ok()) return list.status();
      return Extend(*list, PickleKind::kList, {*item});
    }
    case 'e':     // APPENDS
    case 0x90: {  // ADDITEMS
      auto items = PopMark();
      if (!items.ok()) return items.status();
      auto target = Top();
      if (!target.ok()) return target.status();
      return Extend(*target, op_ == 'e' ? PickleKind::kList : PickleKind::kSet, *items);
    }
    case 's': {  // SETITEM
      auto value = Pop();
      if (!value.ok()) return value.status();
      auto key = Pop();
      if (!key.ok()) return key.status();
      auto dict = Top();
      if (!dict.ok()) return dict.status();
      return SetItems(*dict, {*key, *value});
    }
    case 'u': {  // SETITEMS
      auto items = PopMark();
      if (!items.ok()) return items.status();
      auto dict = Top();
      if (!dict.ok()) return dict.status();
      return SetItems(*dict, *items);
    }
    case 'p': {  // PUT (text)
      auto line = Line();
      if (!line.ok()) return line.status();
      uint64_t key = 0;
      if (!absl::SimpleAtoi(*line, &key)) return Fail("bad PUT key");
      return Memo(key);
    }
    case 'q':  // BINPUT
      if (auto s = Need(1); !s.ok()) return s;
      return Memo(Unsigned(1));
    case 'r':  // LONG_BINPUT
      if (auto s = Need(4); !s.ok()) return s;
      return Memo(Unsigned(4));
    case 0x94:  // MEMOIZE
      return Memo(memo_.size());
    case 'g': {  // GET (text)
      auto line = Line();
      if (!line.ok()) return line.status();
      uint64_t key = 0;
      if (!absl::SimpleAtoi(*line, &key)) return Fail("bad GET key");
      return Get(key);
    }
    case 'h':  // BINGET
      if (auto s = Need(1); !s.ok()) return s;
      return Get(Unsigned(1));
    case 'j':  // LONG_BINGET
      if (auto s = Need(4); !s.ok()) return s;
      return Get(Unsigned(4));
    case 'c': {  // GLOBAL (text: module, name)
      auto module = Line();
      if (!module.ok()) return module.status();
      auto name = Line();
      if (!name.ok()) return name.status();
      return PushGlobal(*module, *name);
    }
    case 0x93: {  // STACK_GLOBAL
      auto name = Pop();
      if (!name.ok()) return name.status();
      auto module = Pop();
      if (!module.ok()) return module.status();
      if (graph_.at(*module).kind != PickleKind::kStr ||
          graph_.at(*name).kind != PickleKind::kStr) {
        return Fail("STACK_GLOBAL of non-strings");
      }
      return PushGlobal(graph_.at(*module).s, graph_.at(*name).s);
    }
    case 'R': {  // REDUCE
      auto args = Pop();
      if (!args.ok()) return args.status();
      auto callable = Pop();
      if (!callable.ok()) return callable.status();
      auto kwargs = EmptyDict();
      if (!kwargs.ok()) return kwargs.status();
      return Call(*callable, *args, *kwargs, false);
    }
    case 0x81:
    case 0x92: {  // NEWOBJ, NEWOBJ_EX
      PickleRef kwargs = 0;
      if (op_ == 0x92) {
        auto k = Pop();
        if (!k.ok()) return k.status();
        kwargs = *k;
      } else {
        auto k = EmptyDict();
        if (!k.ok()) return k.status();
        kwargs = *k;
      }
      auto args = Pop();
      if (!args.ok()) return args.status();
      auto cls = Pop();
      if (!cls.ok()) return cls.status();
      return Call(*cls, *args, kwargs, true);
    }
    case 'o': {  // OBJ: MARK cls args...
      auto items = PopMark();
      if (!items.ok()) return items.status();
      if (items->empty()) return Fail("OBJ without a class");
      const PickleRef cls = items->front();
      items->erase(items->begin());
      auto args = New(PickleValue{PickleKind::kTuple, false, 0, 0, {}, std::move(*items)});
      if (!args.ok()) return args.status();
      auto kwargs = EmptyDict();
      if (!kwargs.ok()) return kwargs.status();
      return Call(cls, *args, *kwargs, false);
    }
    case 'i': {  // INST (text: module, name), MARK args...
      auto module = Line();
      if (!module.ok()) return module.status();
      auto name = Line();
      if (!name.ok()) return name.status();
      auto g = hooks_.Global(*module, *name);
      if (!g.ok()) return Fail(g.status().message());
      auto cls = New(std::move(*g));
      if (!cls.ok()) return cls.status();
      auto items = PopMark();
      if (!items.ok()) return items.status();
      auto args = New(PickleValue{PickleKind::kTuple, false, 0, 0, {}, std::move(*items)});
      if (!args.ok()) return args.status();
      auto kwargs = EmptyDict();
      if (!kwargs.ok()) return kwargs.status();
      return Call(*cls, *args, *kwargs, false);
    }
    case 'b': {  // BUILD
      auto state = Pop();
      if (!state.ok()) return state.status();
      auto object = Top();
      if (!object.ok()) return object.status();
      if (auto s = hooks_.Build(graph_, *object, *state); !s.ok()) return Fail(s.message());
      return absl::OkStatus();
    }
    case 'Q': {  // BINPERSID
      auto pid = Pop();
      if (!pid.ok()) return pid.status();
      auto v = hooks_.PersistentLoad(graph_, *pid);
      if (!v.ok()) return Fail(v.status().message());
      return PushNew(std::move(*v));
    }
    case 'P': {  // PERSID (text)
      auto line = Line();
      if (!line.ok()) return line.status();
      auto pid = New(PickleValue{PickleKind::kStr, false, 0, 0, std::string(*line), {}});
      if (!pid.ok()) return pid.status();
      auto v = hooks_.PersistentLoad(graph_, *pid);
      if (!v.ok()) return Fail(v.status().message());
      return PushNew(std::move(*v));
    }
    case 0x82:
    case 0x83:
    case 0x84:  // EXT1, EXT2, EXT4
      return Fail("the pickle extension registry (EXT1/EXT2/EXT4) is not allowed");
    case 0x97:
    case 0x98:  // NEXT_BUFFER, READONLY_BUFFER
      return Fail("out-of-band buffers (pickle protocol 5) are not supported");
    default:
      return Fail(absl::StrFormat("unknown pickle opcode 0x%02x", op_));
  }
}

}  // namespace

std::string PickleGraph::Describe(PickleRef r) const {
  const PickleValue& v = at(r);
  switch (v.kind) {
    case PickleKind::kNone:
      return "None";
    case PickleKind::kBool:
      return v.flag ? "True" : "False";
    case PickleKind::kInt:
      return absl::StrCat("an int (", v.i, ")");
    case PickleKind::kBigInt:
      return absl::StrCat("an int of ", v.i, " bytes");
    case PickleKind::kFloat:
      return absl::StrCat("a float (", v.f, ")");
    case PickleKind::kStr:
      return v.s.size() <= 40 ? absl::StrCat("a str ('", v.s, "')")
                              : absl::StrCat("a str of ", v.s.size(), " bytes");
    case PickleKind::kBytes:
      return absl::StrCat("bytes (", v.s.size(), ")");
    case PickleKind::kList:
      return absl::StrCat("a list of ", v.items.size());
    case PickleKind::kTuple:
      return absl::StrCat("a tuple of ", v.items.size());
    case PickleKind::kDict:
      return absl::StrCat(v.flag ? "an OrderedDict of " : "a dict of ", v.items.size() / 2,
                          " entries");
    case PickleKind::kSet:
      return absl::StrCat("a set of ", v.items.size());
    case PickleKind::kGlobal:
      return v.s;
    case PickleKind::kObject:
      return absl::StrCat("a ", v.s);
  }
  return "?";
}

const PickleRef* PickleGraph::FindStrKey(PickleRef dict, absl::string_view key) const {
  const PickleValue& d = at(dict);
  if (d.kind != PickleKind::kDict) return nullptr;
  const PickleRef* found = nullptr;
  for (size_t k = 0; k + 1 < d.items.size(); k += 2) {
    const PickleValue& name = at(d.items[k]);
    if (name.kind == PickleKind::kStr && name.s == key) found = &d.items[k + 1];
  }
  return found;
}

absl::StatusOr<PickleRef> RunPickle(absl::string_view bytes, PickleHooks& hooks, PickleGraph* graph,
                                    const PickleLimits& limits) {
  Machine machine(bytes, hooks, graph, limits);
  return machine.Run();
}

}  // namespace quantd
