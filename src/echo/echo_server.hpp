#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "net.hpp"

namespace sluice::echo {

/// The fixed body of every plain 200 reply.
inline constexpr std::string_view hello_body = "hello from sluice-echo\n";
/// Largest /echo request body (bytes); beyond it the answer is 413 and the connection closes.
inline constexpr std::uint64_t max_echo_body_bytes = 10u << 20;
/// Largest /bytes/N (bytes); beyond it the answer is 400.
inline constexpr std::uint64_t max_stream_bytes = std::uint64_t{1} << 40;
/// Largest /chunked/N (chunks); beyond it the answer is 400.
inline constexpr std::uint64_t max_chunks = 1'000'000;
/// Longest /delay/MS (milliseconds); larger values are capped to it.
inline constexpr std::uint64_t max_delay_ms = 60'000;
/// Largest request head (bytes); beyond it the answer is 431.
inline constexpr std::uint32_t max_header_bytes = 16u << 10;

/// Parses "host:port" or "[v6]:port" into an endpoint (port 0 allowed); nullopt when it does not parse.
[[nodiscard]] std::optional<tcp::endpoint> parse_endpoint(std::string_view text);

/// sluice-echo's HTTP/1.1 server: one io_context and one SO_REUSEPORT acceptor per thread, so a
/// connection never changes thread. Routes (the query string is ignored for routing):
///   any path not below: 200 text/plain hello_body (pre-serialised);
///   /delay/MS: the same after MS ms (capped at max_delay_ms);   /status/CODE: CODE (200..599) with
///   "CODE REASON\n" (204/304 without body);   /bytes/N: N bytes a..z repeating, Content-Length, streamed;
///   /chunked/N: N chunks "0\n", "1\n"... (HTTP/1.0: unchunked, closed after);   /echo: text/plain with
///   the request line, each field as "Name: value" in arrival order, one line each ("\n"), an empty line,
///   then the decoded body. A bad route parameter is 400 (connection kept); a malformed request 400,
///   a head over max_header_bytes 431, an /echo body over max_echo_body_bytes 413 (connection closed).
///   Keep-alive follows the request (HTTP/1.0 needs Connection: keep-alive); HEAD gets the head only.
/// No read timeouts: it is a test and benchmark backend. start() and wait() from one thread; stop() and
/// port() from any thread.
class echo_server {
 public:
  /// Binds listen once per thread (port 0: the first bind picks the port, the others share it) and
  /// listens; throws boost::system::system_error when a bind fails. Serves nothing until start().
  echo_server(const tcp::endpoint& listen, std::size_t threads);
  /// stop(), then wait().
  ~echo_server();
  echo_server(const echo_server&) = delete;
  echo_server& operator=(const echo_server&) = delete;

  /// The bound port.
  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// Starts the worker threads. Call once.
  void start();
  /// Closes the acceptors and every connection (in-flight responses are cut); workers then run out of
  /// work and their threads end. Idempotent.
  void stop();
  /// Joins the worker threads (returns at once when start() was never called).
  void wait();

 private:
  struct worker;
  std::vector<std::unique_ptr<worker>> workers_;
  std::uint16_t port_ = 0;
};

}  // namespace sluice::echo
