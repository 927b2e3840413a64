// Parallel loops on a process-wide pool of worker threads, started on first use and reused by
// every call (an add or a batch search no longer spawns threads per call).
#pragma once

#include <cstddef>
#include <functional>

namespace matry {

// Most threads one call may use: twice the hardware threads, at least 4. More threads than
// that only add contention to CPU-bound work; a larger request is capped, not refused.
std::size_t max_threads();

// Threads a call with `work` items uses: `requested` (0 = one per hardware thread), capped at
// the work and at max_threads().
std::size_t resolve_threads(std::size_t requested, std::size_t work);

// Runs body(i, worker) for i in [0, n) on up to num_threads threads, the calling thread
// included; `worker` < the thread count tells each thread's scratch apart. The first exception
// thrown by any call is rethrown here after every thread stopped. When the pool cannot start
// a thread (resource limits), the loop runs on the threads it has, down to the caller alone.
void parallel_for(std::size_t n, std::size_t num_threads,
                  const std::function<void(std::size_t, std::size_t)>& body);

}  // namespace matry
