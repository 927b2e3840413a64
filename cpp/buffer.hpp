// Uninitialized, 64-byte aligned, growable array of trivially copyable T. Growth copies only the
// used prefix, so pages beyond it are never touched (they do not count towards RSS).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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
    const std::size_t wanted = capacity * sizeof(T);
    // Large arrays (vectors, links) are read at random by every search: on 2 MiB pages the
    // TLB covers them, which 4 KiB pages cannot. Linux only backs them so when asked.
    const bool huge = wanted >= kHugePage;
    const std::size_t alignment = huge ? kHugePage : kAlignment;
    const std::size_t bytes = round_up(wanted, alignment);
    Storage fresh(static_cast<T*>(std::aligned_alloc(alignment, bytes)));
    if (!fresh) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(fresh.get(), bytes, MADV_HUGEPAGE);  // a hint: failure changes nothing
#endif
    if (used > 0) std::memcpy(fresh.get(), data_.get(), std::min(used, capacity_) * sizeof(T));
    data_ = std::move(fresh);
    capacity_ = capacity;
  }

 private:
  static constexpr std::size_t kAlignment = 64;
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;
  static std::size_t round_up(std::size_t bytes, std::size_t alignment) {
    return std::max<std::size_t>(alignment, (bytes + alignment - 1) / alignment * alignment);
  }
  struct FreeDeleter {
    void operator()(T* p) const { std::free(p); }
  };
  using Storage = std::unique_ptr<T, FreeDeleter>;

  Storage data_;
  std::size_t capacity_ = 0;
};

}  // namespace matry
