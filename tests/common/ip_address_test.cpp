#include <catch2/catch.hpp>

#include "common/ip_address.hpp"

using sluice::common::cidr;
using sluice::common::ip_address;

TEST_CASE("an IPv4-mapped IPv6 address counts as IPv4", "[common]") {
  const auto mapped = ip_address::parse("::ffff:10.1.2.3");
  const auto plain = ip_address::parse("10.1.2.3");
  REQUIRE(mapped);
  REQUIRE(plain);
  CHECK(mapped->is_v4());
  CHECK(*mapped == *plain);
  CHECK(mapped->to_string() == "10.1.2.3");
}

TEST_CASE("addresses that do not parse are refused", "[common]") {
  auto text = GENERATE(as<std::string>{}, "", "1.2.3", "1.2.3.256", "abc", "1.2.3.4 ", "::g", "[::1", "1.2.3.4/8");
  CHECK_FALSE(ip_address::parse(text));
}

TEST_CASE("IPv6 text is canonical and brackets are accepted", "[common]") {
  const auto a = ip_address::parse("[2001:DB8:0:0::1]");
  REQUIRE(a);
  CHECK_FALSE(a->is_v4());
  CHECK(a->to_string() == "2001:db8::1");
}

TEST_CASE("masking keeps only the prefix bits of the address family", "[common]") {
  CHECK(ip_address::parse("10.1.2.3")->masked(8).to_string() == "10.0.0.0");
  CHECK(ip_address::parse("10.1.2.3")->masked(20).to_string() == "10.1.0.0");
  CHECK(ip_address::parse("2001:db8:1:2:3:4:5:6")->masked(64).to_string() == "2001:db8:1:2::");
  CHECK(ip_address::parse("2001:db8:1:2:3:4:5:6")->masked(0).to_string() == "::");
  CHECK(ip_address::parse("2001:db8:1:2:3:4:5:6")->masked(128).to_string() == "2001:db8:1:2:3:4:5:6");
}

TEST_CASE("a CIDR block contains exactly the addresses under its prefix", "[common]") {
  const auto block = cidr::parse("10.0.0.0/8");
  REQUIRE(block);
  CHECK(block->contains(*ip_address::parse("10.255.0.1")));
  CHECK_FALSE(block->contains(*ip_address::parse("11.0.0.1")));
  CHECK_FALSE(block->contains(*ip_address::parse("::ffff:b00:1")));  // 11.0.0.1 mapped
  CHECK(block->contains(*ip_address::parse("::ffff:a00:1")));        // 10.0.0.1 mapped
  const auto host = cidr::parse("127.0.0.1");
  REQUIRE(host);
  CHECK(host->prefix_bits() == 32);
  CHECK_FALSE(host->contains(*ip_address::parse("127.0.0.2")));
  const auto v6 = cidr::parse("2001:db8::/32");
  REQUIRE(v6);
  CHECK(v6->contains(*ip_address::parse("2001:db8:ffff::1")));
  CHECK_FALSE(v6->contains(*ip_address::parse("10.0.0.1")));
}

TEST_CASE("CIDR text that does not parse is refused", "[common]") {
  auto text = GENERATE(as<std::string>{}, "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "::/129", "bad/8", "10.0.0.0/8/8");
  CHECK_FALSE(cidr::parse(text));
}
