// 8-bit scalar quantizer (FAISS's ScalarQuantizer QT_8bit with the min-max range): each
// dimension j is mapped linearly from [lo_j, lo_j + 255 step_j] onto the bytes 0..255, so a
// vector takes d bytes and decodes to y_j = lo_j + code_j x step_j. The range of each dimension
// is that of the training rows; values outside it clamp to the ends.
//
// quantd keeps these codes in memory beside an IVF-PQ index's lists as the finer second-stage
// code of two-stage search: the PQ scan keeps refine x k candidates and this code re-ranks them
// (core/ivf_pq.h). Its error per dimension is at most step_j / 2 inside the range, a few hundred
// times finer than a PQ code of the same vector.
#ifndef QUANTD_CORE_SCALAR_QUANTIZER_H_
#define QUANTD_CORE_SCALAR_QUANTIZER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace quantd {

class ScalarQuantizer8 {
 public:
  ScalarQuantizer8() = default;

  // Per-dimension ranges of the n x d rows (finite; n >= 1). A dimension with one value gets
  // step 0 (every code decodes to it).
  static absl::StatusOr<ScalarQuantizer8> Train(const float* x, int64_t n, int64_t d);
  // From stored ranges (d each): lo finite, step finite and >= 0. INVALID_ARGUMENT otherwise.
  static absl::StatusOr<ScalarQuantizer8> FromRanges(std::vector<float> lo,
                                                     std::vector<float> step);

  int64_t d() const { return static_cast<int64_t>(lo_.size()); }
  bool trained() const { return !lo_.empty(); }
  const std::vector<float>& lo() const { return lo_; }
  const std::vector<float>& step() const { return step_; }

  // Codes of n rows (n x d floats) into codes (n x d bytes).
  void Encode(const float* x, int64_t n, uint8_t* codes) const;
  // The decoded vector of one code (d floats).
  void Decode(const uint8_t* code, float* out) const;
  // Distances from the query q (d floats) to the decoded code: squared L2 (l2) or minus the
  // inner product, as IVF-PQ ranks (smaller is nearer). Float arithmetic, vectorised.
  float Distance(const float* q, const uint8_t* code, bool l2) const;

 private:
  std::vector<float> lo_;    // d
  std::vector<float> step_;  // d, (max_j - lo_j) / 255
};

}  // namespace quantd

#endif  // QUANTD_CORE_SCALAR_QUANTIZER_H_
