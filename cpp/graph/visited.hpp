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

class VisitedPool {
 public:
  // Borrowed set, returned to the pool when the lease ends.
  class Lease {
   public:
    Lease(VisitedPool& pool, std::unique_ptr<VisitedSet> set) : pool_(pool), set_(std::move(set)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_.give_back(std::move(set_)); }
    VisitedSet& operator*() { return *set_; }
    VisitedSet* operator->() { return set_.get(); }

   private:
    VisitedPool& pool_;
    std::unique_ptr<VisitedSet> set_;
  };

  Lease borrow(std::size_t node_count) {
    std::unique_ptr<VisitedSet> set;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      if (!free_.empty()) {
        set = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!set) set = std::make_unique<VisitedSet>();
    set->begin(node_count);
    return Lease(*this, std::move(set));
  }

 private:
  void give_back(std::unique_ptr<VisitedSet> set) {
    std::lock_guard<std::mutex> guard(mutex_);
    free_.push_back(std::move(set));
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<VisitedSet>> free_;
};

}  // namespace matry::graph
