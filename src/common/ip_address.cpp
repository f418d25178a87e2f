#include "common/ip_address.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace sluice::common {
namespace {

constexpr std::array<std::uint8_t, 12> v4_mapped_prefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool has_v4_mapped_prefix(const std::array<std::uint8_t, 16>& b) {
  return std::memcmp(b.data(), v4_mapped_prefix.data(), v4_mapped_prefix.size()) == 0;
}

}  // namespace

std::optional<ip_address> ip_address::parse(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  // inet_pton needs a terminated string; the longest valid IPv6 text is 45 characters.
  char buf[64];
  if (text.empty() || text.size() >= sizeof(buf)) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  if (text.find(':') == std::string_view::npos) {
    std::array<std::uint8_t, 4> v4{};
    if (inet_pton(AF_INET, buf, v4.data()) != 1) return std::nullopt;
    return from_v4(v4);
  }
  std::array<std::uint8_t, 16> v6{};
  if (inet_pton(AF_INET6, buf, v6.data()) != 1) return std::nullopt;
  return from_v6(v6);
}

ip_address ip_address::from_v4(const std::array<std::uint8_t, 4>& bytes) {
  ip_address a;
  std::memcpy(a.bytes_.data(), v4_mapped_prefix.data(), v4_mapped_prefix.size());
  std::memcpy(a.bytes_.data() + 12, bytes.data(), 4);
  a.v4_ = true;
  return a;
}

ip_address ip_address::from_v6(const std::array<std::uint8_t, 16>& bytes) {
  ip_address a;
  a.bytes_ = bytes;
  a.v4_ = has_v4_mapped_prefix(bytes);
  return a;
}

ip_address ip_address::masked(unsigned prefix_bits) const {
  ip_address out = *this;
  const unsigned width = v4_ ? 32 : 128;
  if (prefix_bits >= width) return out;
  const unsigned first = v4_ ? 12 : 0;  // byte where the family's bits start
  for (unsigned i = 0; i < width / 8; ++i) {
    const unsigned bit = i * 8;
    std::uint8_t keep = 0;
    if (bit + 8 <= prefix_bits) keep = 0xff;
    else if (bit < prefix_bits) keep = static_cast<std::uint8_t>(0xff << (8 - (prefix_bits - bit)));
    out.bytes_[first + i] &= keep;
  }
  return out;
}

std::size_t ip_address::format_to(char* out) const {
  if (v4_) {
    inet_ntop(AF_INET, bytes_.data() + 12, out, 46);
  } else {
    inet_ntop(AF_INET6, bytes_.data(), out, 46);
  }
  return std::strlen(out);
}

std::string ip_address::to_string() const {
  char buf[64];
  return std::string(buf, format_to(buf));
}

std::optional<cidr> cidr::parse(std::string_view text) {
  const auto slash = text.find('/');
  const auto addr = ip_address::parse(text.substr(0, slash));
  if (!addr) return std::nullopt;
  const unsigned width = addr->is_v4() ? 32 : 128;
  unsigned bits = width;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), bits);
    if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty() || bits > width) {
      return std::nullopt;
    }
  }
  cidr c;
  c.network_ = addr->masked(bits);
  c.prefix_bits_ = bits;
  return c;
}

bool cidr::contains(const ip_address& addr) const {
  if (addr.is_v4() != network_.is_v4()) return false;
  return addr.masked(prefix_bits_) == network_;
}

}  // namespace sluice::common
