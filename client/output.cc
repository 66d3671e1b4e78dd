#include "client/output.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "core/vectors.h"
#include "google/protobuf/util/json_util.h"

namespace quantd::quantctl {

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return absl::StrFormat("%d B", bytes);
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string MetricText(v1::Metric metric) {
  switch (metric) {
    case v1::METRIC_L2:
      return std::string(MetricName(Metric::kL2));
    case v1::METRIC_INNER_PRODUCT:
      return std::string(MetricName(Metric::kInnerProduct));
    case v1::METRIC_COSINE:
      return std::string(MetricName(Metric::kCosine));
    default:
      return "unspecified";
  }
}

namespace {

// The proto3 JSON form of --json and the files quantctl writes.
absl::StatusOr<std::string> JsonText(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return absl::InternalError(status.ToString());
  return out;
}

}  // namespace

void PrintJson(const google::protobuf::Message& message) {
  auto text = JsonText(message);
  std::printf("%s\n", text.ok()
                          ? text->c_str()
                          : absl::StrCat("{\"error\":\"", text.status().ToString(), "\"}").c_str());
}

namespace {

// Writes `text` and a newline to `path`.
absl::Status WriteTextFile(const std::string& path, absl::string_view text) {
  std::FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot write: %s", path, std::strerror(errno)));
  }
  const bool written =
      std::fwrite(text.data(), 1, text.size(), out) == text.size() && std::fputc('\n', out) != EOF;
  if (std::fclose(out) != 0 || !written) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: write failed", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteJsonFile(const std::string& path, const google::protobuf::Message& message) {
  auto text = JsonText(message);
  if (!text.ok()) {
    return absl::InternalError(absl::StrFormat("%s: %s", path, text.status().message()));
  }
  return WriteTextFile(path, *text);
}

absl::Status WriteJsonMapFile(const std::string& path, const google::protobuf::Message& message,
                              const std::string& field) {
  auto text = JsonText(message);
  if (!text.ok()) {
    return absl::InternalError(absl::StrFormat("%s: %s", path, text.status().message()));
  }
  // The printer writes a message of one field as {"field":VALUE}.
  const std::string head = absl::StrCat("{\"", field, "\":");
  absl::string_view value = *text;
  if (!absl::ConsumePrefix(&value, head) || !absl::ConsumeSuffix(&value, "}")) {
    return absl::InternalError(absl::StrFormat("%s: the JSON of %s is not {\"%s\": ...}", path,
                                               message.GetTypeName(), field));
  }
  return WriteTextFile(path, value);
}

JsonObject& JsonObject::Set(const std::string& key, const std::string& value) {
  (*object_.mutable_fields())[key].set_string_value(value);
  return *this;
}

JsonObject& JsonObject::Set(const std::string& key, double value) {
  (*object_.mutable_fields())[key].set_number_value(value);
  return *this;
}

std::string Items(uint64_t n) { return absl::StrCat(n, n == 1 ? " item" : " items"); }

std::string UtcTime(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

ProgressBar::ProgressBar(int64_t total, int64_t bytes_per_row, bool enabled)
    : total_(total),
      bytes_per_row_(bytes_per_row),
      enabled_(enabled && isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::Update(int64_t done) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double seconds = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
  const double fraction = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth);
  std::fprintf(stderr, "\r[%s%s] %5.1f%%  %lld/%lld rows  %.0f rows/s  %.1f MB/s   ",
               std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
               100 * fraction, static_cast<long long>(done), static_cast<long long>(total_),
               done / seconds, done * static_cast<double>(bytes_per_row_) / seconds / 1e6);
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (enabled_) std::fprintf(stderr, "\n");
}

}  // namespace quantd::quantctl
