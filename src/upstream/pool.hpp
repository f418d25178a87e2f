#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#include "common/timed_socket.hpp"
#include "net.hpp"

namespace sluice::upstream {

/// Errors the pool answers acquire() with. The session maps them to replies.
enum class pool_errc {
  queue_full = 1,   ///< max_queue requests already waiting -> 503 at once
  queue_timeout,    ///< no slot within queue_timeout -> 503
  connect_refused,  ///< every attempt to connect failed -> 502
  connect_timeout,  ///< connect_timeout passed -> 502
  shutting_down,    ///< the pool was shut down (drain) -> 503
};
/// The error_category of pool_errc.
const boost::system::error_category& pool_category();
/// Makes pool_errc usable as an error_code.
error_code make_error_code(pool_errc e);

/// This thread's share of the upstream settings. Plain value.
struct pool_limits {
  std::size_t max_connections = 128;  ///< busy + idle + connecting, this pool's share of the global bound
  std::size_t max_idle = 32;          ///< idle keep-alive connections kept
  std::size_t max_queue = 1024;       ///< acquire() calls waiting at once; 0 = never wait
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(2);
  std::chrono::nanoseconds queue_timeout = std::chrono::seconds(1);
  /// An idle connection this old is probed (one recv(MSG_PEEK)) before it is lent. Younger ones are not:
  /// under load connections are idle for microseconds, and a probe per request would cost a syscall
  /// each; upstreams close idle connections (or send a 408) after keep-alive timeouts of seconds.
  std::chrono::nanoseconds probe_idle_after = std::chrono::seconds(1);
};

class pool;

/// One upstream connection on loan to a request. The session reads and writes `stream` directly and gives
/// it back with pool::release(). Destroying a loaned connection without release() (an exception path)
/// closes it and frees its slot. Use from its pool's thread only.
struct connection {
  explicit connection(net::io_context& ioc) : stream(ioc) {}
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  common::timed_socket stream;     ///< the socket with its deadline (see timed_socket for the protocol)
  beast::flat_buffer buffer;        ///< response read buffer, kept with the connection (reused)
  std::size_t server_index = 0;     ///< which of the pool's current `servers` it goes to
  std::uint64_t requests = 0;       ///< requests completed on it, counted by release(conn, true); 0 = fresh
  std::chrono::steady_clock::time_point idle_since{};  ///< when it last went idle

 private:
  friend class pool;
  pool* owner_ = nullptr;           ///< set while connecting or on loan; cleared by a pool that dies first
  connection* loan_prev_ = nullptr;  ///< the pool's intrusive list of loans (no allocation per loan)
  connection* loan_next_ = nullptr;
  tcp::endpoint endpoint_;          ///< where it goes; server_index is recomputed from it on reconfigure
  bool connecting_ = false;
  bool retired_ = false;            ///< its server was removed by reconfigure: close on release
};
using connection_ptr = std::unique_ptr<connection>;

/// The upstream connections of one worker thread: bounded, round robin over the servers, keep-alive
/// reuse (most recently used first), a bounded FIFO of waiters. Use from its io_context's thread only,
/// except the counters, which any thread may read.
///
/// Lifetime: the io_context outlives the pool. Every loaned connection goes back through release()
/// before the pool dies (dropping it instead is also fine). The pool may be destroyed while acquire()
/// calls are suspended (waiting in the queue, or connecting): they complete with shutting_down when the
/// io_context next runs, without touching the dead pool. Connections still on loan when the pool dies
/// must then be dropped, not released.
class pool {
 public:

  /// servers: resolved endpoints, at least one (throws std::invalid_argument otherwise).
  pool(net::io_context& ioc, pool_limits limits, std::vector<tcp::endpoint> servers);
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// A connection: an idle one (most recently used first; one idle for probe_idle_after or longer is
  /// probed with peer_closed() and closed when the upstream closed it or sent bytes unasked), else a new
  /// one when busy + idle < max_connections, else waits in the FIFO queue for at most queue_timeout.
  /// fresh_only skips idle connections (the retry after a stale one), closing an idle one to make room
  /// when at the bound. Completes with pool_errc on failure. New connections have TCP_NODELAY set and
  /// are in non-blocking mode (synchronous writes return would_block instead of blocking).
  [[nodiscard]] net::awaitable<std::tuple<error_code, connection_ptr>> acquire(bool fresh_only = false);
  /// acquire()'s fast path without a coroutine: the most recently used idle connection, now on loan, or
  /// null (none idle, or shut down), in which case acquire() decides. now: the caller's recent clock
  /// reading, for the idle-age probe (see acquire()).
  [[nodiscard]] connection_ptr try_acquire_idle(std::chrono::steady_clock::time_point now);
  /// Gives a connection back. reusable=false (or shutting down, or max_idle reached, or over a lowered
  /// bound, or unread bytes left in `buffer`) closes it and frees its slot; the oldest waiter, if any, gets
  /// the connection or the slot.
  void release(connection_ptr conn, bool reusable);

  /// Applies reloaded settings and servers (at least one) from now on: idle connections to removed servers
  /// and idle ones over the new bounds are closed now, loaned ones over the bound when released.
  void reconfigure(pool_limits limits, std::vector<tcp::endpoint> servers);
  /// Drain: closes idle connections, fails waiters with shutting_down, cancels connects in progress, and
  /// closes connections as they are released; later acquire() calls fail with shutting_down at once.
  /// Cancels the pool's timer, so its io_context runs out of work once the loans are back. Idempotent.
  void shutdown();

  /// Counters for metrics; readable from any thread.
  [[nodiscard]] std::size_t busy() const { return busy_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t idle() const { return idle_count_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t waiting() const { return waiting_.load(std::memory_order_relaxed); }

 private:
  struct impl;
  struct waiter;
  friend struct connection;
  // shared so suspended acquire() calls and the idle sweep can tell (weak_ptr) that the pool has died.
  std::shared_ptr<impl> impl_;
  // One writer (the pool's thread), so plain load+store, not read-modify-write.
  std::atomic<std::size_t> busy_{0};  ///< on loan, connecting, or a slot granted to a waiter
  std::atomic<std::size_t> idle_count_{0};
  std::atomic<std::size_t> waiting_{0};
};

/// True when the connection cannot safely carry a request: the peer closed or reset it, or sent bytes
/// nobody asked for (an idle HTTP/1.1 connection is silent). Non-blocking recv(MSG_PEEK); one syscall.
/// Call before sending a non-idempotent request on a reused connection. Use from the pool's thread.
[[nodiscard]] bool peer_closed(connection& conn);

/// Splits a process-wide bound over `workers` pools so the sum never exceeds `total`; pool i gets
/// total / workers, plus one for the first total % workers pools. workers = 0 counts as 1. Pure.
[[nodiscard]] std::size_t share_of(std::size_t total, unsigned workers, unsigned index);

}  // namespace sluice::upstream

namespace boost::system {
template <>
struct is_error_code_enum<sluice::upstream::pool_errc> : std::true_type {};
}  // namespace boost::system
