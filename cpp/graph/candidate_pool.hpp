// The beam of a layer search as one sorted array instead of hnswlib's two heaps: entries are kept
// in ascending distance, a cursor points at the closest entry not yet expanded. It is both the
// candidate queue and the result set, and stays in cache for the ef values people use.
//
// Capacity counts live entries only: deleted nodes still route the search (they sit in the
// array) but do not take a result slot, as in hnswlib where they never enter the result heap.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "graph/visited.hpp"

namespace matry::graph {

// Node ids stay below 2^30: the pool keeps two flags in the top bits.
constexpr NodeId kMaxNodes = (1u << 30) - 1;

struct Neighbor {
  float distance;
  NodeId node;
};

inline bool closer(const Neighbor& a, const Neighbor& b) { return a.distance < b.distance; }

class CandidatePool {
 public:
  void reset(std::size_t live_capacity) {
    entries_.clear();
    live_capacity_ = live_capacity;
    live_count_ = 0;
    cursor_ = 0;
  }

  // Would an entry at `distance` be kept?
  bool admits(float distance) const {
    return live_count_ < live_capacity_ || distance < entries_.back().distance;
  }

  void insert(float distance, NodeId node, bool live) {
    if (!admits(distance)) return;
    const Entry entry{distance, node | (live ? kLiveBit : 0u)};
    const auto position = std::upper_bound(entries_.begin(), entries_.end(), distance,
                                           [](float d, const Entry& e) { return d < e.distance; });
    const std::size_t index = static_cast<std::size_t>(position - entries_.begin());
    entries_.insert(position, entry);
    if (index < cursor_) cursor_ = index;
    if (!live) return;
    if (++live_count_ > live_capacity_) {
      // Drop the farthest live entry and any deleted entries behind the new last live one.
      while (!entries_.back().live()) entries_.pop_back();
      entries_.pop_back();
      --live_count_;
      while (!entries_.empty() && !entries_.back().live()) entries_.pop_back();
    }
  }

  bool has_unexpanded() {
    while (cursor_ < entries_.size() && entries_[cursor_].expanded()) ++cursor_;
    return cursor_ < entries_.size();
  }

  // Closest entry not yet expanded; call has_unexpanded() first.
  Neighbor pop_unexpanded() {
    Entry& entry = entries_[cursor_];
    entry.tagged_node |= kExpandedBit;
    ++cursor_;
    return {entry.distance, entry.node()};
  }

  // Live entries in ascending distance, at most `limit` of them.
  void live_results(std::size_t limit, std::vector<Neighbor>& out) const {
    out.clear();
    for (const Entry& entry : entries_) {
      if (out.size() >= limit) break;
      if (entry.live()) out.push_back({entry.distance, entry.node()});
    }
  }

 private:
  // 8 bytes: the two flags ride in the top bits of the node id (nodes < 2^30), which keeps
  // the array small for the memmove of each insert.
  static constexpr NodeId kLiveBit = 1u << 31;
  static constexpr NodeId kExpandedBit = 1u << 30;
  struct Entry {
    float distance;
    NodeId tagged_node;
    NodeId node() const { return tagged_node & ~(kLiveBit | kExpandedBit); }
    bool live() const { return (tagged_node & kLiveBit) != 0; }
    bool expanded() const { return (tagged_node & kExpandedBit) != 0; }
  };

  std::vector<Entry> entries_;
  std::size_t live_capacity_ = 0;
  std::size_t live_count_ = 0;
  std::size_t cursor_ = 0;
};

}  // namespace matry::graph
