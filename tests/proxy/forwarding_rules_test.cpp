#include "proxy/forwarding_rules.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace {

using namespace sluice;
using namespace sluice::proxy;
using sluice::config::header_mode;

http::request_header<> parse_head(std::string_view raw, beast::error_code& ec) {
  http::request_parser<http::empty_body> parser;
  parser.eager(false);
  parser.put(net::buffer(raw.data(), raw.size()), ec);
  return parser.release().base();
}

http::request_header<> parse_head(std::string_view raw) {
  beast::error_code ec;
  auto h = parse_head(raw, ec);
  REQUIRE(!ec);
  return h;
}

// The request head write_request_head makes of raw, parsed back.
http::request_header<> forwarded(std::string_view raw, std::string_view peer = "10.0.0.1", bool chunked = false) {
  const auto head = parse_head(raw);
  std::string xff;
  join_forwarded_for(head, xff);
  reply_buffer out;
  write_request_head(head, peer, xff, chunked, out);
  return parse_head(std::string_view(out.data(), out.size()));
}

http::response_header<> parse_response(std::string_view raw) {
  http::response_parser<http::empty_body> parser;
  parser.eager(false);
  beast::error_code ec;
  parser.put(net::buffer(raw.data(), raw.size()), ec);
  REQUIRE(!ec);
  REQUIRE(parser.is_header_done());
  return parser.release().base();
}

// An upstream response head as the session sees it: parsed by response_parser, fields viewing raw.
struct upstream_head {
  explicit upstream_head(std::string text) : raw(std::move(text)), parser(fields, false, 64 * 1024) {
    beast::error_code ec;
    parser.put(raw, ec);
    REQUIRE(!ec);
    REQUIRE(parser.is_header_done());
  }
  void write(body_framing framing, bool keep_alive, unsigned client_version, header_mode mode,
             const limiter::limit_status* limits, reply_buffer& out) const {
    write_response_head(parser.status(), parser.reason(), parser.fields(), parser.content_length(), framing,
                        keep_alive, client_version, mode, limits, out);
  }
  std::string raw;
  std::vector<field_line> fields;
  response_parser parser;
};

std::string value(const http::fields& f, std::string_view name) {
  auto it = f.find(name);
  return it == f.end() ? std::string("<absent>") : std::string(it->value());
}

}  // namespace

TEST_CASE("hop-by-hop fields are left out, including those the Connection field names", "[proxy]") {
  auto head = forwarded(
      "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, x-other\r\nKeep-Alive: timeout=5\r\n"
      "Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Secret: 1\r\n"
      "X-Other: 2\r\nX-Kept: 3\r\n\r\n");
  for (auto name : {"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "X-Secret",
                    "X-Other"}) {
    INFO(name);
    CHECK(value(head, name) == "<absent>");
  }
  CHECK(value(head, "X-Kept") == "3");
  CHECK(value(head, "Host") == "a");
}

TEST_CASE("a Connection field naming Content-Length or Host does not remove them", "[proxy]") {
  auto head =
      forwarded("POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host\r\nContent-Length: 3\r\n\r\n");
  CHECK(value(head, "Content-Length") == "3");
  CHECK(value(head, "Host") == "a");
  CHECK(value(head, "Connection") == "<absent>");
}

TEST_CASE("a Connection field naming more than sixteen fields still removes every one", "[proxy]") {
  std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: ";
  for (int i = 0; i < 20; ++i) raw += (i ? ", x-h" : "x-h") + std::to_string(i);
  raw += "\r\n";
  for (int i = 0; i < 20; ++i) raw += "X-H" + std::to_string(i) + ": v\r\n";
  raw += "X-Kept: 1\r\n\r\n";
  auto head = forwarded(raw);
  for (int i = 0; i < 20; ++i) CHECK(value(head, "X-H" + std::to_string(i)) == "<absent>");
  CHECK(value(head, "X-Kept") == "1");
}

TEST_CASE("the forwarded request head keeps the request line and every end-to-end field", "[proxy]") {
  // Beast keeps fields of one name together (a repeated name is inserted after its last one).
  const auto head = parse_head("DELETE /a/b?c=d HTTP/1.1\r\nHost: h\r\nX-One: 1\r\nx-two: 2\r\nX-One: 3\r\n\r\n");
  reply_buffer out;
  write_request_head(head, "10.0.0.1", "", false, out);
  CHECK(std::string_view(out.data(), out.size()) ==
        "DELETE /a/b?c=d HTTP/1.1\r\nHost: h\r\nX-One: 1\r\nX-One: 3\r\nx-two: 2\r\n"
        "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n");
}

TEST_CASE("the forwarded request carries X-Forwarded-For, -Proto and -Host", "[proxy]") {
  SECTION("X-Forwarded-For is created when the client sent none") {
    auto head = forwarded("GET /x HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", "10.1.2.3");
    CHECK(value(head, "X-Forwarded-For") == "10.1.2.3");
    CHECK(value(head, "X-Forwarded-Proto") == "http");
    CHECK(value(head, "X-Forwarded-Host") == "example.com:8080");
    CHECK(head.target() == "/x");
    CHECK(head.method() == http::verb::get);
  }
  SECTION("the peer is appended to every X-Forwarded-For line, joined") {
    const auto raw =
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-For: 3.3.3.3\r\n\r\n";
    std::string xff;
    join_forwarded_for(parse_head(raw), xff);
    CHECK(xff == "1.1.1.1, 2.2.2.2, 3.3.3.3");
    auto head = forwarded(raw, "::1");
    CHECK(head.count("X-Forwarded-For") == 1);
    CHECK(value(head, "X-Forwarded-For") == "1.1.1.1, 2.2.2.2, 3.3.3.3, ::1");
  }
  SECTION("a very long X-Forwarded-For is appended to as well") {
    std::string long_xff(700, '1');
    auto head = forwarded("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " + long_xff + "\r\n\r\n", "9.9.9.9");
    CHECK(value(head, "X-Forwarded-For") == long_xff + ", 9.9.9.9");
  }
  SECTION("client-sent X-Forwarded-Proto and -Host are replaced, whatever their case") {
    auto head = forwarded("GET / HTTP/1.1\r\nHost: real\r\nx-forwarded-proto: https\r\nX-Forwarded-Host: fake\r\n\r\n");
    CHECK(value(head, "X-Forwarded-Proto") == "http");
    CHECK(head.count("X-Forwarded-Proto") == 1);
    CHECK(value(head, "X-Forwarded-Host") == "real");
    CHECK(head.count("X-Forwarded-Host") == 1);
  }
  SECTION("an HTTP/1.0 request without Host loses a client-sent X-Forwarded-Host and goes out as 1.1") {
    auto head = forwarded("GET / HTTP/1.0\r\nX-Forwarded-Host: fake\r\n\r\n");
    CHECK(value(head, "X-Forwarded-Host") == "<absent>");
    CHECK(head.version() == 11);
  }
}

TEST_CASE("the forwarded request is re-framed: chunked again when it came chunked, Expect removed", "[proxy]") {
  SECTION("chunked") {
    auto head = forwarded("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n",
                          "1.2.3.4", true);
    CHECK(value(head, "Transfer-Encoding") == "chunked");
    CHECK(head.count(http::field::transfer_encoding) == 1);
    CHECK(value(head, "TE") == "<absent>");
  }
  SECTION("content length and expect") {
    auto head = forwarded(
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    CHECK(head.count(http::field::content_length) == 1);
    CHECK(value(head, "Content-Length") == "5");
    CHECK(value(head, "Transfer-Encoding") == "<absent>");
    CHECK(value(head, "Expect") == "<absent>");
  }
}

TEST_CASE("request heads that smuggle or lack a Host are refused", "[proxy]") {
  auto [raw, expected] = GENERATE(table<std::string, head_problem>({
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 4\r\n\r\n",
       head_problem::length_and_encoding},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", head_problem::unsupported_encoding},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
       head_problem::unsupported_encoding},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
       head_problem::unsupported_encoding},
      {"GET / HTTP/1.1\r\n\r\n", head_problem::missing_host},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", head_problem::multiple_host},
      {"GET / HTTP/1.0\r\n\r\n", head_problem::none},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", head_problem::none},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n", head_problem::none},
  }));
  INFO(raw);
  beast::error_code ec;
  auto head = parse_head(raw, ec);
  REQUIRE(!ec);
  CHECK(check_request_head(head) == expected);
}

TEST_CASE("the heads Beast's parser refuses by itself stay refused", "[proxy]") {
  auto raw = GENERATE(as<std::string>{},
                      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
                      "GET / HTTP/1.1\r\nHost : h\r\n\r\n");
  INFO(raw);
  beast::error_code ec;
  (void)parse_head(raw, ec);
  CHECK(ec);
}

TEST_CASE("obs-fold is found in raw head bytes", "[proxy]") {
  CHECK(has_obs_fold("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n"));
  CHECK(has_obs_fold("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\t2\r\n\r\n"));
  CHECK_FALSE(has_obs_fold("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1 2\r\n\r\n"));
}

TEST_CASE("the client-side framing of a response follows method, status, length and version", "[proxy]") {
  auto [head_request, status, has_length, version, expected] =
      GENERATE(table<bool, unsigned, bool, unsigned, body_framing>({
          {true, 200, true, 11, body_framing::none},
          {true, 200, false, 11, body_framing::none},
          {false, 204, false, 11, body_framing::none},
          {false, 304, true, 11, body_framing::none},
          {false, 103, false, 11, body_framing::none},
          {false, 200, true, 11, body_framing::content_length},
          {false, 200, true, 10, body_framing::content_length},
          {false, 200, false, 11, body_framing::chunked},
          {false, 500, false, 10, body_framing::close_delimited},
      }));
  CHECK(client_response_framing(head_request, status, has_length, version) == expected);
}

TEST_CASE("the client connection stays open only when asked, framed and not draining", "[proxy]") {
  CHECK(client_keeps_alive(true, body_framing::chunked, false));
  CHECK(client_keeps_alive(true, body_framing::none, false));
  CHECK_FALSE(client_keeps_alive(false, body_framing::content_length, false));
  CHECK_FALSE(client_keeps_alive(true, body_framing::close_delimited, false));
  CHECK_FALSE(client_keeps_alive(true, body_framing::content_length, true));
}

TEST_CASE("the response head loses hop-by-hop fields and gains the client's framing", "[proxy]") {
  const upstream_head upstream(
      "HTTP/1.0 200 Fine\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n"
      "Keep-Alive: timeout=5\r\nX-End: 2\r\n\r\n");
  reply_buffer out;
  auto written = [&] { return parse_response(std::string_view(out.data(), out.size())); };

  SECTION("chunked to an HTTP/1.1 client that keeps the connection") {
    upstream.write(body_framing::chunked, true, 11, header_mode::none, nullptr, out);
    CHECK(std::string_view(out.data(), out.size()) ==
          "HTTP/1.1 200 Fine\r\nX-End: 2\r\nTransfer-Encoding: chunked\r\n\r\n");
    const auto head = written();
    CHECK(value(head, "Connection") == "<absent>");
    CHECK(head.version() == 11);
  }
  SECTION("close-delimited to an HTTP/1.0 client") {
    upstream.write(body_framing::close_delimited, false, 10, header_mode::none, nullptr, out);
    const auto head = written();
    CHECK(value(head, "Transfer-Encoding") == "<absent>");
    CHECK(value(head, "Connection") == "close");
    CHECK(value(head, "X-Hop") == "<absent>");
  }
  SECTION("an HTTP/1.0 keep-alive client is told keep-alive") {
    upstream.write(body_framing::content_length, true, 10, header_mode::none, nullptr, out);
    CHECK(value(written(), "Connection") == "keep-alive");
  }
  SECTION("a response without a reason phrase gets the standard one") {
    const upstream_head bare("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n");
    bare.write(body_framing::content_length, true, 11, header_mode::none, nullptr, out);
    CHECK(std::string_view(out.data(), out.size()) == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  }
}

TEST_CASE("equal duplicate lengths go out as one normalised Content-Length where the first was", "[proxy]") {
  const upstream_head upstream(
      "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\nX-B: 2\r\n\r\n");
  reply_buffer out;
  upstream.write(body_framing::content_length, true, 11, header_mode::none, nullptr, out);
  CHECK(std::string_view(out.data(), out.size()) == "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\nX-B: 2\r\n\r\n");
}

TEST_CASE("a forwarded response gets the rate limit fields, replacing the upstream's", "[proxy]") {
  const limiter::limit_status s{"per-key", 2000, 2, 1999, 1};
  const upstream_head upstream(
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nRateLimit: bogus\r\nratelimit-limit: 7\r\nRateLimit-Other: x\r\n\r\n");
  reply_buffer out;
  auto written = [&] { return parse_response(std::string_view(out.data(), out.size())); };
  SECTION("latest") {
    upstream.write(body_framing::content_length, true, 11, header_mode::latest, &s, out);
    const auto f = written();
    CHECK(value(f, "RateLimit-Policy") == "\"per-key\";q=2000;w=2");
    CHECK(value(f, "RateLimit") == "\"per-key\";r=1999;t=1");
    CHECK(f.count("RateLimit") == 1);
    CHECK(value(f, "RateLimit-Limit") == "7");  // legacy fields are not sluice's in this mode
    CHECK(value(f, "RateLimit-Other") == "x");
  }
  SECTION("legacy") {
    upstream.write(body_framing::content_length, true, 11, header_mode::legacy, &s, out);
    const auto f = written();
    CHECK(value(f, "RateLimit-Limit") == "2000");
    CHECK(f.count("RateLimit-Limit") == 1);
    CHECK(value(f, "RateLimit-Remaining") == "1999");
    CHECK(value(f, "RateLimit-Reset") == "1");
    CHECK(value(f, "RateLimit") == "bogus");
    CHECK(value(f, "RateLimit-Policy") == "<absent>");
  }
  SECTION("both") {
    upstream.write(body_framing::content_length, true, 11, header_mode::both, &s, out);
    const auto f = written();
    CHECK(f.count("RateLimit") == 1);
    CHECK(f.count("RateLimit-Limit") == 1);
    CHECK(value(f, "RateLimit-Limit") == "2000");
  }
  SECTION("none, or no limit matched: the upstream's fields pass") {
    upstream.write(body_framing::content_length, true, 11, header_mode::none, &s, out);
    CHECK(value(written(), "RateLimit") == "bogus");
    upstream.write(body_framing::content_length, true, 11, header_mode::latest, nullptr, out);
    CHECK(value(written(), "RateLimit") == "bogus");
    CHECK(value(written(), "RateLimit-Policy") == "<absent>");
  }
}

TEST_CASE("idempotent methods are the ones RFC 9110 names", "[proxy]") {
  CHECK(is_idempotent(http::verb::get));
  CHECK(is_idempotent(http::verb::head));
  CHECK(is_idempotent(http::verb::put));
  CHECK(is_idempotent(http::verb::delete_));
  CHECK_FALSE(is_idempotent(http::verb::post));
  CHECK_FALSE(is_idempotent(http::verb::patch));
  CHECK_FALSE(is_idempotent(http::verb::unknown));
}
