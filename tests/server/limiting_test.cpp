#include <catch2/catch.hpp>

#include <string>
#include <tuple>
#include <vector>

#include "config/config_loader.hpp"
#include "server_fixture.hpp"

using namespace sluice;
using namespace sluice::test;
using namespace std::chrono_literals;

// End-to-end rate limiting over real sockets (CONTRACT.md "Rate limiting semantics" and "On the wire").
// Rates are slow (per minute or hour) so nothing refills while a test runs; the exact whole-second values
// asserted below hold as long as the requests of one test arrive within a second of each other, which is
// why the timing-sensitive ones are pipelined in a single write.

namespace {

config::limit make_limit(std::string name, config::key_kind kind, double per_second, std::string rate_text,
                         std::uint64_t burst) {
  config::limit l;
  l.name = std::move(name);
  l.key = kind;
  l.refill = {per_second, std::move(rate_text)};
  l.burst = burst;
  return l;
}

config::limit per_minute(std::string name, config::key_kind kind, std::uint64_t burst) {
  return make_limit(std::move(name), kind, 1.0 / 60.0, "1/m", burst);
}

config::limit header_limit(std::string name, std::string header, std::uint64_t burst) {
  auto l = per_minute(std::move(name), config::key_kind::header, burst);
  l.header_name = std::move(header);
  return l;
}

common::cidr block(std::string_view text) {
  auto b = common::cidr::parse(text);
  REQUIRE(b);
  return *b;
}

/// Sends every request in one write (pipelined) and reads the responses in order.
std::vector<parsed_response> send_pipelined(raw_client& c, const std::vector<std::string>& requests) {
  std::string bytes;
  for (const auto& r : requests) bytes += r;
  c.send(bytes);
  std::vector<parsed_response> out;
  for (std::size_t i = 0; i < requests.size(); ++i) out.push_back(c.read_response());
  return out;
}

/// One request and its response.
parsed_response ask(raw_client& c, const std::string& request) {
  c.send(request);
  return c.read_response();
}

std::string xff(const std::string& client) { return "X-Forwarded-For: " + client + "\r\n"; }

/// A response header's value, or "<absent>" (so a failed check shows what came instead).
std::string field(const parsed_response& r, std::string_view name) { return r.header(name).value_or("<absent>"); }

/// True when the response carries none of the rate limit headers of either flavour.
bool has_no_rate_limit_headers(const parsed_response& r) {
  return !r.header("RateLimit-Policy") && !r.header("RateLimit") && !r.header("RateLimit-Limit") &&
         !r.header("RateLimit-Remaining") && !r.header("RateLimit-Reset");
}

}  // namespace

TEST_CASE("exactly burst requests pass, the next is 429 with Retry-After until one token and the JSON body",
          "[server][limiting]") {
  using row = std::tuple<std::string, double, std::uint64_t, std::uint64_t>;  // rate text, per second, burst, S
  const auto [text, per_second, burst, retry_after] = GENERATE(table<std::string, double, std::uint64_t, std::uint64_t>({
      row{"1/m", 1.0 / 60.0, 3, 60},
      row{"0.5/s", 0.5, 2, 2},
      row{"1/h", 1.0 / 3600.0, 1, 3600},
      row{"2/s", 2.0, 1, 1},  // half a second to the next token still says 1: whole seconds, rounded up
  }));
  INFO("rate " << text << " burst " << burst);
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.limits = {make_limit("quota", config::key_kind::ip, per_second, text, burst)};
  running_server srv(cfg);
  raw_client c(srv.port());

  std::vector<std::string> requests;
  for (std::uint64_t i = 0; i <= burst; ++i) requests.push_back(get("/r" + std::to_string(i)));
  const auto responses = send_pipelined(c, requests);
  for (std::uint64_t i = 0; i < burst; ++i) CHECK(responses[i].status == 200);
  const auto& limited = responses.back();
  CHECK(limited.status == 429);
  CHECK(limited.reason == "Too Many Requests");
  CHECK(field(limited, "Retry-After") == std::to_string(retry_after));
  CHECK(field(limited, "Content-Type") == "application/json");
  CHECK(limited.body ==
        R"({"error":"rate_limited","limit":"quota","retry_after":)" + std::to_string(retry_after) + "}");
  CHECK(field(limited, "Content-Length") == std::to_string(limited.body.size()));
  CHECK(up.request_count() == burst);
  CHECK(up.last_request().target == "/r" + std::to_string(burst - 1));
}

TEST_CASE("when several limits reject, Retry-After waits for the slowest bucket and names its limit",
          "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.limits = {make_limit("minute", config::key_kind::ip, 1.0 / 60.0, "1/m", 1),
                make_limit("hour", config::key_kind::global, 1.0 / 3600.0, "1/h", 1),
                make_limit("second", config::key_kind::ip, 1.0, "1/s", 1)};
  running_server srv(cfg);
  raw_client c(srv.port());
  const auto r = send_pipelined(c, {get("/1"), get("/2")});
  CHECK(r[0].status == 200);
  REQUIRE(r[1].status == 429);
  CHECK(field(r[1], "Retry-After") == "3600");
  CHECK(r[1].body == R"({"error":"rate_limited","limit":"hour","retry_after":3600})");
  // Every rejecting limit is counted, not only the one named.
  CHECK(srv->metrics().rate_limited("minute").total() == 1);
  CHECK(srv->metrics().rate_limited("hour").total() == 1);
  CHECK(srv->metrics().rate_limited("second").total() == 1);
}

TEST_CASE("rate_limit_headers puts the chosen header flavour on both forwarded and rejected responses",
          "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.limits = {per_minute("api", config::key_kind::ip, 3)};  // w = ceil(3 / (1/60)) = 180
  const auto mode = GENERATE(config::header_mode::latest, config::header_mode::legacy, config::header_mode::both,
                             config::header_mode::none);
  cfg.rate_limit_headers = mode;
  INFO("mode " << static_cast<int>(mode));
  running_server srv(cfg);
  raw_client c(srv.port());
  // Within one second every token taken is 60 s until full, rounded up to the whole seconds shown.
  const auto r = send_pipelined(c, {get("/1"), get("/2"), get("/3"), get("/4")});
  REQUIRE(r[0].status == 200);
  REQUIRE(r[1].status == 200);
  REQUIRE(r[2].status == 200);
  REQUIRE(r[3].status == 429);
  const auto& ok = r[0];
  const auto& rejected = r[3];

  const bool latest = mode == config::header_mode::latest || mode == config::header_mode::both;
  const bool legacy = mode == config::header_mode::legacy || mode == config::header_mode::both;
  if (latest) {
    CHECK(field(ok, "RateLimit-Policy") == "\"api\";q=3;w=180");
    CHECK(field(ok, "RateLimit") == "\"api\";r=2;t=60");
    CHECK(field(r[1], "RateLimit") == "\"api\";r=1;t=120");
    CHECK(field(rejected, "RateLimit-Policy") == "\"api\";q=3;w=180");
    CHECK(field(rejected, "RateLimit") == "\"api\";r=0;t=180");
  } else {
    CHECK_FALSE(ok.header("RateLimit-Policy"));
    CHECK_FALSE(ok.header("RateLimit"));
    CHECK_FALSE(rejected.header("RateLimit-Policy"));
    CHECK_FALSE(rejected.header("RateLimit"));
  }
  if (legacy) {
    CHECK(field(ok, "RateLimit-Limit") == "3");
    CHECK(field(ok, "RateLimit-Remaining") == "2");
    CHECK(field(ok, "RateLimit-Reset") == "60");
    CHECK(field(rejected, "RateLimit-Limit") == "3");
    CHECK(field(rejected, "RateLimit-Remaining") == "0");
    CHECK(field(rejected, "RateLimit-Reset") == "180");
  } else {
    CHECK_FALSE(ok.header("RateLimit-Limit"));
    CHECK_FALSE(ok.header("RateLimit-Remaining"));
    CHECK_FALSE(ok.header("RateLimit-Reset"));
    CHECK_FALSE(rejected.header("RateLimit-Limit"));
    CHECK_FALSE(rejected.header("RateLimit-Remaining"));
    CHECK_FALSE(rejected.header("RateLimit-Reset"));
  }
  // The 429 is the same whatever the header flavour.
  CHECK(field(rejected, "Retry-After") == "60");
  CHECK(rejected.body == R"({"error":"rate_limited","limit":"api","retry_after":60})");
}

TEST_CASE("the headers describe the matching limit with the fewest tokens left", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.limits = {per_minute("roomy", config::key_kind::ip, 10), per_minute("tight", config::key_kind::global, 2),
                per_minute("middle", config::key_kind::ip, 5)};
  running_server srv(cfg);
  raw_client c(srv.port());
  const auto r = ask(c, get("/"));
  CHECK(r.status == 200);
  CHECK(field(r, "RateLimit-Policy") == "\"tight\";q=2;w=120");
  CHECK(field(r, "RateLimit") == "\"tight\";r=1;t=60");
}

TEST_CASE("each X-API-Key value has its own bucket and requests without the header are not limited by it",
          "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.limits = {header_limit("per-key", "X-API-Key", 2)};
  running_server srv(cfg);
  raw_client c(srv.port());

  const auto alpha = send_pipelined(c, {get("/", "X-API-Key: alpha\r\n"), get("/", "X-API-Key: alpha\r\n"),
                                  get("/", "X-API-Key: alpha\r\n")});
  CHECK(alpha[0].status == 200);
  CHECK(alpha[1].status == 200);
  CHECK(alpha[2].status == 429);
  CHECK(alpha[2].body == R"({"error":"rate_limited","limit":"per-key","retry_after":60})");

  SECTION("another key value starts with a full bucket") {
    const auto beta = ask(c, get("/", "X-API-Key: beta\r\n"));
    CHECK(beta.status == 200);
    CHECK(field(beta, "RateLimit") == "\"per-key\";r=1;t=60");
    // The header name matches whatever its case; the value is the bucket.
    CHECK(ask(c, get("/", "x-api-key: beta\r\n")).status == 200);
    CHECK(ask(c, get("/", "X-Api-Key: beta\r\n")).status == 429);
    CHECK(ask(c, get("/", "X-API-Key: Alpha\r\n")).status == 200);
  }
  SECTION("requests without the header pass and carry no rate limit headers") {
    for (int i = 0; i < 5; ++i) {
      const auto r = ask(c, get("/free"));
      CHECK(r.status == 200);
      CHECK(has_no_rate_limit_headers(r));
    }
  }
  SECTION("from another connection the same key is still limited") {
    raw_client other(srv.port());
    CHECK(ask(other, get("/", "X-API-Key: alpha\r\n")).status == 429);
  }
}

TEST_CASE("a per-key override gives that value its own burst", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  auto l = header_limit("per-key", "X-API-Key", 1);
  l.overrides = {config::limit_override{"partner", {1.0 / 60.0, "1/m"}, 5}};
  cfg.limits = {l};
  running_server srv(cfg);
  raw_client c(srv.port());

  std::vector<std::string> partner(6, get("/", "X-API-Key: partner\r\n"));
  const auto p = send_pipelined(c, partner);
  for (int i = 0; i < 5; ++i) {
    CHECK(p[i].status == 200);
    CHECK(field(p[i], "RateLimit-Policy") == "\"per-key\";q=5;w=300");
    CHECK(field(p[i], "RateLimit") == "\"per-key\";r=" + std::to_string(4 - i) + ";t=" + std::to_string(60 * (i + 1)));
  }
  CHECK(p[5].status == 429);
  CHECK(p[5].body == R"({"error":"rate_limited","limit":"per-key","retry_after":60})");

  const auto o = send_pipelined(c, {get("/", "X-API-Key: other\r\n"), get("/", "X-API-Key: other\r\n")});
  CHECK(o[0].status == 200);
  CHECK(field(o[0], "RateLimit-Policy") == "\"per-key\";q=1;w=60");
  CHECK(field(o[0], "RateLimit") == "\"per-key\";r=0;t=60");
  CHECK(o[1].status == 429);
  CHECK(up.request_count() == 6);
}

TEST_CASE("a client limited by one rule does not drain another rule's bucket", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  auto a = per_minute("a", config::key_kind::ip, 2);
  a.when = config::limit_filter{"/a/", {}};
  auto b = per_minute("b", config::key_kind::ip, 5);
  cfg.limits = {a, b};
  running_server srv(cfg);
  raw_client c(srv.port());

  const auto r = send_pipelined(c, {get("/a/1"), get("/a/2"), get("/a/3"), get("/a/4"), get("/a/5"), get("/b")});
  CHECK(r[0].status == 200);
  CHECK(field(r[0], "RateLimit") == "\"a\";r=1;t=60");
  CHECK(r[1].status == 200);
  CHECK(field(r[1], "RateLimit") == "\"a\";r=0;t=120");
  for (int i = 2; i < 5; ++i) {
    CHECK(r[i].status == 429);
    CHECK(r[i].body == R"({"error":"rate_limited","limit":"a","retry_after":60})");
    CHECK(field(r[i], "RateLimit") == "\"a\";r=0;t=120");
  }
  // b saw two admitted requests and three rejected ones: only the admitted ones took its tokens.
  CHECK(r[5].status == 200);
  CHECK(field(r[5], "RateLimit-Policy") == "\"b\";q=5;w=300");
  CHECK(field(r[5], "RateLimit") == "\"b\";r=2;t=180");
  CHECK(up.request_count() == 3);
  CHECK(srv->metrics().rate_limited("a").total() == 3);
  CHECK(srv->metrics().rate_limited("b").total() == 0);
}

TEST_CASE("behind a trusted proxy X-Forwarded-For decides the client's bucket", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.trusted_proxies = {block("127.0.0.1/32")};
  cfg.limits = {per_minute("per-ip", config::key_kind::ip, 1)};
  running_server srv(cfg);
  raw_client c(srv.port());

  CHECK(ask(c, get("/", xff("203.0.113.1"))).status == 200);
  CHECK(ask(c, get("/", xff("203.0.113.1"))).status == 429);
  CHECK(ask(c, get("/", xff("203.0.113.2"))).status == 200);
  // The peer itself (no header) is one more client.
  CHECK(ask(c, get("/")).status == 200);
  CHECK(ask(c, get("/")).status == 429);

  SECTION("trusted entries on the right are skipped") {
    CHECK(ask(c, get("/", xff("203.0.113.3, 127.0.0.1"))).status == 200);
    CHECK(ask(c, get("/", xff("203.0.113.3"))).status == 429);
  }
  SECTION("only the first untrusted entry from the right counts, whatever lies to its left") {
    CHECK(ask(c, get("/", xff("198.51.100.1, 203.0.113.4"))).status == 200);
    CHECK(ask(c, get("/", xff("198.51.100.2, 203.0.113.4"))).status == 429);
    CHECK(ask(c, get("/", xff("198.51.100.1"))).status == 200);
  }
  SECTION("several X-Forwarded-For lines are one list") {
    CHECK(ask(c, get("/", xff("203.0.113.5") + xff("127.0.0.1"))).status == 200);
    CHECK(ask(c, get("/", xff("203.0.113.5"))).status == 429);
  }
  SECTION("an entry that does not parse ends the walk at the trusted address to its right") {
    // The peer's bucket is already empty, so landing there is a 429.
    CHECK(ask(c, get("/", xff("203.0.113.6, not-an-address"))).status == 429);
    CHECK(ask(c, get("/", xff("203.0.113.6"))).status == 200);
  }
  SECTION("an IPv4-mapped IPv6 address is the IPv4 client") {
    CHECK(ask(c, get("/", xff("::ffff:203.0.113.1"))).status == 429);
    CHECK(ask(c, get("/", xff("::ffff:203.0.113.7"))).status == 200);
    CHECK(ask(c, get("/", xff("203.0.113.7"))).status == 429);
  }
}

TEST_CASE("without trusted proxies a spoofed X-Forwarded-For is ignored", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  SECTION("trusted_proxies empty") {}
  SECTION("trusted_proxies that do not include the peer") { cfg.server.trusted_proxies = {block("10.0.0.0/8")}; }
  cfg.limits = {per_minute("per-ip", config::key_kind::ip, 2)};
  running_server srv(cfg);
  raw_client c(srv.port());
  CHECK(ask(c, get("/", xff("203.0.113.1"))).status == 200);
  CHECK(ask(c, get("/", xff("203.0.113.2"))).status == 200);
  CHECK(ask(c, get("/", xff("203.0.113.3"))).status == 429);
  CHECK(ask(c, get("/")).status == 429);
  // The upstream still hears what the client claimed, with the real peer appended.
  CHECK(up.last_request().header("X-Forwarded-For") == "203.0.113.2, 127.0.0.1");
}

TEST_CASE("IPv6 clients share a bucket per ipv6_prefix", "[server][limiting]") {
  using row = std::tuple<unsigned, std::string, std::string, bool>;  // prefix, first, second, shared
  const auto [prefix, first, second, shared] = GENERATE(table<unsigned, std::string, std::string, bool>({
      row{64, "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
      row{64, "2001:db8:1:2::1", "2001:db8:1:3::1", false},
      row{64, "2001:db8:1:2::1", "[2001:db8:1:2::99]", true},
      row{128, "2001:db8:1:2::1", "2001:db8:1:2::2", false},
      row{128, "2001:db8:1:2::1", "2001:db8:1:2:0::1", true},
      row{48, "2001:db8:1:2::1", "2001:db8:1:ffff::1", true},
      row{48, "2001:db8:1:2::1", "2001:db8:2:2::1", false},
      // IPv4 clients are never grouped, whatever the IPv6 prefix.
      row{1, "203.0.113.1", "203.0.113.2", false},
      row{64, "::ffff:203.0.113.1", "::ffff:203.0.113.2", false},
  }));
  INFO("/" << prefix << " " << first << " then " << second);
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.trusted_proxies = {block("127.0.0.1/32")};
  auto l = per_minute("per-ip", config::key_kind::ip, 1);
  l.ipv6_prefix = prefix;
  cfg.limits = {l};
  running_server srv(cfg);
  raw_client c(srv.port());
  CHECK(ask(c, get("/", xff(first))).status == 200);
  CHECK(ask(c, get("/", xff(second))).status == (shared ? 429 : 200));
  // The first client's bucket is empty either way.
  CHECK(ask(c, get("/", xff(first))).status == 429);
}

TEST_CASE("a limit's when filter decides which requests it limits and which get its headers", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  auto l = per_minute("writes", config::key_kind::global, 1);
  SECTION("path_prefix and methods") {
    l.when = config::limit_filter{"/api/", {"POST", "PUT"}};
    cfg.limits = {l};
    running_server srv(cfg);
    raw_client c(srv.port());
    for (const auto& outside : {get("/api/x"), std::string("POST /other HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"),
                                get("/api"), get("/x?p=/api/")}) {
      const auto r = ask(c, outside);
      CHECK(r.status == 200);
      CHECK(has_no_rate_limit_headers(r));
    }
    const auto first = ask(c, "POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    CHECK(first.status == 200);
    CHECK(field(first, "RateLimit") == "\"writes\";r=0;t=60");
    CHECK(ask(c, "PUT /api/y?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").status == 429);
    CHECK(ask(c, "POST /api/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").status == 429);
    // Outside the filter nothing changed after the limit ran dry.
    const auto still = ask(c, get("/api/z"));
    CHECK(still.status == 200);
    CHECK(has_no_rate_limit_headers(still));
    const auto put_elsewhere = ask(c, "PUT /other HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    CHECK(put_elsewhere.status == 200);
    CHECK(has_no_rate_limit_headers(put_elsewhere));
    CHECK(up.request_count() == 7);
  }
  SECTION("path_prefix alone applies to every method") {
    l.when = config::limit_filter{"/api/", {}};
    cfg.limits = {l};
    running_server srv(cfg);
    raw_client c(srv.port());
    CHECK(has_no_rate_limit_headers(ask(c, get("/web"))));
    CHECK(ask(c, "DELETE /api/1 HTTP/1.1\r\nHost: h\r\n\r\n").status == 200);
    CHECK(ask(c, get("/api/2")).status == 429);
    CHECK(ask(c, get("/web")).status == 200);
  }
  SECTION("methods alone apply to every path") {
    l.when = config::limit_filter{"", {"GET"}};
    cfg.limits = {l};
    running_server srv(cfg);
    raw_client c(srv.port());
    CHECK(has_no_rate_limit_headers(ask(c, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")));
    CHECK(ask(c, get("/b")).status == 200);
    CHECK(ask(c, get("/c")).status == 429);
    c.send("HEAD /d HTTP/1.1\r\nHost: h\r\n\r\n");
    const auto head = c.read_response({.head_request = true});
    CHECK(head.status == 200);
    CHECK(has_no_rate_limit_headers(head));
  }
}

TEST_CASE("a dry-run limit over its budget still forwards every request to the upstream", "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  auto l = per_minute("trial", config::key_kind::ip, 1);
  l.dry_run = true;
  cfg.limits = {l};
  running_server srv(cfg);
  raw_client c(srv.port());
  const auto r = send_pipelined(c, {get("/1"), get("/2"), get("/3")});
  for (const auto& resp : r) {
    CHECK(resp.status == 200);
    // A dry run changes nothing a client sees.
    CHECK(has_no_rate_limit_headers(resp));
  }
  const auto seen = up.requests();
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].target == "/1");
  CHECK(seen[1].target == "/2");
  CHECK(seen[2].target == "/3");
  CHECK(srv->metrics().dry_run_rejected("trial").total() == 2);
  CHECK(srv->metrics().rate_limited("trial").total() == 0);
}

TEST_CASE("with max_tracked_keys 200, 2000 distinct clients are served and at most 200 buckets are held",
          "[server][limiting]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.trusted_proxies = {block("127.0.0.1/32")};
  cfg.max_tracked_keys = 200;
  cfg.limits = {per_minute("per-ip", config::key_kind::ip, 3)};
  running_server srv(cfg);
  raw_client c(srv.port());

  auto client = [](int i) { return "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1); };
  constexpr int clients = 2000;
  constexpr int batch = 20;
  std::uint64_t most = 0;
  int unexpected = 0;
  for (int first = 0; first < clients; first += batch) {
    std::vector<std::string> requests;
    for (int i = first; i < first + batch; ++i) requests.push_back(get("/", xff(client(i))));
    for (const auto& r : send_pipelined(c, requests)) {
      if (r.status != 200 || field(r, "RateLimit") != "\"per-ip\";r=2;t=60") ++unexpected;
    }
    most = std::max(most, srv->gauges().tracked_keys);
  }
  CHECK(unexpected == 0);
  CHECK(up.request_count() == clients);
  CHECK(most <= 200);
  const auto g = srv->gauges();
  CHECK(g.tracked_keys <= 200);
  CHECK(g.tracked_keys >= 150);
  // Every bucket was below full (1/m refills nothing here), so making room was lossy each time.
  CHECK(g.evictions_lossy == clients - g.tracked_keys);
  CHECK(g.evictions_lossless == 0);
  const auto text = srv->metrics().render_prometheus(g);
  CHECK(text.find("\nsluice_tracked_keys " + std::to_string(g.tracked_keys) + "\n") != std::string::npos);
  // The least recently used client was forgotten (a fresh bucket); the most recent one was not.
  CHECK(field(ask(c, get("/", xff(client(0)))), "RateLimit") == "\"per-ip\";r=2;t=60");
  CHECK(field(ask(c, get("/", xff(client(clients - 1)))), "RateLimit") == "\"per-ip\";r=1;t=120");
}

TEST_CASE("limits written in YAML act on the wire as the contract's example describes", "[server][limiting]") {
  fake_upstream up;
  const std::string yaml = R"(listen: "127.0.0.1:0"
threads: 1
server:
  trusted_proxies: ["127.0.0.1/32"]
upstream:
  servers: [")" + up.address() + R"("]
limits:
  - name: per-ip
    key: ip
    rate: 1/m
    burst: 2
    when:
      path_prefix: /api/
      methods: [POST, PUT]
  - name: per-key
    key: header:X-API-Key
    rate: 0.5/s
    burst: 3
    overrides:
      "partner-7f3a": { rate: 1/h, burst: 4 }
rate_limit_headers: both
admin:
  listen: ""
log:
  access_log: false
)";
  auto loaded = config::load_text(yaml, "limits.yaml");
  for (const auto& e : loaded.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(loaded.value);
  running_server srv(*loaded.value);
  raw_client c(srv.port());

  const auto partner = ask(c, get("/", "X-API-Key: partner-7f3a\r\n"));
  CHECK(partner.status == 200);
  CHECK(field(partner, "RateLimit-Policy") == "\"per-key\";q=4;w=14400");
  CHECK(field(partner, "RateLimit") == "\"per-key\";r=3;t=3600");
  CHECK(field(partner, "RateLimit-Limit") == "4");
  CHECK(field(partner, "RateLimit-Remaining") == "3");
  CHECK(field(partner, "RateLimit-Reset") == "3600");

  const auto plain = ask(c, get("/", "X-API-Key: k1\r\n"));
  CHECK(field(plain, "RateLimit-Policy") == "\"per-key\";q=3;w=6");
  CHECK(field(plain, "RateLimit") == "\"per-key\";r=2;t=2");

  const std::string post = "POST /api/orders HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nX-Forwarded-For: 203.0.113.8\r\n\r\n";
  const auto posts = send_pipelined(c, {post, post, post});
  CHECK(posts[0].status == 200);
  CHECK(posts[1].status == 200);
  CHECK(posts[2].status == 429);
  CHECK(posts[2].body == R"({"error":"rate_limited","limit":"per-ip","retry_after":60})");
  CHECK(field(ask(c, get("/api/orders", xff("203.0.113.8"))), "RateLimit-Policy") == "<absent>");
}
