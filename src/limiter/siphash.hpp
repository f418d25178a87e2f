#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::limiter {

/// A 128-bit SipHash key. Plain value.
struct sip_key {
  std::uint64_t k0 = 0;
  std::uint64_t k1 = 0;
};

/// A fresh key from std::random_device, so that nobody outside the process can aim hash collisions.
[[nodiscard]] sip_key random_sip_key();

/// SipHash-2-4 (Aumasson & Bernstein, https://www.aumasson.jp/siphash/siphash.pdf), fed incrementally so a
/// key can be hashed from several pieces without copying them together. One instance per hash; not shared.
class siphasher {
 public:
  /// Starts a hash under key.
  explicit siphasher(const sip_key& key);

  /// Appends size bytes.
  siphasher& update(const void* data, std::size_t size);
  /// Appends the bytes of text.
  siphasher& update(std::string_view text) { return update(text.data(), text.size()); }
  /// Appends the 8 little-endian bytes of value.
  siphasher& update_u64(std::uint64_t value);

  /// The 64-bit digest of everything appended. Call once.
  [[nodiscard]] std::uint64_t finish();

 private:
  void compress(std::uint64_t m);

  std::uint64_t v0_, v1_, v2_, v3_;
  std::uint64_t tail_ = 0;       ///< up to 7 pending bytes, little-endian
  std::size_t tail_bytes_ = 0;
  std::uint64_t total_bytes_ = 0;
};

/// SipHash-2-4 of one buffer.
[[nodiscard]] std::uint64_t siphash(const sip_key& key, const void* data, std::size_t size);

}  // namespace sluice::limiter
