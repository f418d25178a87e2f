#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net.hpp"
#include "upstream/pool.hpp"
#include "upstream/resolve.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::error_code;
using sluice::tcp;
using sluice::use_tuple;
using sluice::upstream::connection;
using sluice::upstream::connection_ptr;
using sluice::upstream::peer_closed;
using sluice::upstream::pool;
using sluice::upstream::pool_errc;
using sluice::upstream::pool_limits;
using sluice::upstream::share_of;
namespace net = sluice::net;
using clock_type = std::chrono::steady_clock;

constexpr auto deadline = 5s;

/// Runs `body` on ioc until it finishes; the test fails if it has not within the deadline.
template <typename F>
void run_test(net::io_context& ioc, F body) {
  bool done = false;
  std::exception_ptr error;
  net::co_spawn(ioc, std::move(body), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  const auto until = clock_type::now() + deadline;
  while (!done && !ioc.stopped() && clock_type::now() < until) ioc.run_one_for(10ms);
  if (error) std::rethrow_exception(error);
  REQUIRE(done);
}

/// Runs ioc until it has no work left; false if work remained at the deadline (something leaked).
bool drained(net::io_context& ioc) {
  ioc.run_for(deadline);
  return ioc.stopped();
}

/// Waits (polling every millisecond) until cond holds; the run deadline bounds it.
net::awaitable<void> until(std::function<bool()> cond) {
  net::steady_timer timer(co_await net::this_coro::executor);
  while (!cond()) {
    timer.expires_after(1ms);
    co_await timer.async_wait(use_tuple);
  }
}

/// Lets other ready handlers run once.
net::awaitable<void> yield() {
  co_await net::post(co_await net::this_coro::executor, use_tuple);
}

/// A loopback upstream that accepts, counts, and watches its connections for the pool closing them.
class fake_upstream {
 public:
  explicit fake_upstream(net::io_context& ioc)
      : ioc_(ioc), acceptor_(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    net::co_spawn(ioc, accept_loop(), net::detached);
  }

  tcp::endpoint endpoint() const { return endpoint_; }
  /// Connections accepted, probes excluded.
  std::size_t connections() const { return accepted_.size() - probes_; }
  /// Connections the other side closed (EOF or reset).
  std::size_t closed_by_peer() const { return closed_by_peer_; }

  /// Returns once every connection made before the call has been accepted (the accept queue is FIFO).
  net::awaitable<void> sync() {
    tcp::socket probe(ioc_);
    auto [ec] = co_await probe.async_connect(endpoint_, use_tuple);
    REQUIRE_FALSE(ec);
    ++probes_;
    const auto local = probe.local_endpoint();
    co_await until([this, local] {
      for (const auto& remote : remotes_) {
        if (remote == local) return true;
      }
      return false;
    });
  }

  /// The upstream closes every connection it holds (as a server's keep-alive timeout would).
  void close_connections() {
    for (auto& socket : accepted_) {
      error_code ignored;
      socket->close(ignored);
    }
  }

  /// Writes bytes nobody asked for on every connection.
  void send_unsolicited() {
    for (auto& socket : accepted_) {
      error_code ignored;
      net::write(*socket, net::buffer("HTTP/1.1 408 Request Timeout\r\n\r\n", 32), ignored);
    }
  }

  void stop() {
    acceptor_.close();
    close_connections();
  }

 private:
  net::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
      if (ec) co_return;
      remotes_.push_back(socket.remote_endpoint());
      accepted_.push_back(std::make_unique<tcp::socket>(std::move(socket)));
      net::co_spawn(ioc_, watch(*accepted_.back()), net::detached);
    }
  }

  net::awaitable<void> watch(tcp::socket& socket) {
    char scratch[256];
    for (;;) {
      auto [ec, n] = co_await socket.async_read_some(net::buffer(scratch), use_tuple);
      if (ec) {
        if (ec == net::error::eof || ec == net::error::connection_reset) ++closed_by_peer_;
        co_return;
      }
    }
  }

  net::io_context& ioc_;
  tcp::acceptor acceptor_;
  tcp::endpoint endpoint_ = acceptor_.local_endpoint();
  std::vector<std::unique_ptr<tcp::socket>> accepted_;
  std::vector<tcp::endpoint> remotes_;
  std::size_t probes_ = 0;
  std::size_t closed_by_peer_ = 0;
};

/// A loopback port with nothing listening: bound, read back, closed.
tcp::endpoint refused_endpoint() {
  net::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint();
}

pool_limits small_limits() {
  pool_limits limits;
  limits.max_connections = 4;
  limits.max_idle = 4;
  limits.max_queue = 16;
  limits.queue_timeout = 10s;  // longer than the run deadline: waits must end by hand-over, not timeout
  limits.connect_timeout = 2s;
  return limits;
}

/// The outcome of an acquire() run as its own coroutine.
struct outcome {
  bool done = false;
  error_code ec;
  std::uint64_t requests = 0;  ///< of the connection it got
  connection* conn = nullptr;
};

/// Spawns acquire(); records the result into `out`, then releases the connection (reusable).
void spawn_acquire(net::io_context& ioc, pool& p, outcome& out, std::vector<char>* order = nullptr,
                   char name = '?') {
  net::co_spawn(
      ioc,
      [&p, &out, order, name]() -> net::awaitable<void> {
        auto [ec, conn] = co_await p.acquire();
        out.ec = ec;
        if (conn) {
          out.requests = conn->requests;
          out.conn = conn.get();
        }
        if (order) order->push_back(name);
        out.done = true;
        if (conn) p.release(std::move(conn), true);
      },
      net::detached);
}

}  // namespace

TEST_CASE("sequential acquires reuse one warm connection, the most recently released first", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  pool p(ioc, small_limits(), {up.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    connection* first = nullptr;
    for (std::uint64_t i = 0; i < 5; ++i) {
      auto [ec, conn] = co_await p.acquire();
      REQUIRE_FALSE(ec);
      REQUIRE(conn);
      if (!first) first = conn.get();
      CHECK(conn.get() == first);
      CHECK(conn->requests == i);
      CHECK(p.busy() == 1);
      p.release(std::move(conn), true);
      CHECK(p.idle() == 1);
    }
    co_await up.sync();
    CHECK(up.connections() == 1);

    auto [ec_a, a] = co_await p.acquire();
    auto [ec_b, b] = co_await p.acquire();
    REQUIRE(a);
    REQUIRE(b);
    connection* const b_raw = b.get();
    p.release(std::move(a), true);
    p.release(std::move(b), true);
    CHECK(p.idle() == 2);
    auto [ec_c, c] = co_await p.acquire();
    CHECK(c.get() == b_raw);
    p.release(std::move(c), true);
    p.shutdown();
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("many concurrent acquires never hold more than max_connections", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 3;
  limits.max_queue = 100;
  pool p(ioc, limits, {up.endpoint()});
  constexpr int clients = 20;
  int finished = 0;
  int failed = 0;
  std::size_t peak = 0;
  run_test(ioc, [&]() -> net::awaitable<void> {
    for (int i = 0; i < clients; ++i) {
      net::co_spawn(
          ioc,
          [&]() -> net::awaitable<void> {
            auto [ec, conn] = co_await p.acquire();
            peak = std::max(peak, p.busy() + p.idle());
            if (ec) {
              ++failed;
            } else {
              for (int k = 0; k < 3; ++k) co_await yield();
              p.release(std::move(conn), true);
            }
            ++finished;
          },
          net::detached);
    }
    co_await until([&] { return finished == clients; });
    CHECK(failed == 0);
    CHECK(peak <= 3);
    co_await up.sync();
    CHECK(up.connections() == 3);
    CHECK(p.busy() == 0);
    CHECK(p.idle() == 3);
    CHECK(p.waiting() == 0);
    p.shutdown();
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("an acquire past max_queue waiters fails with queue_full at once", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;

  SECTION("max_queue waiters already waiting") {
    limits.max_queue = 2;
    pool p(ioc, limits, {up.endpoint()});
    outcome first, second;
    run_test(ioc, [&]() -> net::awaitable<void> {
      auto [ec, held] = co_await p.acquire();
      REQUIRE(held);
      spawn_acquire(ioc, p, first);
      spawn_acquire(ioc, p, second);
      co_await until([&] { return p.waiting() == 2; });
      const auto start = clock_type::now();
      auto [ec_full, none] = co_await p.acquire();
      CHECK(ec_full == pool_errc::queue_full);
      CHECK_FALSE(none);
      CHECK(clock_type::now() - start < 500ms);
      CHECK(p.waiting() == 2);
      p.release(std::move(held), true);
      co_await until([&] { return first.done && second.done; });
      CHECK_FALSE(first.ec);
      CHECK_FALSE(second.ec);
      p.shutdown();
      up.stop();
    });
  }
  SECTION("max_queue 0 never waits") {
    limits.max_queue = 0;
    pool p(ioc, limits, {up.endpoint()});
    run_test(ioc, [&]() -> net::awaitable<void> {
      auto [ec, held] = co_await p.acquire();
      REQUIRE(held);
      auto [ec_full, none] = co_await p.acquire();
      CHECK(ec_full == pool_errc::queue_full);
      CHECK(p.waiting() == 0);
      p.release(std::move(held), false);
      up.stop();
    });
  }
  REQUIRE(drained(ioc));
}

TEST_CASE("a waiter gives up with queue_timeout once queue_timeout has passed", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;
  limits.queue_timeout = 50ms;
  pool p(ioc, limits, {up.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, held] = co_await p.acquire();
    REQUIRE(held);
    const auto start = clock_type::now();
    auto [ec_wait, none] = co_await p.acquire();
    CHECK(ec_wait == pool_errc::queue_timeout);
    CHECK_FALSE(none);
    CHECK(clock_type::now() - start >= 50ms);
    CHECK(p.waiting() == 0);
    CHECK(p.busy() == 1);
    p.release(std::move(held), true);
    CHECK(p.busy() == 0);
    CHECK(p.idle() == 1);
    p.shutdown();
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("a released connection or its slot goes to the oldest waiter", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;
  pool p(ioc, limits, {up.endpoint()});
  const bool reusable = GENERATE(true, false);
  CAPTURE(reusable);
  outcome a, b;
  std::vector<char> order;
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, held] = co_await p.acquire();
    REQUIRE(held);
    connection* const held_raw = held.get();
    spawn_acquire(ioc, p, a, &order, 'a');
    co_await until([&] { return p.waiting() == 1; });
    spawn_acquire(ioc, p, b, &order, 'b');
    co_await until([&] { return p.waiting() == 2; });
    p.release(std::move(held), reusable);
    co_await until([&] { return a.done && b.done; });
    CHECK(order == std::vector<char>{'a', 'b'});
    CHECK_FALSE(a.ec);
    CHECK_FALSE(b.ec);
    co_await up.sync();
    if (reusable) {
      CHECK(a.conn == held_raw);
      CHECK(a.requests == 1);
      CHECK(b.requests == 2);
      CHECK(up.connections() == 1);
    } else {
      CHECK(a.requests == 0);  // a fresh connection in the freed slot
      CHECK(b.requests == 1);
      CHECK(up.connections() == 2);
    }
    CHECK(p.busy() + p.idle() <= 1);
    p.shutdown();
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("a waiter whose timeout fired as a connection was handed over keeps the connection", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;
  limits.queue_timeout = 200ms;
  pool p(ioc, limits, {up.endpoint()});
  const bool reusable = GENERATE(true, false);
  CAPTURE(reusable);
  outcome w;
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, held] = co_await p.acquire();
    REQUIRE(held);
    // Armed before the waiter's timer, so it expires first however slowly the waiter gets going.
    net::steady_timer ours(ioc);
    ours.expires_after(10ms);
    spawn_acquire(ioc, p, w);
    co_await until([&] { return p.waiting() == 1; });
    // Blocking past both expiries makes the scheduler find them expired together and run ours first:
    // we hand over while the waiter's expiry is already queued.
    std::this_thread::sleep_for(limits.queue_timeout + 50ms);
    co_await ours.async_wait(use_tuple);
    CHECK(p.waiting() == 1);
    p.release(std::move(held), reusable);
    CHECK(p.waiting() == 0);
    co_await until([&] { return w.done; });
    CHECK_FALSE(w.ec);
    CHECK(w.requests == (reusable ? 1 : 0));
    CHECK(p.busy() == 0);
    CHECK(p.idle() == 1);
    p.shutdown();
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("idle connections beyond max_idle are closed on release", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_idle = 2;
  pool p(ioc, limits, {up.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    std::vector<connection_ptr> held;
    for (int i = 0; i < 4; ++i) {
      auto [ec, conn] = co_await p.acquire();
      REQUIRE(conn);
      held.push_back(std::move(conn));
    }
    for (auto& conn : held) p.release(std::move(conn), true);
    CHECK(p.idle() == 2);
    CHECK(p.busy() == 0);
    co_await until([&] { return up.closed_by_peer() == 2; });
    for (int i = 0; i < 2; ++i) {
      auto [ec, conn] = co_await p.acquire();
      REQUIRE(conn);
      CHECK(conn->requests == 1);
      held[i] = std::move(conn);
    }
    co_await up.sync();
    CHECK(up.connections() == 4);
    for (int i = 0; i < 2; ++i) p.release(std::move(held[i]), false);
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("idle connections are closed after idle_timeout and the timer then goes quiet", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.idle_timeout = 50ms;
  pool p(ioc, limits, {up.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec_a, a] = co_await p.acquire();
    auto [ec_b, b] = co_await p.acquire();
    REQUIRE(a);
    REQUIRE(b);
    const auto released = clock_type::now();
    p.release(std::move(a), true);
    p.release(std::move(b), true);
    CHECK(p.idle() == 2);
    co_await until([&] { return p.idle() == 0; });
    CHECK(clock_type::now() - released >= 50ms);
    co_await until([&] { return up.closed_by_peer() == 2; });
    up.stop();
  });
  // No shutdown(): with no idle connection left the pool must leave the io_context without work.
  REQUIRE(drained(ioc));
}

TEST_CASE("connecting to a port with nothing listening fails with connect_refused", "[upstream]") {
  net::io_context ioc{1};
  pool p(ioc, small_limits(), {refused_endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, conn] = co_await p.acquire();
    CHECK(ec == pool_errc::connect_refused);
    CHECK_FALSE(conn);
    CHECK(p.busy() == 0);
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("a connect that gets no answer fails with connect_timeout", "[upstream]") {
  // A listener whose accept queue is full drops further SYNs, so the connect hangs until our timeout.
  net::io_context ioc{1};
  tcp::acceptor full(ioc);
  full.open(tcp::v4());
  full.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  full.listen(0);
  const auto target = full.local_endpoint();
  auto limits = small_limits();
  limits.connect_timeout = 100ms;
  pool p(ioc, limits, {target});
  std::vector<std::unique_ptr<tcp::socket>> fillers;
  run_test(ioc, [&]() -> net::awaitable<void> {
    // Fill the queue: connects complete until the first one that hangs.
    for (int i = 0; i < 8; ++i) {
      auto [ec, conn] = co_await p.acquire();
      if (ec) {
        CHECK(ec == pool_errc::connect_timeout);
        CHECK(p.busy() == 0);
        for (auto& c : fillers) c->close();
        co_return;
      }
      fillers.push_back(std::make_unique<tcp::socket>(std::move(conn->stream.socket())));
      p.release(std::move(conn), false);
    }
    FAIL("the full accept queue never dropped a SYN");
  });
  full.close();
  REQUIRE(drained(ioc));
}

TEST_CASE("new connections go round robin over the servers", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up0(ioc);
  fake_upstream up1(ioc);
  pool p(ioc, small_limits(), {up0.endpoint(), up1.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    std::vector<connection_ptr> held;
    for (std::size_t i = 0; i < 4; ++i) {
      auto [ec, conn] = co_await p.acquire();
      REQUIRE(conn);
      CHECK(conn->server_index == i % 2);
      held.push_back(std::move(conn));
    }
    co_await up0.sync();
    co_await up1.sync();
    CHECK(up0.connections() == 2);
    CHECK(up1.connections() == 2);
    for (auto& conn : held) p.release(std::move(conn), false);
    up0.stop();
    up1.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("a refused server is skipped for the next one, each tried once per acquire", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  SECTION("the second server answers") {
    pool p(ioc, small_limits(), {refused_endpoint(), up.endpoint()});
    run_test(ioc, [&]() -> net::awaitable<void> {
      for (int i = 0; i < 2; ++i) {
        auto [ec, conn] = co_await p.acquire(true);
        REQUIRE_FALSE(ec);
        REQUIRE(conn);
        CHECK(conn->server_index == 1);
        p.release(std::move(conn), false);
      }
      co_await up.sync();
      CHECK(up.connections() == 2);
      up.stop();
    });
  }
  SECTION("no server answers") {
    pool p(ioc, small_limits(), {refused_endpoint(), refused_endpoint()});
    run_test(ioc, [&]() -> net::awaitable<void> {
      auto [ec, conn] = co_await p.acquire();
      CHECK(ec == pool_errc::connect_refused);
      CHECK(p.busy() == 0);
      up.stop();
    });
  }
  REQUIRE(drained(ioc));
}

TEST_CASE("peer_closed tells when the upstream closed a connection or spoke out of turn", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  const bool probe_all = GENERATE(false, true);
  auto limits = small_limits();
  if (probe_all) limits.probe_idle_after = std::chrono::nanoseconds(0);  // every idle connection is old
  pool p(ioc, limits, {up.endpoint()});
  const bool close = GENERATE(true, false);
  CAPTURE(close, probe_all);
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, conn] = co_await p.acquire();
    REQUIRE(conn);
    co_await up.sync();
    CHECK_FALSE(peer_closed(*conn));
    if (close) {
      up.close_connections();
    } else {
      up.send_unsolicited();
    }
    co_await until([&] { return peer_closed(*conn); });
    // Back in the pool it is still open on our side.
    p.release(std::move(conn), true);
    CHECK(p.idle() == 1);
    if (probe_all) {
      // Idle for probe_idle_after or longer: probed, closed, and a fresh connection made instead.
      auto [ec2, fresh] = co_await p.acquire();
      REQUIRE(fresh);
      CHECK(fresh->requests == 0);
      CHECK(p.idle() == 0);
      CHECK_FALSE(peer_closed(*fresh));
      p.release(std::move(fresh), false);
    } else {
      // Idle only briefly: handed out unprobed (a syscall per request otherwise); peer_closed() is how
      // the session tells before it risks a request it could not send again.
      auto [ec2, reused] = co_await p.acquire();
      REQUIRE(reused);
      CHECK(reused->requests == 1);
      CHECK(peer_closed(*reused));
      p.release(std::move(reused), false);
      auto [ec3, fresh] = co_await p.acquire(true);
      REQUIRE(fresh);
      CHECK(fresh->requests == 0);
      CHECK(p.idle() == 0);
      CHECK(p.busy() == 1);
      CHECK_FALSE(peer_closed(*fresh));
      p.release(std::move(fresh), false);
    }
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("fresh_only skips idle connections and closes one to make room at the bound", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;
  pool p(ioc, limits, {up.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, conn] = co_await p.acquire();
    REQUIRE(conn);
    p.release(std::move(conn), true);
    CHECK(p.idle() == 1);
    auto [ec2, fresh] = co_await p.acquire(true);
    REQUIRE(fresh);
    CHECK(fresh->requests == 0);
    CHECK(p.idle() == 0);
    CHECK(p.busy() == 1);
    co_await until([&] { return up.closed_by_peer() == 1; });
    co_await up.sync();
    CHECK(up.connections() == 2);
    p.release(std::move(fresh), false);
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("a loaned connection dropped without release frees its slot for a waiter", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;
  pool p(ioc, limits, {up.endpoint()});
  outcome w;
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec, held] = co_await p.acquire();
    REQUIRE(held);
    spawn_acquire(ioc, p, w);
    co_await until([&] { return p.waiting() == 1; });
    held.reset();
    co_await until([&] { return w.done; });
    CHECK_FALSE(w.ec);
    CHECK(w.requests == 0);
    CHECK(p.busy() == 0);
    CHECK(p.idle() == 1);
    p.shutdown();
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("reconfigure closes idle connections to removed servers and applies a lowered bound", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up0(ioc);
  fake_upstream up1(ioc);
  auto limits = small_limits();
  pool p(ioc, limits, {up0.endpoint(), up1.endpoint()});
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec_a, a] = co_await p.acquire();
    auto [ec_b, b] = co_await p.acquire();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->server_index == 0);
    CHECK(b->server_index == 1);
    p.release(std::move(a), true);
    p.release(std::move(b), true);
    CHECK(p.idle() == 2);

    p.reconfigure(limits, {up1.endpoint()});
    CHECK(p.idle() == 1);
    co_await until([&] { return up0.closed_by_peer() == 1; });
    auto [ec_c, c] = co_await p.acquire();
    REQUIRE(c);
    CHECK(c->requests == 1);
    CHECK(c->server_index == 0);  // up1 is now the first server
    auto [ec_d, d] = co_await p.acquire();
    REQUIRE(d);

    auto lowered = limits;
    lowered.max_connections = 1;
    p.reconfigure(lowered, {up1.endpoint()});
    p.release(std::move(c), true);  // 2 held, bound 1: closed
    CHECK(p.idle() == 0);
    p.release(std::move(d), true);
    CHECK(p.idle() == 1);
    CHECK(p.busy() == 0);
    co_await until([&] { return up1.closed_by_peer() == 1; });
    p.shutdown();
    up0.stop();
    up1.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("shutdown fails waiters, refuses new acquires and leaves the io_context without work", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 2;
  limits.idle_timeout = 60s;  // an armed sweep timer would keep run() busy for a minute
  pool p(ioc, limits, {up.endpoint()});
  outcome w;
  run_test(ioc, [&]() -> net::awaitable<void> {
    auto [ec_a, a] = co_await p.acquire();
    auto [ec_b, b] = co_await p.acquire();
    REQUIRE(a);
    REQUIRE(b);
    p.release(std::move(b), true);
    auto [ec_c, c] = co_await p.acquire(true);  // closes the idle one to make room
    REQUIRE(c);
    p.release(std::move(c), true);
    CHECK(p.idle() == 1);
    auto [ec_d, d] = co_await p.acquire();
    REQUIRE(d);
    spawn_acquire(ioc, p, w);
    co_await until([&] { return p.waiting() == 1; });
    p.release(std::move(d), true);  // goes to the waiter, which releases it to idle
    co_await until([&] { return w.done && p.idle() == 1; });
    outcome late;
    auto [ec_e, e] = co_await p.acquire();
    REQUIRE(e);
    spawn_acquire(ioc, p, late);
    co_await until([&] { return p.waiting() == 1; });

    p.shutdown();
    CHECK(p.idle() == 0);
    CHECK(p.waiting() == 0);
    co_await until([&] { return late.done; });
    CHECK(late.ec == pool_errc::shutting_down);
    auto [ec_f, none] = co_await p.acquire();
    CHECK(ec_f == pool_errc::shutting_down);
    p.release(std::move(a), true);
    p.release(std::move(e), true);
    CHECK(p.busy() == 0);
    CHECK(p.idle() == 0);
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("the pool can be destroyed while acquires are suspended in it", "[upstream]") {
  net::io_context ioc{1};
  fake_upstream up(ioc);
  auto limits = small_limits();
  limits.max_connections = 1;
  auto p = std::make_unique<pool>(ioc, limits, std::vector<tcp::endpoint>{up.endpoint()});
  outcome w;
  const bool shut_down_first = GENERATE(true, false);
  const bool connecting = GENERATE(true, false);
  CAPTURE(shut_down_first, connecting);
  run_test(ioc, [&]() -> net::awaitable<void> {
    if (connecting) {
      spawn_acquire(ioc, *p, w);
      co_await yield();
      REQUIRE(p->busy() == 1);
      REQUIRE_FALSE(w.done);
    } else {
      auto [ec, held] = co_await p->acquire();
      REQUIRE(held);
      spawn_acquire(ioc, *p, w);
      co_await until([&] { return p->waiting() == 1; });
      // shutdown() would fail a waiter; hand it the connection instead, so it is on loan unresumed.
      p->release(std::move(held), true);
      REQUIRE_FALSE(w.done);
    }
    if (shut_down_first) p->shutdown();
    p.reset();
    co_await until([&] { return w.done; });
    CHECK(w.ec == pool_errc::shutting_down);
    up.stop();
  });
  REQUIRE(drained(ioc));
}

TEST_CASE("share_of splits a bound over workers without exceeding it", "[upstream]") {
  auto [total, workers] = GENERATE(table<std::size_t, unsigned>({
      {128, 1}, {128, 2}, {128, 3}, {128, 7}, {1, 4}, {0, 3}, {10000, 64}, {5, 5}, {7, 0}, {1023, 16},
  }));
  CAPTURE(total, workers);
  std::size_t sum = 0;
  std::size_t low = total;
  std::size_t high = 0;
  const unsigned pools = workers == 0 ? 1 : workers;
  for (unsigned i = 0; i < pools; ++i) {
    const auto share = share_of(total, workers, i);
    sum += share;
    low = std::min(low, share);
    high = std::max(high, share);
  }
  CHECK(sum == total);
  CHECK(high - low <= 1);
}

TEST_CASE("resolve_servers gives endpoints for addresses and names and names what fails", "[upstream]") {
  using sluice::config::endpoint;
  const auto literal = sluice::upstream::resolve_servers({endpoint{"127.0.0.1", 9000, "127.0.0.1:9000"}});
  REQUIRE(literal.size() == 1);
  CHECK(literal[0] == tcp::endpoint(net::ip::make_address("127.0.0.1"), 9000));

  const auto named = sluice::upstream::resolve_servers({endpoint{"localhost", 81, "localhost:81"}});
  REQUIRE_FALSE(named.empty());
  for (const auto& ep : named) {
    CHECK(ep.address().is_loopback());
    CHECK(ep.port() == 81);
  }

  CHECK_THROWS_WITH(
      sluice::upstream::resolve_servers({endpoint{"no-such-host.invalid", 80, "no-such-host.invalid:80"}}),
      Catch::Contains("\"no-such-host.invalid:80\""));
}
