#include "limiter/client_key.hpp"

#include <bit>
#include <cctype>

#include "common/http_text.hpp"

namespace sluice::limiter {
namespace {

std::optional<common::ip_address> parse_entry(std::string_view entry) {
  if (entry.empty()) return std::nullopt;
  // ip_address::parse strips brackets from any address; only IPv6 may wear them here.
  if (entry.front() == '[' && entry.find(':') == std::string_view::npos) return std::nullopt;
  return common::ip_address::parse(entry);
}

bool is_trusted(const common::ip_address& addr, std::span<const common::cidr> trusted) {
  for (const auto& block : trusted) {
    if (block.contains(addr)) return true;
  }
  return false;
}

}  // namespace

common::ip_address client_address(const common::ip_address& peer, std::string_view forwarded_for,
                                  std::span<const common::cidr> trusted) {
  common::ip_address current = peer;
  if (!is_trusted(current, trusted)) return current;
  std::string_view rest = forwarded_for;
  while (!rest.empty()) {
    const auto comma = rest.rfind(',');
    const std::string_view entry = common::trim_ows(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(0, comma);
    const auto addr = parse_entry(entry);
    if (!addr) return current;
    current = *addr;
    if (!is_trusted(current, trusted)) return current;
  }
  return current;
}

common::ip_address grouped_address(const common::ip_address& client, unsigned ipv6_prefix) {
  return client.is_v4() ? client : client.masked(ipv6_prefix);
}

std::uint64_t limit_identity(const sip_key& seed, const config::limit& limit, double rate_per_second,
                             std::uint64_t burst) {
  siphasher h(seed);
  h.update(limit.name).update("\0", 1);
  const auto kind = static_cast<unsigned char>(limit.key);
  h.update(&kind, 1);
  if (limit.key == config::key_kind::header) {
    for (char c : limit.header_name) {
      const auto lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      h.update(&lower, 1);
    }
    h.update("\0", 1);
  } else if (limit.key == config::key_kind::ip) {
    h.update_u64(limit.ipv6_prefix);
  }
  h.update_u64(std::bit_cast<std::uint64_t>(rate_per_second));
  h.update_u64(burst);
  return h.finish();
}

std::uint64_t ip_bucket_key(const sip_key& seed, std::uint64_t identity, const common::ip_address& group) {
  // The identity already encodes the key kind, so client bytes follow it directly (word aligned: the fast path).
  return siphasher(seed).update_u64(identity).update(group.bytes().data(), 16).finish();
}

std::uint64_t header_bucket_key(const sip_key& seed, std::uint64_t identity, std::string_view value) {
  return siphasher(seed).update_u64(identity).update(value).finish();
}

std::uint64_t global_bucket_key(const sip_key& seed, std::uint64_t identity) {
  return siphasher(seed).update_u64(identity).finish();
}

}  // namespace sluice::limiter
