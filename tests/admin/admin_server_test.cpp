#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>

#include "admin/admin_server.hpp"
#include "log/logging.hpp"
#include "net.hpp"

using namespace std::chrono_literals;
using namespace sluice;
using admin::admin_limits;
using admin::admin_server;
using admin::process_gauges;

namespace {

struct reply {
  error_code ec;
  http::response<http::string_body> res;
};

/// One client connection with deadlines on every operation, so a server bug fails instead of hanging.
struct client {
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  explicit client(net::io_context& ioc) : stream(ioc) {}
};

/// An admin server on 127.0.0.1 port 0 with its own io_context, a registry and a switchable ready flag.
struct admin_fixture {
  net::io_context ioc{1};
  admin::metrics registry{1};
  std::atomic<bool> ready{true};
  std::atomic<std::uint64_t> scrapes{0};
  admin_server server;

  explicit admin_fixture(admin_limits limits = {})
      : server(
            ioc, config::endpoint{"127.0.0.1", 0, "127.0.0.1:0"}, registry,
            [this] {
              process_gauges g;
              g.config_generation = ++scrapes;
              return g;
            },
            [this] { return ready.load(); }, limits) {
    server.start();
  }

  [[nodiscard]] tcp::endpoint endpoint() const { return {net::ip::make_address("127.0.0.1"), server.port()}; }

  /// Runs body on the io_context (then stops the server unless told not to) and requires that run() comes
  /// back by itself, with no work left, well before the deadline.
  void run(net::awaitable<void> body, bool stop_after = true) {
    std::exception_ptr failure;
    bool done = false;
    net::co_spawn(ioc, std::move(body), [&](std::exception_ptr e) {
      failure = e;
      done = true;
      if (stop_after) server.stop();
    });
    const auto started = std::chrono::steady_clock::now();
    ioc.run_for(20s);
    if (failure) std::rethrow_exception(failure);
    CHECK(done);
    CHECK(ioc.stopped());
    CHECK(std::chrono::steady_clock::now() - started < 15s);
  }
};

net::awaitable<error_code> connect(client& c, tcp::endpoint to) {
  c.stream.expires_after(5s);
  auto [ec] = co_await c.stream.async_connect(to, use_tuple);
  co_return ec;
}

net::awaitable<reply> read_reply(client& c, bool head = false) {
  http::response_parser<http::string_body> parser;
  parser.skip(head);
  c.stream.expires_after(5s);
  auto [ec, n] = co_await http::async_read(c.stream, c.buffer, parser, use_tuple);
  co_return reply{ec, parser.release()};
}

net::awaitable<reply> request(client& c, http::verb verb, std::string target, bool keep_alive = true,
                              std::string body = {}) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.keep_alive(keep_alive);
  if (!body.empty()) {
    req.body() = std::move(body);
    req.prepare_payload();
  }
  c.stream.expires_after(5s);
  auto [ec, n] = co_await http::async_write(c.stream, req, use_tuple);
  if (ec) co_return reply{ec, {}};
  auto r = co_await read_reply(c, verb == http::verb::head);
  co_return r;
}

net::awaitable<void> send_raw(client& c, std::string raw) {
  c.stream.expires_after(5s);
  auto [ec, n] = co_await net::async_write(c.stream, net::buffer(raw), use_tuple);
  REQUIRE_FALSE(ec);
}

net::awaitable<void> must_connect(client& c, tcp::endpoint to) {
  const error_code ec = co_await connect(c, to);
  REQUIRE_FALSE(ec);
}

/// Reads until the server closes; returns the error that ended it (eof when the server closed, timeout
/// when it kept the connection open past the client's deadline).
net::awaitable<error_code> read_until_closed(client& c, std::chrono::seconds deadline = 5s) {
  c.stream.expires_after(deadline);
  std::array<char, 256> sink;
  for (;;) {
    auto [ec, n] = co_await c.stream.async_read_some(net::buffer(sink), use_tuple);
    if (ec) co_return ec;
  }
}

/// Checks that the server closes the connection (EOF) before the client's deadline.
net::awaitable<void> expect_closed(client& c) {
  const error_code ec = co_await read_until_closed(c);
  CHECK(ec == net::error::eof);
}

}  // namespace

TEST_CASE("/healthz answers 200 ok to GET and HEAD", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    auto get = co_await request(c, http::verb::get, "/healthz");
    REQUIRE_FALSE(get.ec);
    CHECK(get.res.result() == http::status::ok);
    CHECK(get.res.body() == "ok\n");
    CHECK(get.res[http::field::content_type] == "text/plain; charset=utf-8");
    auto head = co_await request(c, http::verb::head, "/healthz?probe=1");
    REQUIRE_FALSE(head.ec);
    CHECK(head.res.result() == http::status::ok);
    CHECK(head.res[http::field::content_length] == "3");
    CHECK(head.res.body().empty());
    // Nothing after the HEAD response: the next response parses cleanly on the same connection.
    auto again = co_await request(c, http::verb::get, "/healthz");
    REQUIRE_FALSE(again.ec);
    CHECK(again.res.body() == "ok\n");
  }(f));
}

TEST_CASE("/readyz answers 503 draining once ready() turns false", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    auto before = co_await request(c, http::verb::get, "/readyz");
    REQUIRE_FALSE(before.ec);
    CHECK(before.res.result() == http::status::ok);
    CHECK(before.res.body() == "ready\n");
    f.ready = false;
    auto after = co_await request(c, http::verb::get, "/readyz");
    REQUIRE_FALSE(after.ec);
    CHECK(after.res.result() == http::status::service_unavailable);
    CHECK(after.res.body() == "draining\n");
    CHECK(after.res.keep_alive());
  }(f));
}

TEST_CASE("/metrics serves the registry in Prometheus text with gauges sampled per scrape", "[admin]") {
  admin_fixture f;
  for (int i = 0; i < 3; ++i) f.registry.worker(0).count_request(admin::outcome::forwarded, 200, 1ms);
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    auto first = co_await request(c, http::verb::get, "/metrics");
    REQUIRE_FALSE(first.ec);
    CHECK(first.res.result() == http::status::ok);
    CHECK(first.res[http::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
    CHECK(first.res.body().find("\nsluice_requests_total{outcome=\"forwarded\"} 3\n") != std::string::npos);
    CHECK(first.res.body().find("\nsluice_config_generation 1\n") != std::string::npos);
    f.registry.worker(0).count_request(admin::outcome::limited, 429, 1ms);
    auto second = co_await request(c, http::verb::get, "/metrics");
    REQUIRE_FALSE(second.ec);
    CHECK(second.res.body().find("\nsluice_requests_total{outcome=\"limited\"} 1\n") != std::string::npos);
    CHECK(second.res.body().find("\nsluice_config_generation 2\n") != std::string::npos);
  }(f));
}

TEST_CASE("an unknown path is 404", "[admin]") {
  admin_fixture f;
  const std::string target = GENERATE("/", "/metricsx", "/healthz/", "/readyz/extra", "*");
  f.run([](admin_fixture& f, std::string target) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    auto r = co_await request(c, http::verb::get, target);
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::not_found);
  }(f, target));
}

TEST_CASE("another method on a known path is 405 with Allow", "[admin]") {
  admin_fixture f;
  const auto verb = GENERATE(http::verb::post, http::verb::put, http::verb::delete_, http::verb::options);
  const std::string target = GENERATE("/healthz", "/readyz", "/metrics");
  f.run([](admin_fixture& f, http::verb verb, std::string target) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    auto r = co_await request(c, verb, target);
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::method_not_allowed);
    CHECK(r.res[http::field::allow] == "GET, HEAD");
    CHECK(r.res.keep_alive());
  }(f, verb, target));
}

TEST_CASE("a keep-alive connection serves requests until the client asks to close", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    for (int i = 0; i < 5; ++i) {
      auto r = co_await request(c, http::verb::get, "/healthz");
      REQUIRE_FALSE(r.ec);
      CHECK(r.res.keep_alive());
    }
    auto last = co_await request(c, http::verb::get, "/healthz", false);
    REQUIRE_FALSE(last.ec);
    CHECK_FALSE(last.res.keep_alive());
    co_await expect_closed(c);
  }(f));
}

TEST_CASE("pipelined requests are answered in order", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    co_await send_raw(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\n");
    auto first = co_await read_reply(c);
    auto second = co_await read_reply(c);
    REQUIRE_FALSE(first.ec);
    REQUIRE_FALSE(second.ec);
    CHECK(first.res.body() == "ok\n");
    CHECK(second.res.body() == "ready\n");
  }(f));
}

TEST_CASE("a request with a body is refused with 413 and the connection closes", "[admin]") {
  admin_fixture f;
  const bool chunked = GENERATE(false, true);
  f.run([](admin_fixture& f, bool chunked) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    const std::string raw = chunked
        ? "GET /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        : "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    co_await send_raw(c, raw);
    auto r = co_await read_reply(c);
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::payload_too_large);
    CHECK_FALSE(r.res.keep_alive());
    co_await expect_closed(c);
  }(f, chunked));
}

TEST_CASE("an empty Content-Length: 0 body is not refused", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    co_await send_raw(c, "GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    auto r = co_await read_reply(c);
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::ok);
  }(f));
}

TEST_CASE("a request head over the header limit is refused with 431", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    co_await send_raw(c, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(9000, 'a') +
                                           "\r\n\r\n");
    auto r = co_await read_reply(c);
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::request_header_fields_too_large);
    co_await expect_closed(c);
  }(f));
}

TEST_CASE("a malformed request is answered 400 and the connection closes", "[admin]") {
  admin_fixture f;
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client c(f.ioc);
    co_await must_connect(c, f.endpoint());
    co_await send_raw(c, "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n");
    auto r = co_await read_reply(c);
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::bad_request);
    co_await expect_closed(c);
  }(f));
}

TEST_CASE("idle and slow connections are closed by their timeouts", "[admin]") {
  admin_limits limits;
  limits.idle_timeout = 100ms;
  limits.read_timeout = 100ms;
  admin_fixture f(limits);
  SECTION("idle after a request") {
    f.run([](admin_fixture& f) -> net::awaitable<void> {
      client c(f.ioc);
      co_await must_connect(c, f.endpoint());
      auto r = co_await request(c, http::verb::get, "/healthz");
      REQUIRE_FALSE(r.ec);
      co_await expect_closed(c);
    }(f));
  }
  SECTION("a head that never completes") {
    f.run([](admin_fixture& f) -> net::awaitable<void> {
      client c(f.ioc);
      co_await must_connect(c, f.endpoint());
      co_await send_raw(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n");
      co_await expect_closed(c);
    }(f));
  }
}

TEST_CASE("a connection past the limit gets 503 while the others keep working", "[admin]") {
  admin_limits limits;
  limits.max_connections = 2;
  admin_fixture f(limits);
  f.run([](admin_fixture& f) -> net::awaitable<void> {
    client a(f.ioc);
    client b(f.ioc);
    client c(f.ioc);
    client d(f.ioc);
    co_await must_connect(a, f.endpoint());
    auto first = co_await request(a, http::verb::get, "/healthz");
    REQUIRE_FALSE(first.ec);
    co_await must_connect(b, f.endpoint());
    auto second = co_await request(b, http::verb::get, "/healthz");
    REQUIRE_FALSE(second.ec);

    co_await must_connect(c, f.endpoint());
    auto refused = co_await read_reply(c);
    REQUIRE_FALSE(refused.ec);
    CHECK(refused.res.result() == http::status::service_unavailable);
    CHECK(refused.res.body() == "too many admin connections\n");
    co_await expect_closed(c);

    auto still = co_await request(b, http::verb::get, "/healthz");
    REQUIRE_FALSE(still.ec);
    CHECK(still.res.result() == http::status::ok);

    // Once one connection has closed, a new one is served.
    auto closing = co_await request(a, http::verb::get, "/healthz", false);
    REQUIRE_FALSE(closing.ec);
    co_await expect_closed(a);
    co_await must_connect(d, f.endpoint());
    auto served = co_await request(d, http::verb::get, "/healthz");
    REQUIRE_FALSE(served.ec);
    CHECK(served.res.result() == http::status::ok);
  }(f));
}

TEST_CASE("stop() closes the listener and open connections so run() returns by itself", "[admin]") {
  admin_fixture f;
  const bool from_other_thread = GENERATE(false, true);
  f.run(
      [](admin_fixture& f, bool from_other_thread) -> net::awaitable<void> {
        // The backlog is accepted in order, so once `idle` has an answer `silent` is accepted and served too.
        client silent(f.ioc);  // connected, never sends a byte
        co_await must_connect(silent, f.endpoint());
        client idle(f.ioc);
        co_await must_connect(idle, f.endpoint());
        auto r = co_await request(idle, http::verb::get, "/healthz");
        REQUIRE_FALSE(r.ec);
        if (from_other_thread) {
          std::thread stopper([&] { f.server.stop(); });
          stopper.join();
        } else {
          f.server.stop();
        }
        co_await expect_closed(idle);
        co_await expect_closed(silent);
        client late(f.ioc);
        const error_code refused = co_await connect(late, f.endpoint());
        CHECK(refused == net::error::connection_refused);
      }(f, from_other_thread),
      false);
}

TEST_CASE("an admin endpoint that cannot be listened on is refused with its text", "[admin]") {
  net::io_context ioc;
  admin::metrics registry(1);
  const auto gauges = [] { return process_gauges{}; };
  const auto ready = [] { return true; };
  SECTION("not a literal address") {
    REQUIRE_THROWS_WITH(admin_server(ioc, config::endpoint{"admin.example", 9901, "admin.example:9901"}, registry,
                                     gauges, ready),
                        "admin.listen: \"admin.example\" is not a literal IP address");
  }
  SECTION("port in use") {
    admin_server first(ioc, config::endpoint{"127.0.0.1", 0, "127.0.0.1:0"}, registry, gauges, ready);
    const auto text = "127.0.0.1:" + std::to_string(first.port());
    REQUIRE_THROWS_WITH(
        admin_server(ioc, config::endpoint{"127.0.0.1", first.port(), text}, registry, gauges, ready),
        "admin.listen: cannot listen on " + text + ": Address already in use");
  }
}

TEST_CASE("an accept error is logged and accepting resumes after a pause", "[admin]") {
  admin_limits limits;
  limits.accept_retry = 20ms;
  admin_fixture f(limits);
  std::ostringstream events_out;
  std::ostringstream access_out;
  log::init_logging(config::log_settings{},
                    log::log_sinks{std::make_shared<spdlog::sinks::ostream_sink_st>(events_out),
                                   std::make_shared<spdlog::sinks::ostream_sink_mt>(access_out)});
  rlimit original{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &original) == 0);
  struct restore {
    rlimit value;
    ~restore() {
      ::setrlimit(RLIMIT_NOFILE, &value);
      log::shutdown_logging();
    }
  } guard{original};
  f.run([](admin_fixture& f, std::ostringstream& events_out, rlimit original) -> net::awaitable<void> {
    // UBSan's vptr check needs a free descriptor whenever its type cache misses, so a line through the same
    // logger, types and sink fills that cache before descriptors run out.
    log::events()->warn("warm up error=\"{}\" retry_ms={}", error_code(EMFILE, boost::system::system_category()).message(),
                        f.server.port() + 0L);
    client c(f.ioc);
    c.stream.socket().open(tcp::v4());
    // The lowest free descriptor is the one accept() would get: a limit at it makes accept fail (EMFILE).
    const int next_fd = ::dup(c.stream.socket().native_handle());
    REQUIRE(next_fd >= 0);
    ::close(next_fd);
    rlimit lowered = original;
    lowered.rlim_cur = static_cast<rlim_t>(next_fd);
    // No Catch2 assertion while descriptors are exhausted: UBSan checks the vptr of Catch's expression
    // objects too, and that check needs a free descriptor. Results are asserted once the limit is back.
    const int lowered_rc = ::setrlimit(RLIMIT_NOFILE, &lowered);
    const error_code connect_ec = co_await connect(c, f.endpoint());
    net::steady_timer poll(f.ioc);
    for (int i = 0; i < 500 && events_out.str().find("admin accept failed") == std::string::npos; ++i) {
      poll.expires_after(10ms);
      co_await poll.async_wait(use_tuple);
    }
    const auto logged = events_out.str();
    const int restored_rc = ::setrlimit(RLIMIT_NOFILE, &original);
    REQUIRE(lowered_rc == 0);
    REQUIRE(restored_rc == 0);
    REQUIRE_FALSE(connect_ec);
    CHECK(logged.find(" warn sluice admin accept failed error=") != std::string::npos);
    auto r = co_await request(c, http::verb::get, "/healthz");
    REQUIRE_FALSE(r.ec);
    CHECK(r.res.result() == http::status::ok);
  }(f, events_out, original));
}
