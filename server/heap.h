// Process-wide heap settings for training workloads.
#ifndef QUANTD_SERVER_HEAP_H_
#define QUANTD_SERVER_HEAP_H_

namespace quantd {

// Keeps memory freed by one training step in the heap for the next one. k-means and balanced
// assignment allocate and free tens to hundreds of MB per Lloyd iteration; glibc by default gives
// the top of the heap back to the kernel once 128 KiB to 64 MiB of it is free, so the next
// iteration faults every 4 KiB page in again and zero-fills it (on a VM, a third of a balanced
// RQ-KMeans run on 1M x 128 went there). Call once at start-up, before threads start. No-op
// outside glibc.
void KeepFreedHeapForReuse();

// Returns the free heap to the kernel: after a training job, so the process does not keep its
// peak size while it serves.
void ReleaseFreeHeap();

}  // namespace quantd

#endif  // QUANTD_SERVER_HEAP_H_
