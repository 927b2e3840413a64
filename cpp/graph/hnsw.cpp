#include "graph/hnsw.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace matry::graph {
namespace {

// splitmix64: a counter-based generator, so a node's level depends on (seed, node) only.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

HnswGraph::HnswGraph(std::uint32_t M, std::uint32_t ef_construction, std::size_t payload_bytes)
    : M_(M),
      max_degree0_(2 * M),
      ef_construction_(ef_construction),
      level_multiplier_(1.0 / std::log(static_cast<double>(M))),
      payload_bytes_(payload_bytes) {
  constexpr std::size_t kLine = 64;
  std::size_t bytes = (1 + max_degree0_) * sizeof(std::uint32_t);
  if (payload_bytes > 0) bytes = (bytes + payload_bytes + kLine - 1) / kLine * kLine;
  level0_words_ = bytes / sizeof(std::uint32_t);
}

int HnswGraph::draw_level(std::uint64_t seed, NodeId node) const {
  const std::uint64_t bits = mix(seed ^ mix(node));
  // Uniform in (0, 1]: the top 53 bits, shifted off zero.
  const double uniform = (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;
  const double level = -std::log(uniform) * level_multiplier_;
  return static_cast<int>(std::min<double>(level, kMaxLevel - 1));
}

void HnswGraph::reserve(std::size_t capacity) {
  level0_.grow(capacity * level0_stride(), node_count_ * level0_stride());
  if (upper_.capacity() < capacity) upper_.reserve(capacity);
  if (levels_.capacity() < capacity) levels_.reserve(capacity);
}

NodeId HnswGraph::append_node(int level) {
  const NodeId node = static_cast<NodeId>(node_count_);
  if (level0_.capacity() < (node_count_ + 1) * level0_stride()) {
    reserve(std::max<std::size_t>(16, node_count_ * 2));
  }
  level0_row(node)[0] = 0;
  levels_.push_back(static_cast<std::uint8_t>(level));
  if (level > 0) {
    const std::size_t words = static_cast<std::size_t>(level) * upper_stride();
    upper_.push_back(std::make_unique<std::uint32_t[]>(words));  // zeroed: every count = 0
  } else {
    upper_.emplace_back();
  }
  ++node_count_;
  return node;
}

void HnswGraph::assign_from(HnswGraph&& other) {
  node_count_ = other.node_count_;
  level0_ = std::move(other.level0_);
  upper_ = std::move(other.upper_);
  levels_ = std::move(other.levels_);
  entry_point_ = other.entry_point_;
  max_level_ = other.max_level_;
  other.node_count_ = 0;
  other.max_level_ = -1;
}

std::vector<NodeId> HnswGraph::breadth_first_order() const {
  std::vector<NodeId> order;
  order.reserve(node_count_);
  std::vector<bool> placed(node_count_, false);
  const auto visit_from = [&](NodeId start) {
    placed[start] = true;
    order.push_back(start);
    for (std::size_t next = order.size() - 1; next < order.size(); ++next) {
      const std::uint32_t* row = level0_row(order[next]);
      for (std::uint32_t i = 1; i <= row[0]; ++i) {
        if (!placed[row[i]]) {
          placed[row[i]] = true;
          order.push_back(row[i]);
        }
      }
    }
  };
  if (node_count_ > 0) visit_from(entry_point_);
  for (NodeId node = 0; node < node_count_; ++node) {
    if (!placed[node]) visit_from(node);
  }
  return order;
}

void HnswGraph::permute(const std::vector<NodeId>& order, const std::vector<NodeId>& new_of) {
  const std::size_t words = level0_stride();
  AlignedBuffer<std::uint32_t> level0;
  level0.grow(std::max(level0_.capacity(), words), 0);
  std::vector<std::unique_ptr<std::uint32_t[]>> upper(node_count_);
  std::vector<std::uint8_t> levels(node_count_);
  for (std::size_t i = 0; i < node_count_; ++i) {
    const NodeId old = order[i];
    std::uint32_t* row = level0.data() + i * words;
    std::memcpy(row, level0_row(old), words * sizeof(std::uint32_t));
    for (std::uint32_t j = 1; j <= row[0]; ++j) row[j] = new_of[row[j]];
    levels[i] = levels_[old];
    upper[i] = std::move(upper_[old]);
    for (int level = 1; level <= levels[i]; ++level) {
      std::uint32_t* links_row =
          upper[i].get() + static_cast<std::size_t>(level - 1) * upper_stride();
      for (std::uint32_t j = 1; j <= links_row[0]; ++j) links_row[j] = new_of[links_row[j]];
    }
  }
  level0_ = std::move(level0);
  upper_ = std::move(upper);
  levels_ = std::move(levels);
  if (max_level_ >= 0) entry_point_ = new_of[entry_point_];
}

void HnswGraph::restore_viewing_level0(const std::uint32_t* level0, const std::uint8_t* levels,
                                       std::size_t node_count) {
  level0_.view(level0, node_count * level0_stride());
  levels_.assign(levels, levels + node_count);
  upper_.clear();
  upper_.reserve(node_count);
  for (std::size_t node = 0; node < node_count; ++node) {
    const std::size_t words = static_cast<std::size_t>(levels[node]) * upper_stride();
    if (words > 0) {
      upper_.push_back(std::make_unique<std::uint32_t[]>(words));
    } else {
      upper_.emplace_back();
    }
  }
  node_count_ = node_count;
}

std::size_t HnswGraph::memory_bytes() const {
  std::size_t bytes = (level0_.is_view() ? 0 : level0_.capacity() * sizeof(std::uint32_t)) +
                      upper_.capacity() * sizeof(upper_[0]) + levels_.capacity();
  for (std::size_t node = 0; node < node_count_; ++node) {
    bytes += static_cast<std::size_t>(levels_[node]) * upper_stride() * sizeof(std::uint32_t);
  }
  return bytes;
}

}  // namespace matry::graph
