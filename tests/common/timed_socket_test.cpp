#include "common/timed_socket.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <chrono>

#include "support/run.hpp"

namespace {

using namespace sluice;
using namespace std::chrono_literals;
using common::timed_socket;
using clock_type = std::chrono::steady_clock;

/// A connected pair on loopback: `ours` is timed, `peer` is the other end.
struct socket_pair {
  explicit socket_pair(net::io_context& ioc) : ours(ioc), peer(ioc) {
    tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    ours.socket().connect(acceptor.local_endpoint());
    acceptor.accept(peer);
  }
  timed_socket ours;
  tcp::socket peer;
};

/// Reads one byte on the timed socket under deadline d; returns the settled error.
net::awaitable<error_code> read_one(timed_socket& s, std::chrono::nanoseconds d) {
  std::array<char, 1> byte{};
  s.expires_after(d);
  auto [ec, n] = co_await s.socket().async_read_some(net::buffer(byte), use_tuple);
  co_return s.settle(ec);
}

/// Sends one byte from peer after delay.
net::awaitable<void> send_after(tcp::socket& peer, std::chrono::milliseconds delay) {
  net::steady_timer timer(co_await net::this_coro::executor);
  timer.expires_after(delay);
  co_await timer.async_wait(use_tuple);
  co_await net::async_write(peer, net::buffer("x", 1), use_tuple);
}

}  // namespace

TEST_CASE("an operation that outlives its deadline ends with timeout and a closed socket", "[common]") {
  net::io_context ioc{1};
  socket_pair p(ioc);
  const auto start = clock_type::now();
  const auto ec = test::run_coro(ioc, read_one(p.ours, 100ms));
  const auto elapsed = clock_type::now() - start;
  CHECK(ec == beast::error::timeout);
  CHECK_FALSE(p.ours.socket().is_open());
  CHECK(elapsed >= 90ms);
  CHECK(elapsed < 5s);
}

TEST_CASE("an operation that completes in time is not cut, and settle() ends the deadline", "[common]") {
  net::io_context ioc{1};
  socket_pair p(ioc);
  net::co_spawn(ioc, send_after(p.peer, 20ms), net::detached);
  CHECK_FALSE(test::run_coro(ioc, read_one(p.ours, 200ms)));
  // No deadline now: a read that waits past the old one (the timer is still armed for it) is left alone.
  net::co_spawn(ioc, send_after(p.peer, 400ms), net::detached);
  const auto ec = test::run_coro(ioc, [&]() -> net::awaitable<error_code> {
    std::array<char, 1> byte{};
    auto [rec, n] = co_await p.ours.socket().async_read_some(net::buffer(byte), use_tuple);
    co_return p.ours.settle(rec);
  }());
  CHECK_FALSE(ec);
  CHECK(p.ours.socket().is_open());
}

TEST_CASE("a deadline moved later is honoured, and one moved earlier wakes the timer earlier", "[common]") {
  net::io_context ioc{1};
  socket_pair p(ioc);
  SECTION("later: the timer wakes at the first deadline, finds a later one and sleeps again") {
    net::co_spawn(ioc, send_after(p.peer, 10ms), net::detached);
    CHECK_FALSE(test::run_coro(ioc, read_one(p.ours, 100ms)));
    net::co_spawn(ioc, send_after(p.peer, 250ms), net::detached);
    CHECK_FALSE(test::run_coro(ioc, read_one(p.ours, 2s)));
  }
  SECTION("earlier: a 10 s deadline, settled, then a 100 ms one that must still fire at 100 ms") {
    net::co_spawn(ioc, send_after(p.peer, 10ms), net::detached);
    CHECK_FALSE(test::run_coro(ioc, read_one(p.ours, 10s)));
    const auto start = clock_type::now();
    CHECK(test::run_coro(ioc, read_one(p.ours, 100ms)) == beast::error::timeout);
    CHECK(clock_type::now() - start < 5s);
  }
}

TEST_CASE("a timed socket destroyed with its timer armed leaves no work behind", "[common]") {
  net::io_context ioc{1};
  {
    socket_pair p(ioc);
    net::co_spawn(ioc, send_after(p.peer, 10ms), net::detached);
    CHECK_FALSE(test::run_coro(ioc, read_one(p.ours, 60s)));
  }
  // The timer was armed for 60 s; destruction cancelled it, so run() returns at once.
  const auto start = clock_type::now();
  test::run_for_deadline(ioc, 5000ms);
  CHECK(clock_type::now() - start < 2s);
}
