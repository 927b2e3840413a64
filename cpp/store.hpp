// Vector storage: contiguous rows of `dim` floats, the label of each node, the label -> node map
// and the deleted flags. Nodes are never moved or reused, so node ids stay valid for the graph.
//
// Invariants (io.cpp checks them on load): every label is in [0, next_label); a label names its
// latest node, and every older node with the same label is deleted, so at most one node per
// label is live and it is the one find() returns.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "buffer.hpp"
#include "graph/visited.hpp"

namespace matry {

using graph::NodeId;

// Ids (labels) are the non-negative int64 values: 2^63 of them. "One past the largest id" can be
// 2^63, which int64 cannot hold, so next_label is kept as a uint64 up to this count.
constexpr std::uint64_t kLabelCount = std::uint64_t{1} << 63;

// Rows stored under metric "ip" (with require_unit_norm) must have |norm - 1| within this, and
// cosine rows are normalized to it: Index::add rejects rows outside it and load checks it.
constexpr float kUnitLengthTolerance = 1e-3f;

class VectorStore {
 public:
  explicit VectorStore(std::size_t dim) : dim_(dim) {}

  std::size_t dim() const { return dim_; }
  std::size_t node_count() const { return labels_.size(); }
  std::size_t live_count() const { return live_count_; }
  std::size_t capacity() const { return vectors_.capacity() / dim_; }
  bool has_deleted() const { return live_count_ != labels_.size(); }
  // One past the largest label ever used (0 for a new store, at most kLabelCount): default ids
  // continue from here.
  std::uint64_t next_label() const { return next_label_; }

  void reserve(std::size_t capacity);
  // Copies `row`; `label` now names the new node (an older node with it stays a tombstone).
  NodeId append(const float* row, std::int64_t label);

  const float* row(NodeId node) const { return vectors_.data() + node * dim_; }
  float* row(NodeId node) { return vectors_.data() + node * dim_; }
  const float* rows() const { return vectors_.data(); }
  std::int64_t label(NodeId node) const { return labels_[node]; }
  const std::vector<std::int64_t>& labels() const { return labels_; }

  // Node currently named by `label`, deleted or not.
  std::optional<NodeId> find(std::int64_t label) const;
  // Node currently named by `label` if it is live.
  std::optional<NodeId> find_live(std::int64_t label) const;

  bool is_deleted(NodeId node) const { return deleted_[node] != 0; }
  const std::uint8_t* deleted_flags() const { return deleted_.data(); }
  void mark_deleted(NodeId node);
  void unmark_deleted(NodeId node);

  // Rebuilds a store from saved parts that io.cpp has checked against the invariants above;
  // labels map to their latest node.
  void restore(std::vector<std::int64_t> labels, std::vector<std::uint8_t> deleted,
               std::uint64_t next_label);
  float* reserve_rows_for_restore(std::size_t node_count);
  // Renumbers nodes: new node i is old node order[i] (a permutation of every node).
  void permute(const std::vector<NodeId>& order);
  // A store of the nodes in `order` only (new node i is old node order[i]), with the same
  // next_label: compaction keeps the survivors and their ids.
  VectorStore select(const std::vector<NodeId>& order, std::size_t capacity) const;
  // Rows read in place from a file mapping (Index::load with mmap); see AlignedBuffer::view.
  void view_rows(const float* rows, std::size_t node_count) {
    vectors_.view(rows, node_count * dim_);
  }
  std::size_t memory_bytes() const;

 private:
  std::size_t dim_;
  AlignedBuffer<float> vectors_;
  std::vector<std::int64_t> labels_;
  std::vector<std::uint8_t> deleted_;
  std::unordered_map<std::int64_t, NodeId> node_of_label_;
  std::size_t live_count_ = 0;
  std::uint64_t next_label_ = 0;
};

}  // namespace matry
