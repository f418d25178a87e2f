#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

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
  std::size_t max_queue = 1024;       ///< acquire() calls waiting at once
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(2);
  std::chrono::nanoseconds queue_timeout = std::chrono::seconds(1);
};

/// One upstream connection on loan to a request. The session reads and writes `stream` directly.
struct connection {
  explicit connection(net::io_context& ioc) : stream(ioc) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;        ///< response read buffer, kept with the connection (reused)
  std::size_t server_index = 0;     ///< which of `servers` it goes to
  std::uint64_t requests = 0;       ///< requests completed on it (0 = fresh)
  std::chrono::steady_clock::time_point idle_since{};
};
using connection_ptr = std::unique_ptr<connection>;

/// The upstream connections of one worker thread: bounded, round robin over the servers, keep-alive
/// reuse. Use from its io_context's thread only, except the counters, which any thread may read.
class pool {
 public:
  /// servers: resolved endpoints, at least one.
  pool(net::io_context& ioc, pool_limits limits, std::vector<tcp::endpoint> servers);
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// A connection: an idle one (most recently used first), else a new one when under max_connections,
  /// else waits in the queue. fresh_only skips idle connections (the retry after a stale one).
  /// Completes with pool_errc on failure.
  [[nodiscard]] net::awaitable<std::tuple<error_code, connection_ptr>> acquire(bool fresh_only = false);
  /// Gives a connection back. reusable=false (or shutting down, or max_idle reached) closes it and frees
  /// its slot; a waiter, if any, gets the connection or the slot.
  void release(connection_ptr conn, bool reusable);

  /// Applies reloaded settings and servers; existing idle connections to removed servers are closed.
  void reconfigure(pool_limits limits, std::vector<tcp::endpoint> servers);
  /// Drain: closes idle connections, fails waiters with shutting_down, and closes connections as they are
  /// released. Cancels the pool's timers so its io_context can run out of work.
  void shutdown();

  /// Counters for metrics; readable from any thread.
  [[nodiscard]] std::size_t busy() const { return busy_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t idle() const { return idle_count_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t waiting() const { return waiting_.load(std::memory_order_relaxed); }

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::atomic<std::size_t> busy_{0};  ///< on loan or connecting
  std::atomic<std::size_t> idle_count_{0};
  std::atomic<std::size_t> waiting_{0};
};

/// Splits a process-wide bound over `workers` pools so the sum never exceeds `total`; pool i gets
/// total / workers, plus one for the first total % workers pools.
[[nodiscard]] std::size_t share_of(std::size_t total, unsigned workers, unsigned index);

}  // namespace sluice::upstream

namespace boost::system {
template <>
struct is_error_code_enum<sluice::upstream::pool_errc> : std::true_type {};
}  // namespace boost::system
