#include <catch2/catch.hpp>

#include <array>
#include <cstdint>

#include "limiter/siphash.hpp"

using sluice::limiter::sip_key;
using sluice::limiter::siphash;
using sluice::limiter::siphasher;

namespace {

// The reference key 00 01 .. 0f of the SipHash paper and its test vectors.
constexpr sip_key reference_key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};

std::array<unsigned char, 64> counting_bytes() {
  std::array<unsigned char, 64> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i);
  return bytes;
}

}  // namespace

TEST_CASE("siphash matches the SipHash-2-4 reference vectors", "[limiter]") {
  const auto bytes = counting_bytes();
  auto [length, expected] = GENERATE(table<std::size_t, std::uint64_t>({
      {0, 0x726fdb47dd0e0e31ULL},
      {1, 0x74f839c593dc67fdULL},
      {8, 0x93f5f5799a932462ULL},
      {15, 0xa129ca6149be45e5ULL},
      {16, 0x3f2acc7f57c29bdbULL},
      {17, 0x699ae9f52cbe4794ULL},
  }));
  CAPTURE(length);
  CHECK(siphash(reference_key, bytes.data(), length) == expected);
}

TEST_CASE("feeding siphash in pieces gives the same digest as one buffer", "[limiter]") {
  const auto bytes = counting_bytes();
  const std::size_t length = GENERATE(std::size_t{0}, 7, 8, 9, 31, 63);
  const std::size_t split = GENERATE(std::size_t{0}, 1, 3, 8, 13);
  if (split > length) return;
  CAPTURE(length, split);
  siphasher h(reference_key);
  h.update(bytes.data(), split);
  for (std::size_t i = split; i < length; ++i) h.update(bytes.data() + i, 1);
  CHECK(h.finish() == siphash(reference_key, bytes.data(), length));
}

TEST_CASE("a different seed gives a different digest for the same bytes", "[limiter]") {
  const auto bytes = counting_bytes();
  const sip_key other{reference_key.k0 ^ 1, reference_key.k1};
  CHECK(siphash(other, bytes.data(), 15) != siphash(reference_key, bytes.data(), 15));
  const auto a = sluice::limiter::random_sip_key();
  const auto b = sluice::limiter::random_sip_key();
  CHECK((a.k0 != b.k0 || a.k1 != b.k1));
}

TEST_CASE("a 64-bit word is hashed as its 8 little-endian bytes, aligned or not", "[limiter]") {
  const auto bytes = counting_bytes();
  const std::size_t offset = GENERATE(std::size_t{0}, 3, 8);
  CAPTURE(offset);
  const std::uint64_t word = 0x0f0e0d0c0b0a0908ULL;  // bytes 8..15 of counting_bytes
  siphasher h(reference_key);
  h.update(bytes.data() + 8 - offset, offset);
  h.update_u64(word);
  h.update(bytes.data() + 16, 5);
  std::array<unsigned char, 64> expected_input{};
  std::size_t n = 0;
  for (std::size_t i = 8 - offset; i < 8; ++i) expected_input[n++] = bytes[i];
  for (std::size_t i = 8; i < 21; ++i) expected_input[n++] = bytes[i];
  CHECK(h.finish() == siphash(reference_key, expected_input.data(), n));
}
