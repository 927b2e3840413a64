// Uninitialized, 64-byte aligned, growable array of trivially copyable T. Growth copies only the
// used prefix, so pages beyond it are never touched (they do not count towards RSS).
//
// Large arrays (the vectors and the links, read at random by every search) live in their own
// anonymous mapping on Linux: they ask for transparent huge pages, so the TLB covers them, and
// they grow with mremap, which moves page tables instead of copying bytes, so an index never
// holds two copies of its vectors while it grows.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#define MATRY_MAPPED_BUFFERS 1
#endif

namespace matry {

template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain data only");

 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& other) noexcept { swap(other); }
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    AlignedBuffer(std::move(other)).swap(*this);
    return *this;
  }
  ~AlignedBuffer() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t capacity() const { return capacity_; }

  // Points at `capacity` elements owned elsewhere (a read-only file mapping that outlives
  // this buffer); such a buffer never grows and frees nothing.
  void view(const T* data, std::size_t capacity) {
    release();
    data_ = const_cast<T*>(data);  // never written through: the index refuses writes
    capacity_ = capacity;
    viewed_ = true;
  }
  bool is_view() const { return viewed_; }

  // Grows to hold `capacity` elements, keeping the first `used` of them.
  void grow(std::size_t capacity, std::size_t used) {
    if (capacity <= capacity_) return;
    if (viewed_) throw std::bad_alloc();  // unreachable: a mapped index is read-only
    used = std::min(used, capacity_);
    const std::size_t wanted = capacity * sizeof(T);
#if defined(MATRY_MAPPED_BUFFERS)
    if (wanted >= kMappedMinimum) {
      grow_mapped(round_up(wanted, kPage), used);
      capacity_ = capacity;
      return;
    }
#endif
    const std::size_t bytes = round_up(wanted, kAlignment);
    T* fresh = static_cast<T*>(std::aligned_alloc(kAlignment, bytes));
    if (fresh == nullptr) throw std::bad_alloc();
    if (used > 0) std::memcpy(fresh, data_, used * sizeof(T));
    release();
    data_ = fresh;
    bytes_ = bytes;
    capacity_ = capacity;
  }

 private:
  static constexpr std::size_t kAlignment = 64;
  static constexpr std::size_t kPage = 4096;
  static constexpr std::size_t kMappedMinimum = std::size_t{2} << 20;  // one huge page

  static std::size_t round_up(std::size_t bytes, std::size_t alignment) {
    return std::max<std::size_t>(alignment, (bytes + alignment - 1) / alignment * alignment);
  }

  void swap(AlignedBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    std::swap(bytes_, other.bytes_);
    std::swap(mapped_, other.mapped_);
    std::swap(viewed_, other.viewed_);
  }

  void release() noexcept {
    if (viewed_) {
      data_ = nullptr;
      capacity_ = 0;
      viewed_ = false;
      return;
    }
    if (data_ == nullptr) return;
#if defined(MATRY_MAPPED_BUFFERS)
    if (mapped_) {
      munmap(data_, bytes_);
    } else {
      std::free(data_);
    }
#else
    std::free(data_);
#endif
    data_ = nullptr;
    bytes_ = 0;
    mapped_ = false;
  }

#if defined(MATRY_MAPPED_BUFFERS)
  void grow_mapped(std::size_t bytes, std::size_t used) {
    void* fresh = nullptr;
    if (mapped_) {
      fresh = mremap(data_, bytes_, bytes, MREMAP_MAYMOVE);
      if (fresh == MAP_FAILED) throw std::bad_alloc();
    } else {
      fresh = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (fresh == MAP_FAILED) throw std::bad_alloc();
      if (used > 0) std::memcpy(fresh, data_, used * sizeof(T));
      release();
    }
#if defined(MADV_HUGEPAGE)
    madvise(fresh, bytes, MADV_HUGEPAGE);  // a hint: failure changes nothing
#endif
    data_ = static_cast<T*>(fresh);
    bytes_ = bytes;
    mapped_ = true;
  }
#endif

  T* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t bytes_ = 0;
  bool mapped_ = false;
  bool viewed_ = false;
};

}  // namespace matry
