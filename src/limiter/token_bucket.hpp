#pragma once

#include <chrono>
#include <cstdint>

#include "limiter/decider.hpp"

namespace sluice::limiter {

/// The state of one bucket, 16 bytes, as the table stores it. GCRA form: instead of a token count it keeps
/// the moment the bucket will be full again, so refill needs no update and an idle bucket needs no timer.
/// No member initialisers, so the per-request array of them costs nothing: start from full_state().
struct bucket_state {
  std::int64_t full_at_ns;     ///< when the bucket is full again: steady-clock ns since its epoch
  std::uint32_t full_at_frac;  ///< the fraction of that ns, in units of 2^-32 ns (keeps refill exact)
  std::uint32_t last_used;     ///< recency stamp kept by bucket_table; the bucket math ignores it
};

/// Token bucket math for one (rate, burst): capacity `burst`, refilled continuously at `rate` tokens per
/// second, one token per request. Pure: time is an argument, state lives in bucket_state. Immutable after
/// construction, so thread-safe to share; callers synchronise access to the state they pass in.
///
/// Time is fixed point with 32 fractional bits of a nanosecond, so fractional rates (0.5/s, 3/s) do not
/// drift. A request is admitted when the bucket's debt is within (burst - 1) intervals plus less than one
/// nanosecond: request times are whole nanoseconds, and without that slack a client sending at exactly
/// 3/s (gaps of 333333333 ns) would be refused a token it is owed.
class token_bucket {
 public:
  /// Largest burst honoured (2^40); larger values are treated as this.
  static constexpr std::uint64_t max_burst = std::uint64_t{1} << 40;
  /// Longest refill interval honoured: 2^48 ns (about 3.3 days per token); slower rates are treated as this.
  static constexpr std::int64_t max_interval_ns = std::int64_t{1} << 48;

  /// Builds the math for rate_per_second > 0 and burst >= 1 (burst 0 counts as 1).
  token_bucket(double rate_per_second, std::uint64_t burst);

  /// A bucket that is full at now (what a new or evicted bucket is).
  [[nodiscard]] static bucket_state full_state(time_point now);
  /// True when the bucket has refilled to capacity by now, so dropping it changes no decision.
  [[nodiscard]] static bool is_full(const bucket_state& state, time_point now);

  /// True when a request at now would get a token.
  [[nodiscard]] bool has_token(const bucket_state& state, time_point now) const;
  /// Takes one token at now. Only call after has_token() said yes.
  void take(bucket_state& state, time_point now) const;

  /// Whole tokens left at now: how many requests in a row would be admitted at this instant.
  [[nodiscard]] std::uint64_t remaining(const bucket_state& state, time_point now) const;
  /// Time until a request would get a token (zero when it would now), rounded up to whole ns.
  [[nodiscard]] std::chrono::nanoseconds time_until_token(const bucket_state& state, time_point now) const;
  /// Seconds until a request would get a token, rounded up: 0 when it would now, otherwise at least 1.
  [[nodiscard]] std::uint64_t seconds_until_token(const bucket_state& state, time_point now) const;
  /// Seconds until the bucket is full, rounded up (0 when it is full).
  [[nodiscard]] std::uint64_t seconds_until_full(const bucket_state& state, time_point now) const;

  /// Capacity in tokens.
  [[nodiscard]] std::uint64_t burst() const { return burst_; }
  /// ceil(burst / rate) in seconds, the policy window (w=). Within 1e-9 relative of a whole number counts
  /// as that number, so burst 3 at 0.3/s is 10 s despite binary floating point.
  [[nodiscard]] std::uint64_t window_seconds() const { return window_seconds_; }

 private:
  using fixed = __int128;  // ns * 2^32

  [[nodiscard]] static fixed to_fixed(time_point t);
  [[nodiscard]] static fixed full_at(const bucket_state& state);
  [[nodiscard]] static fixed debt(const bucket_state& state, time_point now);

  fixed interval_;   ///< time per token
  fixed tolerance_;  ///< the largest debt that still admits a request: (burst - 1) intervals + (1 ns - 1 unit)
  std::uint64_t burst_;
  std::uint64_t window_seconds_;
};

}  // namespace sluice::limiter
