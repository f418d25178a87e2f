#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "net.hpp"
#include "support/fake_upstream.hpp"
#include "support/run.hpp"

namespace sluice::test {

/// A response as raw_client parsed it. Plain value.
struct parsed_response {
  unsigned status = 0;
  std::string reason;
  unsigned version = 11;        ///< 10 or 11
  header_list headers;
  std::string body;             ///< the first max_body bytes of the body (see raw_client::read_options)
  std::uint64_t body_size = 0;  ///< body bytes received in total
  bool chunked = false;         ///< framed with Transfer-Encoding: chunked
  std::size_t chunk_count = 0;  ///< chunks with data (the final 0-size chunk not counted)
  bool keep_alive = true;       ///< the connection may carry another request (per the response's framing)

  /// The first value of a header (case-insensitive), nullopt when absent.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const { return find_header(headers, name); }
};

/// How raw_client::read_response parses. Plain value.
struct response_read_options {
  bool head_request = false;        ///< the response answers HEAD: no body whatever the headers say
  std::size_t max_body = 64 << 20;  ///< body bytes kept in parsed_response::body (bytes); the rest only counted
};

/// A test client over a plain TCP socket to 127.0.0.1:port that sends arbitrary bytes and parses what
/// comes back with Beast (pipelined responses are read in order). Every call blocks under the client's
/// timeout and FAILs the test when it passes, so nothing hangs. Given an io_context, the client runs its
/// operations on it and drives it while it waits, so a server under test on the same io_context keeps
/// working (a single-threaded test); otherwise it uses a private one. Use from the test thread only.
class raw_client {
 public:
  /// How read_response parses.
  using read_options = response_read_options;

  /// Connects to 127.0.0.1:port on a private io_context; FAILs if the connection is not established.
  explicit raw_client(std::uint16_t port, std::chrono::milliseconds timeout = default_deadline);
  /// Connects to 127.0.0.1:port using ioc (driven while the client waits); FAILs on error.
  raw_client(net::io_context& ioc, std::uint16_t port, std::chrono::milliseconds timeout = default_deadline);
  ~raw_client();
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  /// Writes all bytes; FAILs on error or timeout.
  void send(std::string_view bytes);
  /// Writes all bytes; returns the error (a peer that closed may give broken_pipe or connection_reset).
  error_code try_send(std::string_view bytes);
  /// Reads one response; FAILs on error, timeout or a response that does not parse.
  parsed_response read_response(read_options opts);
  /// read_response with default options.
  parsed_response read_response() { return read_response(read_options{}); }
  /// Reads one response; the error instead of a FAIL (timeout gives net::error::timed_out).
  error_code try_read_response(parsed_response& out, read_options opts = {});
  /// Reads until the peer closes (EOF or reset) and returns every byte not yet consumed; FAILs on timeout.
  std::string read_until_closed();
  /// Waits up to `wait` for the peer to close; true when it did (EOF or reset). Bytes that arrive
  /// meanwhile are kept for later reads.
  bool is_closed(std::chrono::milliseconds wait);
  /// is_closed with the client's timeout.
  bool is_closed() { return is_closed(timeout_); }
  /// Half-closes the sending side (the peer sees EOF).
  void shutdown_send();
  /// Closes the socket now.
  void close();
  /// The client's local port (to find it in a server's logs).
  [[nodiscard]] std::uint16_t local_port() const;

  /// True when connecting to 127.0.0.1:port is refused (nothing listens), under a deadline.
  static bool connect_refused(std::uint16_t port, std::chrono::milliseconds deadline = default_deadline);

 private:
  // Runs until *done or the timeout passes; on timeout cancels the socket's operations, waits for them
  // to complete (they reference the caller's frame) and returns false.
  bool drive(const bool& done, std::chrono::milliseconds timeout);

  std::unique_ptr<net::io_context> own_ioc_;
  net::io_context* ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::chrono::milliseconds timeout_;
  bool peer_closed_ = false;
};

}  // namespace sluice::test
