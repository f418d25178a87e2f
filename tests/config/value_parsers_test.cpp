#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "config/config_loader.hpp"

using namespace std::chrono_literals;
using sluice::config::duration;
using sluice::config::parse_duration;
using sluice::config::parse_endpoint;
using sluice::config::parse_rate;
using sluice::config::parse_size;

TEST_CASE("durations with a unit, or a bare 0, parse to nanoseconds", "[config]") {
  const auto [text, expected] = GENERATE(table<std::string, duration>({
      {"250ms", 250ms},
      {"10s", 10s},
      {"2m", 2min},
      {"1h", 1h},
      {"0", 0s},
      {"0s", 0s},
      {"0ms", 0s},
      {"1500ms", 1500ms},
      {"2562047h", 2562047h},  // the largest whole number of hours int64 nanoseconds hold
  }));
  CAPTURE(text);
  const auto parsed = parse_duration(text);
  REQUIRE(parsed);
  CHECK(*parsed == expected);
}

TEST_CASE("durations without a unit, negative, fractional or garbled are refused", "[config]") {
  const auto text = GENERATE(as<std::string>{}, "", "10", "-1s", "-0", "1.5s", "s", "10 s", " 10s", "10S", "10sec",
                             "10us", "1d", "+5s", "fast", "10s5", "0x10s", "2562048h", "99999999999999999999ms");
  CAPTURE(text);
  CHECK_FALSE(parse_duration(text));
}

TEST_CASE("sizes are bytes or binary units", "[config]") {
  const auto [text, expected] = GENERATE(table<std::string, std::uint64_t>({
      {"512", 512},
      {"0", 0},
      {"16KiB", 16 * 1024},
      {"10MiB", 10 * 1024 * 1024},
      {"1GiB", 1024ull * 1024 * 1024},
      {"3GiB", 3ull << 30},
      {"18446744073709551615", 18446744073709551615ull},
  }));
  CAPTURE(text);
  const auto parsed = parse_size(text);
  REQUIRE(parsed);
  CHECK(*parsed == expected);
}

TEST_CASE("sizes with decimal or unknown units, signs or fractions are refused", "[config]") {
  const auto text = GENERATE(as<std::string>{}, "", "16KB", "16k", "16K", "10MB", "1GB", "16kib", "1.5MiB", "-1",
                             "16 KiB", "KiB", "1TiB", "18446744073709551616", "17179869184GiB", "0x10");
  CAPTURE(text);
  CHECK_FALSE(parse_size(text));
}

TEST_CASE("rates convert to tokens per second and keep their text", "[config]") {
  const auto [text, per_second] = GENERATE(table<std::string, double>({
      {"100/s", 100.0},
      {"0.5/s", 0.5},
      {"60/m", 1.0},
      {"3600/h", 1.0},
      {"1/m", 1.0 / 60},
      {"10000/s", 10000.0},
      {"1.25/h", 1.25 / 3600},
  }));
  CAPTURE(text);
  const auto parsed = parse_rate(text);
  REQUIRE(parsed);
  CHECK(parsed->tokens_per_second == Approx(per_second));
  CHECK(parsed->text == text);
}

TEST_CASE("rates that are zero, negative, unitless or not decimal are refused", "[config]") {
  const auto text = GENERATE(as<std::string>{}, "", "fast", "100", "100/", "/s", "0/s", "0.0/s", "-1/s", "100/d",
                             "100/sec", "100 /s", "1e3/s", ".5/s", "5./s", "inf/s", "nan/s", "+1/s", "100/S",
                             "1/s/s", "0x10/s");
  CAPTURE(text);
  CHECK_FALSE(parse_rate(text));
}

TEST_CASE("endpoints split into host and port, IPv6 in brackets", "[config]") {
  const auto [text, host, port] = GENERATE(table<std::string, std::string, int>({
      {"0.0.0.0:8080", "0.0.0.0", 8080},
      {"127.0.0.1:0", "127.0.0.1", 0},
      {"[::]:8080", "::", 8080},
      {"[::1]:65535", "::1", 65535},
      {"[2001:db8::1]:443", "2001:db8::1", 443},
      {"localhost:9000", "localhost", 9000},
      {"backend-1.internal.example:80", "backend-1.internal.example", 80},
      {"api_service:8080", "api_service", 8080},
  }));
  CAPTURE(text);
  const auto parsed = parse_endpoint(text);
  REQUIRE(parsed);
  CHECK(parsed->host == host);
  CHECK(parsed->port == port);
  CHECK(parsed->text == text);
}

TEST_CASE("endpoints without a port, with a bad port or a bad host are refused", "[config]") {
  const auto text = GENERATE(as<std::string>{}, "", "8080", ":8080", "localhost", "localhost:", "host:65536",
                             "host:-1", "host:80a", "host:123456", "::1:8080", "[::1]8080", "[::1]:", "[1.2.3.4]:80",
                             "[nothost]:80", "[::1:80", "256.1.1.1:80", "1.2.3:80", "-bad.example:80", "a..b:80",
                             "bad host:80", "host:+80");
  CAPTURE(text);
  CHECK_FALSE(parse_endpoint(text));
}
