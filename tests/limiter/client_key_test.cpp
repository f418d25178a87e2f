#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "limiter/client_key.hpp"

using sluice::common::cidr;
using sluice::common::ip_address;
using namespace sluice::limiter;

namespace {

ip_address ip(const std::string& text) {
  const auto a = ip_address::parse(text);
  REQUIRE(a);
  return *a;
}

std::vector<cidr> blocks(std::initializer_list<const char*> texts) {
  std::vector<cidr> out;
  for (const char* t : texts) out.push_back(*cidr::parse(t));
  return out;
}

sluice::config::limit header_limit(std::string name, std::string header) {
  sluice::config::limit l;
  l.name = std::move(name);
  l.key = sluice::config::key_kind::header;
  l.header_name = std::move(header);
  l.refill.tokens_per_second = 10;
  l.burst = 20;
  return l;
}

}  // namespace

TEST_CASE("the client is the peer unless the peer is a trusted proxy, then the X-Forwarded-For walk decides",
          "[limiter]") {
  const auto trusted = blocks({"10.0.0.0/8", "2001:db8:ffff::/48"});
  auto [peer, xff, expected] = GENERATE(table<std::string, std::string, std::string>({
      // An untrusted peer's X-Forwarded-For is ignored, however it is spoofed.
      {"203.0.113.9", "1.2.3.4", "203.0.113.9"},
      {"203.0.113.9", "10.0.0.1, 1.2.3.4", "203.0.113.9"},
      // A trusted peer without the header is the client.
      {"10.0.0.2", "", "10.0.0.2"},
      // One hop, with and without spaces.
      {"10.0.0.2", "198.51.100.7", "198.51.100.7"},
      {"10.0.0.2", "  198.51.100.7\t", "198.51.100.7"},
      // Recursive: skip trusted hops from the right, stop at the first untrusted one.
      {"10.0.0.2", "198.51.100.1, 198.51.100.7, 10.1.1.1, 10.2.2.2", "198.51.100.7"},
      // Multiple header lines arrive joined with ",".
      {"10.0.0.2", "198.51.100.1,198.51.100.7,10.1.1.1", "198.51.100.7"},
      // Every entry trusted: the leftmost one is the client.
      {"10.0.0.2", "10.9.9.9, 10.1.1.1", "10.9.9.9"},
      // Garbage ends the walk at the last good address reached: the trusted hop to its right.
      {"10.0.0.2", "198.51.100.1, garbage, 10.1.1.1", "10.1.1.1"},
      {"10.0.0.2", "198.51.100.1, 1.2.3.4:5678", "10.0.0.2"},
      {"10.0.0.2", "198.51.100.1, [2001:db8::1]:80", "10.0.0.2"},
      {"10.0.0.2", "198.51.100.1, [1.2.3.4]", "10.0.0.2"},
      {"10.0.0.2", "198.51.100.1, unknown", "10.0.0.2"},
      {"10.0.0.2", "198.51.100.1, , 10.1.1.1", "10.1.1.1"},
      {"10.0.0.2", "198.51.100.1,", "10.0.0.2"},
      // Bracketed and plain IPv6 entries.
      {"10.0.0.2", "[2001:db8::7]", "2001:db8::7"},
      {"10.0.0.2", "2001:db8::7, [2001:db8:ffff::1]", "2001:db8::7"},
      // IPv4-mapped IPv6 counts as IPv4, both as peer and as entry, and is matched by IPv4 blocks.
      {"::ffff:10.0.0.2", "::ffff:198.51.100.7", "198.51.100.7"},
      {"10.0.0.2", "198.51.100.7, ::ffff:10.3.3.3", "198.51.100.7"},
      {"2001:db8:ffff::5", "192.0.2.1", "192.0.2.1"},
  }));
  CAPTURE(peer, xff);
  CHECK(client_address(ip(peer), xff, trusted) == ip(expected));
}

TEST_CASE("IPv6 clients share a bucket per prefix while IPv4 clients stay whole", "[limiter]") {
  auto [a, b, prefix, same] = GENERATE(table<std::string, std::string, unsigned, bool>({
      {"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", 64, true},
      {"2001:db8:1:2::1", "2001:db8:1:3::1", 64, false},
      {"2001:db8:1:2::1", "2001:db8:1:3::1", 48, true},
      {"2001:db8:1:2::1", "2001:db8:1:2::2", 128, false},
      {"2001:db8::1", "2001:db9::1", 32, false},
      {"2001:db8::1", "2001:db9::1", 31, true},
      {"192.0.2.1", "192.0.2.2", 64, false},
      {"192.0.2.1", "::ffff:192.0.2.1", 64, true},
  }));
  CAPTURE(a, b, prefix);
  CHECK((grouped_address(ip(a), prefix) == grouped_address(ip(b), prefix)) == same);
  const sip_key seed{1, 2};
  CHECK((ip_bucket_key(seed, 7, grouped_address(ip(a), prefix)) ==
         ip_bucket_key(seed, 7, grouped_address(ip(b), prefix))) == same);
}

TEST_CASE("header keys are keyed hashes: the seed changes them, the value and the limit separate them",
          "[limiter]") {
  const sip_key seed_a{0x1234, 0x5678};
  const sip_key seed_b{0x1234, 0x5679};
  CHECK(header_bucket_key(seed_a, 1, "alice") == header_bucket_key(seed_a, 1, "alice"));
  CHECK(header_bucket_key(seed_a, 1, "alice") != header_bucket_key(seed_b, 1, "alice"));
  CHECK(header_bucket_key(seed_a, 1, "alice") != header_bucket_key(seed_a, 1, "bob"));
  CHECK(header_bucket_key(seed_a, 1, "alice") != header_bucket_key(seed_a, 2, "alice"));
  // Kinds are kept apart by the limit identity, which hashes the key kind.
  auto as_header = header_limit("same", "X-K");
  auto as_global = as_header;
  as_global.key = sluice::config::key_kind::global;
  as_global.header_name.clear();
  CHECK(header_bucket_key(seed_a, limit_identity(seed_a, as_header, 10, 20), "") !=
        global_bucket_key(seed_a, limit_identity(seed_a, as_global, 10, 20)));
  CHECK(global_bucket_key(seed_a, 1) != global_bucket_key(seed_b, 1));
}

TEST_CASE("a limit keeps its identity exactly while name, key, rate and burst stay the same", "[limiter]") {
  const sip_key seed{9, 9};
  const auto base = header_limit("per-key", "X-API-Key");
  const auto id = limit_identity(seed, base, 10, 20);

  SECTION("filters, dry run and header case do not matter") {
    auto l = base;
    l.dry_run = true;
    l.when = sluice::config::limit_filter{"/api/", {"POST"}};
    l.header_name = "x-api-key";
    CHECK(limit_identity(seed, l, 10, 20) == id);
  }
  SECTION("name, header, rate, burst and seed each matter") {
    CHECK(limit_identity(seed, header_limit("other", "X-API-Key"), 10, 20) != id);
    CHECK(limit_identity(seed, header_limit("per-key", "X-Token"), 10, 20) != id);
    CHECK(limit_identity(seed, base, 11, 20) != id);
    CHECK(limit_identity(seed, base, 10, 21) != id);
    CHECK(limit_identity(sip_key{9, 10}, base, 10, 20) != id);
  }
  SECTION("the key kind and the IPv6 prefix matter") {
    auto l = base;
    l.key = sluice::config::key_kind::ip;
    l.header_name.clear();
    const auto ip_id = limit_identity(seed, l, 10, 20);
    CHECK(ip_id != id);
    l.ipv6_prefix = 56;
    CHECK(limit_identity(seed, l, 10, 20) != ip_id);
  }
}
