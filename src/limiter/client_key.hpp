#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/ip_address.hpp"
#include "config/config.hpp"
#include "limiter/siphash.hpp"

/// Client key derivation: which address a request comes from, and the 64-bit table key of a
/// (limit, client) pair. Free functions over plain values; thread-safe.
namespace sluice::limiter {

/// The client's address (CONTRACT.md "Client IP"): the TCP peer unless it is in trusted; then the
/// X-Forwarded-For entries walked from the right, answering the first one not in trusted (nginx
/// real_ip_recursive on). Entries are comma-separated with surrounding spaces/tabs ignored; an entry must be
/// a plain IPv4 or IPv6 address or a bracketed IPv6 address ("[::1]"); anything else (a port, an empty
/// entry, a name, a bracketed IPv4) is garbage and ends the walk at the last good address reached, which is
/// the trusted one to its right (or the peer). When every entry is trusted, the leftmost one is the client.
[[nodiscard]] common::ip_address client_address(const common::ip_address& peer, std::string_view forwarded_for,
                                                std::span<const common::cidr> trusted);

/// The address a key: ip limit groups by: IPv4 whole, IPv6 cut to its first ipv6_prefix bits.
[[nodiscard]] common::ip_address grouped_address(const common::ip_address& client, unsigned ipv6_prefix);

/// A stable 64-bit identity for a limit's buckets under seed: equal exactly when the name, the key spec
/// (kind, header name ignoring case, IPv6 prefix) and the rate and burst are equal. An override passes its
/// own rate and burst. Rates compare as tokens per second, so 60/m and 1/s are the same rate.
[[nodiscard]] std::uint64_t limit_identity(const sip_key& seed, const config::limit& limit, double rate_per_second,
                                           std::uint64_t burst);

/// The table key of a key: ip limit for an (already grouped) address.
[[nodiscard]] std::uint64_t ip_bucket_key(const sip_key& seed, std::uint64_t identity, const common::ip_address& group);
/// The table key of a key: header:NAME limit for one header value (the bytes as received).
[[nodiscard]] std::uint64_t header_bucket_key(const sip_key& seed, std::uint64_t identity, std::string_view value);
/// The table key of a key: global limit (one bucket).
[[nodiscard]] std::uint64_t global_bucket_key(const sip_key& seed, std::uint64_t identity);

}  // namespace sluice::limiter
