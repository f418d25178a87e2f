#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>

#include "limiter/token_bucket.hpp"

using namespace std::chrono_literals;
using sluice::limiter::bucket_state;
using sluice::limiter::time_point;
using sluice::limiter::token_bucket;

namespace {

const time_point t0 = time_point{} + 1000s;

/// Drains a new bucket at t; returns how many requests were admitted.
std::uint64_t drain(const token_bucket& b, bucket_state& s, time_point t) {
  std::uint64_t admitted = 0;
  while (b.has_token(s, t)) {
    b.take(s, t);
    ++admitted;
  }
  return admitted;
}

time_point at_ns(long double ns) { return t0 + std::chrono::nanoseconds(static_cast<std::int64_t>(ns)); }

}  // namespace

TEST_CASE("a new bucket admits exactly burst requests at one instant", "[limiter]") {
  auto [rate, burst] = GENERATE(table<double, std::uint64_t>({
      {0.5, 1}, {0.5, 3}, {1, 1}, {3, 10}, {100, 200}, {1e6, 1}, {1e6, 1000}, {1e6, 100000}, {0.001, 50000},
  }));
  CAPTURE(rate, burst);
  const token_bucket b(rate, burst);
  auto s = token_bucket::full_state(t0);
  CHECK(b.remaining(s, t0) == burst);
  CHECK(drain(b, s, t0) == burst);
  CHECK(b.remaining(s, t0) == 0);
  CHECK(b.seconds_until_token(s, t0) >= 1);
}

TEST_CASE("requests at exactly the rate all pass with burst 1, without drift", "[limiter]") {
  const double rate = GENERATE(0.5, 1.0, 3.0, 7.0, 100.0, 333.0, 700000.0, 1e6);
  const bool round_up = GENERATE(false, true);
  CAPTURE(rate, round_up);
  const token_bucket b(rate, 1);
  auto s = token_bucket::full_state(t0);
  const long double interval_ns = 1e9L / rate;
  int admitted = 0;
  for (int i = 0; i < 1000; ++i) {
    const long double exact = interval_ns * i;
    const time_point t = at_ns(round_up ? std::ceil(exact) : std::floor(exact));
    if (b.has_token(s, t)) {
      b.take(s, t);
      ++admitted;
    }
  }
  CHECK(admitted == 1000);
  // And the rate is not exceeded: right after the last one there is nothing left.
  const time_point last = at_ns(std::floor(interval_ns * 999));
  CHECK_FALSE(b.has_token(s, last + 1ns));
}

TEST_CASE("a drained bucket refills at the rate, never past burst", "[limiter]") {
  auto [rate, burst, elapsed_ms, expected] = GENERATE(table<double, std::uint64_t, std::int64_t, std::uint64_t>({
      {10, 5, 0, 0},
      {10, 5, 99, 0},
      {10, 5, 100, 1},
      {10, 5, 350, 3},
      {10, 5, 500, 5},
      {10, 5, 60000, 5},
      {0.5, 4, 1999, 0},
      {0.5, 4, 2000, 1},
      {0.5, 4, 7000, 3},
      {1e6, 1000, 0, 0},
      {1e6, 1000, 1, 1000},
  }));
  CAPTURE(rate, burst, elapsed_ms);
  const token_bucket b(rate, burst);
  auto s = token_bucket::full_state(t0);
  REQUIRE(drain(b, s, t0) == burst);
  const time_point later = t0 + std::chrono::milliseconds(elapsed_ms);
  CHECK(b.remaining(s, later) == expected);
  CHECK(b.has_token(s, later) == (expected > 0));
}

TEST_CASE("Retry-After is the wait for one token in whole seconds, rounded up and at least 1", "[limiter]") {
  auto [rate, burst, elapsed_ms, expected] = GENERATE(table<double, std::uint64_t, std::int64_t, std::uint64_t>({
      {1, 1, 0, 1},
      {1, 1, 500, 1},
      {1, 1, 1000, 0},
      {0.5, 1, 0, 2},
      {0.5, 1, 1, 2},
      {0.5, 1, 1000, 1},
      {0.5, 1, 1500, 1},
      {1.0 / 60, 1, 0, 60},
      {1.0 / 60, 1, 30500, 30},
      {0.1, 20, 0, 10},
      {1e6, 1, 0, 1},
      {1e6, 1000000, 0, 1},
  }));
  CAPTURE(rate, burst, elapsed_ms);
  const token_bucket b(rate, burst);
  auto s = token_bucket::full_state(t0);
  REQUIRE(drain(b, s, t0) == burst);
  const time_point later = t0 + std::chrono::milliseconds(elapsed_ms);
  CHECK(b.seconds_until_token(s, later) == expected);
  // The wait is exact underneath: after it has passed there is a token, a nanosecond before there is not.
  const auto wait = b.time_until_token(s, later);
  if (wait > 0ns) {
    CHECK_FALSE(b.has_token(s, later + wait - 1ns));
    CHECK(b.has_token(s, later + wait));
  }
}

TEST_CASE("the reset time is the wait until the bucket is full, rounded up", "[limiter]") {
  auto [rate, burst, taken, elapsed_ms, expected] =
      GENERATE(table<double, std::uint64_t, std::uint64_t, std::int64_t, std::uint64_t>({
          {1, 10, 0, 0, 0},
          {1, 10, 1, 0, 1},
          {1, 10, 10, 0, 10},
          {1, 10, 10, 2500, 8},
          {1, 10, 10, 10000, 0},
          {0.5, 3, 3, 0, 6},
          {100, 200, 200, 0, 2},
          {100, 200, 199, 0, 2},
          {100, 200, 100, 0, 1},
      }));
  CAPTURE(rate, burst, taken, elapsed_ms);
  const token_bucket b(rate, burst);
  auto s = token_bucket::full_state(t0);
  for (std::uint64_t i = 0; i < taken; ++i) {
    REQUIRE(b.has_token(s, t0));
    b.take(s, t0);
  }
  const time_point later = t0 + std::chrono::milliseconds(elapsed_ms);
  CHECK(b.seconds_until_full(s, later) == expected);
  CHECK(token_bucket::is_full(s, later) == (expected == 0));
}

TEST_CASE("the policy window is ceil(burst / rate) seconds", "[limiter]") {
  auto [rate, burst, expected] = GENERATE(table<double, std::uint64_t, std::uint64_t>({
      {100, 200, 2},
      {100, 1, 1},
      {0.5, 1, 2},
      {0.3, 3, 10},
      {2, 5, 3},
      {1e6, 2000000, 2},
      {1.0 / 3600, 1, 3600},
  }));
  CAPTURE(rate, burst);
  CHECK(token_bucket(rate, burst).window_seconds() == expected);
  CHECK(token_bucket(rate, burst).burst() == burst);
}

TEST_CASE("a bucket left alone long enough is full again, the same as a new one", "[limiter]") {
  const token_bucket b(2, 4);
  auto s = token_bucket::full_state(t0);
  CHECK(token_bucket::is_full(s, t0));
  b.take(s, t0);
  CHECK_FALSE(token_bucket::is_full(s, t0));
  CHECK_FALSE(token_bucket::is_full(s, t0 + 499ms));
  CHECK(token_bucket::is_full(s, t0 + 500ms));
  CHECK(b.remaining(s, t0 + 500ms) == 4);
  // Idle time is not banked beyond burst.
  CHECK(drain(b, s, t0 + 1h) == 4);
}

TEST_CASE("a rate that is not positive is refused when the bucket is built", "[limiter]") {
  CHECK_THROWS_AS(token_bucket(0, 1), std::invalid_argument);
  CHECK_THROWS_AS(token_bucket(-1, 1), std::invalid_argument);
}
