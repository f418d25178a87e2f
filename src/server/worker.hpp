#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>

#include "admin/metrics.hpp"
#include "net.hpp"
#include "proxy/runtime.hpp"
#include "proxy/session.hpp"
#include "upstream/pool.hpp"

namespace sluice::server {

/// Live counts of one worker, for tests and drain reports. Plain value.
struct worker_stats {
  std::size_t sessions = 0;    ///< client connections open
  std::size_t coroutines = 0;  ///< sessions plus the accept loop while it runs
  std::size_t timers = 0;      ///< the accept loop's backoff/slot timers while armed
  std::size_t upstream_busy = 0;
  std::size_t upstream_idle = 0;
  std::size_t upstream_waiting = 0;
};

/// The pool's share of the upstream settings for worker `index` of `count`.
[[nodiscard]] upstream::pool_limits pool_limits_for(const config::upstream_settings& u, unsigned count,
                                                    unsigned index);

/// One thread's share of the proxy: its own io_context (one thread, no locking of socket I/O), its own
/// SO_REUSEPORT acceptor, upstream pool and metrics block, and the sessions it accepted (a connection never
/// changes thread). Constructed and started on the control thread; run() on its own thread; the post_* calls and
/// stats() are thread-safe, everything else belongs to the worker's thread once run() started.
class worker {
 public:
  /// Binds the listen address (port = the first worker's bound port when that was 0). Throws
  /// std::runtime_error "listen ADDR: REASON" on failure.
  worker(unsigned index, unsigned count, std::shared_ptr<const proxy::runtime> rt, admin::metrics& m,
         std::uint16_t port);
  /// Closes whatever is left (only after an abnormal stop) before the io_context goes.
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  /// The bound port.
  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// Queues the accept loop; call once before run().
  void start();
  /// Runs the io_context on the calling thread until all work is done (after drain).
  void run();

  /// Sessions pick up rt at their next request; the pool is reconfigured. Thread-safe.
  void post_reload(std::shared_ptr<const proxy::runtime> rt);
  /// Stops accepting, closes idle sessions, lets busy ones finish, then shuts the pool. Thread-safe.
  void post_drain();
  /// Closes every session and upstream connection now (drain timeout). Thread-safe.
  void post_force_close();
  /// Last resort after a failed forced close: stops the io_context. Thread-safe.
  void stop();

  /// Live counts. Thread-safe.
  [[nodiscard]] worker_stats stats() const;
  /// The upstream pool's counters (thread-safe getters).
  [[nodiscard]] const upstream::pool& pool() const { return *pool_; }

 private:
  net::awaitable<void> accept_loop();
  void on_session_end(std::exception_ptr e);
  void maybe_shutdown_pool();
  static void bump(std::atomic<std::size_t>& a, long delta) {
    a.store(a.load(std::memory_order_relaxed) + static_cast<std::size_t>(delta), std::memory_order_relaxed);
  }

  unsigned index_;
  unsigned count_;
  // Only this worker's thread touches its sockets once run() started (other threads post to it), so the
  // reactor's per-descriptor locks are switched off; the scheduler keeps its lock for those posts.
  net::io_context ioc_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::unique_ptr<upstream::pool> pool_;
  tcp::acceptor acceptor_;
  net::steady_timer backoff_timer_;  ///< after an accept error
  net::steady_timer slot_timer_;     ///< waits for a session to end when at max_connections
  std::uint16_t port_ = 0;
  std::size_t max_sessions_;
  bool waiting_for_slot_ = false;
  bool pool_shut_ = false;
  proxy::worker_context ctx_;
  // Written only by the worker thread (load + store), read by any thread.
  std::atomic<std::size_t> live_sessions_{0};
  std::atomic<std::size_t> accept_running_{0};
  std::atomic<std::size_t> timers_armed_{0};
};

}  // namespace sluice::server
