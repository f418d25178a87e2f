#pragma once

#include <cstddef>
#include <new>

#include "net.hpp"

namespace sluice::proxy {

/// Memory for the parsed heads of one request (the request's and the upstream response's fields).
/// Beast's basic_fields allocates every field on its own; with this arena the allocations of a request
/// are bumps of an offset in a block owned by the connection, frees are no-ops, and reset() takes the
/// whole block back once both heads are gone. Heads larger than the block spill over to the heap
/// (bounded by the header limits), so a big head costs what it did before and nothing breaks.
/// Use from the connection's thread only.
class head_arena {
 public:
  static constexpr std::size_t block_bytes = 4096;

  head_arena() = default;
  head_arena(const head_arena&) = delete;
  head_arena& operator=(const head_arena&) = delete;

  void* allocate(std::size_t n, std::size_t align) {
    const std::size_t at = (used_ + align - 1) & ~(align - 1);
    if (at + n <= block_bytes) {
      used_ = at + n;
      return block_ + at;
    }
    return ::operator new(n, std::align_val_t(align));
  }

  void deallocate(void* p, std::size_t n, std::size_t align) noexcept {
    const auto* b = static_cast<std::byte*>(p);
    if (b >= block_ && b < block_ + block_bytes) return;  // taken back by reset()
    ::operator delete(p, n, std::align_val_t(align));
  }

  /// Every head allocated from the arena must be destroyed first.
  void reset() noexcept { used_ = 0; }

  [[nodiscard]] std::size_t used() const { return used_; }

 private:
  alignas(std::max_align_t) std::byte block_[block_bytes];
  std::size_t used_ = 0;
};

/// A standard allocator over a head_arena, for basic_fields.
template <class T>
class arena_allocator {
 public:
  using value_type = T;

  explicit arena_allocator(head_arena& arena) noexcept : arena_(&arena) {}
  template <class U>
  arena_allocator(const arena_allocator<U>& other) noexcept : arena_(other.arena()) {}  // NOLINT: rebinding

  T* allocate(std::size_t n) { return static_cast<T*>(arena_->allocate(n * sizeof(T), alignof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { arena_->deallocate(p, n * sizeof(T), alignof(T)); }

  [[nodiscard]] head_arena* arena() const { return arena_; }
  template <class U>
  bool operator==(const arena_allocator<U>& other) const noexcept {
    return arena_ == other.arena();
  }

 private:
  head_arena* arena_;
};

/// The fields of the heads sluice parses on the hot path.
using head_fields = http::basic_fields<arena_allocator<char>>;

}  // namespace sluice::proxy
