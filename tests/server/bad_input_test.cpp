#include <catch2/catch.hpp>

#include <thread>

#include "server_fixture.hpp"

using namespace sluice;
using namespace sluice::test;
using namespace std::chrono_literals;

TEST_CASE("a head over max_header_bytes gets 431 and the connection closes", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.max_header_bytes = 1024;
  running_server srv(cfg);
  raw_client c(srv.port());
  c.send(get("/", "X-Big: " + std::string(2000, 'x') + "\r\n"));
  auto r = c.read_response();
  CHECK(r.status == 431);
  CHECK(r.header("Content-Type") == "application/json");
  CHECK(r.body == R"({"error":"request_header_fields_too_large"})");
  CHECK(c.is_closed(2000ms));
  CHECK(up.request_count() == 0);
}

TEST_CASE("a body over max_body_bytes gets 413", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.max_body_bytes = 100;
  running_server srv(cfg);
  SECTION("declared by Content-Length: refused before anything is forwarded") {
    raw_client c(srv.port());
    c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n");
    auto r = c.read_response();
    CHECK(r.status == 413);
    CHECK(r.body == R"({"error":"payload_too_large"})");
    CHECK(c.is_closed(2000ms));
    CHECK(up.request_count() == 0);
  }
  SECTION("discovered in a chunked body mid-stream") {
    raw_client c(srv.port());
    c.send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send("32\r\n" + std::string(50, 'a') + "\r\n");
    c.send("64\r\n" + std::string(100, 'b') + "\r\n0\r\n\r\n");
    auto r = c.read_response();
    CHECK(r.status == 413);
    CHECK(c.is_closed(2000ms));
  }
  SECTION("a body at the limit is forwarded") {
    raw_client c(srv.port());
    c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'z'));
    CHECK(c.read_response().status == 200);
    CHECK(up.last_request().body_size == 100);
  }
}

TEST_CASE("malformed and smuggling requests get 400, close, and the proxy keeps serving", "[server]") {
  fake_upstream up;
  running_server srv(proxy_config(up));
  const auto raw = GENERATE(as<std::string>{},
                            "THIS IS NOT HTTP\r\n\r\n",
                            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
                            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc",
                            "GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
                            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
                            "GET / HTTP/1.1\r\n\r\n");
  INFO(raw);
  {
    raw_client c(srv.port());
    c.send(raw);
    auto r = c.read_response();
    CHECK(r.status == 400);
    CHECK(r.body == R"({"error":"bad_request"})");
    CHECK(c.is_closed(2000ms));
  }
  CHECK(up.request_count() == 0);
  raw_client next(srv.port());
  next.send(get("/fine"));
  CHECK(next.read_response().status == 200);
}

TEST_CASE("header_timeout cuts a client that trickles its head", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.header_timeout = 300ms;
  cfg.server.idle_timeout = 10s;
  running_server srv(cfg);
  raw_client c(srv.port());
  const auto start = std::chrono::steady_clock::now();
  const std::string head = get("/slow", "X-Pad: " + std::string(200, 'p') + "\r\n");
  bool closed = false;
  for (char ch : head) {
    if (c.try_send(std::string_view(&ch, 1))) {
      closed = true;
      break;
    }
    if (c.is_closed(50ms)) {
      closed = true;
      break;
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(closed);
  CHECK(elapsed >= 250ms);
  CHECK(elapsed < 2000ms);
  CHECK(up.request_count() == 0);
}

TEST_CASE("idle_timeout closes an idle keep-alive connection", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.idle_timeout = 200ms;
  running_server srv(cfg);
  raw_client c(srv.port());
  c.send(get("/"));
  CHECK(c.read_response().status == 200);
  const auto start = std::chrono::steady_clock::now();
  CHECK(c.is_closed(3000ms));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 150ms);
  CHECK(elapsed < 2000ms);
  CHECK(eventually([&] { return srv->stats().sessions() == 0; }));
}

TEST_CASE("Expect: 100-continue is answered by sluice and the body then forwarded", "[server]") {
  fake_upstream up([](const received_request& rq) { return reply::ok("got " + rq.body); });
  running_server srv(proxy_config(up));
  raw_client c(srv.port());
  c.send("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
  auto interim = c.read_response();
  CHECK(interim.status == 100);
  c.send("data");
  auto r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "got data");
  CHECK_FALSE(up.last_request().header("Expect"));
}
