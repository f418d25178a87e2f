#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/intrusive/list.hpp>

#include "admin/metrics.hpp"
#include "common/ip_address.hpp"
#include "common/timed_socket.hpp"
#include "limiter/decider.hpp"
#include "net.hpp"
#include "proxy/head_arena.hpp"
#include "proxy/local_reply.hpp"
#include "proxy/response_parser.hpp"
#include "proxy/runtime.hpp"
#include "upstream/pool.hpp"

namespace sluice::proxy {

struct worker_context;

/// One client connection: reads requests in order, applies the limiter and forwards each over a pooled
/// upstream connection, or answers it locally (429, 4xx, 5xx). A single coroutine per connection; the
/// state below belongs to the worker thread that accepted it. Use from that thread only.
class session
    : public boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
 public:
  /// Bytes of the body relay buffer (each direction uses it in turn). Lent by the worker per request, so
  /// memory follows requests in flight rather than open connections.
  static constexpr std::size_t body_chunk_bytes = 64 * 1024;

  /// Takes over an accepted socket and registers with ctx (for drain).
  session(worker_context& ctx, tcp::socket socket);
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// Serves the connection until it closes; the coroutine frame owns the session. Start with co_spawn.
  static net::awaitable<void> run(std::unique_ptr<session> self);

  /// Drain: closes the connection now when it waits for the first byte of a request; a busy session
  /// notices ctx.draining after its response and closes then (with Connection: close).
  void close_if_idle();
  /// Drain timeout: closes the client socket and the upstream connection in use, ending the coroutine.
  void force_close();

 private:
  struct request_state;
  enum class head_status { ok, closed, idle_timeout, header_timeout, too_large_header, too_large_body, bad };

  net::awaitable<void> serve();
  net::awaitable<head_status> read_head();
  net::awaitable<bool> serve_request();
  net::awaitable<bool> forward(request_state& rs);
  net::awaitable<std::tuple<error_code, upstream::connection_ptr>> acquire_upstream(
      bool fresh_only, std::chrono::steady_clock::time_point since);
  net::awaitable<bool> fail_pool(request_state& rs, const error_code& ec);
  net::awaitable<bool> fail_upstream(request_state& rs, unsigned status, admin::upstream_error kind);
  net::awaitable<bool> write_local(request_state& rs, unsigned status, bool keep_alive);
  net::awaitable<bool> skip_request_body();
  net::awaitable<void> linger_close();
  net::awaitable<error_code> read_response_head(upstream::connection& conn, bool head_request,
                                                std::chrono::steady_clock::time_point deadline);
  net::awaitable<error_code> read_response_body(upstream::connection& conn, std::chrono::nanoseconds timeout);
  error_code parse_buffered(upstream::connection& conn);
  void note_acquired(std::chrono::steady_clock::time_point since);
  error_code settle_upstream_read(upstream::connection& conn, error_code rec, std::size_t n);
  void finish(request_state& rs);
  char* body_buffer();
  void return_body_buffer();

  worker_context& ctx_;
  common::timed_socket client_;
  beast::flat_buffer buffer_;                 ///< client bytes, reused across requests (pipelining)
  std::unique_ptr<char[]> body_buf_;          ///< body relay buffer (body_chunk_bytes) while a request has one
  head_arena arena_;                          ///< the fields of req_ (declared first: outlives them)
  std::optional<http::request_parser<http::buffer_body, arena_allocator<char>>> req_;
  std::vector<field_line> response_fields_;   ///< res_'s field lines (capacity reused across responses)
  std::optional<response_parser> res_;
  std::shared_ptr<const runtime> rt_;         ///< re-read from ctx at each request start
  common::ip_address peer_;
  std::array<char, 48> peer_text_{};
  std::size_t peer_len_ = 0;
  std::string forwarded_for_;                 ///< joined X-Forwarded-For of the current request (reused)
  reply_buffer reply_;                        ///< what sluice writes itself: a local reply, or a rewritten head
  upstream::connection* upstream_in_use_ = nullptr;  ///< for force_close
  bool waiting_for_request_ = false;          ///< idle: no byte of the next request yet
  std::chrono::steady_clock::time_point acquired_at_;  ///< when acquire_upstream() last got a connection
  bool interim_seen_ = false;                 ///< a 1xx response came before the current response head
  std::optional<std::chrono::steady_clock::time_point> finished_at_;  ///< when the last request ended
};

/// What the sessions of one worker thread share, owned by the worker. Use from that thread only.
struct worker_context {
  net::io_context& ioc;
  unsigned index;                        ///< worker number, for metrics slots
  upstream::pool& pool;
  admin::worker_metrics& metrics;
  std::shared_ptr<const runtime> current;  ///< swapped on this thread by reload
  bool draining = false;
  boost::intrusive::list<session, boost::intrusive::constant_time_size<false>> sessions;
  /// Most relay buffers kept for reuse once their requests ended (64 KiB each).
  static constexpr std::size_t max_spare_body_buffers = 64;
  /// Relay buffers free for the next request; reserved to max_spare_body_buffers by the owner.
  std::vector<std::unique_ptr<char[]>> spare_body_buffers;
};

}  // namespace sluice::proxy
