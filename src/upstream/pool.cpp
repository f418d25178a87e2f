#include "upstream/pool.hpp"

#include <sys/socket.h>
#include <sys/types.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <stdexcept>
#include <string>
#include <utility>

namespace sluice::upstream {

namespace {

class pool_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "sluice.upstream.pool"; }
  std::string message(int ev) const override {
    switch (static_cast<pool_errc>(ev)) {
      case pool_errc::queue_full: return "upstream queue full";
      case pool_errc::queue_timeout: return "no upstream connection within queue_timeout";
      case pool_errc::connect_refused: return "upstream connection refused";
      case pool_errc::connect_timeout: return "upstream connect timed out";
      case pool_errc::shutting_down: return "upstream pool shutting down";
    }
    return "unknown upstream pool error";
  }
};

void add(std::atomic<std::size_t>& counter, std::size_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

void sub(std::atomic<std::size_t>& counter, std::size_t n) {
  assert(counter.load(std::memory_order_relaxed) >= n);
  counter.store(counter.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
}

void close_quietly(connection& conn) {
  // Closing an upstream connection has no error the pool could act on.
  error_code ignored;
  conn.stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  conn.stream.close();
}

enum class waiter_state { waiting, handed, granted, failed };

}  // namespace

const boost::system::error_category& pool_category() {
  static const pool_category_impl category;
  return category;
}

error_code make_error_code(pool_errc e) { return {static_cast<int>(e), pool_category()}; }

using acquire_result = std::tuple<error_code, connection_ptr>;

/// An acquire() waiting for a connection or a slot. Lives in the acquire() coroutine frame and is linked
/// into the pool's FIFO, so the queue never allocates. Whoever dequeues it sets `state` and wakes it by
/// cancelling `timer`; the waiter trusts `state`, not the timer's error, so a hand-over that races with
/// an expiry already queued is never lost.
struct pool::waiter {
  waiter(net::io_context& ioc, bool fresh) : timer(ioc), fresh_only(fresh) {}
  ~waiter();
  waiter(const waiter&) = delete;
  waiter& operator=(const waiter&) = delete;

  net::steady_timer timer;
  bool fresh_only;
  waiter_state state = waiter_state::waiting;
  connection_ptr conn;  ///< state handed
  error_code error;     ///< state failed
  waiter* prev = nullptr;
  waiter* next = nullptr;
  pool::impl* queued_in = nullptr;  ///< set while linked
};

struct pool::impl : std::enable_shared_from_this<pool::impl> {
  impl(pool& o, net::io_context& io, pool_limits l, std::vector<tcp::endpoint> s)
      : owner(o), ioc(io), limits(l), servers(std::move(s)), sweep_timer(io) {
    idle.reserve(limits.max_idle);
  }

  pool& owner;
  net::io_context& ioc;
  pool_limits limits;
  std::vector<tcp::endpoint> servers;
  std::size_t next_server = 0;
  std::vector<connection_ptr> idle;  ///< oldest first; back() is the most recently used
  waiter* head = nullptr;            ///< oldest waiter
  waiter* tail = nullptr;
  connection* loans = nullptr;       ///< connections connecting or on loan
  net::steady_timer sweep_timer;     ///< closes idle connections past idle_timeout; armed only while any
  bool sweep_armed = false;
  bool shut_down = false;

  std::size_t used() const { return owner.busy() + owner.idle(); }

  std::size_t index_of(const tcp::endpoint& ep) const {
    const auto it = std::find(servers.begin(), servers.end(), ep);
    return it == servers.end() ? servers.size() : static_cast<std::size_t>(it - servers.begin());
  }

  void lend(connection& conn) {
    conn.owner_ = &owner;
    conn.loan_prev_ = nullptr;
    conn.loan_next_ = loans;
    if (loans) loans->loan_prev_ = &conn;
    loans = &conn;
  }

  /// Takes a connection off the loan list and frees its slot.
  void unlend(connection& conn) {
    assert(conn.owner_ == &owner);
    if (conn.loan_prev_) {
      conn.loan_prev_->loan_next_ = conn.loan_next_;
    } else {
      loans = conn.loan_next_;
    }
    if (conn.loan_next_) conn.loan_next_->loan_prev_ = conn.loan_prev_;
    conn.loan_prev_ = conn.loan_next_ = nullptr;
    conn.owner_ = nullptr;
    sub(owner.busy_, 1);
  }

  void enqueue(waiter& w) {
    w.queued_in = this;
    w.prev = tail;
    w.next = nullptr;
    if (tail) {
      tail->next = &w;
    } else {
      head = &w;
    }
    tail = &w;
    add(owner.waiting_, 1);
  }

  void dequeue(waiter& w) {
    assert(w.queued_in == this);
    if (w.prev) {
      w.prev->next = w.next;
    } else {
      head = w.next;
    }
    if (w.next) {
      w.next->prev = w.prev;
    } else {
      tail = w.prev;
    }
    w.prev = w.next = nullptr;
    w.queued_in = nullptr;
    sub(owner.waiting_, 1);
  }

  void wake(waiter& w, waiter_state state) {
    dequeue(w);
    w.state = state;
    w.timer.cancel();
  }

  /// The most recently used idle connection, now on loan. One idle for limits.probe_idle_after or more is
  /// probed and closed when its peer closed it or spoke out of turn; younger ones are not (a syscall per
  /// request otherwise): the session retries an idempotent request whose connection turns out stale,
  /// and probes itself before a request it could not send again.
  connection_ptr take_idle(std::chrono::steady_clock::time_point now) {
    while (!idle.empty()) {
      connection_ptr conn = std::move(idle.back());
      idle.pop_back();
      sub(owner.idle_count_, 1);
      if (now - conn->idle_since >= limits.probe_idle_after && peer_closed(*conn)) {
        close_quietly(*conn);
        continue;
      }
      add(owner.busy_, 1);
      lend(*conn);
      disarm_if_no_idle();
      return conn;
    }
    disarm_if_no_idle();
    return nullptr;
  }

  void close_oldest_idle() {
    close_quietly(*idle.front());
    idle.erase(idle.begin());
    sub(owner.idle_count_, 1);
    disarm_if_no_idle();
  }

  /// Counts a slot for a new connection if the bound allows one. fresh_only may close idle connections
  /// (oldest first) to make room, since it cannot use them.
  bool reserve_slot(bool fresh_only) {
    while (fresh_only && !idle.empty() && used() >= limits.max_connections) close_oldest_idle();
    if (used() >= limits.max_connections) return false;
    add(owner.busy_, 1);
    return true;
  }

  /// Gives idle connections and free slots to waiters, oldest first, as far as the bound allows.
  void serve_waiters() {
    while (head) {
      waiter& w = *head;
      if (!w.fresh_only) {
        if (connection_ptr conn = take_idle(std::chrono::steady_clock::now())) {
          w.conn = std::move(conn);
          wake(w, waiter_state::handed);
          continue;
        }
      }
      if (!reserve_slot(w.fresh_only)) return;
      wake(w, waiter_state::granted);
    }
  }

  /// Closes a connection that holds a slot (connecting or on loan), then lets a waiter have the slot.
  void discard(connection_ptr conn) {
    unlend(*conn);
    close_quietly(*conn);
    conn.reset();
    serve_waiters();
  }

  /// With no idle connection the timer has nothing to do, and a pending wait would keep run() busy.
  void disarm_if_no_idle() {
    if (!idle.empty() || !sweep_armed) return;
    sweep_timer.cancel();
    sweep_armed = false;
  }

  void arm_sweep() {
    if (sweep_armed || idle.empty() || shut_down) return;
    sweep_armed = true;
    // expires_at cancels a wait still pending from an earlier arming; that handler ignores the abort.
    sweep_timer.expires_at(idle.front()->idle_since + limits.idle_timeout);
    sweep_timer.async_wait([alive = weak_from_this()](error_code ec) {
      if (ec == net::error::operation_aborted) return;
      const auto self = alive.lock();
      if (!self) return;
      self->sweep_armed = false;
      if (self->shut_down) return;
      self->sweep(std::chrono::steady_clock::now());
    });
  }

  /// Closes idle connections whose idle_timeout has passed. The idle list is ordered by idle_since.
  void sweep(std::chrono::steady_clock::time_point now) {
    const auto expired = std::find_if(idle.begin(), idle.end(), [&](const connection_ptr& c) {
      return c->idle_since + limits.idle_timeout > now;
    });
    const auto n = static_cast<std::size_t>(expired - idle.begin());
    for (auto it = idle.begin(); it != expired; ++it) close_quietly(**it);
    idle.erase(idle.begin(), expired);
    sub(owner.idle_count_, n);
    arm_sweep();
    serve_waiters();
  }

  void close_all_idle() {
    for (auto& conn : idle) close_quietly(*conn);
    sub(owner.idle_count_, idle.size());
    idle.clear();
    disarm_if_no_idle();
  }

  /// A new connection in a slot that is already counted: round robin, each server at most once.
  net::awaitable<acquire_result> connect(std::weak_ptr<impl> alive) {
    if (shut_down) {
      sub(owner.busy_, 1);
      co_return acquire_result{make_error_code(pool_errc::shutting_down), nullptr};
    }
    auto conn = std::make_unique<connection>(ioc);
    lend(*conn);
    conn->connecting_ = true;
    error_code last = make_error_code(pool_errc::connect_refused);
    const std::size_t attempts = servers.size();
    for (std::size_t i = 0; i < attempts; ++i) {
      next_server %= servers.size();
      const tcp::endpoint ep = servers[next_server++];
      conn->stream.expires_after(limits.connect_timeout);
      auto [cec] = co_await conn->stream.socket().async_connect(ep, use_tuple);
      const auto ec = conn->stream.settle(cec);
      // A pool that died meanwhile has already cut the connection loose (owner_ cleared).
      if (alive.expired()) co_return acquire_result{make_error_code(pool_errc::shutting_down), nullptr};
      if (shut_down) {
        discard(std::move(conn));
        co_return acquire_result{make_error_code(pool_errc::shutting_down), nullptr};
      }
      if (!ec) {
        error_code ignored;  // without TCP_NODELAY the connection still works, only slower
        conn->stream.socket().set_option(tcp::no_delay(true), ignored);
        conn->stream.socket().non_blocking(true, ignored);  // the session tries writes without suspending
        conn->connecting_ = false;
        conn->endpoint_ = ep;
        conn->server_index = index_of(ep);
        // reconfigure() may have removed the server while we connected.
        conn->retired_ = conn->server_index == servers.size();
        co_return acquire_result{error_code{}, std::move(conn)};
      }
      last = make_error_code(ec == beast::error::timeout ? pool_errc::connect_timeout : pool_errc::connect_refused);
      conn->stream.close();
    }
    discard(std::move(conn));
    co_return acquire_result{last, nullptr};
  }
};

pool::waiter::~waiter() {
  // Only when the frame is destroyed unresumed (its io_context is being destroyed) is it still queued.
  if (queued_in) queued_in->dequeue(*this);
}

connection::~connection() {
  if (owner_) {
    auto& p = *owner_->impl_;
    p.unlend(*this);
    close_quietly(*this);
    p.serve_waiters();
  }
}

pool::pool(net::io_context& ioc, pool_limits limits, std::vector<tcp::endpoint> servers) {
  if (servers.empty()) throw std::invalid_argument("upstream pool needs at least one server");
  impl_ = std::make_shared<impl>(*this, ioc, limits, std::move(servers));
}

pool::~pool() {
  shutdown();
  // Loans outlive us only if their io_context is torn down unrun; cut them loose so they never call back.
  for (connection* c = impl_->loans; c;) {
    connection* next = c->loan_next_;
    c->owner_ = nullptr;
    c->loan_prev_ = c->loan_next_ = nullptr;
    c = next;
  }
}

connection_ptr pool::try_acquire_idle(std::chrono::steady_clock::time_point now) {
  impl& p = *impl_;
  return p.shut_down ? nullptr : p.take_idle(now);
}

net::awaitable<std::tuple<error_code, connection_ptr>> pool::acquire(bool fresh_only) {
  impl& p = *impl_;
  if (p.shut_down) co_return acquire_result{make_error_code(pool_errc::shutting_down), nullptr};
  if (!fresh_only) {
    if (connection_ptr conn = p.take_idle(std::chrono::steady_clock::now())) {
      co_return acquire_result{error_code{}, std::move(conn)};
    }
  }
  if (p.reserve_slot(fresh_only)) {
    auto result = co_await p.connect(impl_);
    co_return result;
  }
  if (waiting() >= p.limits.max_queue) co_return acquire_result{make_error_code(pool_errc::queue_full), nullptr};

  const std::weak_ptr<impl> alive = impl_;
  waiter w(p.ioc, fresh_only);
  p.enqueue(w);
  w.timer.expires_after(p.limits.queue_timeout);
  // The timer's error is deliberately ignored: `state` says what happened. From here on `p` may be dead,
  // so touch it only while `alive` holds.
  co_await w.timer.async_wait(use_tuple);
  if (w.state == waiter_state::failed) co_return acquire_result{w.error, nullptr};
  if (alive.expired()) co_return acquire_result{make_error_code(pool_errc::shutting_down), nullptr};
  if (w.state == waiter_state::handed) co_return acquire_result{error_code{}, std::move(w.conn)};
  if (w.state == waiter_state::granted) {
    auto result = co_await p.connect(alive);
    co_return result;
  }
  p.dequeue(w);
  co_return acquire_result{make_error_code(pool_errc::queue_timeout), nullptr};
}

void pool::release(connection_ptr conn, bool reusable) {
  if (!conn) return;
  impl& p = *impl_;
  p.unlend(*conn);
  if (reusable) ++conn->requests;
  const bool keep = reusable && !p.shut_down && !conn->retired_ && conn->stream.socket().is_open() &&
                    conn->buffer.size() == 0 && p.used() < p.limits.max_connections;
  if (keep && p.head && !p.head->fresh_only) {
    add(busy_, 1);
    p.lend(*conn);
    waiter& w = *p.head;
    w.conn = std::move(conn);
    p.wake(w, waiter_state::handed);
    return;
  }
  if (keep && p.idle.size() < p.limits.max_idle) {
    conn->idle_since = std::chrono::steady_clock::now();
    p.idle.push_back(std::move(conn));
    add(idle_count_, 1);
    p.arm_sweep();
  } else {
    close_quietly(*conn);
    conn.reset();
  }
  p.serve_waiters();
}

void pool::reconfigure(pool_limits limits, std::vector<tcp::endpoint> servers) {
  if (servers.empty()) throw std::invalid_argument("upstream pool needs at least one server");
  impl& p = *impl_;
  p.limits = limits;
  p.servers = std::move(servers);
  p.next_server %= p.servers.size();

  // stable_partition, not remove_if: the removed connections must survive to be closed.
  const auto removed = std::stable_partition(p.idle.begin(), p.idle.end(), [&](connection_ptr& c) {
    c->server_index = p.index_of(c->endpoint_);
    return c->server_index != p.servers.size();
  });
  const auto n = static_cast<std::size_t>(p.idle.end() - removed);
  for (auto it = removed; it != p.idle.end(); ++it) close_quietly(**it);
  p.idle.erase(removed, p.idle.end());
  sub(idle_count_, n);
  p.disarm_if_no_idle();
  while (!p.idle.empty() && (p.idle.size() > p.limits.max_idle || p.used() > p.limits.max_connections)) {
    p.close_oldest_idle();
  }
  for (connection* c = p.loans; c; c = c->loan_next_) {
    if (c->connecting_) continue;  // connect() maps its endpoint when it completes
    c->server_index = p.index_of(c->endpoint_);
    c->retired_ = c->server_index == p.servers.size();
  }
  if (p.sweep_armed) {
    p.sweep_armed = false;  // re-arm for the new idle_timeout
    p.arm_sweep();
  }
  p.serve_waiters();
}

void pool::shutdown() {
  impl& p = *impl_;
  if (p.shut_down) return;
  p.shut_down = true;
  p.close_all_idle();
  while (p.head) {
    waiter& w = *p.head;
    w.error = make_error_code(pool_errc::shutting_down);
    p.wake(w, waiter_state::failed);
  }
  for (connection* c = p.loans; c; c = c->loan_next_) {
    if (c->connecting_) c->stream.cancel();
  }
  p.sweep_timer.cancel();
  p.sweep_armed = false;
}

bool peer_closed(connection& conn) {
  auto& socket = conn.stream.socket();
  if (!socket.is_open()) return true;
  char byte;
  const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;  // orderly close (FIN)
  if (n > 0) return true;   // unsolicited bytes: a late reply or an error page, not ours to read
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

std::size_t share_of(std::size_t total, unsigned workers, unsigned index) {
  if (workers == 0) workers = 1;
  return total / workers + (index < total % workers ? 1 : 0);
}

}  // namespace sluice::upstream
