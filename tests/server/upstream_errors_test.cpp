#include <catch2/catch.hpp>

#include <thread>

#include "support/process.hpp"
#include "server_fixture.hpp"

using namespace sluice;
using namespace sluice::test;
using namespace std::chrono_literals;

TEST_CASE("an upstream that refuses, resets or sends garbage gives 502", "[server]") {
  SECTION("refused") {
    fake_upstream unused;
    auto cfg = proxy_config(unused);
    const auto port = closed_port();
    cfg.upstream.servers = {config::endpoint{"127.0.0.1", port, "127.0.0.1:" + std::to_string(port)}};
    running_server srv(cfg);
    raw_client c(srv.port());
    c.send(get("/"));
    auto r = c.read_response();
    CHECK(r.status == 502);
    CHECK(r.body == R"({"error":"bad_gateway"})");
    CHECK(r.keep_alive);
    auto& wm = srv->metrics().worker(0);
    CHECK(wm.upstream_errors[static_cast<unsigned>(admin::upstream_error::connect_refused)].get() == 1);
  }
  SECTION("reset, closed, garbage") {
    fake_upstream up([](const received_request& rq) {
      if (rq.target == "/rst") return reply::reset_connection();
      if (rq.target == "/fin") return reply::close_connection();
      return reply::garbage();
    });
    running_server srv(proxy_config(up));
    raw_client c(srv.port());
    for (auto target : {"/rst", "/fin", "/garbage"}) {
      INFO(target);
      c.send(get(target));
      auto r = c.read_response();
      CHECK(r.status == 502);
    }
    auto& wm = srv->metrics().worker(0);
    CHECK(wm.upstream_errors[static_cast<unsigned>(admin::upstream_error::reset)].get() == 2);
    CHECK(wm.upstream_errors[static_cast<unsigned>(admin::upstream_error::bad_response)].get() == 1);
    CHECK(eventually([&] { return wm.requests[static_cast<unsigned>(admin::outcome::error)].get() == 3; }));
  }
}

TEST_CASE("an upstream that dies after the head cuts the client connection", "[server]") {
  fake_upstream up([](const received_request&) { return reply::partial(); });
  running_server srv(proxy_config(up));
  raw_client c(srv.port());
  c.send(get("/cut"));
  parsed_response r;
  const auto ec = c.try_read_response(r);
  INFO(ec.message());
  // partial_message is the client's parser meeting EOF mid-body: sluice closed the connection.
  CHECK(ec == http::error::partial_message);
}

TEST_CASE("an upstream slower than response_timeout gives 504", "[server]") {
  fake_upstream up([](const received_request&) { return reply::hang(); });
  auto cfg = proxy_config(up);
  cfg.upstream.response_timeout = 200ms;
  running_server srv(cfg);
  raw_client c(srv.port());
  const auto start = std::chrono::steady_clock::now();
  c.send(get("/"));
  auto r = c.read_response();
  CHECK(r.status == 504);
  CHECK(r.body == R"({"error":"gateway_timeout"})");
  CHECK(std::chrono::steady_clock::now() - start >= 180ms);
}

TEST_CASE("no upstream connection within queue_timeout, or a full queue, gives 503", "[server]") {
  fake_upstream up([](const received_request& rq) { return reply::ok().after(rq.target == "/slow" ? 600ms : 0ms); });
  auto cfg = proxy_config(up);
  cfg.upstream.max_connections = 1;
  cfg.upstream.queue_timeout = 100ms;
  SECTION("queue_timeout") { cfg.upstream.max_queue = 10; }
  SECTION("queue full") { cfg.upstream.max_queue = 0; }
  running_server srv(cfg);
  raw_client slow(srv.port());
  slow.send(get("/slow"));
  REQUIRE(up.wait_for_requests(1, 2000ms));
  raw_client c(srv.port());
  c.send(get("/"));
  auto r = c.read_response();
  CHECK(r.status == 503);
  CHECK(r.body == R"({"error":"service_unavailable"})");
  CHECK(slow.read_response().status == 200);
}

TEST_CASE("the upstream never sees more connections than upstream.max_connections", "[server]") {
  fake_upstream up([](const received_request&) { return reply::ok("slow").after(50ms); });
  auto cfg = proxy_config(up);
  cfg.threads = 2;
  cfg.upstream.max_connections = 4;
  cfg.upstream.queue_timeout = 10s;
  running_server srv(cfg);
  std::vector<std::unique_ptr<raw_client>> clients;
  for (int i = 0; i < 32; ++i) {
    clients.push_back(std::make_unique<raw_client>(srv.port()));
    clients.back()->send(get("/" + std::to_string(i)));
  }
  for (auto& c : clients) CHECK(c->read_response().status == 200);
  CHECK(up.request_count() == 32);
  CHECK(up.max_concurrent_connections() <= 4);
}

TEST_CASE("a stale pooled connection is replaced for a GET but a POST is never sent twice", "[server]") {
  // The upstream drops a kept-alive connection when the next request arrives on it, without answering.
  fake_upstream up([](const received_request& rq) {
    if (rq.index_on_connection >= 2) return reply::close_connection();
    return reply::ok("fresh");
  });
  running_server srv(proxy_config(up));
  raw_client c(srv.port());
  c.send(get("/1"));
  CHECK(c.read_response().status == 200);
  SECTION("GET is retried once on a fresh connection") {
    c.send(get("/2"));
    auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "fresh");
    CHECK(up.request_count() == 3);
    CHECK(srv->metrics().worker(0).upstream_errors[static_cast<unsigned>(admin::upstream_error::retried)].get() == 1);
  }
  SECTION("POST is not retried") {
    c.send("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
    auto r = c.read_response();
    CHECK(r.status == 502);
    std::size_t posts = 0;
    for (const auto& rq : up.requests()) posts += rq.method == "POST";
    CHECK(posts == 1);
  }
}

TEST_CASE("an upstream that sends 100 Continue and then closes gets a 502, not the request again", "[server]") {
  // The interim response proves the upstream has the request: the close is not a stale connection.
  fake_upstream up([](const received_request& rq) {
    if (rq.index_on_connection < 2) return reply::ok("first");
    reply r;
    r.what = reply::kind::partial;
    r.raw = "HTTP/1.1 100 Continue\r\n\r\n";
    return r;
  });
  running_server srv(proxy_config(up));
  raw_client c(srv.port());
  c.send(get("/1"));
  CHECK(c.read_response().status == 200);
  c.send(get("/2"));
  CHECK(c.read_response().status == 502);
  CHECK(up.request_count() == 2);
  CHECK(srv->metrics().worker(0).upstream_errors[static_cast<unsigned>(admin::upstream_error::retried)].get() == 0);
}

TEST_CASE("after the upstream closes idle connections the next requests still succeed", "[server]") {
  fake_upstream up;
  running_server srv(proxy_config(up));
  raw_client c(srv.port());
  c.send(get("/1"));
  CHECK(c.read_response().status == 200);
  // The fake counts a connection idle once it waits for the next request, a moment after it answered.
  CHECK(eventually([&] { return up.close_idle_connections() == 1; }));
  c.send(get("/2"));
  CHECK(c.read_response().status == 200);
  // The fake counts a connection idle once it waits for the next request, a moment after it answered.
  CHECK(eventually([&] { return up.close_idle_connections() == 1; }));
  c.send("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(c.read_response().status == 200);
  std::size_t posts = 0;
  for (const auto& rq : up.requests()) posts += rq.method == "POST";
  CHECK(posts == 1);
}
