// The one logging approach of quantd: timestamped lines on stderr.
#ifndef QUANTD_SERVER_LOG_H_
#define QUANTD_SERVER_LOG_H_

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace quantd {

enum class LogLevel { kInfo, kWarning, kError };

// Writes "2026-11-24T12:00:00.123Z I message" to stderr, atomically per line.
void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogLevel::kInfo, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogLevel::kWarning, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogLevel::kError, absl::StrFormat(format, args...));
}

}  // namespace quantd

#endif  // QUANTD_SERVER_LOG_H_
