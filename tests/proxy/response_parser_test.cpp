#include "proxy/response_parser.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <string>
#include <vector>

namespace {

using namespace sluice;
using namespace sluice::proxy;

constexpr std::size_t limit = 64 * 1024;

struct outcome {
  std::string body;
  error_code ec;       ///< the first error, if any
  bool done = false;
};

/// Feeds raw to p in pieces of `step` bytes (as reads would deliver it), draining the body through a
/// window of `window` bytes; then EOF when `eof`.
outcome relay(response_parser& p, std::string_view raw, std::size_t step, std::size_t window, bool eof = false) {
  outcome out;
  std::vector<char> buf(window);
  // Bytes received, like the connection's read buffer: consumed bytes stay in place (field views point
  // into them), and the capacity is reserved so that appending never moves them.
  std::string received;
  received.reserve(raw.size());
  std::size_t consumed = 0;
  std::size_t fed = 0;
  for (int guard = 0; guard < 100000; ++guard) {
    p.set_body_window(buf.data(), buf.size());
    const auto used = p.put(std::string_view(received).substr(consumed), out.ec);
    consumed += used;
    out.body.append(buf.data(), buf.size() - p.body_size());
    if (out.ec || p.is_done()) break;
    if (used > 0 || p.body_size() < buf.size()) continue;  // progress: try again before feeding more
    if (fed == raw.size()) {
      if (eof) p.put_eof(out.ec);
      break;
    }
    const auto n = std::min(step, raw.size() - fed);
    received.append(raw.substr(fed, n));
    fed += n;
  }
  out.done = p.is_done();
  return out;
}

}  // namespace

TEST_CASE("the response parser records the status line and field lines as views", "[proxy]") {
  const std::string raw = "HTTP/1.1 201 Made It\r\nX-A: 1\r\nx-b:  two \r\nContent-Length: 3\r\n\r\nabc";
  std::vector<field_line> fields;
  response_parser p(fields, false, limit);
  std::array<char, 64> window{};
  p.set_body_window(window.data(), window.size());
  error_code ec;
  CHECK(p.put(raw, ec) == raw.size());  // the views point into raw, which outlives them here
  CHECK_FALSE(ec);
  CHECK(p.is_done());
  CHECK(std::string_view(window.data(), window.size() - p.body_size()) == "abc");
  CHECK(p.status() == 201);
  CHECK(p.reason() == "Made It");
  CHECK(p.version() == 11);
  REQUIRE(fields.size() == 3);
  CHECK(fields[0].name == "X-A");
  CHECK(fields[0].value == "1");
  CHECK(fields[1].name == "x-b");
  CHECK(fields[1].value == "two");
  CHECK(fields[2].id == http::field::content_length);
  REQUIRE(p.content_length().has_value());
  CHECK(*p.content_length() == 3u);
  CHECK(p.keep_alive());
}

TEST_CASE("the response parser takes the head and body in any pieces", "[proxy]") {
  const std::string raw =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
      "A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
  const std::size_t step = GENERATE(1u, 2u, 7u, 1000u);
  const std::size_t window = GENERATE(1u, 3u, 64u);
  CAPTURE(step, window);
  std::vector<field_line> fields;
  response_parser p(fields, false, limit);
  const auto r = relay(p, raw, step, window);
  CHECK_FALSE(r.ec);
  CHECK(r.done);
  CHECK(r.body == "hello world0123456789");
  CHECK(p.chunked());
  REQUIRE(fields.size() == 1);  // the trailer is not recorded
  CHECK(fields[0].id == http::field::transfer_encoding);
}

TEST_CASE("the response parser frames bodies by status, method, length and close", "[proxy]") {
  std::vector<field_line> fields;
  SECTION("204, 304 and HEAD have no body even with a length") {
    response_parser a(fields, false, limit);
    CHECK(relay(a, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 100, 8).done);
    response_parser b(fields, true, limit);
    CHECK(relay(b, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 100, 8).done);
  }
  SECTION("no length: the body ends with the connection, which then cannot be kept") {
    response_parser p(fields, false, limit);
    auto r = relay(p, "HTTP/1.1 200 OK\r\n\r\nuntil close", 4, 5, true);
    CHECK_FALSE(r.ec);
    CHECK(r.done);
    CHECK(r.body == "until close");
    CHECK_FALSE(p.keep_alive());
  }
  SECTION("HTTP/1.0 keeps the connection only when asked") {
    response_parser a(fields, false, limit);
    CHECK(relay(a, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100, 8).done);
    CHECK(a.version() == 10);
    CHECK_FALSE(a.keep_alive());
    response_parser b(fields, false, limit);
    CHECK(relay(b, "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", 100, 8).done);
    CHECK(b.keep_alive());
    response_parser c(fields, false, limit);
    CHECK(relay(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 100, 8).done);
    CHECK_FALSE(c.keep_alive());
  }
  SECTION("a 1xx head ends at its empty line") {
    response_parser p(fields, false, limit);
    const std::string raw = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n";
    error_code ec;
    const auto used = p.put(raw, ec);
    CHECK_FALSE(ec);
    CHECK(p.is_done());
    CHECK(p.status() == 103);
    CHECK(used == raw.find("HTTP/1.1 200"));
  }
}

TEST_CASE("the response parser refuses malformed and oversized messages", "[proxy]") {
  auto [raw, expected] = GENERATE(table<std::string, http::error>({
      {"HTTP/2.0 200 OK\r\n\r\n", http::error::bad_status},
      {"HTTP/1.1 20 OK\r\n\r\n", http::error::bad_status},
      {"HTTP/1.1 200OK\r\n\r\n", http::error::bad_status},
      {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", http::error::bad_field},
      {"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", http::error::bad_field},
      {"HTTP/1.1 200 OK\r\nX-A: a\x01z\r\n\r\n", http::error::bad_value},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", http::error::bad_content_length},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", http::error::bad_content_length},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
       http::error::bad_transfer_encoding},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http::error::bad_chunk},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\x01\r\nx\r\n", http::error::bad_chunk},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", http::error::bad_transfer_encoding},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
       http::error::bad_transfer_encoding},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", http::error::bad_transfer_encoding},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length:\r\n\r\n", http::error::bad_content_length},
      {"HTTP/1.1 200 OK\nContent-Length: 0\n\n", http::error::bad_field},
      {"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n", http::error::bad_field},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX", http::error::bad_chunk},
  }));
  INFO(raw);
  std::vector<field_line> fields;
  response_parser p(fields, false, limit);
  const auto r = relay(p, raw, raw.size(), 64);
  CHECK(r.ec == expected);
}

TEST_CASE("the response parser bounds the head: size and number of field lines", "[proxy]") {
  std::vector<field_line> fields;
  SECTION("more than max_fields lines") {
    std::string raw = "HTTP/1.1 200 OK\r\n";
    for (std::size_t i = 0; i <= response_parser::max_fields; ++i) raw += "X-" + std::to_string(i) + ": v\r\n";
    raw += "Content-Length: 0\r\n\r\n";
    response_parser p(fields, false, limit);
    CHECK(relay(p, raw, raw.size(), 8).ec == http::error::header_limit);
    CHECK(fields.size() == response_parser::max_fields);
  }
  SECTION("a head that does not end within header_limit bytes") {
    const std::string raw = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(2000, 'b');
    response_parser p(fields, false, 1024);
    CHECK(relay(p, raw, 100, 8).ec == http::error::header_limit);
  }
}

TEST_CASE("an upstream that closes early is told apart from one that closed while idle", "[proxy]") {
  std::vector<field_line> fields;
  response_parser idle(fields, false, limit);
  error_code ec;
  idle.put_eof(ec);
  CHECK(ec == http::error::end_of_stream);
  response_parser partial(fields, false, limit);
  CHECK(relay(partial, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100, 64, true).ec ==
        http::error::partial_message);
  response_parser head_cut(fields, false, limit);
  CHECK(relay(head_cut, "HTTP/1.1 200 OK\r\nContent-Le", 100, 64, true).ec == http::error::partial_message);
}

TEST_CASE("a bare LF is refused as soon as it arrives, not after the head times out", "[proxy]") {
  std::vector<field_line> fields;
  response_parser p(fields, false, limit);
  error_code ec;
  CHECK(p.put("HTTP/1.1 200 OK\nContent-Length: 0", ec) == 0);  // the head is not complete yet
  CHECK(ec == http::error::bad_field);
}

TEST_CASE("a chunk line of exactly max_line bytes is taken whatever the read boundaries", "[proxy]") {
  const std::string size_line = "5;" + std::string(response_parser::max_line - 2, 'a');
  REQUIRE(size_line.size() == response_parser::max_line);
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string raw = head + size_line + "\r\nhello\r\n0\r\n\r\n";
  std::vector<field_line> fields;
  response_parser p(fields, false, limit);
  const auto r = relay(p, raw, 1, 64);
  CHECK_FALSE(r.ec);
  CHECK(r.body == "hello");
  response_parser longer(fields, false, limit);
  const std::string too_long = head + size_line + "a\r\nhello\r\n";
  CHECK(relay(longer, too_long, 1, 64).ec == http::error::bad_chunk);
}

TEST_CASE("an HTTP/1.0 response framed with Transfer-Encoding is read, then its connection not kept", "[proxy]") {
  std::vector<field_line> fields;
  response_parser p(fields, false, limit);
  const std::string raw =
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
  const auto r = relay(p, raw, 5, 64);
  CHECK_FALSE(r.ec);
  CHECK(r.body == "ok");
  CHECK_FALSE(p.keep_alive());
}
