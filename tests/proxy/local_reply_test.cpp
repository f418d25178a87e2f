#include "proxy/local_reply.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace {

using namespace sluice;
using namespace sluice::proxy;
using config::header_mode;

std::string text(const reply_buffer& b) { return std::string(b.data(), b.size()); }

limiter::decision rejecting_decision() {
  limiter::decision d;
  d.allowed = false;
  d.matched = true;
  d.status = {"per-ip", 200, 2, 0, 2};
  d.rejected_by = "per-ip";
  d.retry_after_seconds = 3;
  d.rejected_mask = 1;
  return d;
}

}  // namespace

TEST_CASE("a 429 carries Retry-After, the JSON body and the rate limit headers of the chosen mode", "[proxy]") {
  const auto d = rejecting_decision();
  const std::string body = R"({"error":"rate_limited","limit":"per-ip","retry_after":3})";
  const std::string start =
      "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nRetry-After: 3\r\n";
  reply_buffer out;

  SECTION("latest") {
    format_rate_limited(out, d, header_mode::latest, true);
    CHECK(text(out) == start + "RateLimit-Policy: \"per-ip\";q=200;w=2\r\nRateLimit: \"per-ip\";r=0;t=2\r\n\r\n" + body);
  }
  SECTION("legacy") {
    format_rate_limited(out, d, header_mode::legacy, true);
    CHECK(text(out) == start + "RateLimit-Limit: 200\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 2\r\n\r\n" + body);
  }
  SECTION("both") {
    format_rate_limited(out, d, header_mode::both, true);
    CHECK(text(out) == start +
                           "RateLimit-Policy: \"per-ip\";q=200;w=2\r\nRateLimit: \"per-ip\";r=0;t=2\r\n"
                           "RateLimit-Limit: 200\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 2\r\n\r\n" +
                           body);
  }
  SECTION("none, on a connection that closes") {
    format_rate_limited(out, d, header_mode::none, false);
    CHECK(text(out) == start + "Connection: close\r\n\r\n" + body);
  }
}

TEST_CASE("a 429 parses as HTTP with a body of exactly Content-Length bytes", "[proxy]") {
  auto d = rejecting_decision();
  const std::string long_name(300, 'n');
  d.rejected_by = long_name;
  d.status.name = long_name;
  reply_buffer out;
  format_rate_limited(out, d, header_mode::both, true);
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  beast::error_code ec;
  parser.put(net::buffer(out.data(), out.size()), ec);
  REQUIRE(!ec);
  REQUIRE(parser.is_done());
  CHECK(parser.get().result_int() == 429);
  CHECK(parser.get().body() == R"({"error":"rate_limited","limit":")" + long_name + R"(","retry_after":3})");
  CHECK(parser.get()["Retry-After"] == "3");
}

TEST_CASE("errors sluice makes itself have a status line and a short JSON body", "[proxy]") {
  auto [status, line, name] = GENERATE(table<unsigned, std::string, std::string>({
      {400, "HTTP/1.1 400 Bad Request", "bad_request"},
      {408, "HTTP/1.1 408 Request Timeout", "request_timeout"},
      {413, "HTTP/1.1 413 Content Too Large", "payload_too_large"},
      {431, "HTTP/1.1 431 Request Header Fields Too Large", "request_header_fields_too_large"},
      {502, "HTTP/1.1 502 Bad Gateway", "bad_gateway"},
      {503, "HTTP/1.1 503 Service Unavailable", "service_unavailable"},
      {504, "HTTP/1.1 504 Gateway Timeout", "gateway_timeout"},
  }));
  reply_buffer out;
  format_error(out, status, false, header_mode::latest, nullptr);
  const std::string body = R"({"error":")" + name + R"("})";
  CHECK(text(out) == line + "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                         "\r\nConnection: close\r\n\r\n" + body);
}

TEST_CASE("an error after the limiter saw the request carries the rate limit headers", "[proxy]") {
  const limiter::limit_status s{"api", 10, 5, 7, 1};
  reply_buffer out;
  format_error(out, 502, true, header_mode::latest, &s);
  CHECK(text(out) ==
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: 23\r\n"
        "RateLimit-Policy: \"api\";q=10;w=5\r\nRateLimit: \"api\";r=7;t=1\r\n\r\n{\"error\":\"bad_gateway\"}");
}

