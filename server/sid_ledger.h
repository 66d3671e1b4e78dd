// SidLedger: the live state of one tokenizer version's semantic IDs that capacity assignment
// reads and every write updates: items per code at each level and per code tuple (core's
// SidOccupancy, rebuilt from the stored SIDs at start-up and at commit), and the drift counters
// since training (stored in meta "sid_drift/<cid>", written in the same batch as the SIDs).
//
// Locking: writers hold the collection's write lock (server/collections.h), then the ledger's
// exclusive lock through a LedgerChange; readers (Encode by vector, GetStats) take its shared
// lock. A LedgerChange applies its changes at once and undoes them when destroyed without
// Keep(), so a write that fails leaves the ledger as the database is.
#ifndef QUANTD_SERVER_SID_LEDGER_H_
#define QUANTD_SERVER_SID_LEDGER_H_

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "core/sid_assignment.h"
#include "quantd/storage/records.pb.h"

namespace quantd {

class SidLedger {
 public:
  explicit SidLedger(std::vector<int64_t> codebook_sizes) : occupancy_(std::move(codebook_sizes)) {}

  // Sets the whole state: for a ledger no one else sees yet (start-up, a commit).
  void Load(SidOccupancy occupancy, storage::SidDriftRecord drift) {
    std::unique_lock lock(mu_);
    occupancy_ = std::move(occupancy);
    drift_ = std::move(drift);
  }

  // A consistent view for readers: holds the shared lock while alive.
  class Reader {
   public:
    explicit Reader(const SidLedger& ledger) : ledger_(ledger), lock_(ledger.mu_) {}
    const SidOccupancy& occupancy() const { return ledger_.occupancy_; }
    const storage::SidDriftRecord& drift() const { return ledger_.drift_; }

   private:
    const SidLedger& ledger_;
    std::shared_lock<std::shared_mutex> lock_;
  };

 private:
  friend class LedgerChange;
  mutable std::shared_mutex mu_;
  SidOccupancy occupancy_;         // guarded by mu_
  storage::SidDriftRecord drift_;  // guarded by mu_
};

// Exclusive access to a ledger for one write: the tuples it removes and adds and the drift it
// counts are applied at once (later rows of the write see the capacity earlier ones took), and
// undone on destruction unless Keep() was called after the write was committed.
class LedgerChange {
 public:
  explicit LedgerChange(SidLedger* ledger) : ledger_(ledger), lock_(ledger->mu_) {
    saved_drift_ = ledger_->drift_;
  }
  ~LedgerChange();
  LedgerChange(const LedgerChange&) = delete;
  LedgerChange& operator=(const LedgerChange&) = delete;
  LedgerChange(LedgerChange&&) = delete;

  // The occupancy for assignment (core adds each assigned tuple itself; Added() records them).
  SidOccupancy* occupancy() { return &ledger_->occupancy_; }
  storage::SidDriftRecord* drift() { return &ledger_->drift_; }
  // Removes one tuple (L codes) now; restored on undo.
  void Remove(const int32_t* codes);
  // Records that one tuple (L codes) was added to occupancy(); removed on undo.
  void Added(const int32_t* codes);
  // Adds one tuple now; removed on undo.
  void Add(const int32_t* codes);
  // The write committed: keep the changes.
  void Keep() { kept_ = true; }

 private:
  SidLedger* ledger_;
  std::unique_lock<std::shared_mutex> lock_;
  bool kept_ = false;
  std::vector<int32_t> removed_;  // tuples, L codes each, in order
  std::vector<int32_t> added_;
  storage::SidDriftRecord saved_drift_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SID_LEDGER_H_
