#include "server/sid_ledger.h"

namespace quantd {

LedgerChange::~LedgerChange() {
  if (kept_) return;
  SidOccupancy& occupancy = ledger_->occupancy_;
  const int64_t levels = occupancy.levels();
  // Undo in reverse: the tuples added go, the tuples removed come back.
  for (size_t i = added_.size(); i > 0; i -= static_cast<size_t>(levels)) {
    occupancy.Remove(added_.data() + i - levels);
  }
  for (size_t i = removed_.size(); i > 0; i -= static_cast<size_t>(levels)) {
    occupancy.Add(removed_.data() + i - levels);
  }
  ledger_->drift_ = std::move(saved_drift_);
}

void LedgerChange::Remove(const int32_t* codes) {
  ledger_->occupancy_.Remove(codes);
  removed_.insert(removed_.end(), codes, codes + ledger_->occupancy_.levels());
}

void LedgerChange::Added(const int32_t* codes) {
  added_.insert(added_.end(), codes, codes + ledger_->occupancy_.levels());
}

void LedgerChange::Add(const int32_t* codes) {
  ledger_->occupancy_.Add(codes);
  Added(codes);
}

}  // namespace quantd
