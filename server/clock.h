// Wall-clock time as the server records it (create, start and end times in records and APIs).
#ifndef QUANTD_SERVER_CLOCK_H_
#define QUANTD_SERVER_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace quantd {

// Milliseconds since the Unix epoch.
inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace quantd

#endif  // QUANTD_SERVER_CLOCK_H_
