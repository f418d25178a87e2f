#include "admin/metrics.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

#include <fmt/format.h>

namespace sluice::admin {

namespace {

constexpr std::size_t bucket_count = histogram_bounds_seconds.size();

// Integer nanosecond bounds so observe() compares integers; le is inclusive in Prometheus.
constexpr auto bounds_ns = [] {
  std::array<std::int64_t, bucket_count> out{};
  for (std::size_t i = 0; i < bucket_count; ++i) {
    out[i] = static_cast<std::int64_t>(histogram_bounds_seconds[i] * 1e9 + 0.5);
  }
  return out;
}();

// Label values sorted as the exposition shows them (alphabetical by label value).
constexpr std::array<std::pair<outcome, std::string_view>, 3> outcome_labels = {{
    {outcome::error, "error"}, {outcome::forwarded, "forwarded"}, {outcome::limited, "limited"}}};

constexpr std::array<std::pair<upstream_error, std::string_view>, 8> upstream_error_labels = {{
    {upstream_error::bad_response, "bad_response"},
    {upstream_error::connect_refused, "connect_refused"},
    {upstream_error::connect_timeout, "connect_timeout"},
    {upstream_error::queue_full, "queue_full"},
    {upstream_error::queue_timeout, "queue_timeout"},
    {upstream_error::reset, "reset"},
    {upstream_error::response_timeout, "response_timeout"},
    {upstream_error::retried, "retried"},
}};
static_assert(upstream_error_labels.size() == static_cast<std::size_t>(upstream_error::count_),
              "every upstream_error needs a label");

using out_buffer = fmt::memory_buffer;

/// Appends a label value escaped per the text format: backslash, double quote and line feed.
void append_label_value(out_buffer& out, std::string_view value) {
  for (const char c : value) {
    switch (c) {
      case '\\': out.append(std::string_view("\\\\")); break;
      case '"': out.append(std::string_view("\\\"")); break;
      case '\n': out.append(std::string_view("\\n")); break;
      default: out.push_back(c);
    }
  }
}

void header(out_buffer& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <class T>
void sample(out_buffer& out, std::string_view name, T value) {
  fmt::format_to(std::back_inserter(out), "{} {}\n", name, value);
}

template <class T>
void sample(out_buffer& out, std::string_view name, std::string_view label, std::string_view label_value,
            T value) {
  fmt::format_to(std::back_inserter(out), "{}{{{}=\"", name, label);
  append_label_value(out, label_value);
  fmt::format_to(std::back_inserter(out), "\"}} {}\n", value);
}

/// Bucket-wise sum of one histogram over all workers, taken once so every line of a family agrees.
struct histogram_snapshot {
  std::array<std::uint64_t, bucket_count + 1> buckets{};  // non-cumulative
  std::uint64_t sum_ns = 0;
};

void render_histogram(out_buffer& out, std::string_view name, std::string_view help,
                      const histogram_snapshot& h) {
  header(out, name, "histogram", help);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    cumulative += h.buckets[i];
    fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"{}\"}} {}\n", name, histogram_bounds_seconds[i],
                   cumulative);
  }
  cumulative += h.buckets[bucket_count];
  fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  fmt::format_to(std::back_inserter(out), "{}_sum {}\n", name, static_cast<double>(h.sum_ns) / 1e9);
  fmt::format_to(std::back_inserter(out), "{}_count {}\n", name, cumulative);
}

void add_into(histogram_snapshot& into, const relaxed_histogram& h) {
  for (std::size_t i = 0; i <= bucket_count; ++i) into.buckets[i] += h.bucket(i);
  into.sum_ns += h.sum_ns();
}

using limit_totals = std::vector<std::pair<std::string, std::uint64_t>>;

limit_totals snapshot_limits(const std::deque<limit_counter>& counters) {
  limit_totals out;
  out.reserve(counters.size());
  for (const auto& c : counters) out.emplace_back(c.name(), c.total());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void relaxed_histogram::observe(std::chrono::nanoseconds d) {
  const std::int64_t ns = std::max<std::int64_t>(d.count(), 0);
  std::size_t i = 0;
  while (i < bucket_count && ns > bounds_ns[i]) ++i;
  buckets_[i].add();
  sum_ns_.add(static_cast<std::uint64_t>(ns));
}

std::uint64_t relaxed_histogram::cumulative(std::size_t i) const {
  std::uint64_t total = 0;
  for (std::size_t b = 0; b <= i && b <= bucket_count; ++b) total += buckets_[b].get();
  return total;
}

limit_counter::limit_counter(std::string name, unsigned workers)
    : name_(std::move(name)), workers_(std::max(workers, 1U)), slots_(std::make_unique<slot[]>(workers_)) {}

std::uint64_t limit_counter::total() const {
  std::uint64_t sum = 0;
  for (unsigned w = 0; w < workers_; ++w) sum += slots_[w].value.get();
  return sum;
}

metrics::metrics(unsigned workers)
    : worker_count_(std::max(workers, 1U)),
      start_time_seconds_(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()),
      workers_(std::make_unique<worker_metrics[]>(worker_count_)) {}

namespace {

limit_counter& find_or_add(std::deque<limit_counter>& counters, std::string_view name, unsigned workers) {
  for (auto& c : counters) {
    if (c.name() == name) return c;
  }
  return counters.emplace_back(std::string(name), workers);
}

}  // namespace

limit_counter& metrics::rate_limited(std::string_view limit_name) {
  const std::lock_guard lock(limits_mutex_);
  return find_or_add(rate_limited_, limit_name, worker_count_);
}

limit_counter& metrics::dry_run_rejected(std::string_view limit_name) {
  const std::lock_guard lock(limits_mutex_);
  return find_or_add(dry_run_, limit_name, worker_count_);
}

std::string metrics::render_prometheus(const process_gauges& gauges) const {
  std::array<std::uint64_t, static_cast<std::size_t>(outcome::count_)> requests{};
  std::array<std::uint64_t, static_cast<std::size_t>(upstream_error::count_)> upstream_errors{};
  std::array<std::uint64_t, 6> responses{};
  histogram_snapshot request_duration;
  histogram_snapshot upstream_duration;
  histogram_snapshot pool_wait;
  std::int64_t client_connections = 0;
  std::uint64_t client_connections_total = 0;
  std::uint64_t bad_requests = 0;
  std::uint64_t access_log_dropped = gauges.access_log_dropped;
  for (unsigned w = 0; w < worker_count_; ++w) {
    const worker_metrics& m = workers_[w];
    for (std::size_t i = 0; i < requests.size(); ++i) requests[i] += m.requests[i].get();
    for (std::size_t i = 0; i < upstream_errors.size(); ++i) upstream_errors[i] += m.upstream_errors[i].get();
    for (std::size_t i = 0; i < responses.size(); ++i) responses[i] += m.responses_by_class[i].get();
    add_into(request_duration, m.request_duration);
    add_into(upstream_duration, m.upstream_duration);
    add_into(pool_wait, m.pool_wait);
    client_connections += m.client_connections.get();
    client_connections_total += m.client_connections_total.get();
    bad_requests += m.bad_requests.get();
    access_log_dropped += m.access_log_dropped.get();
  }
  limit_totals limited;
  limit_totals dry_run;
  {
    // Only the copy happens under the lock; formatting is done after it is released.
    const std::lock_guard lock(limits_mutex_);
    limited = snapshot_limits(rate_limited_);
    dry_run = snapshot_limits(dry_run_);
  }

  out_buffer out;
  header(out, "sluice_requests_total", "counter", "Finished client requests by outcome.");
  for (const auto& [o, label] : outcome_labels) {
    sample(out, "sluice_requests_total", "outcome", label, requests[static_cast<std::size_t>(o)]);
  }
  header(out, "sluice_rate_limited_total", "counter", "Requests rejected with 429, by the limit that rejected them.");
  for (const auto& [name, total] : limited) sample(out, "sluice_rate_limited_total", "limit", name, total);
  header(out, "sluice_dry_run_rejected_total", "counter",
         "Requests a dry-run limit would have rejected (they were forwarded).");
  for (const auto& [name, total] : dry_run) sample(out, "sluice_dry_run_rejected_total", "limit", name, total);
  header(out, "sluice_responses_total", "counter", "Responses sent to clients by status class.");
  for (std::size_t c = 1; c < responses.size(); ++c) {
    const char label[] = {static_cast<char>('0' + c), 'x', 'x'};
    sample(out, "sluice_responses_total", "code_class", std::string_view(label, sizeof label), responses[c]);
  }
  header(out, "sluice_bad_requests_total", "counter", "Requests answered 400, 413 or 431 by sluice itself.");
  sample(out, "sluice_bad_requests_total", bad_requests);
  render_histogram(out, "sluice_request_duration_seconds",
                   "Time from a complete request head to the last response byte written.", request_duration);

  header(out, "sluice_client_connections", "gauge", "Client connections open now.");
  sample(out, "sluice_client_connections", client_connections);
  header(out, "sluice_client_connections_accepted_total", "counter", "Client connections accepted.");
  sample(out, "sluice_client_connections_accepted_total", client_connections_total);

  header(out, "sluice_upstream_connections", "gauge", "Upstream connections by state.");
  sample(out, "sluice_upstream_connections", "state", "busy", gauges.upstream_busy);
  sample(out, "sluice_upstream_connections", "state", "idle", gauges.upstream_idle);
  header(out, "sluice_upstream_queue_waiting", "gauge", "Requests waiting for an upstream connection slot.");
  sample(out, "sluice_upstream_queue_waiting", gauges.upstream_queue_waiting);
  header(out, "sluice_upstream_errors_total", "counter", "Upstream failures by kind.");
  for (const auto& [e, label] : upstream_error_labels) {
    sample(out, "sluice_upstream_errors_total", "kind", label, upstream_errors[static_cast<std::size_t>(e)]);
  }
  render_histogram(out, "sluice_upstream_response_duration_seconds",
                   "Time from request sent upstream to response head received.", upstream_duration);
  render_histogram(out, "sluice_upstream_pool_wait_seconds", "Time waiting for an upstream connection.",
                   pool_wait);

  header(out, "sluice_tracked_keys", "gauge", "Rate limit buckets held.");
  sample(out, "sluice_tracked_keys", gauges.tracked_keys);
  header(out, "sluice_evictions_total", "counter",
         "Buckets evicted: lossless (full, no decision changes) or lossy (least recently used).");
  sample(out, "sluice_evictions_total", "kind", "lossless", gauges.evictions_lossless);
  sample(out, "sluice_evictions_total", "kind", "lossy", gauges.evictions_lossy);

  header(out, "sluice_access_log_dropped_total", "counter", "Access log lines dropped because the queue was full.");
  sample(out, "sluice_access_log_dropped_total", access_log_dropped);
  header(out, "sluice_config_generation", "gauge", "Configuration generation in use (1 = the file read at start).");
  sample(out, "sluice_config_generation", gauges.config_generation);
  header(out, "sluice_config_reloads_total", "counter", "Configuration reloads by result.");
  sample(out, "sluice_config_reloads_total", "result", "error", gauges.reloads_failed);
  sample(out, "sluice_config_reloads_total", "result", "ok", gauges.reloads_ok);
  header(out, "sluice_draining", "gauge", "1 while draining after SIGTERM or SIGINT, else 0.");
  sample(out, "sluice_draining", gauges.draining ? 1 : 0);
  header(out, "sluice_build_info", "gauge", "Build information; the value is always 1.");
  sample(out, "sluice_build_info", "version", SLUICE_VERSION, 1);
  header(out, "sluice_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.");
  fmt::format_to(std::back_inserter(out), "sluice_start_time_seconds {:.3f}\n", start_time_seconds_);
  return fmt::to_string(out);
}

}  // namespace sluice::admin
