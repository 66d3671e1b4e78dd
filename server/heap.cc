#include "server/heap.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace quantd {

void KeepFreedHeapForReuse() {
#if defined(__GLIBC__)
  // Blocks up to 32 MiB (glibc's ceiling for this setting) come from the heap rather than a
  // fresh mmap, and up to 2 GiB of free heap top stays mapped until ReleaseFreeHeap().
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 2047 << 20);
#endif
}

void ReleaseFreeHeap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace quantd
