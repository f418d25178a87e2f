#include <catch2/catch.hpp>

#include <thread>

#include "support/process.hpp"
#include "server_fixture.hpp"

using namespace sluice;
using namespace sluice::test;
using namespace std::chrono_literals;

TEST_CASE("begin_drain lets requests in flight finish with Connection: close and refuses new ones", "[server]") {
  fake_upstream up([](const received_request& rq) { return reply::ok("done").after(rq.target == "/slow" ? 300ms : 0ms); });
  server::server srv(proxy_config(up));
  srv.start();
  raw_client idle(srv.port());
  idle.send(get("/first"));
  CHECK(idle.read_response().status == 200);
  raw_client busy(srv.port());
  busy.send(get("/slow"));
  REQUIRE(up.wait_for_requests(2, 2000ms));

  srv.begin_drain();
  CHECK(srv.draining());
  CHECK(idle.is_closed(2000ms));
  CHECK(raw_client::connect_refused(srv.port(), 2000ms));
  auto r = busy.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "done");
  CHECK(r.header("Connection") == "close");
  CHECK(busy.is_closed(2000ms));

  const auto result = srv.wait(5s);
  CHECK(result.completed);
  CHECK(result.sessions_cut == 0);
  const auto stats = srv.stats();
  CHECK(stats.sessions() == 0);
  CHECK(stats.coroutines() == 0);
  CHECK(stats.timers() == 0);
}

TEST_CASE("wait cuts what is still running when the drain timeout passes", "[server]") {
  fake_upstream up([](const received_request&) { return reply::hang(); });
  server::server srv(proxy_config(up));
  srv.start();
  raw_client c(srv.port());
  c.send(get("/hang"));
  REQUIRE(up.wait_for_requests(1, 2000ms));
  srv.begin_drain();
  const auto result = srv.wait(200ms);
  CHECK_FALSE(result.completed);
  CHECK(result.sessions_cut == 1);
  CHECK(result.upstream_cut == 1);
  CHECK(c.is_closed(2000ms));
  CHECK(srv.stats().sessions() == 0);
}

TEST_CASE("past max_connections a new connection waits until one closes", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.server.max_connections = 2;
  running_server srv(cfg);
  auto a = std::make_unique<raw_client>(srv.port());
  raw_client b(srv.port());
  a->send(get("/a"));
  CHECK(a->read_response().status == 200);
  b.send(get("/b"));
  CHECK(b.read_response().status == 200);
  raw_client c(srv.port());  // completes in the kernel's backlog
  c.send(get("/c"));
  std::this_thread::sleep_for(300ms);
  CHECK(up.request_count() == 2);
  CHECK(srv->stats().sessions() == 2);
  a.reset();
  auto r = c.read_response();
  CHECK(r.status == 200);
  CHECK(up.request_count() == 3);
}

TEST_CASE("rejected requests get 429 with the contract's headers and body, and are counted", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  config::limit l;
  l.name = "per-ip";
  l.key = config::key_kind::ip;
  l.refill = {1.0 / 60.0, "1/m"};
  l.burst = 2;
  cfg.limits.push_back(l);
  running_server srv(cfg);
  raw_client c(srv.port());
  c.send(get("/1"));
  auto first = c.read_response();
  CHECK(first.status == 200);
  CHECK(first.header("RateLimit-Policy") == "\"per-ip\";q=2;w=120");
  // t= is the time until the bucket is full again: about one token's refill (60 s), rounded up.
  CHECK(first.header("RateLimit") == "\"per-ip\";r=1;t=60");
  c.send(get("/2"));
  CHECK(c.read_response().status == 200);
  c.send(get("/3"));
  auto limited = c.read_response();
  CHECK(limited.status == 429);
  CHECK(limited.header("Retry-After") == "60");
  CHECK(limited.header("Content-Type") == "application/json");
  CHECK(limited.body == R"({"error":"rate_limited","limit":"per-ip","retry_after":60})");
  CHECK(limited.header("RateLimit").value_or("").rfind("\"per-ip\";r=0;t=1", 0) == 0);
  CHECK(limited.keep_alive);
  // A rejected POST's body is skipped so the connection carries on.
  c.send("POST /4 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(c.read_response().status == 429);
  c.send(get("/5"));
  CHECK(c.read_response().status == 429);
  CHECK(up.request_count() == 2);
  CHECK(srv->metrics().rate_limited("per-ip").total() == 3);
  CHECK(eventually([&] { return srv->metrics().worker(0).requests[static_cast<unsigned>(admin::outcome::limited)].get() == 3; }));
}

TEST_CASE("a dry-run limit counts would-be rejections and forwards the request", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  config::limit trial;
  trial.name = "trial";
  trial.key = config::key_kind::global;
  trial.refill = {1.0 / 60.0, "1/m"};
  trial.burst = 1;
  trial.dry_run = true;
  config::limit wide;
  wide.name = "wide";
  wide.key = config::key_kind::ip;
  wide.refill = {1.0 / 60.0, "1/m"};  // slow enough that nothing refills between the requests
  wide.burst = 100;
  cfg.limits = {trial, wide};
  cfg.rate_limit_headers = config::header_mode::legacy;
  running_server srv(cfg);
  raw_client c(srv.port());
  for (int i = 0; i < 3; ++i) {
    c.send(get("/"));
    auto r = c.read_response();
    CHECK(r.status == 200);
    // Headers describe enforced limits only: a dry run changes nothing a client can see.
    CHECK(r.header("RateLimit-Limit") == "100");
    CHECK(r.header("RateLimit-Remaining") == std::to_string(99 - i));
    CHECK(r.header("RateLimit-Reset"));
    CHECK_FALSE(r.header("RateLimit-Policy"));
  }
  CHECK(up.request_count() == 3);
  CHECK(srv->metrics().dry_run_rejected("trial").total() == 2);
  CHECK(srv->metrics().rate_limited("trial").total() == 0);
}

TEST_CASE("reload applies new limits to the next request on an open connection", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  running_server srv(cfg);
  raw_client c(srv.port());
  c.send(get("/before"));
  auto before = c.read_response();
  CHECK(before.status == 200);
  CHECK_FALSE(before.header("RateLimit"));

  config::limit l;
  l.name = "all";
  l.key = config::key_kind::global;
  l.refill = {1.0 / 60.0, "1/m"};
  l.burst = 1;
  cfg.limits.push_back(l);
  srv->reload(cfg);
  CHECK(srv->current()->generation == 2);
  // The worker picks the runtime up asynchronously; the first request after that carries the headers.
  REQUIRE(eventually([&] {
    c.send(get("/after"));
    auto r = c.read_response();
    return r.header("RateLimit").has_value();
  }));
  c.send(get("/limited"));
  CHECK(c.read_response().status == 429);
}

TEST_CASE("a listen address in use is a clear start-up error", "[server]") {
  fake_upstream up;
  auto cfg = proxy_config(up);
  cfg.listen = {"127.0.0.1", up.port(), "127.0.0.1:" + std::to_string(up.port())};
  CHECK_THROWS_WITH(server::server(cfg), "listen 127.0.0.1:" + std::to_string(up.port()) + ": address already in use");
}
