// An immutable set of ids (labels) for filtered search: built once, tested per visited node
// inside the traversal. Dense ids (the usual 0..n-1) get a bitmap, one bit per id up to the
// largest; sparse ones a sorted array searched by bisection.
#pragma once

#include <cstdint>
#include <vector>

namespace matry {

class IdSet {
 public:
  // From ids (any order, duplicates allowed); each must be non-negative.
  static IdSet from_ids(const std::int64_t* ids, std::size_t n);
  // From a mask over ids: id i is in the set when mask[i] != 0.
  static IdSet from_mask(const std::uint8_t* mask, std::size_t n);

  std::size_t size() const { return size_; }
  // One past the largest id the set can hold (the bitmap's width), or of its largest id.
  std::uint64_t id_bound() const { return id_bound_; }
  bool contains(std::int64_t id) const {
    if (id < 0 || static_cast<std::uint64_t>(id) >= id_bound_) return false;
    if (dense()) {
      const auto bit = static_cast<std::uint64_t>(id);
      return ((bits_[bit >> 6] >> (bit & 63)) & 1u) != 0;
    }
    return contains_sparse(id);
  }
  // Calls visit(id) for every id, ascending.
  template <class Visit>
  void for_each(Visit&& visit) const {
    if (!dense()) {
      for (const std::int64_t id : sorted_) visit(id);
      return;
    }
    for (std::size_t word = 0; word < bits_.size(); ++word) {
      for (std::uint64_t rest = bits_[word]; rest != 0; rest &= rest - 1) {
        visit(static_cast<std::int64_t>(word * 64 + static_cast<unsigned>(__builtin_ctzll(rest))));
      }
    }
  }
  std::size_t memory_bytes() const { return bits_.capacity() * 8 + sorted_.capacity() * 8; }

 private:
  bool dense() const { return !bits_.empty() || sorted_.empty(); }
  bool contains_sparse(std::int64_t id) const;

  std::vector<std::uint64_t> bits_;   // dense form
  std::vector<std::int64_t> sorted_;  // sparse form: unique ids, ascending
  std::size_t size_ = 0;
  std::uint64_t id_bound_ = 0;
};

}  // namespace matry
