#include "client/attributes.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace quantd {
namespace {

constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53

// One line of an attribute file as Attributes.
absl::StatusOr<v1::Attributes> ParseLine(absl::string_view line, const std::string& where) {
  v1::Attributes out;
  if (absl::StripAsciiWhitespace(line).empty()) return out;
  google::protobuf::Struct object;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(line.data(), line.size()), &object);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s is not a JSON object of attributes: %s",
                                                      where, std::string(parsed.message())));
  }
  for (const auto& [key, value] : object.fields()) {
    v1::AttributeValue& into = (*out.mutable_values())[key];
    switch (value.kind_case()) {
      case google::protobuf::Value::kStringValue:
        into.set_s(value.string_value());
        break;
      case google::protobuf::Value::kNumberValue: {
        const double number = value.number_value();
        if (number != std::floor(number) || std::fabs(number) > kMaxExactInt) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: key '%s' has %.17g; attribute numbers are integers within +-2^53", where, key,
              number));
        }
        into.set_i(static_cast<int64_t>(number));
        break;
      }
      default:
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: key '%s' is not a string or an integer (attributes are flat)", where, key));
    }
  }
  return out;
}

// A condition's value text (after '='): quoted string, int, range, or bare string.
absl::Status SetTest(absl::string_view value, bool quoted, const std::string& where,
                     v1::AttributeCondition* condition) {
  if (quoted) {
    condition->set_equals_string(std::string(value));
    return absl::OkStatus();
  }
  int64_t number = 0;
  if (absl::SimpleAtoi(value, &number)) {
    condition->set_equals_int(number);
    return absl::OkStatus();
  }
  if (const size_t dots = value.find(".."); dots != absl::string_view::npos) {
    const absl::string_view min = value.substr(0, dots);
    const absl::string_view max = value.substr(dots + 2);
    v1::IntRange* range = condition->mutable_range();
    int64_t bound = 0;
    if (!min.empty()) {
      if (!absl::SimpleAtoi(min, &bound)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: range bound '%s' is not an integer", where, min));
      }
      range->set_min(bound);
    }
    if (!max.empty()) {
      if (!absl::SimpleAtoi(max, &bound)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: range bound '%s' is not an integer", where, max));
      }
      range->set_max(bound);
    }
    if (min.empty() && max.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: a range needs a bound (MIN.., ..MAX or MIN..MAX)", where));
    }
    return absl::OkStatus();
  }
  if (value.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has no value (an empty string is KEY=\"\")", where));
  }
  condition->set_equals_string(std::string(value));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<v1::Attributes>> ReadAttributeLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot read attribute file '%s'", path));
  std::vector<v1::Attributes> rows;
  std::string line;
  while (std::getline(in, line)) {
    auto parsed = ParseLine(line, absl::StrFormat("%s line %d", path, rows.size() + 1));
    if (!parsed.ok()) return parsed.status();
    rows.push_back(std::move(*parsed));
  }
  if (in.bad()) return absl::DataLossError(absl::StrFormat("reading '%s' failed", path));
  return rows;
}

absl::StatusOr<std::vector<v1::AttributeCondition>> ParseWhere(absl::string_view text) {
  std::vector<v1::AttributeCondition> conditions;
  size_t at = 0;
  while (at <= text.size()) {
    const std::string where = absl::StrFormat("--where condition %d", conditions.size() + 1);
    const size_t equals = text.find('=', at);
    if (equals == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s '%s' is not KEY=VALUE, KEY=\"TEXT\" or KEY=MIN..MAX", where, text.substr(at)));
    }
    v1::AttributeCondition condition;
    condition.set_key(std::string(absl::StripAsciiWhitespace(text.substr(at, equals - at))));
    size_t end = equals + 1;
    std::string value;
    bool quoted = false;
    if (end < text.size() && text[end] == '"') {
      quoted = true;
      bool closed = false;
      for (++end; end < text.size(); ++end) {
        if (text[end] == '\\' && end + 1 < text.size()) {
          value += text[++end];
        } else if (text[end] == '"') {
          closed = true;
          ++end;
          break;
        } else {
          value += text[end];
        }
      }
      if (!closed) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s on key '%s': the quoted value has no closing '\"'", where, condition.key()));
      }
      if (end < text.size() && text[end] != ',') {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s on key '%s': expected ',' after the quoted value", where, condition.key()));
      }
    } else {
      const size_t comma = text.find(',', end);
      const size_t stop = comma == absl::string_view::npos ? text.size() : comma;
      value = std::string(absl::StripAsciiWhitespace(text.substr(end, stop - end)));
      end = stop;
    }
    if (auto status = SetTest(value, quoted, where, &condition); !status.ok()) return status;
    conditions.push_back(std::move(condition));
    if (end >= text.size()) break;
    at = end + 1;  // past the comma
  }
  return conditions;
}

std::string FormatAttributes(const v1::Attributes& attributes) {
  const std::map<std::string, v1::AttributeValue> sorted(attributes.values().begin(),
                                                         attributes.values().end());
  std::vector<std::string> parts;
  for (const auto& [key, value] : sorted) {
    if (value.value_case() == v1::AttributeValue::kI) {
      parts.push_back(absl::StrCat(key, "=", value.i()));
    } else {
      parts.push_back(absl::StrCat(key, "=\"", absl::CEscape(value.s()), "\""));
    }
  }
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

}  // namespace quantd
