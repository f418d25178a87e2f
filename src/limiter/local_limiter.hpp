#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "limiter/bucket_table.hpp"
#include "limiter/decider.hpp"
#include "limiter/token_bucket.hpp"

namespace sluice::limiter {

/// The limits of one configuration over the process's bucket_table: every matching limit must have a
/// token, and a rejected request takes none (CONTRACT.md "Rate limiting semantics"). Immutable after
/// construction; a reload builds a new one over the same table, and limits whose name, key, rate and
/// burst are unchanged find their buckets again. Thread-safe; the table must outlive it.
class local_limiter final : public decider {
 public:
  /// Most limits one configuration may have (the decision's bit masks are 64 bits).
  static constexpr std::size_t max_limits = 64;

  /// Builds the rules from cfg.limits and cfg.server.trusted_proxies. Throws std::invalid_argument when
  /// there are more than max_limits limits.
  local_limiter(const config::config& cfg, bucket_table& table);

  /// Decides at once (the store is local): never nullopt. now is the request's one clock read. Thread-safe.
  [[nodiscard]] std::optional<decision> decide_now(const request_view& req, time_point now) override;
  /// co_returns decide_now's answer; exists for the decider seam only.
  [[nodiscard]] boost::asio::awaitable<decision> decide(const request_view& req, time_point now) override;

  /// The limit names in config order; index i is bit i of the decision masks (per-limit metrics).
  [[nodiscard]] std::span<const std::string> rule_names() const { return names_; }

 private:
  struct bucket_spec {
    token_bucket bucket;
    std::uint64_t identity;
  };
  struct override_spec {
    std::string value;                  ///< key: header: the exact header value
    std::optional<common::cidr> block;  ///< key: ip: the value parsed as an address or CIDR
    bucket_spec spec;
  };
  struct rule {
    config::key_kind kind;
    std::string header_name;
    unsigned ipv6_prefix;
    bool dry_run;
    bool filtered;
    std::string path_prefix;
    std::vector<std::string> methods;
    bucket_spec base;
    std::vector<override_spec> overrides;  ///< header values sorted for binary search; ip blocks in config order
  };

  [[nodiscard]] const bucket_spec& spec_for(const rule& r, std::string_view header_value,
                                            const common::ip_address& client) const;
  [[nodiscard]] static bool filter_matches(const rule& r, std::string_view method, std::string_view path);

  bucket_table& table_;
  std::vector<common::cidr> trusted_;
  std::vector<std::string> names_;  ///< decision.status.name views these: never modified after construction
  std::vector<rule> rules_;
};

}  // namespace sluice::limiter
