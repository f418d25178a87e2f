#include "limiter/siphash.hpp"

#include <bit>
#include <cstring>
#include <random>

namespace sluice::limiter {
namespace {

inline void sip_round(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3) {
  v0 += v1;
  v1 = std::rotl(v1, 13);
  v1 ^= v0;
  v0 = std::rotl(v0, 32);
  v2 += v3;
  v3 = std::rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = std::rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = std::rotl(v1, 17);
  v1 ^= v2;
  v2 = std::rotl(v2, 32);
}

inline std::uint64_t load_le64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

}  // namespace

sip_key random_sip_key() {
  std::random_device rd;
  auto word = [&rd] { return (std::uint64_t{rd()} << 32) ^ std::uint64_t{rd()}; };
  return sip_key{word(), word()};
}

siphasher::siphasher(const sip_key& key)
    : v0_(key.k0 ^ 0x736f6d6570736575ULL),
      v1_(key.k1 ^ 0x646f72616e646f6dULL),
      v2_(key.k0 ^ 0x6c7967656e657261ULL),
      v3_(key.k1 ^ 0x7465646279746573ULL) {}

void siphasher::compress(std::uint64_t m) {
  v3_ ^= m;
  sip_round(v0_, v1_, v2_, v3_);
  sip_round(v0_, v1_, v2_, v3_);
  v0_ ^= m;
}

siphasher& siphasher::update(const void* data, std::size_t size) {
  auto p = static_cast<const unsigned char*>(data);
  total_bytes_ += size;
  while (tail_bytes_ != 0 && size != 0) {
    tail_ |= std::uint64_t{*p++} << (8 * tail_bytes_);
    --size;
    if (++tail_bytes_ == 8) {
      compress(tail_);
      tail_ = 0;
      tail_bytes_ = 0;
    }
  }
  for (; size >= 8; size -= 8, p += 8) compress(load_le64(p));
  for (std::size_t i = 0; i < size; ++i) tail_ |= std::uint64_t{p[i]} << (8 * i);
  tail_bytes_ += size;
  return *this;
}

siphasher& siphasher::update_u64(std::uint64_t value) {
  if (tail_bytes_ == 0) {
    total_bytes_ += 8;
    compress(value);
    return *this;
  }
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  return update(bytes, sizeof bytes);
}

std::uint64_t siphasher::finish() {
  compress(tail_ | (total_bytes_ << 56));
  v2_ ^= 0xff;
  for (int i = 0; i < 4; ++i) sip_round(v0_, v1_, v2_, v3_);
  return v0_ ^ v1_ ^ v2_ ^ v3_;
}

std::uint64_t siphash(const sip_key& key, const void* data, std::size_t size) {
  return siphasher(key).update(data, size).finish();
}

}  // namespace sluice::limiter
