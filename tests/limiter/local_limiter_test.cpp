#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <string>

#include "limiter/local_limiter.hpp"

using namespace std::chrono_literals;
using namespace sluice::limiter;
namespace config = sluice::config;
using sluice::common::ip_address;

namespace {

const time_point t0 = time_point{} + 500s;
const sip_key test_seed{7, 11};

config::limit make_limit(std::string name, config::key_kind kind, double rate, std::uint64_t burst) {
  config::limit l;
  l.name = std::move(name);
  l.key = kind;
  l.refill.tokens_per_second = rate;
  l.burst = burst;
  return l;
}

config::limit header_limit(std::string name, std::string header, double rate, std::uint64_t burst) {
  auto l = make_limit(std::move(name), config::key_kind::header, rate, burst);
  l.header_name = std::move(header);
  return l;
}

/// A request with headers held in a map (names lower case; lookups ignore case).
struct fake_request {
  std::string method = "GET";
  std::string target = "/";
  std::string peer = "198.51.100.1";
  std::string forwarded_for;
  std::map<std::string, std::string> headers;

  request_view view() const {
    request_view v;
    v.method = method;
    v.target = target;
    v.peer = *ip_address::parse(peer);
    v.forwarded_for = forwarded_for;
    v.header_ctx = this;
    v.find_header = [](const void* ctx, std::string_view name) -> std::optional<std::string_view> {
      std::string lower(name);
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const auto& h = static_cast<const fake_request*>(ctx)->headers;
      const auto it = h.find(lower);
      if (it == h.end()) return std::nullopt;
      return std::string_view(it->second);
    };
    return v;
  }
};

decision decide(local_limiter& limiter, const fake_request& req, time_point now) {
  const auto d = limiter.decide_now(req.view(), now);
  REQUIRE(d);
  return *d;
}

/// Requests admitted in a row at one instant.
int admitted_in_a_row(local_limiter& limiter, const fake_request& req, time_point now) {
  int n = 0;
  while (n < 100000 && decide(limiter, req, now).allowed) ++n;
  return n;
}

}  // namespace

TEST_CASE("a request no limit matches is allowed and carries no rate limit status", "[limiter]") {
  config::config cfg;
  auto l = make_limit("api", config::key_kind::ip, 1, 1);
  l.when = config::limit_filter{"/api/", {}};
  cfg.limits.push_back(l);
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request req;
  req.target = "/static/app.js";
  for (int i = 0; i < 3; ++i) {
    const auto d = decide(limiter, req, t0);
    CHECK(d.allowed);
    CHECK_FALSE(d.matched);
  }
  CHECK(table.size() == 0);
}

TEST_CASE("an ip limit counts per client and reports burst, window, remaining and reset", "[limiter]") {
  config::config cfg;
  cfg.limits.push_back(make_limit("per-ip", config::key_kind::ip, 2, 4));
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request alice;
  fake_request bob;
  bob.peer = "198.51.100.2";

  const auto first = decide(limiter, alice, t0);
  CHECK(first.allowed);
  CHECK(first.matched);
  CHECK(first.status.name == "per-ip");
  CHECK(first.status.burst == 4);
  CHECK(first.status.window_seconds == 2);
  CHECK(first.status.remaining == 3);
  CHECK(first.status.reset_seconds == 1);
  for (int i = 0; i < 3; ++i) CHECK(decide(limiter, alice, t0).allowed);

  const auto refused = decide(limiter, alice, t0);
  CHECK_FALSE(refused.allowed);
  CHECK(refused.rejected_by == "per-ip");
  CHECK(refused.rejected_mask == 1);
  CHECK(refused.retry_after_seconds == 1);
  CHECK(refused.status.remaining == 0);
  CHECK(refused.status.reset_seconds == 2);

  CHECK(decide(limiter, bob, t0).allowed);
  CHECK(decide(limiter, alice, t0 + 500ms).allowed);
}

TEST_CASE("X-Forwarded-For is believed only from trusted proxies", "[limiter]") {
  config::config cfg;
  cfg.server.trusted_proxies.push_back(*sluice::common::cidr::parse("10.0.0.0/8"));
  cfg.limits.push_back(make_limit("per-ip", config::key_kind::ip, 1, 1));
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);

  fake_request via_proxy;
  via_proxy.peer = "10.0.0.5";
  via_proxy.forwarded_for = "203.0.113.50";
  fake_request same_client_via_other_proxy = via_proxy;
  same_client_via_other_proxy.peer = "10.9.9.9";
  fake_request other_client_via_proxy = via_proxy;
  other_client_via_proxy.forwarded_for = "203.0.113.51";
  fake_request spoofer;
  spoofer.peer = "192.0.2.66";
  spoofer.forwarded_for = "203.0.113.50";

  CHECK(decide(limiter, via_proxy, t0).allowed);
  CHECK_FALSE(decide(limiter, same_client_via_other_proxy, t0).allowed);
  CHECK(decide(limiter, other_client_via_proxy, t0).allowed);
  // The spoofed header from an untrusted peer is ignored: the spoofer has its own bucket and cannot
  // spend the real client's.
  CHECK(decide(limiter, spoofer, t0).allowed);
  CHECK_FALSE(decide(limiter, spoofer, t0).allowed);
}

TEST_CASE("IPv6 clients in one prefix share a bucket", "[limiter]") {
  const unsigned prefix = GENERATE(48u, 64u, 128u);
  CAPTURE(prefix);
  config::config cfg;
  auto l = make_limit("per-ip", config::key_kind::ip, 1, 1);
  l.ipv6_prefix = prefix;
  cfg.limits.push_back(l);
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request a;
  a.peer = "2001:db8:aa:bb::1";
  fake_request same_64 = a;
  same_64.peer = "2001:db8:aa:bb::2";
  fake_request same_48 = a;
  same_48.peer = "2001:db8:aa:cc::1";
  REQUIRE(decide(limiter, a, t0).allowed);
  CHECK(decide(limiter, same_64, t0).allowed == (prefix > 64));
  CHECK(decide(limiter, same_48, t0).allowed == (prefix > 48));
}

TEST_CASE("a header limit applies only to requests that carry the header, one bucket per value",
          "[limiter]") {
  config::config cfg;
  cfg.limits.push_back(header_limit("per-key", "X-API-Key", 1, 2));
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request keyless;
  fake_request alice;
  alice.headers["x-api-key"] = "alice";
  fake_request bob;
  bob.headers["x-api-key"] = "bob";

  CHECK(admitted_in_a_row(limiter, alice, t0) == 2);
  CHECK(admitted_in_a_row(limiter, bob, t0) == 2);
  for (int i = 0; i < 5; ++i) {
    const auto d = decide(limiter, keyless, t0);
    CHECK(d.allowed);
    CHECK_FALSE(d.matched);
  }
}

TEST_CASE("an override gives one key value its own rate and burst", "[limiter]") {
  config::config cfg;
  auto l = header_limit("per-key", "X-API-Key", 1, 2);
  l.overrides.push_back({"partner-7f3a", {10, "10/s"}, 20});
  l.overrides.push_back({"zz-small", {1, "1/s"}, 1});
  cfg.limits.push_back(l);
  auto by_ip = make_limit("per-ip", config::key_kind::ip, 1, 3);
  by_ip.overrides.push_back({"192.0.2.0/24", {1, "1/s"}, 6});
  cfg.limits.push_back(by_ip);
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);

  SECTION("header values") {
    fake_request partner;
    partner.peer = "2001:db8::1";
    partner.headers["x-api-key"] = "partner-7f3a";
    fake_request small = partner;
    small.headers["x-api-key"] = "zz-small";
    small.peer = "2001:db8:1::1";
    fake_request plain = partner;
    plain.headers["x-api-key"] = "partner-7f3";
    plain.peer = "2001:db8:2::1";
    // The per-ip limit (burst 3) also applies, so look at what the header limit reports.
    const auto d = decide(limiter, partner, t0);
    CHECK(d.allowed);
    CHECK(d.status.name == "per-ip");
    CHECK(admitted_in_a_row(limiter, small, t0) == 1);
    CHECK(admitted_in_a_row(limiter, plain, t0) == 2);
  }
  SECTION("address blocks") {
    fake_request inside;
    inside.peer = "192.0.2.9";
    fake_request outside;
    outside.peer = "192.0.3.9";
    CHECK(admitted_in_a_row(limiter, inside, t0) == 6);
    CHECK(admitted_in_a_row(limiter, outside, t0) == 3);
  }
}

TEST_CASE("when filters select requests by path prefix and method", "[limiter]") {
  config::config cfg;
  auto l = make_limit("writes", config::key_kind::ip, 1, 1);
  l.when = config::limit_filter{"/api/", {"POST", "PUT"}};
  cfg.limits.push_back(l);
  bucket_table buckets(1000, test_seed);
  local_limiter limiter(cfg, buckets);

  auto [method, target, matches] = GENERATE(table<std::string, std::string, bool>({
      {"POST", "/api/items", true},
      {"PUT", "/api/items/1?force=true", true},
      {"POST", "http://example.com/api/items", true},
      {"GET", "/api/items", false},
      {"POST", "/apiary", false},
      {"POST", "/static/api/", false},
      {"POST", "/api?x=/api/", false},
      {"post", "/api/items", false},
  }));
  CAPTURE(method, target);
  fake_request req;
  req.method = method;
  req.target = target;
  CHECK(decide(limiter, req, t0).matched == matches);
  CHECK(decide(limiter, req, t0).allowed == !matches);
}

TEST_CASE("a dry-run limit never refuses but reports what it would have refused", "[limiter]") {
  config::config cfg;
  auto dry = make_limit("trial", config::key_kind::global, 1, 2);
  dry.dry_run = true;
  cfg.limits.push_back(make_limit("per-ip", config::key_kind::ip, 1, 100));
  cfg.limits.push_back(dry);
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request req;

  for (int i = 0; i < 2; ++i) {
    const auto d = decide(limiter, req, t0);
    CHECK(d.allowed);
    CHECK(d.dry_run_mask == 0);
  }
  const auto d = decide(limiter, req, t0);
  CHECK(d.allowed);
  CHECK(d.dry_run_mask == 0b10);
  CHECK(d.rejected_mask == 0);
  // Headers come from enforced limits only.
  CHECK(d.status.name == "per-ip");
  CHECK(d.status.remaining == 97);

  SECTION("a dry-run limit alone sends no headers") {
    config::config only_dry;
    only_dry.limits.push_back(dry);
    local_limiter quiet(only_dry, table);
    const auto q = decide(quiet, req, t0);
    CHECK(q.allowed);
    CHECK_FALSE(q.matched);
    CHECK(q.dry_run_mask == 0b1);
  }
}

TEST_CASE("a client limited by one rule does not drain another", "[limiter]") {
  config::config cfg;
  cfg.limits.push_back(make_limit("global", config::key_kind::global, 1, 1000));
  auto writes = make_limit("writes", config::key_kind::ip, 1, 2);
  writes.when = config::limit_filter{"", {"POST"}};
  cfg.limits.push_back(writes);
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request post;
  post.method = "POST";
  fake_request get;

  CHECK(admitted_in_a_row(limiter, post, t0) == 2);
  // 50 more refused POSTs take nothing from the global bucket.
  for (int i = 0; i < 50; ++i) {
    const auto d = decide(limiter, post, t0);
    REQUIRE_FALSE(d.allowed);
    CHECK(d.rejected_mask == 0b10);
    CHECK(d.rejected_by == "writes");
  }
  const auto d = decide(limiter, get, t0);
  CHECK(d.allowed);
  CHECK(d.status.name == "global");
  CHECK(d.status.remaining == 997);
}

TEST_CASE("the status is the limit with the fewest tokens left and Retry-After covers every refusal",
          "[limiter]") {
  config::config cfg;
  cfg.limits.push_back(make_limit("a-fast", config::key_kind::ip, 10, 1));
  cfg.limits.push_back(make_limit("b-slow", config::key_kind::global, 0.25, 1));
  cfg.limits.push_back(make_limit("c-roomy", config::key_kind::global, 100, 1000));
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request req;

  const auto first = decide(limiter, req, t0);
  REQUIRE(first.allowed);
  // a-fast and b-slow both have 0 left: the first in config order wins the tie.
  CHECK(first.status.name == "a-fast");
  CHECK(first.status.remaining == 0);

  const auto refused = decide(limiter, req, t0 + 10ms);
  CHECK_FALSE(refused.allowed);
  CHECK(refused.rejected_mask == 0b011);
  CHECK(refused.rejected_by == "b-slow");
  CHECK(refused.retry_after_seconds == 4);

  // Once a-fast refilled only b-slow refuses; the status follows the fewest tokens.
  const auto later = decide(limiter, req, t0 + 1s);
  CHECK_FALSE(later.allowed);
  CHECK(later.rejected_mask == 0b010);
  CHECK(later.retry_after_seconds == 3);
  CHECK(later.status.name == "b-slow");
  CHECK(decide(limiter, req, t0 + 4s).allowed);
}

TEST_CASE("a reload keeps the buckets of unchanged limits and starts changed ones afresh", "[limiter]") {
  config::config before;
  before.limits.push_back(make_limit("kept", config::key_kind::ip, 1, 2));
  before.limits.push_back(make_limit("rerated", config::key_kind::global, 1, 2));
  before.limits.push_back(header_limit("renamed", "X-Key", 1, 2));
  bucket_table table(1000, test_seed);
  fake_request req;
  req.headers["x-key"] = "k";
  {
    local_limiter old_limiter(before, table);
    CHECK(admitted_in_a_row(old_limiter, req, t0) == 2);
  }
  config::config after = before;
  after.limits[0].dry_run = false;
  after.limits[0].when = config::limit_filter{"/", {}};
  after.limits[1].refill.tokens_per_second = 2;
  after.limits[2].name = "renamed-too";
  local_limiter new_limiter(after, table);
  const auto d = decide(new_limiter, req, t0);
  CHECK_FALSE(d.allowed);
  CHECK(d.rejected_mask == 0b001);  // only the unchanged limit remembers the two requests
  REQUIRE(new_limiter.rule_names().size() == 3);
  CHECK(new_limiter.rule_names()[2] == "renamed-too");
}

TEST_CASE("the asynchronous path gives the same answer as decide_now", "[limiter]") {
  config::config cfg;
  cfg.limits.push_back(make_limit("per-ip", config::key_kind::ip, 1, 1));
  bucket_table table(1000, test_seed);
  local_limiter limiter(cfg, table);
  fake_request req;
  const request_view view = req.view();
  boost::asio::io_context ioc;
  std::optional<decision> first;
  std::optional<decision> second;
  boost::asio::co_spawn(
      ioc,
      [&]() -> boost::asio::awaitable<void> {
        first = co_await limiter.decide(view, t0);
        second = co_await limiter.decide(view, t0);
      },
      boost::asio::detached);
  ioc.run_for(5s);
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->allowed);
  CHECK_FALSE(second->allowed);
  CHECK(second->rejected_by == "per-ip");
}

TEST_CASE("more than 64 limits are refused when the limiter is built", "[limiter]") {
  config::config cfg;
  for (int i = 0; i < 65; ++i) cfg.limits.push_back(make_limit("l" + std::to_string(i), config::key_kind::global, 1, 1));
  bucket_table table(1000, test_seed);
  CHECK_THROWS_WITH(local_limiter(cfg, table), "limits: at most 64 limits are supported, got 65");
  cfg.limits.pop_back();
  local_limiter limiter(cfg, table);
  fake_request req;
  const auto d = decide(limiter, req, t0);
  CHECK(d.allowed);
  const auto refused = decide(limiter, req, t0);
  CHECK(refused.rejected_mask == ~std::uint64_t{0});
}
