#include "thread_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace matry {
namespace {

// One parallel_for call. Helpers are optional: the caller works through the items itself and
// waits only for helpers that started, so a busy or broken pool slows a loop but never stalls it.
struct Loop {
  Loop(std::size_t count, const std::function<void(std::size_t, std::size_t)>& function)
      : n(count), body(function) {}

  void work(std::size_t worker) {
    while (!failed.load(std::memory_order_relaxed)) {
      const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      try {
        body(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> guard(mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  }

  // Runs on a pool thread; does nothing once the caller has finished.
  void help(std::size_t worker) {
    {
      std::lock_guard<std::mutex> guard(mutex);
      if (closed) return;
      ++helping;
    }
    work(worker);
    std::lock_guard<std::mutex> guard(mutex);
    if (--helping == 0) helpers_done.notify_all();
  }

  // Called by the caller after its own share: no new helper may start, running ones finish.
  void close_and_wait() {
    std::unique_lock<std::mutex> lock(mutex);
    closed = true;
    helpers_done.wait(lock, [this] { return helping == 0; });
  }

  const std::size_t n;
  const std::function<void(std::size_t, std::size_t)>& body;  // valid until close_and_wait
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::condition_variable helpers_done;
  std::size_t helping = 0;
  bool closed = false;
  std::exception_ptr error;
};

class WorkerPool {
 public:
  // Starts workers until `wanted` exist or the OS refuses one; returns how many exist.
  std::size_t ensure_workers(std::size_t wanted) {
    std::lock_guard<std::mutex> guard(mutex_);
    while (workers_.size() < wanted) {
      try {
        workers_.emplace_back([this] { run(); });
      } catch (const std::system_error&) {
        break;  // thread limit or address space exhausted: use the workers there are
      }
    }
    return workers_.size();
  }

  void submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      tasks_.push_back(std::move(task));
    }
    wake_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> workers_;
};

// The pool is never destroyed (released from its unique_ptr on purpose): a daemon thread's
// search may still use it while the interpreter shuts down, and joining workers at exit could
// hang. A forked child has none of the parent's threads (and perhaps a mutex held by one), so
// it abandons the copied pool without touching it and starts a fresh one.
WorkerPool*& pool_pointer() {
  static WorkerPool* pointer = [] {
    pthread_atfork(nullptr, nullptr,
                   [] { pool_pointer() = std::make_unique<WorkerPool>().release(); });
    return std::make_unique<WorkerPool>().release();
  }();
  return pointer;
}

}  // namespace

// Read once: glibc answers hardware_concurrency() by reading /sys, which costs more than a
// whole single-query search.
std::size_t hardware_threads() {
  static const std::size_t count = std::max(1u, std::thread::hardware_concurrency());
  return count;
}

std::size_t max_threads() { return std::max<std::size_t>(4, 2 * hardware_threads()); }

std::size_t resolve_threads(std::size_t requested, std::size_t work) {
  const std::size_t threads = requested == 0 ? hardware_threads() : requested;
  return std::max<std::size_t>(1, std::min({threads, work, max_threads()}));
}

void parallel_for(std::size_t n, std::size_t num_threads,
                  const std::function<void(std::size_t, std::size_t)>& body) {
  const std::size_t threads = resolve_threads(num_threads, n);
  if (threads <= 1) {
    for (std::size_t i = 0; i < n; ++i) body(i, 0);
    return;
  }
  auto loop = std::make_shared<Loop>(n, body);
  try {
    WorkerPool& workers = *pool_pointer();
    const std::size_t helpers = std::min(threads - 1, workers.ensure_workers(threads - 1));
    for (std::size_t worker = 1; worker <= helpers; ++worker) {
      workers.submit([loop, worker] { loop->help(worker); });
    }
  } catch (const std::bad_alloc&) {
    // Out of memory for a task: the helpers already queued (if any) and the caller finish it.
  }
  loop->work(0);
  loop->close_and_wait();
  if (loop->error) std::rethrow_exception(loop->error);
}

}  // namespace matry
