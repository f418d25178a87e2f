#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "admin/metrics.hpp"
#include "config/config.hpp"
#include "net.hpp"

namespace sluice::admin {

/// Bounds of the admin listener. The defaults are sluice's; tests shorten the timeouts.
struct admin_limits {
  std::size_t max_connections = 64;        ///< admin connections at once; past it a new one gets 503 and closes
  std::size_t max_header_bytes = 8 * 1024;  ///< larger request head -> 431
  std::chrono::milliseconds read_timeout{10'000};  ///< a started request head must arrive (and a response
                                                   ///< be written) within this
  std::chrono::milliseconds idle_timeout{30'000};  ///< keep-alive connection with no request
  std::chrono::milliseconds accept_retry{100};     ///< wait after an accept error before accepting again
};

/// The admin HTTP/1.1 listener: GET/HEAD /healthz, /readyz and /metrics (Prometheus text 0.0.4).
/// Not on the hot path: it runs on its own small io_context. All its work runs on one strand of that
/// io_context; the gauges and ready functions are called there, so they must be safe to call from it.
class admin_server {
 public:
  /// Samples process gauges for one scrape.
  using gauges_fn = std::function<process_gauges()>;
  /// False once draining: /readyz answers 503.
  using ready_fn = std::function<bool()>;

  /// Binds and listens at `at`, a literal address ("localhost" means 127.0.0.1); port 0 picks a free port.
  /// Accepts nothing until start(). Throws std::runtime_error naming the endpoint when it cannot listen.
  /// `ioc` must outlive this object; `registry` must outlive the io_context's admin work (until run()
  /// returns after stop()).
  admin_server(net::io_context& ioc, const config::endpoint& at, const metrics& registry, gauges_fn gauges,
               ready_fn ready, admin_limits limits = {});
  /// Calls stop(). The io_context still has to run for the stop to take effect.
  ~admin_server();
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  /// Starts accepting connections. Call once.
  void start();
  /// The port the listener is bound to. Thread-safe.
  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// Closes the acceptor and every admin connection, so the io_context runs out of admin work and run()
  /// returns by itself. Thread-safe and idempotent (the work is dispatched to the strand).
  void stop();

 private:
  struct state;
  std::shared_ptr<state> state_;  // shared with the running coroutines, which may outlive this object
  std::uint16_t port_ = 0;
};

}  // namespace sluice::admin
