#include "store.hpp"

#include <algorithm>
#include <cstring>

namespace matry {

void VectorStore::reserve(std::size_t capacity) {
  if (capacity <= this->capacity()) return;
  vectors_.grow(capacity * dim_, labels_.size() * dim_);
  labels_.reserve(capacity);
  deleted_.reserve(capacity);
  node_of_label_.reserve(capacity);
}

NodeId VectorStore::append(const float* row, std::int64_t label) {
  const std::size_t node = labels_.size();
  if (node + 1 > capacity()) reserve(std::max<std::size_t>(16, node * 2));
  std::memcpy(vectors_.data() + node * dim_, row, dim_ * sizeof(float));
  labels_.push_back(label);
  deleted_.push_back(0);
  node_of_label_[label] = static_cast<NodeId>(node);
  ++live_count_;
  // label <= 2^63 - 1, so label + 1 fits in the unsigned count.
  next_label_ = std::max(next_label_, static_cast<std::uint64_t>(label) + 1);
  return static_cast<NodeId>(node);
}

std::optional<NodeId> VectorStore::find(std::int64_t label) const {
  const auto it = node_of_label_.find(label);
  if (it == node_of_label_.end()) return std::nullopt;
  return it->second;
}

std::optional<NodeId> VectorStore::find_live(std::int64_t label) const {
  const std::optional<NodeId> node = find(label);
  if (!node || is_deleted(*node)) return std::nullopt;
  return node;
}

void VectorStore::mark_deleted(NodeId node) {
  if (deleted_[node] != 0) return;
  deleted_[node] = 1;
  --live_count_;
}

void VectorStore::unmark_deleted(NodeId node) {
  if (deleted_[node] == 0) return;
  deleted_[node] = 0;
  ++live_count_;
}

float* VectorStore::reserve_rows_for_restore(std::size_t node_count) {
  vectors_.grow(std::max<std::size_t>(node_count, 1) * dim_, 0);
  return vectors_.data();
}

void VectorStore::restore(std::vector<std::int64_t> labels, std::vector<std::uint8_t> deleted,
                          std::uint64_t next_label) {
  labels_ = std::move(labels);
  deleted_ = std::move(deleted);
  node_of_label_.clear();
  node_of_label_.reserve(labels_.size());
  live_count_ = 0;
  for (std::size_t node = 0; node < labels_.size(); ++node) {
    node_of_label_[labels_[node]] = static_cast<NodeId>(node);
    if (deleted_[node] == 0) ++live_count_;
  }
  next_label_ = next_label;
}

VectorStore VectorStore::select(const std::vector<NodeId>& order, std::size_t capacity) const {
  VectorStore out(dim_);
  const std::size_t n = order.size();
  out.vectors_.grow(std::max({capacity, n, std::size_t{1}}) * dim_, 0);
  std::vector<std::int64_t> labels(n);
  std::vector<std::uint8_t> deleted(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(out.vectors_.data() + i * dim_, row(order[i]), dim_ * sizeof(float));
    labels[i] = labels_[order[i]];
    deleted[i] = deleted_[order[i]];
  }
  out.restore(std::move(labels), std::move(deleted), next_label_);
  return out;
}

void VectorStore::permute(const std::vector<NodeId>& order) { *this = select(order, capacity()); }

std::size_t VectorStore::memory_bytes() const {
  // unordered_map: one heap node (key, value, next pointer, cached hash) plus a bucket pointer.
  const std::size_t map_bytes = node_of_label_.size() * (sizeof(void*) * 2 + 16) +
                                node_of_label_.bucket_count() * sizeof(void*);
  const std::size_t row_bytes = vectors_.is_view() ? 0 : vectors_.capacity() * sizeof(float);
  return row_bytes + labels_.capacity() * sizeof(std::int64_t) + deleted_.capacity() + map_bytes;
}

}  // namespace matry
