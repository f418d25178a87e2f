#include "common/timed_socket.hpp"

namespace sluice::common {

/// What the timer's handler needs; shared so that a wake-up queued before the socket died is harmless.
struct timed_socket::watch {
  explicit watch(const tcp::socket::executor_type& ex) : timer(ex) {}

  net::steady_timer timer;
  tcp::socket* socket = nullptr;       ///< null once the timed_socket is gone
  clock::time_point deadline = clock::time_point::max();  ///< max: no deadline
  clock::time_point armed_for = clock::time_point::max();  ///< when the timer wakes; max: not armed
  bool expired = false;                ///< the deadline passed and the socket was closed
};

timed_socket::timed_socket(net::io_context& ioc)
    : socket_(ioc), watch_(std::make_shared<watch>(socket_.get_executor())) {
  watch_->socket = &socket_;
}

timed_socket::timed_socket(tcp::socket socket)
    : socket_(std::move(socket)), watch_(std::make_shared<watch>(socket_.get_executor())) {
  watch_->socket = &socket_;
}

timed_socket::~timed_socket() {
  watch_->socket = nullptr;
  watch_->timer.cancel();
}

void timed_socket::expires_at(clock::time_point deadline) {
  watch& w = *watch_;
  w.deadline = deadline;
  w.expired = false;
  // A later deadline than the armed wake-up needs nothing now: the timer wakes, sees it, sleeps again.
  if (deadline < w.armed_for) {
    w.armed_for = deadline;
    arm(watch_);
  }
}

error_code timed_socket::settle(error_code ec) {
  watch& w = *watch_;
  w.deadline = clock::time_point::max();
  if (w.expired) {
    w.expired = false;
    return beast::error::timeout;
  }
  return ec;
}

void timed_socket::cancel() {
  error_code ignored;
  socket_.cancel(ignored);
}

void timed_socket::close() {
  error_code ignored;
  socket_.close(ignored);
}

void timed_socket::arm(const std::shared_ptr<watch>& w) {
  // expires_at cancels a wait still pending for a later time; its handler sees operation_aborted.
  w->timer.expires_at(w->armed_for);
  w->timer.async_wait([w](error_code ec) {
    if (ec == net::error::operation_aborted) return;  // re-armed earlier, or the socket is gone
    w->armed_for = clock::time_point::max();
    if (w->socket == nullptr || w->deadline == clock::time_point::max()) return;
    if (clock::now() < w->deadline) {
      w->armed_for = w->deadline;
      arm(w);
      return;
    }
    w->expired = true;
    error_code ignored;
    w->socket->close(ignored);
  });
}

}  // namespace sluice::common
