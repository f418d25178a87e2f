#include "server/server.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "log/logging.hpp"

namespace sluice::server {

namespace {

// threads: 0 means one per core; never more workers than upstream connections, or a worker's pool
// share would be zero and every request it takes would wait for a slot that never comes.
unsigned effective_threads(const config::config& c) {
  unsigned n = c.threads != 0 ? c.threads : std::max(1u, std::thread::hardware_concurrency());
  const auto cap = std::max<std::size_t>(1, c.upstream.max_connections);
  return static_cast<unsigned>(std::min<std::size_t>(n, cap));
}

}  // namespace

std::size_t server_stats::sessions() const {
  std::size_t n = 0;
  for (const auto& w : workers) n += w.sessions;
  return n;
}

std::size_t server_stats::coroutines() const {
  std::size_t n = 0;
  for (const auto& w : workers) n += w.coroutines;
  return n;
}

std::size_t server_stats::timers() const {
  std::size_t n = 0;
  for (const auto& w : workers) n += w.timers;
  return n;
}

server::server(config::config settings)
    : table_(settings.max_tracked_keys), metrics_(effective_threads(settings)) {
  const unsigned n = effective_threads(settings);
  runtime_ = proxy::make_runtime(std::move(settings), table_, metrics_, 1);
  workers_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    // With port 0 the first worker picks the port and the others join it (SO_REUSEPORT).
    const std::uint16_t port = i == 0 ? runtime_->settings.listen.port : port_;
    workers_.push_back(std::make_unique<worker>(i, n, runtime_, metrics_, port));
    if (i == 0) port_ = workers_.front()->port();
  }
}

server::~server() {
  if (!started_) return;
  begin_drain();
  wait(std::chrono::seconds(2));
}

void server::start() {
  std::lock_guard lock(mutex_);
  if (started_) return;
  started_ = true;
  running_ = static_cast<unsigned>(workers_.size());
  for (auto& w : workers_) w->start();
  for (auto& w : workers_) {
    threads_.emplace_back([this, wp = w.get()] {
      wp->run();
      note_worker_done();
    });
  }
}

void server::note_worker_done() {
  std::lock_guard lock(mutex_);
  --running_;
  done_cv_.notify_all();
}

void server::reload(config::config settings) {
  auto current = this->current();
  if (settings.listen.host != current->settings.listen.host || settings.listen.port != current->settings.listen.port) {
    log::events()->warn("reload cannot change listen (still {}); restart to apply {}", current->settings.listen.text,
                        settings.listen.text);
  }
  if (settings.threads != current->settings.threads) {
    log::events()->warn("reload cannot change threads; restart to apply threads={}", settings.threads);
  }
  // Kept as they are: the acceptors are bound and the workers run.
  settings.listen = current->settings.listen;
  settings.threads = current->settings.threads;

  std::shared_ptr<const proxy::runtime> next;
  try {
    next = proxy::make_runtime(settings, table_, metrics_, current->generation + 1);
  } catch (...) {
    reloads_failed_.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  table_.set_max_keys(next->settings.max_tracked_keys);
  log::apply_log_settings(next->settings.log);
  {
    std::lock_guard lock(mutex_);
    runtime_ = next;
  }
  for (auto& w : workers_) w->post_reload(next);
  reloads_ok_.fetch_add(1, std::memory_order_relaxed);
}

void server::announce_drain() { draining_.store(true, std::memory_order_relaxed); }

void server::begin_drain() {
  draining_.store(true, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  if (drain_begun_) return;
  drain_begun_ = true;
  for (auto& w : workers_) w->post_drain();
}

drain_result server::wait(std::chrono::nanoseconds timeout) {
  drain_result result;
  std::unique_lock lock(mutex_);
  if (!done_cv_.wait_for(lock, timeout, [&] { return running_ == 0; })) {
    result.completed = false;
    for (auto& w : workers_) {
      const auto s = w->stats();
      result.sessions_cut += s.sessions;
      result.upstream_cut += s.upstream_busy;
      w->post_force_close();
    }
    // Closing every socket ends every coroutine; should one still hang, stop its io_context.
    if (!done_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return running_ == 0; })) {
      log::events()->error("workers still busy after forced close; stopping them");
      for (auto& w : workers_) w->stop();
    }
  }
  auto threads = std::move(threads_);
  threads_.clear();
  lock.unlock();
  for (auto& t : threads) {
    if (t.joinable()) t.join();
  }
  return result;
}

server_stats server::stats() const {
  server_stats s;
  s.workers.reserve(workers_.size());
  for (const auto& w : workers_) s.workers.push_back(w->stats());
  return s;
}

admin::process_gauges server::gauges() const {
  admin::process_gauges g;
  for (const auto& w : workers_) {
    g.upstream_busy += w->pool().busy();
    g.upstream_idle += w->pool().idle();
    g.upstream_queue_waiting += w->pool().waiting();
  }
  g.tracked_keys = table_.size();
  g.evictions_lossless = table_.lossless_evictions();
  g.evictions_lossy = table_.lossy_evictions();
  g.config_generation = current()->generation;
  g.reloads_ok = reloads_ok_.load(std::memory_order_relaxed);
  g.reloads_failed = reloads_failed_.load(std::memory_order_relaxed);
  g.access_log_dropped = log::access_log_dropped();
  g.draining = draining();
  return g;
}

std::shared_ptr<const proxy::runtime> server::current() const {
  std::lock_guard lock(mutex_);
  return runtime_;
}

}  // namespace sluice::server
