#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include <boost/asio/awaitable.hpp>

#include "common/ip_address.hpp"

namespace sluice::limiter {

using clock = std::chrono::steady_clock;
using time_point = clock::time_point;

/// What the limiter reads from one request. Views point into the caller's buffers and must outlive the decision.
struct request_view {
  std::string_view method;          ///< e.g. "GET"
  std::string_view target;          ///< request-target as received (path and query)
  common::ip_address peer;          ///< the TCP peer
  std::string_view forwarded_for;   ///< X-Forwarded-For, several header lines joined with ","; "" when absent
  /// Returns the value of the named header (case-insensitive), or nullopt when the request has none.
  std::optional<std::string_view> (*find_header)(const void* ctx, std::string_view name) = nullptr;
  const void* header_ctx = nullptr;  ///< passed back to find_header
};

/// The state of one limit's bucket as the rate limit headers report it.
struct limit_status {
  std::string_view name;              ///< limit name; valid while the decider that produced it lives
  std::uint64_t burst = 0;            ///< bucket capacity (q=)
  std::uint64_t window_seconds = 0;   ///< ceil(burst / rate) (w=)
  std::uint64_t remaining = 0;        ///< whole tokens left after this request (r=)
  std::uint64_t reset_seconds = 0;    ///< seconds until the bucket is full again, rounded up (t=)
};

/// The limiter's answer for one request. Being limited is a result, not an error.
struct decision {
  bool allowed = true;       ///< forward the request (also true when only dry-run limits said no)
  bool matched = false;      ///< at least one limit applied: send rate limit headers from `status`
  limit_status status;       ///< the matching limit with the fewest tokens left
  std::string_view rejected_by;           ///< !allowed: the rejecting limit with the longest wait
  std::uint64_t retry_after_seconds = 0;  ///< !allowed: seconds until every rejecting bucket has a token, >= 1
  std::uint64_t rejected_mask = 0;  ///< bit i: enforced rule i said no (rule order = config order, at most 64)
  std::uint64_t dry_run_mask = 0;   ///< bit i: dry-run rule i would have said no
};

/// The seam between the request path and a store of buckets: the local sharded table now, a shared
/// store (e.g. Redis) later. Implementations say whether they are thread-safe; the local one is.
class decider {
 public:
  virtual ~decider() = default;

  /// Decides at once when the store is local; nullopt means the answer needs I/O: call decide().
  [[nodiscard]] virtual std::optional<decision> decide_now(const request_view& req, time_point now) = 0;
  /// The asynchronous path, used only after decide_now returned nullopt; completes on the caller's executor.
  [[nodiscard]] virtual boost::asio::awaitable<decision> decide(const request_view& req, time_point now) = 0;
};

}  // namespace sluice::limiter
