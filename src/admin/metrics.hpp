#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::admin {

/// sluice_requests_total{outcome}.
enum class outcome : unsigned { forwarded, limited, error, count_ };

/// Why a request got no upstream answer: sluice_upstream_errors_total{kind}.
enum class upstream_error : unsigned {
  connect_refused,   ///< connect failed (refused, unreachable) -> 502
  connect_timeout,   ///< connect_timeout passed -> 502
  reset,             ///< upstream closed or reset mid-exchange -> 502
  bad_response,      ///< upstream sent something that is not HTTP -> 502
  response_timeout,  ///< response_timeout passed -> 504
  queue_timeout,     ///< no connection slot within queue_timeout -> 503
  queue_full,        ///< max_queue waiters already -> 503
  retried,           ///< a stale pooled connection was replaced and the request sent again (not an answer)
  count_
};

/// A monotonically increasing counter written by one worker thread and read by the scraper.
/// Writer: its owner thread only (plain load+store, no locked RMW). Reader: any thread.
class relaxed_counter {
 public:
  void add(std::uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

/// A gauge written by one worker thread (inc/dec) and read by the scraper. Same threading as relaxed_counter.
class relaxed_gauge {
 public:
  void inc() { v_.store(v_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
  void dec() { v_.store(v_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

/// Histogram bucket upper bounds in seconds, shared by every histogram sluice exports.
inline constexpr std::array<double, 14> histogram_bounds_seconds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30};

/// A latency histogram written by one worker thread. Same threading as relaxed_counter.
class relaxed_histogram {
 public:
  /// Records one observation.
  void observe(std::chrono::nanoseconds d);
  /// Cumulative count of observations <= histogram_bounds_seconds[i]; i == bounds size is +Inf.
  [[nodiscard]] std::uint64_t cumulative(std::size_t i) const;
  /// Observations in bucket i alone (not cumulative); i == bounds size is the overflow bucket.
  [[nodiscard]] std::uint64_t bucket(std::size_t i) const { return buckets_[i].get(); }
  /// All observations; the sum of the buckets, so it always equals the +Inf bucket.
  [[nodiscard]] std::uint64_t count() const { return cumulative(histogram_bounds_seconds.size()); }
  /// Sum of observed durations in seconds.
  [[nodiscard]] double sum_seconds() const { return static_cast<double>(sum_ns_.get()) / 1e9; }
  /// Sum of observed durations in nanoseconds.
  [[nodiscard]] std::uint64_t sum_ns() const { return sum_ns_.get(); }

 private:
  // No separate count: it is the bucket sum, which saves a store per observation and keeps a scrape's
  // +Inf bucket and _count equal even while the owner thread writes.
  std::array<relaxed_counter, histogram_bounds_seconds.size() + 1> buckets_;  // non-cumulative
  relaxed_counter sum_ns_;
};

/// Everything one worker thread counts. Written only by that thread; cache-line aligned so two
/// workers never share a line. Read by the scraper.
struct alignas(64) worker_metrics {
  std::array<relaxed_counter, static_cast<unsigned>(outcome::count_)> requests;
  std::array<relaxed_counter, static_cast<unsigned>(upstream_error::count_)> upstream_errors;
  std::array<relaxed_counter, 6> responses_by_class;  ///< index = status / 100 (1xx..5xx), 0 unused
  relaxed_histogram request_duration;  ///< accept of the head to last byte written
  relaxed_histogram upstream_duration; ///< request sent to response head received
  relaxed_histogram pool_wait;         ///< time waiting for an upstream connection
  relaxed_gauge client_connections;
  relaxed_counter client_connections_total;  ///< accepted
  relaxed_counter bad_requests;              ///< 400/413/431 sent by sluice
  relaxed_counter access_log_dropped;        ///< access log lines this worker dropped itself (the async
                                             ///< queue's own drops come in process_gauges)

  /// Counts one finished request.
  void count_request(outcome o, unsigned status, std::chrono::nanoseconds duration) {
    requests[static_cast<unsigned>(o)].add();
    if (status >= 100 && status < 600) responses_by_class[status / 100].add();
    request_duration.observe(duration);
  }
};

/// Per-limit counter with one padded slot per worker thread (sluice_rate_limited_total{limit}).
class limit_counter {
 public:
  /// A counter with one slot per worker (workers >= 1).
  explicit limit_counter(std::string name, unsigned workers);
  /// Adds one from worker `worker`. Use only from that worker's thread.
  void add(unsigned worker) { slots_[worker].value.add(); }
  /// Sum over workers. Thread-safe.
  [[nodiscard]] std::uint64_t total() const;
  /// The limit name. Immutable.
  [[nodiscard]] const std::string& name() const { return name_; }

 private:
  struct alignas(64) slot { relaxed_counter value; };
  std::string name_;
  unsigned workers_;
  std::unique_ptr<slot[]> slots_;
};

/// Gauges owned by other components (pools, limiter table, server), sampled at scrape time.
struct process_gauges {
  std::uint64_t upstream_busy = 0;
  std::uint64_t upstream_idle = 0;
  std::uint64_t upstream_queue_waiting = 0;
  std::uint64_t tracked_keys = 0;
  std::uint64_t evictions_lossless = 0;
  std::uint64_t evictions_lossy = 0;
  std::uint64_t config_generation = 0;
  std::uint64_t reloads_ok = 0;
  std::uint64_t reloads_failed = 0;
  std::uint64_t access_log_dropped = 0;  ///< log::access_log_dropped(): lines the async queue overran
  bool draining = false;
};

/// The process's metrics: per-worker blocks plus per-limit counters. The hot path only touches its own
/// worker's block. Thread-safe as documented per member.
class metrics {
 public:
  /// workers >= 1 blocks; also records the process start time (now, wall clock).
  explicit metrics(unsigned workers);

  /// The block of worker `index` (0-based). Write only from that worker's thread.
  [[nodiscard]] worker_metrics& worker(unsigned index) { return workers_[index]; }
  [[nodiscard]] unsigned worker_count() const { return worker_count_; }

  /// The rejection counter for a limit name, created on first use and kept for the process's life
  /// (so counts survive reloads). Stable reference. Thread-safe; control plane only (takes a lock).
  [[nodiscard]] limit_counter& rate_limited(std::string_view limit_name);
  /// The dry-run would-be-rejection counter for a limit name. Same rules as rate_limited().
  [[nodiscard]] limit_counter& dry_run_rejected(std::string_view limit_name);

  /// Prometheus text exposition format 0.0.4 of everything. Thread-safe.
  [[nodiscard]] std::string render_prometheus(const process_gauges& gauges) const;

 private:
  unsigned worker_count_;
  double start_time_seconds_;  ///< Unix time of construction, for sluice_start_time_seconds
  std::unique_ptr<worker_metrics[]> workers_;
  mutable std::mutex limits_mutex_;
  std::deque<limit_counter> rate_limited_;
  std::deque<limit_counter> dry_run_;
};

}  // namespace sluice::admin
