// HNSW (Malkov & Yashunin, 2018) over node ids. The graph never sees vectors, dimensions or
// dtypes: every distance comes from a Space, so prefix (Matryoshka) distances or quantized codes
// plug in without touching this file. A Space provides
//   float query(NodeId n) const          distance from the bound query to node n
//   float between(NodeId a, NodeId b) const
//   void prefetch(NodeId n) const        hint that query(n) is coming
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "buffer.hpp"
#include "graph/candidate_pool.hpp"
#include "graph/visited.hpp"

namespace matry::graph {

constexpr int kMaxLevel = 64;
// Links per upper-level row (the M parameter); layer-0 rows hold twice as many.
constexpr std::uint32_t kMaxM = 128;
constexpr std::size_t kMaxDegree = 2 * kMaxM;
// A repaired row prunes a candidate only when a kept neighbour is this much closer to it than
// the node is (FreshDiskANN's alpha): repaired rows keep more links than the strict heuristic,
// which makes up for the in-links a removed node took with it (bench/compaction.py).
constexpr float kRepairAlpha = 1.2f;

// What one search needs besides the graph: reused across the queries of a batch, so a search
// allocates nothing and touches no thread-local storage.
struct SearchScratch {
  VisitedSet visited;
  CandidatePool pool;
  std::vector<Neighbor> frontier;  // search_filtered's heaps
  std::vector<Neighbor> best;
};

class HnswGraph {
 public:
  // `payload_bytes` per node ride in the node's level-0 block after its links (a quantized
  // index keeps its codes there, so a visit reads one contiguous run of cache lines); the graph
  // never reads them. With a payload, blocks are padded to whole 64-byte lines.
  HnswGraph(std::uint32_t M, std::uint32_t ef_construction, std::size_t payload_bytes = 0);

  std::uint32_t M() const { return M_; }
  std::uint32_t max_degree0() const { return max_degree0_; }
  std::uint32_t ef_construction() const { return ef_construction_; }
  std::size_t node_count() const { return node_count_; }
  int max_level() const { return max_level_; }
  NodeId entry_point() const { return entry_point_; }

  // Level of a new node from a counter-based generator: depends on (seed, node) only, so graphs
  // are reproducible whatever the thread count or batch split. P(level >= l) = M^-l.
  int draw_level(std::uint64_t seed, NodeId node) const;

  // Room for `capacity` nodes in total. Not thread-safe (callers hold the index's write lock).
  void reserve(std::size_t capacity);
  // Appends an unlinked node at `level`; not thread-safe, call before the parallel insert.
  NodeId append_node(int level);
  // Renumbers nodes: new node i is old node order[i]; new_of is the inverse permutation.
  // Links are rewritten, payloads move with their blocks. Not thread-safe.
  void permute(const std::vector<NodeId>& order, const std::vector<NodeId>& new_of);
  // Breadth-first order of layer 0 from the entry point (nodes it cannot reach last, in id
  // order): neighbours get nearby ids, so their blocks share pages and cache sets.
  std::vector<NodeId> breadth_first_order() const;
  // Nodes of a file mapped read-only: level-0 blocks read in place, upper rows allocated
  // (zeroed) for the caller to fill.
  void restore_viewing_level0(const std::uint32_t* level0, const std::uint8_t* levels,
                              std::size_t node_count);

  // The neighbours `node` keeps at `level` once the nodes flagged in `deleted` are gone, in old
  // node ids: its live links and, when some of them were deleted, the live links of those (two
  // hops, three when that still leaves few), pruned by the neighbour heuristic. Tombstone
  // consolidation as in FreshDiskANN, and hnswlib's repair of an updated node's neighbours.
  // `space` measures in the ids of `new_of` (old node -> new node), and so does `out`. Returns
  // whether the row changed (some neighbour was deleted).
  template <class Space>
  bool repaired_links(const Space& space, const std::uint8_t* deleted, NodeId node, int level,
                      std::vector<Neighbor>& out, const std::vector<NodeId>& new_of) const;
  // A copy of a node's link row at `level` (distances unset), under the row's lock.
  void copy_links(NodeId node, int level, std::vector<Neighbor>& out) const {
    std::lock_guard<std::mutex> guard(lock_of(node));
    const std::uint32_t* row = links(node, level);
    out.clear();
    for (std::uint32_t i = 1; i <= row[0]; ++i) out.push_back({0.0f, row[i]});
  }
  // Adds `node` to `neighbor`'s row at `level` (re-pruned by the heuristic when full), under
  // the row's lock: what insert does for each new neighbour.
  template <class Space>
  void link_back(const Space& space, NodeId neighbor, NodeId node, float distance, int level);
  // Writes a node's link row at `level` (building a graph outside insert(): compaction).
  void set_links(NodeId node, int level, const std::vector<Neighbor>& neighbours) {
    std::uint32_t* row = links(node, level);
    for (std::size_t i = 0; i < neighbours.size(); ++i) row[1 + i] = neighbours[i].node;
    row[0] = static_cast<std::uint32_t>(neighbours.size());
  }
  std::size_t payload_bytes() const { return payload_bytes_; }
  // Takes over `other`'s nodes and links (a compacted graph of the same M and payload).
  void assign_from(HnswGraph&& other);

  // Links `node` (appended earlier) into the graph. Safe to run on several threads at once for
  // different nodes; must not run concurrently with search().
  template <class Space>
  void insert(NodeId node, const Space& space);

  // Top `ef` nodes for the query bound in `space` that `accepts(node)` (deleted nodes, and
  // those a filter excludes, are refused), ascending. Refused nodes still route the search but
  // take no result slot. Greedy descent through the upper layers, beam search on layer 0.
  // Returns the number of distances computed.
  template <class Space, class Accept>
  std::size_t search(const Space& space, std::size_t ef, const Accept& accepts,
                     SearchScratch& scratch, std::vector<Neighbor>& results) const;

  // search() for a selective `accepts` (a filter): most nodes the beam meets are refused, so
  // the candidates it must keep routing through outnumber the results many times. Two heaps
  // (candidates to expand, best accepted so far) keep each step O(log n), where the sorted
  // pool's inserts would move the whole refused backlog.
  template <class Space, class Accept>
  std::size_t search_filtered(const Space& space, std::size_t ef, const Accept& accepts,
                              SearchScratch& scratch, std::vector<Neighbor>& results) const;

  // Raw link access (serialization and validation).
  const std::uint32_t* level0_row(NodeId node) const {
    return level0_.data() + static_cast<std::size_t>(node) * level0_stride();
  }
  std::uint32_t* level0_row(NodeId node) {
    return level0_.data() + static_cast<std::size_t>(node) * level0_stride();
  }
  // Words per level-0 block: [count, links...] then the payload.
  std::size_t level0_stride() const { return level0_words_; }
  std::size_t payload_offset() const { return (1 + max_degree0_) * sizeof(std::uint32_t); }
  std::uint8_t* payload(NodeId node) {
    return reinterpret_cast<std::uint8_t*>(level0_row(node)) + payload_offset();
  }
  const std::uint8_t* blocks() const {
    return reinterpret_cast<const std::uint8_t*>(level0_.data());
  }
  std::size_t upper_stride() const { return 1 + M_; }
  int level_of(NodeId node) const { return levels_[node]; }
  const std::uint32_t* upper_rows(NodeId node) const { return upper_[node].get(); }
  std::uint32_t* upper_rows(NodeId node) { return upper_[node].get(); }
  void set_entry(NodeId entry_point, int max_level) {
    entry_point_ = entry_point;
    max_level_ = max_level;
  }
  std::size_t memory_bytes() const;

 private:
  // Link row of `node` at `level`: [count, neighbour ids...].
  std::uint32_t* links(NodeId node, int level) {
    if (level == 0) return level0_row(node);
    return upper_[node].get() + static_cast<std::size_t>(level - 1) * upper_stride();
  }
  const std::uint32_t* links(NodeId node, int level) const {
    return const_cast<HnswGraph*>(this)->links(node, level);
  }
  std::uint32_t max_degree(int level) const { return level == 0 ? max_degree0_ : M_; }
  std::mutex& lock_of(NodeId node) const { return link_locks_[node % link_locks_.size()]; }

  template <class Space>
  NodeId greedy_descent(const Space& space, NodeId start, int from_level, int to_level, bool locked,
                        std::size_t* distances = nullptr) const;
  // The not yet visited layer-0 neighbours of `node` into `out`, marked visited and their rows
  // prefetched, so that they load in parallel before the distances are computed. Returns how
  // many.
  template <class Space>
  std::uint32_t fresh_neighbours(const Space& space, NodeId node, VisitedSet& visited,
                                 std::array<NodeId, kMaxDegree>& out) const {
    const std::uint32_t* row = level0_row(node);
    std::uint32_t fresh = 0;
    for (std::uint32_t i = 1; i <= row[0]; ++i) {
      if (!visited.test_and_set(row[i])) {
        out[fresh++] = row[i];
        space.prefetch(row[i]);
      }
    }
    return fresh;
  }
  template <class Space>
  void search_layer_for_insert(const Space& space, NodeId entry, int level, CandidatePool& pool,
                               VisitedSet& visited) const;
  // The neighbour-selection heuristic (algorithm 4 without extension or pruned-keeping):
  // keep a candidate only if it is closer to the base than to every neighbour kept so far.
  template <class Space>
  void select_neighbors(const Space& space, std::vector<Neighbor>& candidates,
                        std::size_t max_count, float alpha = 1.0f) const;

  std::uint32_t M_;
  std::uint32_t max_degree0_;
  std::uint32_t ef_construction_;
  double level_multiplier_;
  std::size_t level0_words_;
  std::size_t payload_bytes_;

  std::size_t node_count_ = 0;
  AlignedBuffer<std::uint32_t> level0_;
  std::vector<std::unique_ptr<std::uint32_t[]>> upper_;
  std::vector<std::uint8_t> levels_;

  std::mutex entry_mutex_;
  NodeId entry_point_ = 0;
  int max_level_ = -1;  // -1: empty graph

  // Striped locks guard link rows during parallel inserts; a thread holds one at a time.
  mutable std::array<std::mutex, 1024> link_locks_;
  mutable LendingPool<SearchScratch> scratch_pool_;
};

// ---------------------------------------------------------------------------------------------

template <class Space>
NodeId HnswGraph::greedy_descent(const Space& space, NodeId start, int from_level, int to_level,
                                 bool locked, std::size_t* distances) const {
  NodeId current = start;
  float current_distance = space.query(current);
  std::size_t computed = 1;
  std::array<NodeId, kMaxDegree> snapshot{};
  for (int level = from_level; level > to_level; --level) {
    bool improved = true;
    while (improved) {
      improved = false;
      const std::uint32_t* row = links(current, level);
      std::uint32_t count;
      const std::uint32_t* neighbours = row + 1;
      if (locked) {
        std::lock_guard<std::mutex> guard(lock_of(current));
        count = row[0];
        std::copy(row + 1, row + 1 + count, snapshot.begin());
        neighbours = snapshot.data();
      } else {
        count = row[0];
      }
      for (std::uint32_t i = 0; i < count; ++i) space.prefetch(neighbours[i]);
      computed += count;
      for (std::uint32_t i = 0; i < count; ++i) {
        const float distance = space.query(neighbours[i]);
        if (distance < current_distance) {
          current_distance = distance;
          current = neighbours[i];
          improved = true;
        }
      }
    }
  }
  if (distances != nullptr) *distances += computed;
  return current;
}

template <class Space>
void HnswGraph::search_layer_for_insert(const Space& space, NodeId entry, int level,
                                        CandidatePool& pool, VisitedSet& visited) const {
  std::array<NodeId, kMaxDegree> snapshot{};
  visited.test_and_set(entry);
  pool.insert(space.query(entry), entry, true);
  while (pool.has_unexpanded()) {
    const Neighbor current = pool.pop_unexpanded();
    std::uint32_t count;
    {
      std::lock_guard<std::mutex> guard(lock_of(current.node));
      const std::uint32_t* row = links(current.node, level);
      count = row[0];
      std::copy(row + 1, row + 1 + count, snapshot.begin());
    }
    std::uint32_t fresh = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
      if (!visited.test_and_set(snapshot[i])) {
        snapshot[fresh++] = snapshot[i];
        space.prefetch(snapshot[i]);
      }
    }
    for (std::uint32_t i = 0; i < fresh; ++i) {
      const float distance = space.query(snapshot[i]);
      if (pool.admits(distance)) pool.insert(distance, snapshot[i], true);
    }
  }
}

template <class Space>
void HnswGraph::select_neighbors(const Space& space, std::vector<Neighbor>& candidates,
                                 std::size_t max_count, float alpha) const {
  if (candidates.size() <= max_count) return;
  std::size_t kept = 0;
  for (std::size_t i = 0; i < candidates.size() && kept < max_count; ++i) {
    const Neighbor candidate = candidates[i];
    bool diverse = true;
    for (std::size_t j = 0; j < kept; ++j) {
      if (alpha * space.between(candidate.node, candidates[j].node) < candidate.distance) {
        diverse = false;
        break;
      }
    }
    if (diverse) candidates[kept++] = candidate;
  }
  candidates.resize(kept);
}

template <class Space>
void HnswGraph::link_back(const Space& space, NodeId neighbor, NodeId node, float distance,
                          int level) {
  std::lock_guard<std::mutex> guard(lock_of(neighbor));
  std::uint32_t* row = links(neighbor, level);
  const std::uint32_t count = row[0];
  const std::uint32_t limit = max_degree(level);
  for (std::uint32_t i = 0; i < count; ++i) {
    if (row[1 + i] == node) return;
  }
  if (count < limit) {
    row[1 + count] = node;
    row[0] = count + 1;
    return;
  }
  // Full: re-select among the old neighbours plus the new node, seen from `neighbor`.
  std::vector<Neighbor> candidates;
  candidates.reserve(count + 1);
  candidates.push_back({distance, node});
  for (std::uint32_t i = 0; i < count; ++i) {
    candidates.push_back({space.between(neighbor, row[1 + i]), row[1 + i]});
  }
  std::sort(candidates.begin(), candidates.end(), closer);
  select_neighbors(space, candidates, limit);
  for (std::size_t i = 0; i < candidates.size(); ++i) row[1 + i] = candidates[i].node;
  row[0] = static_cast<std::uint32_t>(candidates.size());
}

template <class Space>
bool HnswGraph::repaired_links(const Space& space, const std::uint8_t* deleted, NodeId node,
                               int level, std::vector<Neighbor>& out,
                               const std::vector<NodeId>& new_of) const {
  out.clear();
  const std::uint32_t* row = links(node, level);
  const std::uint32_t limit = max_degree(level);
  std::vector<NodeId> lost;
  for (std::uint32_t i = 1; i <= row[0]; ++i) {
    if (deleted[row[i]] != 0) {
      lost.push_back(row[i]);
    } else {
      out.push_back({0.0f, row[i]});
    }
  }
  if (lost.empty()) {  // nothing to repair: the row stays as it is, in its order
    for (Neighbor& kept : out) kept.node = new_of[kept.node];
    return false;
  }
  std::vector<NodeId> candidates;
  for (const Neighbor& kept : out) candidates.push_back(kept.node);
  std::vector<NodeId> next_lost;
  for (int hop = 0; hop < 2 && !lost.empty(); ++hop) {
    next_lost.clear();
    for (const NodeId gone : lost) {
      const std::uint32_t* gone_row = links(gone, level);
      for (std::uint32_t i = 1; i <= gone_row[0]; ++i) {
        const NodeId via = gone_row[i];
        if (via == node) continue;
        if (deleted[via] == 0) {
          candidates.push_back(via);
        } else {
          next_lost.push_back(via);
        }
      }
    }
    // A third hop only while the repaired row would be less than half full.
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    if (candidates.size() * 2 >= limit) break;
    std::sort(next_lost.begin(), next_lost.end());
    next_lost.erase(std::unique(next_lost.begin(), next_lost.end()), next_lost.end());
    lost.swap(next_lost);
  }
  out.clear();
  const NodeId base = new_of[node];
  for (const NodeId candidate : candidates) {
    out.push_back({space.between(base, new_of[candidate]), new_of[candidate]});
  }
  std::sort(out.begin(), out.end(), closer);
  select_neighbors(space, out, limit, kRepairAlpha);
  return true;
}

template <class Space>
void HnswGraph::insert(NodeId node, const Space& space) {
  const int node_level = levels_[node];
  std::unique_lock<std::mutex> entry_guard(entry_mutex_);
  const int top_level = max_level_;
  const NodeId entry = entry_point_;
  if (top_level < 0) {
    entry_point_ = node;
    max_level_ = node_level;
    return;
  }
  // A node that raises the top level keeps the entry lock until it is linked.
  if (node_level <= top_level) entry_guard.unlock();

  NodeId current = greedy_descent(space, entry, top_level, node_level, /*locked=*/true);
  auto scratch = scratch_pool_.borrow();
  VisitedSet& visited = scratch->visited;
  CandidatePool& pool = scratch->pool;
  std::vector<Neighbor> candidates;
  // The node's own rows are written at every level before any neighbour links back to it. Until
  // then no other row names it, so a concurrent insert can never route through a row of it that
  // is still empty: one that did would link to it alone, and once the heuristic pruned that
  // single back link the other node would be unreachable (the parallel-build self-miss defect).
  const int linked_top = std::min(node_level, top_level);
  std::vector<Neighbor> selected;                      // every level's neighbours, top down
  std::array<std::size_t, kMaxLevel + 1> level_end{};  // selected[level_end[l+1]..level_end[l])
  for (int level = linked_top; level >= 0; --level) {
    visited.begin(node_count_);
    pool.reset(ef_construction_);
    search_layer_for_insert(space, current, level, pool, visited);
    pool.live_results(ef_construction_, candidates);
    current = candidates.front().node;
    select_neighbors(space, candidates, M_);
    {
      std::lock_guard<std::mutex> guard(lock_of(node));
      std::uint32_t* row = links(node, level);
      for (std::size_t i = 0; i < candidates.size(); ++i) row[1 + i] = candidates[i].node;
      row[0] = static_cast<std::uint32_t>(candidates.size());
    }
    selected.insert(selected.end(), candidates.begin(), candidates.end());
    level_end[level] = selected.size();
  }
  std::size_t begin = 0;
  for (int level = linked_top; level >= 0; --level) {
    for (std::size_t i = begin; i < level_end[level]; ++i) {
      link_back(space, selected[i].node, node, selected[i].distance, level);
    }
    begin = level_end[level];
  }
  if (node_level > top_level) {
    entry_point_ = node;
    max_level_ = node_level;
  }
}

template <class Space, class Accept>
std::size_t HnswGraph::search(const Space& space, std::size_t ef, const Accept& accepts,
                              SearchScratch& scratch, std::vector<Neighbor>& results) const {
  results.clear();
  if (max_level_ < 0) return 0;
  std::size_t distances = 0;
  const NodeId start =
      greedy_descent(space, entry_point_, max_level_, 0, /*locked=*/false, &distances);

  VisitedSet& visited = scratch.visited;
  visited.begin(node_count_);
  CandidatePool& pool = scratch.pool;
  pool.reset(ef);
  visited.test_and_set(start);
  pool.insert(space.query(start), start, accepts(start));
  ++distances;
  std::array<NodeId, kMaxDegree> fresh_nodes{};
  while (pool.has_unexpanded()) {
    const Neighbor current = pool.pop_unexpanded();
    const std::uint32_t fresh = fresh_neighbours(space, current.node, visited, fresh_nodes);
    distances += fresh;
    for (std::uint32_t i = 0; i < fresh; ++i) {
      const NodeId neighbour = fresh_nodes[i];
      const float distance = space.query(neighbour);
      if (pool.admits(distance)) {
        // Admitted nodes are the ones likely to be expanded: start loading their links.
        __builtin_prefetch(level0_row(neighbour));
        pool.insert(distance, neighbour, accepts(neighbour));
      }
    }
  }
  pool.live_results(ef, results);
  return distances;
}

template <class Space, class Accept>
std::size_t HnswGraph::search_filtered(const Space& space, std::size_t ef, const Accept& accepts,
                                       SearchScratch& scratch,
                                       std::vector<Neighbor>& results) const {
  results.clear();
  if (max_level_ < 0) return 0;
  std::size_t distances = 0;
  const NodeId start =
      greedy_descent(space, entry_point_, max_level_, 0, /*locked=*/false, &distances);
  VisitedSet& visited = scratch.visited;
  visited.begin(node_count_);
  std::vector<Neighbor>& frontier = scratch.frontier;  // min-heap: closest on top
  std::vector<Neighbor>& best = scratch.best;          // max-heap: farthest accepted on top
  frontier.clear();
  best.clear();
  const auto farther = [](const Neighbor& a, const Neighbor& b) { return a.distance > b.distance; };
  const auto consider = [&](NodeId node, float distance) {
    frontier.push_back({distance, node});
    std::push_heap(frontier.begin(), frontier.end(), farther);
    if (!accepts(node)) return;
    best.push_back({distance, node});
    std::push_heap(best.begin(), best.end(), closer);
    if (best.size() > ef) {
      std::pop_heap(best.begin(), best.end(), closer);
      best.pop_back();
    }
  };
  visited.test_and_set(start);
  consider(start, space.query(start));
  ++distances;
  std::array<NodeId, kMaxDegree> fresh_nodes{};
  while (!frontier.empty()) {
    const Neighbor current = frontier.front();
    // Done once the closest unexpanded candidate is farther than the worst of ef accepted.
    if (best.size() >= ef && current.distance > best.front().distance) break;
    std::pop_heap(frontier.begin(), frontier.end(), farther);
    frontier.pop_back();
    const std::uint32_t fresh = fresh_neighbours(space, current.node, visited, fresh_nodes);
    distances += fresh;
    for (std::uint32_t i = 0; i < fresh; ++i) {
      const NodeId neighbour = fresh_nodes[i];
      const float distance = space.query(neighbour);
      if (best.size() < ef || distance < best.front().distance) {
        __builtin_prefetch(level0_row(neighbour));
        consider(neighbour, distance);
      }
    }
  }
  std::sort_heap(best.begin(), best.end(), closer);  // ascending
  results.assign(best.begin(), best.end());
  return distances;
}

}  // namespace matry::graph
