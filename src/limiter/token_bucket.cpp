#include "limiter/token_bucket.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace sluice::limiter {
namespace {

using fixed = __int128;

constexpr int frac_bits = 32;
constexpr fixed one_ns = fixed{1} << frac_bits;
constexpr fixed one_second = fixed{1'000'000'000} << frac_bits;

// a >= 0, b > 0. Most operands fit 64 bits, where the hardware divides; __divti3 is several times slower.
fixed divide(fixed a, fixed b) {
  if ((a >> 64) == 0 && (b >> 64) == 0) {
    return static_cast<fixed>(static_cast<std::uint64_t>(a) / static_cast<std::uint64_t>(b));
  }
  return a / b;
}

fixed ceil_div(fixed a, fixed b) { return divide(a + b - 1, b); }

}  // namespace

token_bucket::token_bucket(double rate_per_second, std::uint64_t burst) {
  if (!(rate_per_second > 0) || !std::isfinite(rate_per_second)) {
    throw std::invalid_argument("token_bucket: rate must be a finite number above 0");
  }
  burst_ = std::clamp<std::uint64_t>(burst, 1, max_burst);
  // Rounded down, so an exact client is never refused for representation error; the error is below
  // 2^-32 ns per token and never accumulates beyond the sub-ns tolerance.
  long double interval = std::floor(1e9L * static_cast<long double>(one_ns) / rate_per_second);
  interval = std::clamp<long double>(interval, 1, static_cast<long double>(fixed{max_interval_ns} << frac_bits));
  interval_ = static_cast<fixed>(interval);
  tolerance_ = interval_ * static_cast<fixed>(burst_ - 1) + (one_ns - 1);

  const long double window = static_cast<long double>(burst_) / rate_per_second;
  const long double nearest = std::round(window);
  const long double w = std::fabs(window - nearest) <= 1e-9L * std::max<long double>(1, window) ? nearest
                                                                                                 : std::ceil(window);
  window_seconds_ = w >= 1.8e19L ? std::numeric_limits<std::uint64_t>::max()
                                 : std::max<std::uint64_t>(1, static_cast<std::uint64_t>(w));
}

token_bucket::fixed token_bucket::to_fixed(time_point t) {
  return static_cast<fixed>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()) *
         one_ns;
}

token_bucket::fixed token_bucket::full_at(const bucket_state& state) {
  return static_cast<fixed>(state.full_at_ns) * one_ns + state.full_at_frac;
}

token_bucket::fixed token_bucket::debt(const bucket_state& state, time_point now) {
  const fixed d = full_at(state) - to_fixed(now);
  return d > 0 ? d : 0;
}

bucket_state token_bucket::full_state(time_point now) {
  return bucket_state{std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count(), 0, 0};
}

bool token_bucket::is_full(const bucket_state& state, time_point now) {
  return full_at(state) <= to_fixed(now);
}

bool token_bucket::has_token(const bucket_state& state, time_point now) const {
  return debt(state, now) <= tolerance_;
}

void token_bucket::take(bucket_state& state, time_point now) const {
  const fixed now_fixed = to_fixed(now);
  fixed next = std::max(full_at(state), now_fixed) + interval_;
  // Saturate instead of wrapping; only reachable with absurd burst * interval products.
  constexpr fixed max_fixed = static_cast<fixed>(std::numeric_limits<std::int64_t>::max()) * one_ns;
  next = std::min(next, max_fixed);
  state.full_at_ns = static_cast<std::int64_t>(next >> frac_bits);
  state.full_at_frac = static_cast<std::uint32_t>(next & (one_ns - 1));
}

std::uint64_t token_bucket::remaining(const bucket_state& state, time_point now) const {
  const fixed d = debt(state, now);
  if (d > tolerance_) return 0;
  const fixed n = divide(tolerance_ - d, interval_) + 1;
  return n >= static_cast<fixed>(burst_) ? burst_ : static_cast<std::uint64_t>(n);
}

std::chrono::nanoseconds token_bucket::time_until_token(const bucket_state& state, time_point now) const {
  const fixed d = debt(state, now);
  if (d <= tolerance_) return std::chrono::nanoseconds{0};
  return std::chrono::nanoseconds{static_cast<std::int64_t>(ceil_div(d - tolerance_, one_ns))};
}

std::uint64_t token_bucket::seconds_until_token(const bucket_state& state, time_point now) const {
  const fixed d = debt(state, now);
  if (d <= tolerance_) return 0;
  return static_cast<std::uint64_t>(ceil_div(d - tolerance_, one_second));
}

std::uint64_t token_bucket::seconds_until_full(const bucket_state& state, time_point now) const {
  // Whole nanoseconds first: most rates (1/m, 1/h) are inexact in binary, so each interval carries a
  // sub-ns excess that would otherwise turn exactly 60 s into 61.
  const fixed whole_ns = debt(state, now) >> frac_bits;
  return static_cast<std::uint64_t>(ceil_div(whole_ns, fixed{1'000'000'000}));
}

}  // namespace sluice::limiter
