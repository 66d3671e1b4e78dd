// quantctl's output helpers: --json printing, readable sizes, counts and times, and the upload
// progress bar.
#ifndef QUANTD_CLIENT_OUTPUT_H_
#define QUANTD_CLIENT_OUTPUT_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd::quantctl {

// "1.5 KiB", "187.9 MiB", "2.0 GiB"; plain bytes under 1 KiB.
std::string HumanBytes(uint64_t bytes);

// Names come from core's one table (MetricName / ParseMetric in core/vectors.h).
std::string MetricText(v1::Metric metric);

// Prints `message` in proto3 JSON form (field names as in the .proto, zero values included; 64-bit
// integers are strings, enums their names), one line: what --json prints.
void PrintJson(const google::protobuf::Message& message);

// Writes `message` to `path` in the same JSON form as PrintJson, followed by a newline.
// INVALID_ARGUMENT naming the file if it cannot be written.
absl::Status WriteJsonFile(const std::string& path, const google::protobuf::Message& message);

// Writes the JSON of `message`'s one field, a map named `field`, as the file's top-level object
// (what PrintJson prints, without the {"field": ...} around it), followed by a newline.
absl::Status WriteJsonMapFile(const std::string& path, const google::protobuf::Message& message,
                              const std::string& field);

// A JSON object of client-side figures (upsert and inspect summaries), printed as PrintJson does.
class JsonObject {
 public:
  JsonObject& Set(const std::string& key, const std::string& value);
  JsonObject& Set(const std::string& key, double value);
  void Print() const { PrintJson(object_); }

 private:
  google::protobuf::Struct object_;
};

// "1 item", "2 items".
std::string Items(uint64_t n);

// A creation time as UTC, e.g. "2026-12-04T13:05:43Z".
std::string UtcTime(int64_t unix_ms);

// Draws "[#####.....]  45.0%  27000/60000 rows  12345 rows/s  48.3 MB/s" on a terminal.
class ProgressBar {
 public:
  ProgressBar(int64_t total, int64_t bytes_per_row, bool enabled);

  void Update(int64_t done);
  void Finish();

 private:
  int64_t total_;
  int64_t bytes_per_row_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace quantd::quantctl

#endif  // QUANTD_CLIENT_OUTPUT_H_
