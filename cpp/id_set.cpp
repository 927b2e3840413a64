#include "id_set.hpp"

#include <algorithm>
#include <string>

#include "errors.hpp"

namespace matry {
namespace {

// A bitmap costs id_bound / 8 bytes, a sorted array 8 bytes per id: use the bitmap unless it
// would be more than 8x larger than the array (and so mostly zeros), or any set under 1 MiB.
constexpr std::uint64_t kDenseBitsPerId = 64 * 8;
constexpr std::uint64_t kAlwaysDenseBits = std::uint64_t{8} << 20;

}  // namespace

IdSet IdSet::from_ids(const std::int64_t* ids, std::size_t n) {
  IdSet set;
  std::int64_t largest = -1;
  for (std::size_t i = 0; i < n; ++i) {
    if (ids[i] < 0) {
      throw InvalidArgument("filter: ids must be non-negative, got " + std::to_string(ids[i]) +
                            " at position " + std::to_string(i));
    }
    largest = std::max(largest, ids[i]);
  }
  const std::uint64_t bound = static_cast<std::uint64_t>(largest) + 1;
  if (n == 0) return set;
  if (bound <= kAlwaysDenseBits || bound <= kDenseBitsPerId * n) {
    set.bits_.assign((bound + 63) / 64, 0);
    for (std::size_t i = 0; i < n; ++i) {
      const auto bit = static_cast<std::uint64_t>(ids[i]);
      set.bits_[bit >> 6] |= std::uint64_t{1} << (bit & 63);
    }
    for (const std::uint64_t word : set.bits_) {
      set.size_ += static_cast<std::size_t>(__builtin_popcountll(word));
    }
  } else {
    set.sorted_.assign(ids, ids + n);
    std::sort(set.sorted_.begin(), set.sorted_.end());
    set.sorted_.erase(std::unique(set.sorted_.begin(), set.sorted_.end()), set.sorted_.end());
    set.size_ = set.sorted_.size();
  }
  set.id_bound_ = bound;
  return set;
}

IdSet IdSet::from_mask(const std::uint8_t* mask, std::size_t n) {
  IdSet set;
  set.bits_.assign((n + 63) / 64, 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (mask[i] != 0) {
      set.bits_[i >> 6] |= std::uint64_t{1} << (i & 63);
      ++set.size_;
    }
  }
  set.id_bound_ = n;
  return set;
}

bool IdSet::contains_sparse(std::int64_t id) const {
  return std::binary_search(sorted_.begin(), sorted_.end(), id);
}

}  // namespace matry
