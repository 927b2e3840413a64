// Visited sets with epoch tags (no clearing between searches) and a pool that lends them out.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace matry::graph {

using NodeId = std::uint32_t;

class VisitedSet {
 public:
  // Starts a new search over `node_count` nodes. Clearing happens once every 65535 searches.
  void begin(std::size_t node_count) {
    if (tags_.size() < node_count) tags_.resize(node_count, 0);
    if (++epoch_ == 0) {
      std::fill(tags_.begin(), tags_.end(), 0);
      epoch_ = 1;
    }
  }
  // Marks `node`; returns true if it was already marked in this search.
  bool test_and_set(NodeId node) {
    std::uint16_t& tag = tags_[node];
    if (tag == epoch_) return true;
    tag = epoch_;
    return false;
  }
  const std::uint16_t* tag_address(NodeId node) const { return tags_.data() + node; }

 private:
  std::vector<std::uint16_t> tags_;
  std::uint16_t epoch_ = 0;
};

// Lends out reusable objects (visited sets, search scratch) so that a search or insert does
// not allocate: each borrower gets one to itself, returned to the pool when its lease ends.
template <class T>
class LendingPool {
 public:
  class Lease {
   public:
    Lease(LendingPool& pool, std::unique_ptr<T> item) : pool_(&pool), item_(std::move(item)) {}
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (item_) pool_->give_back(std::move(item_));
    }
    T& operator*() { return *item_; }
    T* operator->() { return item_.get(); }

   private:
    LendingPool* pool_;
    std::unique_ptr<T> item_;
  };

  Lease borrow() {
    std::unique_ptr<T> item;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      if (!free_.empty()) {
        item = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!item) item = std::make_unique<T>();
    return Lease(*this, std::move(item));
  }

 private:
  void give_back(std::unique_ptr<T> item) {
    std::lock_guard<std::mutex> guard(mutex_);
    free_.push_back(std::move(item));
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> free_;
};

}  // namespace matry::graph
