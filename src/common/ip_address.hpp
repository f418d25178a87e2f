#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::common {

/// An IPv4 or IPv6 address as 16 bytes (IPv4 stored as IPv4-mapped IPv6). Plain value, thread-safe to copy.
class ip_address {
 public:
  /// The unspecified IPv6 address (::).
  ip_address() = default;

  /// Parses dotted IPv4 or textual IPv6 (optionally in [brackets]); IPv4-mapped IPv6 becomes IPv4.
  [[nodiscard]] static std::optional<ip_address> parse(std::string_view text);
  /// Builds from 4 network-order bytes.
  [[nodiscard]] static ip_address from_v4(const std::array<std::uint8_t, 4>& bytes);
  /// Builds from 16 network-order bytes; IPv4-mapped input becomes IPv4.
  [[nodiscard]] static ip_address from_v6(const std::array<std::uint8_t, 16>& bytes);

  /// True for IPv4 (including addresses that arrived IPv4-mapped).
  [[nodiscard]] bool is_v4() const { return v4_; }
  /// The 16 bytes (IPv4 as ::ffff:a.b.c.d).
  [[nodiscard]] const std::array<std::uint8_t, 16>& bytes() const { return bytes_; }
  /// This address with all bits past prefix_bits cleared (prefix counted in the address family's bits).
  [[nodiscard]] ip_address masked(unsigned prefix_bits) const;
  /// Canonical text: dotted quad for IPv4, RFC 5952 for IPv6.
  [[nodiscard]] std::string to_string() const;
  /// Writes the canonical text into out (at least 46 bytes); returns the length written.
  std::size_t format_to(char* out) const;

  friend bool operator==(const ip_address&, const ip_address&) = default;

 private:
  std::array<std::uint8_t, 16> bytes_{};
  bool v4_ = false;
};

/// An address block such as 10.0.0.0/8 or 2001:db8::/32. Plain value.
class cidr {
 public:
  /// Parses "ADDR/BITS" or a bare address (a single host). Rejects bits beyond the family's width.
  [[nodiscard]] static std::optional<cidr> parse(std::string_view text);
  /// True when addr lies in this block (an IPv4 block never contains an IPv6 address and vice versa).
  [[nodiscard]] bool contains(const ip_address& addr) const;
  /// The block's network address.
  [[nodiscard]] const ip_address& network() const { return network_; }
  /// Prefix length in the family's bits (0..32 or 0..128).
  [[nodiscard]] unsigned prefix_bits() const { return prefix_bits_; }

 private:
  ip_address network_;
  unsigned prefix_bits_ = 0;
};

}  // namespace sluice::common
