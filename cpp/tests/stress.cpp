// Concurrency stress of the C++ core, for ThreadSanitizer (.ci/sanitize): one matry::Index, four
// threads searching (full width and prefix, every third search filtered to even ids, a range
// search and a snapshot with to_bytes now and then), one adding batches (some of them replacing
// live ids), one removing random live ids, one compacting now and then, for a given time.
//
// Every search result is checked: each id is -1 (padding, distance +inf) or an id handed to the
// adder, distances ascend, and no id whose remove() returned before the search began comes back;
// at the end the index holds exactly the ids added and not removed.
// Prints one summary line; exits 1 on any violation or exception, 2 on bad arguments.
//
// Usage: matry_stress [seconds]   (default 60)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "index.hpp"

namespace {

constexpr std::size_t kDim = 32;
constexpr std::size_t kPrefixDim = 16;
constexpr std::size_t kSearchThreads = 4;
constexpr std::size_t kQueriesPerSearch = 4;
constexpr std::size_t kK = 10;
constexpr std::size_t kAddBatch = 256;
constexpr std::size_t kAddThreads = 2;  // the add itself runs in parallel: concurrent inserts
constexpr std::size_t kReplaceEvery = 5;
constexpr std::size_t kReplaceRows = 16;
// Ids are 0 .. kMaxIds-1; the adder stops there so that memory stays bounded however fast it is.
constexpr std::size_t kMaxIds = 400000;
// The remover keeps at least this many ids live, so that searches have something to find, and
// removes at most one id in kRemoveRatio of those added, so that the graph grows as well.
constexpr std::size_t kMinLive = 1000;
constexpr std::uint64_t kRemoveRatio = 2;
constexpr auto kSnapshotInterval = std::chrono::seconds(3);
constexpr auto kCompactInterval = std::chrono::milliseconds(700);

using Clock = std::chrono::steady_clock;

std::vector<float> random_rows(std::mt19937_64& rng, std::size_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> rows(n * kDim);
  for (float& value : rows) value = normal(rng);
  return rows;
}

// State shared by the threads. The index is the object under test; the rest is bookkeeping.
struct Shared {
  explicit Shared(const matry::IndexParams& params) : index(params), removed_at(kMaxIds) {}

  matry::Index index;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> issued{0};  // ids below this have been passed to add()
  // removed_at[id] = value of removal_clock once remove({id}) had returned (0: never removed)
  std::vector<std::atomic<std::uint64_t>> removed_at;
  std::atomic<std::uint64_t> removal_clock{0};

  std::mutex live_mutex;  // guards live: ids added, not removed, not being replaced
  std::vector<std::int64_t> live;

  std::mutex error_mutex;
  std::vector<std::string> errors;

  std::atomic<std::uint64_t> searches{0};
  std::atomic<std::uint64_t> snapshots{0};
  std::atomic<std::uint64_t> rows_added{0};
  std::atomic<std::uint64_t> add_batches{0};
  std::atomic<std::uint64_t> rows_replaced{0};
  std::atomic<std::uint64_t> removes{0};
  std::atomic<std::uint64_t> compactions{0};
  std::atomic<std::uint64_t> filtered_searches{0};
  std::atomic<std::uint64_t> range_searches{0};

  void fail(std::string message) {
    const std::lock_guard<std::mutex> lock(error_mutex);
    if (errors.size() < 20) errors.push_back(std::move(message));
    stop = true;
  }
};

// Runs body() until stop; an exception is a failure of the whole run.
template <typename Body>
void guarded(Shared& shared, const char* role, Body body) {
  try {
    body();
  } catch (const std::exception& error) {
    shared.fail(std::string(role) + ": exception: " + error.what());
  }
}

void check_results(Shared& shared, const std::vector<std::int64_t>& ids,
                   const std::vector<float>& distances, std::int64_t issued_after,
                   std::uint64_t clock_before) {
  for (std::size_t row = 0; row < kQueriesPerSearch; ++row) {
    float previous = -INFINITY;
    for (std::size_t j = 0; j < kK; ++j) {
      const std::int64_t id = ids[row * kK + j];
      const float distance = distances[row * kK + j];
      const std::string where = "search row " + std::to_string(row) + " rank " + std::to_string(j);
      if (id == -1) {
        if (!std::isinf(distance)) shared.fail(where + ": padding id -1 with a finite distance");
        previous = INFINITY;
        continue;
      }
      if (id < 0 || id >= issued_after) {
        shared.fail(where + ": id " + std::to_string(id) + " was never added");
        return;
      }
      if (std::isnan(distance) || distance < previous) {
        shared.fail(where + ": distances do not ascend (" + std::to_string(previous) + ", " +
                    std::to_string(distance) + ")");
      }
      previous = distance;
      const std::uint64_t removed = shared.removed_at[static_cast<std::size_t>(id)].load();
      if (removed != 0 && removed <= clock_before) {
        shared.fail(where + ": id " + std::to_string(id) + " was removed before the search began");
      }
    }
  }
}

// Even ids only: a filter that every third search applies.
matry::IdSet even_ids() {
  std::vector<std::int64_t> ids;
  for (std::int64_t id = 0; id < static_cast<std::int64_t>(kMaxIds); id += 2) ids.push_back(id);
  return matry::IdSet::from_ids(ids.data(), ids.size());
}

void searcher(Shared& shared, std::size_t number) {
  std::mt19937_64 rng(1000 + number);
  const matry::IdSet even = even_ids();
  std::vector<std::int64_t> ids(kQueriesPerSearch * kK);
  std::vector<float> distances(kQueriesPerSearch * kK);
  auto next_snapshot = Clock::now() + kSnapshotInterval;
  std::uint64_t round = 0;
  while (!shared.stop) {
    const std::vector<float> queries = random_rows(rng, kQueriesPerSearch);
    matry::SearchOptions options;
    options.k = kK;
    options.ef = 32 + (round % 4) * 16;
    options.prefix_dim = (round % 2 == 0) ? kDim : kPrefixDim;  // full width, then prefix
    options.num_threads = 1;
    const bool filtered = round % 3 == 0;
    if (filtered) options.filter = &even;
    const std::uint64_t clock_before = shared.removal_clock.load();
    shared.index.search(queries.data(), kQueriesPerSearch, options, ids.data(), distances.data());
    check_results(shared, ids, distances, shared.issued.load(), clock_before);
    if (filtered) {
      for (const std::int64_t id : ids) {
        if (id >= 0 && id % 2 != 0)
          shared.fail("filtered search returned odd id " + std::to_string(id));
      }
      ++shared.filtered_searches;
    }
    if (round % 16 == 5) {
      std::vector<std::vector<std::pair<std::int64_t, float>>> found;
      shared.index.search_radius(queries.data(), 1, 0.5f, 50, 16, false, nullptr, 1, found);
      for (const auto& [id, distance] : found[0]) {
        if (distance > 0.5f || id < 0)
          shared.fail("range search returned a point outside the radius");
      }
      ++shared.range_searches;
    }
    ++shared.searches;
    ++round;
    if (number == 0 && Clock::now() >= next_snapshot) {
      // a reader too: serializes under the read lock while the writers wait or run
      std::string metadata;
      const std::string bytes = shared.index.to_bytes("{}");
      const std::unique_ptr<matry::Index> copy = matry::Index::from_bytes(bytes, metadata);
      if (copy->dim() != kDim) shared.fail("snapshot: the copy has another dim");
      ++shared.snapshots;
      next_snapshot = Clock::now() + kSnapshotInterval;
    }
  }
}

void adder(Shared& shared) {
  std::mt19937_64 rng(1);
  std::vector<std::int64_t> assigned;
  // Never interrupted: a batch is added whole, so that the live pool matches the index at the end.
  const auto keep_going = [] { return false; };
  for (std::uint64_t batch = 0; !shared.stop; ++batch) {
    if (batch % kReplaceEvery == kReplaceEvery - 1) {
      // new vectors for a few live ids, taken out of the pool so the remover leaves them alone
      std::vector<std::int64_t> targets;
      {
        const std::lock_guard<std::mutex> lock(shared.live_mutex);
        for (std::size_t i = 0; i < kReplaceRows && shared.live.size() > kMinLive; ++i) {
          const std::size_t at = rng() % shared.live.size();
          targets.push_back(shared.live[at]);
          shared.live[at] = shared.live.back();
          shared.live.pop_back();
        }
      }
      if (!targets.empty()) {
        const std::vector<float> rows = random_rows(rng, targets.size());
        shared.index.add(rows.data(), targets.size(), targets.data(), kAddThreads, true, keep_going,
                         assigned);
        shared.rows_replaced += targets.size();
        const std::lock_guard<std::mutex> lock(shared.live_mutex);
        shared.live.insert(shared.live.end(), targets.begin(), targets.end());
      }
      continue;
    }
    const std::int64_t first = shared.issued.load();
    if (static_cast<std::size_t>(first) + kAddBatch > kMaxIds) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // id space used up
      continue;
    }
    std::vector<std::int64_t> ids(kAddBatch);
    for (std::size_t i = 0; i < kAddBatch; ++i) ids[i] = first + static_cast<std::int64_t>(i);
    shared.issued = first + static_cast<std::int64_t>(kAddBatch);  // before: searches may see them
    const std::vector<float> rows = random_rows(rng, kAddBatch);
    shared.index.add(rows.data(), kAddBatch, ids.data(), kAddThreads, false, keep_going, assigned);
    shared.rows_added += kAddBatch;
    ++shared.add_batches;
    const std::lock_guard<std::mutex> lock(shared.live_mutex);
    shared.live.insert(shared.live.end(), ids.begin(), ids.end());
  }
}

void remover(Shared& shared) {
  std::mt19937_64 rng(2);
  while (!shared.stop) {
    std::int64_t id = -1;
    {
      const std::lock_guard<std::mutex> lock(shared.live_mutex);
      if (shared.live.size() > kMinLive &&
          shared.removes.load() < shared.rows_added.load() / kRemoveRatio) {
        const std::size_t at = rng() % shared.live.size();
        id = shared.live[at];
        shared.live[at] = shared.live.back();
        shared.live.pop_back();
      }
    }
    if (id < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    shared.index.remove(&id, 1);
    shared.removed_at[static_cast<std::size_t>(id)] = ++shared.removal_clock;
    ++shared.removes;
  }
}

void compactor(Shared& shared) {
  auto next = Clock::now() + kCompactInterval;
  while (!shared.stop) {
    if (Clock::now() < next) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    shared.index.compact(2);
    ++shared.compactions;
    next = Clock::now() + kCompactInterval;
  }
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 60.0;
  const bool usage_error =
      argc > 3 || (argc >= 2 && (seconds = std::atof(argv[1])) <= 0.0) ||
      (argc == 3 && std::string(argv[2]) != "f32" && std::string(argv[2]) != "int8");
  if (usage_error) {
    std::fprintf(stderr, "usage: %s [seconds > 0] [f32|int8]\n", argv[0]);
    return 2;
  }
  const bool int8 = argc == 3 && std::string(argv[2]) == "int8";
  matry::IndexParams params;
  params.dim = kDim;
  params.metric = matry::Metric::cosine;
  params.M = 12;
  params.ef_construction = 64;
  params.seed = 7;
  params.prefix_dim = kPrefixDim;
  if (int8) params.quantization = matry::Quantization::int8;  // traversal on codes, f32 rerank
  Shared shared(params);

  const auto started = Clock::now();
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < kSearchThreads; ++i) {
    threads.emplace_back(
        [&shared, i] { guarded(shared, "searcher", [&] { searcher(shared, i); }); });
  }
  threads.emplace_back([&shared] { guarded(shared, "adder", [&] { adder(shared); }); });
  threads.emplace_back([&shared] { guarded(shared, "remover", [&] { remover(shared); }); });
  threads.emplace_back([&shared] { guarded(shared, "compactor", [&] { compactor(shared); }); });
  const auto deadline = started + std::chrono::duration<double>(seconds);
  while (!shared.stop && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  shared.stop = true;
  for (std::thread& thread : threads) thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  if (shared.index.size() != shared.live.size()) {
    shared.fail("the index holds " + std::to_string(shared.index.size()) + " live ids, " +
                std::to_string(shared.live.size()) + " were added and not removed");
  }

  std::printf(
      "matry_stress: %.1f s, %zu searching threads: %llu searches (%zu queries each), %llu "
      "snapshots; 1 adding thread: %llu rows in %llu batches, %llu rows replaced; 1 removing "
      "thread: %llu removes; %llu compactions; %llu filtered and %llu range searches; final "
      "size %zu; %zu errors\n",
      elapsed, kSearchThreads, static_cast<unsigned long long>(shared.searches.load()),
      kQueriesPerSearch, static_cast<unsigned long long>(shared.snapshots.load()),
      static_cast<unsigned long long>(shared.rows_added.load()),
      static_cast<unsigned long long>(shared.add_batches.load()),
      static_cast<unsigned long long>(shared.rows_replaced.load()),
      static_cast<unsigned long long>(shared.removes.load()),
      static_cast<unsigned long long>(shared.compactions.load()),
      static_cast<unsigned long long>(shared.filtered_searches.load()),
      static_cast<unsigned long long>(shared.range_searches.load()), shared.index.size(),
      shared.errors.size());
  for (const std::string& error : shared.errors) std::fprintf(stderr, "error: %s\n", error.c_str());
  const bool did_work = shared.searches > 0 && shared.add_batches > 0 && shared.removes > 0 &&
                        shared.compactions > 0 && shared.filtered_searches > 0;
  if (!did_work) std::fprintf(stderr, "error: a thread made no progress\n");
  return shared.errors.empty() && did_work ? 0 : 1;
}
