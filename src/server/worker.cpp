#include "server/worker.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>

#include <sys/socket.h>

#include <boost/asio/ip/v6_only.hpp>
#include <spdlog/spdlog.h>

#include "log/logging.hpp"

namespace sluice::server {

namespace {

using reuse_port = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

constexpr auto accept_backoff = std::chrono::milliseconds(100);

[[noreturn]] void throw_listen_error(const config::endpoint& ep, const error_code& ec) {
  auto reason = ec.message();
  if (!reason.empty()) reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
  throw std::runtime_error("listen " + ep.text + ": " + reason);
}

tcp::endpoint listen_endpoint(const config::endpoint& ep, std::uint16_t port) {
  error_code ec;
  auto addr = net::ip::make_address(ep.host, ec);
  if (!ec) return {addr, port};
  // A name (e.g. "localhost"): resolved once at start-up, first address wins.
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(ep.host, std::to_string(port), ec);
  if (ec || results.empty()) throw_listen_error(ep, ec ? ec : net::error::host_not_found);
  return tcp::endpoint(results.begin()->endpoint().address(), port);
}

}  // namespace

upstream::pool_limits pool_limits_for(const config::upstream_settings& u, unsigned count, unsigned index) {
  upstream::pool_limits l;
  l.max_connections = upstream::share_of(u.max_connections, count, index);
  l.max_idle = upstream::share_of(u.max_idle, count, index);
  l.max_queue = upstream::share_of(u.max_queue, count, index);
  l.idle_timeout = u.idle_timeout;
  l.connect_timeout = u.connect_timeout;
  l.queue_timeout = u.queue_timeout;
  return l;
}

worker::worker(unsigned index, unsigned count, std::shared_ptr<const proxy::runtime> rt, admin::metrics& m,
               std::uint16_t port)
    : index_(index),
      count_(count),
      work_(std::in_place, ioc_.get_executor()),
      pool_(std::make_unique<upstream::pool>(ioc_, pool_limits_for(rt->settings.upstream, count, index),
                                             rt->servers)),
      acceptor_(ioc_),
      backoff_timer_(ioc_),
      slot_timer_(ioc_),
      max_sessions_(std::max<std::size_t>(1, upstream::share_of(rt->settings.server.max_connections, count, index))),
      ctx_{ioc_, index, *pool_, m.worker(index), rt, false, {}, {}} {
  ctx_.spare_body_buffers.reserve(proxy::worker_context::max_spare_body_buffers);
  const auto& listen = rt->settings.listen;
  const auto ep = listen_endpoint(listen, port);
  error_code ec;
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  // Every worker binds the same address: the kernel spreads new connections over their acceptors.
  if (!ec) acceptor_.set_option(reuse_port(true), ec);
  if (!ec && ep.address().is_v6()) acceptor_.set_option(net::ip::v6_only(false), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw_listen_error(listen, ec);
  port_ = acceptor_.local_endpoint().port();
}

worker::~worker() {
  // Normally run() returned with nothing left. After stop() (or a worker never run), sessions may still
  // be suspended: close everything and let their coroutines finish before the members they use go.
  error_code ec;
  acceptor_.close(ec);
  backoff_timer_.cancel();
  slot_timer_.cancel();
  ctx_.draining = true;
  for (auto& s : ctx_.sessions) s.force_close();
  pool_->shutdown();
  work_.reset();
  ioc_.restart();
  ioc_.run_for(std::chrono::seconds(2));
}

void worker::start() {
  bump(accept_running_, 1);
  net::co_spawn(ioc_, accept_loop(), [this](std::exception_ptr e) {
    bump(accept_running_, -1);
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::events()->error("accept loop ended worker={} error={}", index_, ex.what());
      }
    }
  });
}

void worker::run() { ioc_.run(); }

net::awaitable<void> worker::accept_loop() {
  for (;;) {
    if (ctx_.draining) co_return;
    if (live_sessions_.load(std::memory_order_relaxed) >= max_sessions_) {
      // At this worker's share of max_connections: new connections wait in the kernel's backlog.
      waiting_for_slot_ = true;
      bump(timers_armed_, 1);
      slot_timer_.expires_at(net::steady_timer::time_point::max());
      co_await slot_timer_.async_wait(use_tuple);
      bump(timers_armed_, -1);
      waiting_for_slot_ = false;
      continue;
    }
    auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
    if (ec) {
      if (ctx_.draining || !acceptor_.is_open()) co_return;
      // EMFILE and friends: wait instead of spinning; the listener never stops on an accept error.
      log::events()->warn("accept failed worker={} error={}", index_, ec.message());
      bump(timers_armed_, 1);
      backoff_timer_.expires_after(accept_backoff);
      co_await backoff_timer_.async_wait(use_tuple);
      bump(timers_armed_, -1);
      continue;
    }
    auto s = std::make_unique<proxy::session>(ctx_, std::move(socket));
    bump(live_sessions_, 1);
    ctx_.metrics.client_connections.inc();
    ctx_.metrics.client_connections_total.add();
    net::co_spawn(ioc_, proxy::session::run(std::move(s)), [this](std::exception_ptr e) { on_session_end(e); });
  }
}

void worker::on_session_end(std::exception_ptr e) {
  bump(live_sessions_, -1);
  ctx_.metrics.client_connections.dec();
  if (e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::events()->error("session ended by exception worker={} error={}", index_, ex.what());
    }
  }
  if (waiting_for_slot_) slot_timer_.cancel();
  maybe_shutdown_pool();
}

void worker::maybe_shutdown_pool() {
  // The pool goes once its loans are back, i.e. when the last session has ended.
  if (ctx_.draining && !pool_shut_ && live_sessions_.load(std::memory_order_relaxed) == 0) {
    pool_shut_ = true;
    pool_->shutdown();
  }
}

void worker::post_reload(std::shared_ptr<const proxy::runtime> rt) {
  net::post(ioc_, [this, rt = std::move(rt)]() mutable {
    if (pool_shut_) return;
    pool_->reconfigure(pool_limits_for(rt->settings.upstream, count_, index_), rt->servers);
    ctx_.current = std::move(rt);
  });
}

void worker::post_drain() {
  net::post(ioc_, [this] {
    if (ctx_.draining) return;
    ctx_.draining = true;
    error_code ec;
    acceptor_.close(ec);
    backoff_timer_.cancel();
    slot_timer_.cancel();
    for (auto& s : ctx_.sessions) s.close_if_idle();
    maybe_shutdown_pool();
    work_.reset();
  });
}

void worker::post_force_close() {
  net::post(ioc_, [this] {
    ctx_.draining = true;
    error_code ec;
    acceptor_.close(ec);
    backoff_timer_.cancel();
    slot_timer_.cancel();
    for (auto& s : ctx_.sessions) s.force_close();
    pool_shut_ = true;
    pool_->shutdown();
    work_.reset();
  });
}

void worker::stop() { ioc_.stop(); }

worker_stats worker::stats() const {
  worker_stats s;
  s.sessions = live_sessions_.load(std::memory_order_relaxed);
  s.coroutines = s.sessions + accept_running_.load(std::memory_order_relaxed);
  s.timers = timers_armed_.load(std::memory_order_relaxed);
  s.upstream_busy = pool_->busy();
  s.upstream_idle = pool_->idle();
  s.upstream_waiting = pool_->waiting();
  return s;
}

}  // namespace sluice::server
