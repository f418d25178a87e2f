#include "proxy/response_parser.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <string>
#include <vector>

namespace {

using namespace sluice;
using namespace sluice::proxy;

/// Feeds raw to p, draining the body through a window of `window` bytes; returns the body.
std::string relay(response_parser& p, std::string_view raw, std::size_t window) {
  std::string body;
  std::vector<char> buf(window);
  while (!p.is_done()) {
    p.set_body_window(buf.data(), buf.size());
    beast::error_code ec;
    const auto used = p.put(net::buffer(raw.data(), raw.size()), ec);
    raw.remove_prefix(used);
    body.append(buf.data(), buf.size() - p.body_size());
    if (ec == http::error::need_buffer) continue;
    REQUIRE(!ec);
    if (raw.empty() && !p.is_done()) FAIL("the message did not end");
  }
  return body;
}

}  // namespace

TEST_CASE("the response parser records the status line and field lines as views", "[proxy]") {
  const std::string raw = "HTTP/1.1 201 Made It\r\nX-A: 1\r\nx-b:  two \r\nContent-Length: 3\r\n\r\nabc";
  std::vector<field_line> fields;
  response_parser p(fields);
  CHECK(relay(p, raw, 64) == "abc");
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

TEST_CASE("the response parser decodes a chunked body through a small window and drops trailers", "[proxy]") {
  const std::string raw =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  std::vector<field_line> fields;
  response_parser p(fields);
  CHECK(relay(p, raw, 3) == "hello world");
  CHECK(p.chunked());
  REQUIRE(fields.size() == 1);  // the trailer is not recorded
  CHECK(fields[0].id == http::field::transfer_encoding);
}

TEST_CASE("the response parser refuses more than max_fields field lines", "[proxy]") {
  std::string raw = "HTTP/1.1 200 OK\r\n";
  for (std::size_t i = 0; i <= response_parser::max_fields; ++i) raw += "X-" + std::to_string(i) + ": v\r\n";
  raw += "Content-Length: 0\r\n\r\n";
  std::vector<field_line> fields;
  response_parser p(fields);
  beast::error_code ec;
  p.put(net::buffer(raw.data(), raw.size()), ec);
  CHECK(ec == http::error::header_limit);
  CHECK(fields.size() == response_parser::max_fields);
}

TEST_CASE("the response parser wants a body window before it takes body bytes", "[proxy]") {
  const std::string raw = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
  std::vector<field_line> fields;
  response_parser p(fields);
  beast::error_code ec;
  const auto used = p.put(net::buffer(raw.data(), raw.size()), ec);
  CHECK(p.is_header_done());
  CHECK(p.version() == 10);
  if (!ec) {
    // Beast stops after the head when not eager; the body then needs a window.
    p.eager(true);
    const auto more = p.put(net::buffer(raw.data() + used, raw.size() - used), ec);
    CHECK(more == 0);
  }
  CHECK(ec == http::error::need_buffer);
}
