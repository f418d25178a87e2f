#pragma once

#include <chrono>
#include <memory>

#include "net.hpp"

namespace sluice::common {

/// A TCP socket whose operations run under a deadline that is cheap to set for every one of them.
///
/// beast::tcp_stream arms and cancels a timer around each read and write (a timer queue insert, a cancel
/// and a completion handler run per operation). Here a deadline is a clock read and a store: one timer per
/// socket sleeps until the earliest deadline it may have to enforce and, when it wakes early because the
/// deadline moved later, goes back to sleep until the new one. A deadline covers the operations started
/// after expires_after() until settle(); when it passes first, the socket is closed (as tcp_stream does),
/// the operation completes with an error, and settle() turns that into beast::error::timeout.
///
/// Use: `s.expires_after(d); auto [ec, n] = co_await op(s.socket(), ...); ec = s.settle(ec);`.
/// Not thread-safe: use from the thread of the socket's io_context.
class timed_socket {
 public:
  using clock = std::chrono::steady_clock;

  explicit timed_socket(net::io_context& ioc);
  explicit timed_socket(tcp::socket socket);
  /// Cancels the timer; a wake-up already queued finds the socket gone and does nothing.
  ~timed_socket();
  timed_socket(const timed_socket&) = delete;
  timed_socket& operator=(const timed_socket&) = delete;

  [[nodiscard]] tcp::socket& socket() { return socket_; }

  /// The operations from now until settle() must complete within d.
  void expires_after(std::chrono::nanoseconds d) { expires_at(clock::now() + d); }
  void expires_at(clock::time_point deadline);
  /// Ends the current deadline and maps an operation's error: beast::error::timeout when the deadline
  /// passed (the socket is closed then), ec otherwise.
  [[nodiscard]] error_code settle(error_code ec);

  /// Cancels pending operations (they complete with operation_aborted); the socket stays open.
  void cancel();
  /// Closes the socket, ignoring errors; pending operations complete with operation_aborted.
  void close();

 private:
  struct watch;
  static void arm(const std::shared_ptr<watch>& w);

  tcp::socket socket_;
  std::shared_ptr<watch> watch_;  ///< shared with the timer's handler, which may outlive this
};

}  // namespace sluice::common
