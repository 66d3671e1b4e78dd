// Item attributes on the client side: quantctl's attribute file (JSON Lines), its --where
// syntax, and one-line rendering.
#ifndef QUANTD_CLIENT_ATTRIBUTES_H_
#define QUANTD_CLIENT_ATTRIBUTES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd {

// An attribute file: JSON Lines, line i (1-based in errors) for row i - 1 of the vector file,
// each a flat object of string or integer values, e.g. {"genre": "jazz", "year": 1959}; an
// empty line or {} gives the row no attributes. Integers must be whole numbers within +-2^53
// (JSON numbers are doubles). INVALID_ARGUMENT naming the file, the line and the key for
// anything else (nested values, booleans, null, fractions, malformed JSON).
absl::StatusOr<std::vector<v1::Attributes>> ReadAttributeLines(const std::string& path);

// --where: conditions separated by commas, each
//   KEY=VALUE        equality: an int when VALUE is an integer, else a string
//   KEY="VALUE"      string equality (quotes allow commas, '..' and digits; \" and \\ escape)
//   KEY=MIN..MAX     inclusive int range; either bound may be left out (year=1990.., n=..5)
// INVALID_ARGUMENT naming the condition for anything else.
absl::StatusOr<std::vector<v1::AttributeCondition>> ParseWhere(absl::string_view text);

// {genre="jazz", year=1959}: keys in order; "{}" when there are none.
std::string FormatAttributes(const v1::Attributes& attributes);

}  // namespace quantd

#endif  // QUANTD_CLIENT_ATTRIBUTES_H_
