// Uninitialized, 64-byte aligned, growable array of trivially copyable T. Growth copies only the
// used prefix, so pages beyond it are never touched (they do not count towards RSS).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

namespace matry {

template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain data only");

 public:
  AlignedBuffer() = default;

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t capacity() const { return capacity_; }

  // Grows to hold `capacity` elements, keeping the first `used` of them.
  void grow(std::size_t capacity, std::size_t used) {
    if (capacity <= capacity_) return;
    const std::size_t bytes = round_up(capacity * sizeof(T));
    Storage fresh(static_cast<T*>(std::aligned_alloc(kAlignment, bytes)));
    if (!fresh) throw std::bad_alloc();
    if (used > 0) std::memcpy(fresh.get(), data_.get(), std::min(used, capacity_) * sizeof(T));
    data_ = std::move(fresh);
    capacity_ = capacity;
  }

 private:
  static constexpr std::size_t kAlignment = 64;
  static std::size_t round_up(std::size_t bytes) {
    return std::max<std::size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  }
  struct FreeDeleter {
    void operator()(T* p) const { std::free(p); }
  };
  using Storage = std::unique_ptr<T, FreeDeleter>;

  Storage data_;
  std::size_t capacity_ = 0;
};

}  // namespace matry
