#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "admin/metrics.hpp"
#include "config/config.hpp"
#include "limiter/bucket_table.hpp"
#include "proxy/runtime.hpp"
#include "server/worker.hpp"

namespace sluice::server {

/// Live counts of every worker. Plain value.
struct server_stats {
  std::vector<worker_stats> workers;
  /// Client connections open, all workers.
  [[nodiscard]] std::size_t sessions() const;
  /// Coroutines alive (sessions and accept loops), all workers.
  [[nodiscard]] std::size_t coroutines() const;
  /// Accept-loop timers armed, all workers.
  [[nodiscard]] std::size_t timers() const;
};

/// What wait() found. Plain value.
struct drain_result {
  bool completed = true;          ///< everything ended within the timeout
  std::size_t sessions_cut = 0;   ///< client connections closed by force when the timeout passed
  std::size_t upstream_cut = 0;   ///< upstream connections on loan at that moment
};

/// The proxy process: the workers and their threads, the shared bucket table, the metrics and the
/// current runtime. The control functions (start, reload, drain, wait) are for one control thread;
/// stats(), draining(), port() and gauges() may be called from any thread.
class server {
 public:
  /// Builds the runtime (resolving upstreams) and binds one acceptor per worker. Throws
  /// std::runtime_error with a clear message ("listen 0.0.0.0:8080: address already in use").
  explicit server(config::config settings);
  /// Drains (briefly) and joins whatever still runs.
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Starts the worker threads. Call once.
  void start();
  /// The bound listen port (useful with port 0).
  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// Number of worker threads.
  [[nodiscard]] unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }

  /// Applies a new config for new requests without dropping connections: limiter rebuilt over the same
  /// buckets, upstream pools reconfigured, log settings applied. listen and threads cannot change (a
  /// warning says so). Throws (and changes nothing) when the runtime cannot be built.
  void reload(config::config settings);
  /// Counts a reload whose file was rejected before reload() could run (it did not validate), so
  /// sluice_config_reloads_total{result="error"} counts every failed reload. Thread-safe.
  void count_rejected_reload() { reloads_failed_.fetch_add(1, std::memory_order_relaxed); }

  /// Marks the server draining (readyz turns 503) while it keeps accepting (drain.delay). Thread-safe.
  void announce_drain();
  /// Stops accepting (acceptors close), closes idle keep-alive connections, lets busy ones finish their
  /// request with Connection: close; pools shut once their loans return. Idempotent.
  void begin_drain();
  /// Waits until every worker ran out of work and joins the threads; when timeout passes first, closes
  /// what is left by force and reports what was cut. Call after begin_drain().
  drain_result wait(std::chrono::nanoseconds timeout);

  /// True once announce_drain() or begin_drain() was called. Thread-safe.
  [[nodiscard]] bool draining() const { return draining_.load(std::memory_order_relaxed); }
  /// Live counts per worker. Thread-safe.
  [[nodiscard]] server_stats stats() const;
  /// The metrics registry (render_prometheus is thread-safe).
  [[nodiscard]] admin::metrics& metrics() { return metrics_; }
  /// The gauges sampled at scrape time. Thread-safe.
  [[nodiscard]] admin::process_gauges gauges() const;
  /// The current runtime. Thread-safe.
  [[nodiscard]] std::shared_ptr<const proxy::runtime> current() const;

 private:
  void note_worker_done();

  limiter::bucket_table table_;
  admin::metrics metrics_;
  mutable std::mutex mutex_;  ///< guards runtime_, running_, threads_ (control plane only)
  std::condition_variable done_cv_;
  std::shared_ptr<const proxy::runtime> runtime_;
  std::vector<std::unique_ptr<worker>> workers_;
  std::vector<std::thread> threads_;
  unsigned running_ = 0;
  std::uint16_t port_ = 0;
  std::atomic<bool> draining_{false};
  std::atomic<std::uint64_t> reloads_ok_{0};
  std::atomic<std::uint64_t> reloads_failed_{0};
  bool drain_begun_ = false;
  bool started_ = false;
};

}  // namespace sluice::server
