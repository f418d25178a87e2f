#include "proxy/session.hpp"

#include <algorithm>
#include <bit>
#include <limits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "log/logging.hpp"
#include "proxy/forwarding_rules.hpp"

namespace sluice::proxy {

namespace {

using steady = std::chrono::steady_clock;
using admin::outcome;
using admin::upstream_error;

// Beast reads at most the buffer's free capacity at a time (beast::read_size), so both read buffers hold
// a whole relay chunk: smaller ones turn a large body into many tiny reads and writes.
constexpr std::size_t initial_buffer_bytes = 16 * 1024;
constexpr std::size_t max_read_bytes = 64 * 1024;
constexpr std::uint32_t upstream_header_limit = 64 * 1024;
// After sluice decides to close, it reads what the client still sends for a moment (nginx's lingering
// close): closing with unread bytes makes the kernel send RST, which can destroy the reply in flight.
constexpr auto linger_time = std::chrono::milliseconds(500);
constexpr std::size_t linger_max_bytes = 256 * 1024;

constexpr std::string_view continue_reply = "HTTP/1.1 100 Continue\r\n\r\n";

std::optional<std::string_view> find_field(const void* ctx, std::string_view name) {
  const auto& fields = *static_cast<const head_fields*>(ctx);
  auto it = fields.find(name);
  if (it == fields.end()) return std::nullopt;
  return it->value();
}

bool expects_continue(const http::request_header<head_fields>& head) {
  auto it = head.find(http::field::expect);
  return it != head.end() && head.version() >= 11 && beast::iequals(it->value(), "100-continue");
}

// A failure of a reused connection before any response byte: the upstream closed it while idle.
bool is_stale_failure(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe || ec == net::error::connection_aborted;
}

/// The buffers of one write towards a peer: a head (first write only), then a piece of body framed for its
/// transfer coding. Chunked: each piece becomes a chunk, and the last write ends with the last chunk
/// (no trailers); otherwise the bytes go as they are (Content-Length or close-delimited framing).
class framed_write {
 public:
  void head(const char* data, std::size_t size) { bufs_[0] = net::const_buffer(data, size); }

  /// size may be 0 (a head alone, or the end of a chunked body); last: no more body follows.
  void piece(const char* data, std::size_t size, bool chunked, bool last) {
    last_ = last;
    if (!chunked) {
      bufs_[2] = net::const_buffer(data, size);
      return;
    }
    if (size > 0) {
      const auto r = fmt::format_to_n(chunk_size_, sizeof chunk_size_, "{:x}\r\n", size);
      bufs_[1] = net::const_buffer(chunk_size_, r.size);
      bufs_[2] = net::const_buffer(data, size);
      bufs_[3] = last ? net::buffer(crlf_last_chunk) : net::buffer(crlf);
    } else if (last) {
      bufs_[3] = net::buffer(last_chunk);
    }
  }

  [[nodiscard]] const std::array<net::const_buffer, 4>& buffers() const { return bufs_; }
  [[nodiscard]] std::size_t size() const { return net::buffer_size(bufs_); }
  [[nodiscard]] bool last() const { return last_; }

 private:
  static constexpr std::string_view crlf = "\r\n";
  static constexpr std::string_view last_chunk = "0\r\n\r\n";
  static constexpr std::string_view crlf_last_chunk = "\r\n0\r\n\r\n";
  std::array<net::const_buffer, 4> bufs_{};  // head, chunk size line, data, chunk end
  char chunk_size_[20];
  bool last_ = false;
};

}  // namespace

/// The metric for a failed read of an upstream response body.
upstream_error read_failure_kind(const error_code& ec) {
  if (ec == beast::error::timeout) return upstream_error::response_timeout;
  if (ec == http::error::partial_message || is_stale_failure(ec)) return upstream_error::reset;
  return upstream_error::bad_response;
}

/// Sends what a non-blocking socket takes at once: one send, no suspension, no asynchronous operation.
/// Nearly always that is everything (the socket buffer has room), and the write costs a syscall instead
/// of an operation, a reactor registration and a resumption. Returns the bytes sent; ec is set only for
/// a real error (would_block just means the rest needs an asynchronous write).
template <class Buffers>
std::size_t send_now(tcp::socket& socket, const Buffers& buffers, error_code& ec) {
  if (!socket.non_blocking()) return 0;  // never block the worker
  const std::size_t n = socket.write_some(buffers, ec);
  if (ec == net::error::would_block || ec == net::error::try_again) ec = {};
  return n;
}

/// The buffers without their first n bytes.
std::array<net::const_buffer, 4> skip_bytes(std::array<net::const_buffer, 4> bufs, std::size_t n) {
  for (auto& b : bufs) {
    const std::size_t k = std::min(n, b.size());
    b += k;
    n -= k;
  }
  return bufs;
}

/// Per-request facts gathered along the way, for metrics, the access log and the reply.
struct session::request_state {
  steady::time_point start;
  limiter::decision decision;
  bool limiter_saw = false;
  bool wants_keep_alive = false;
  bool head_request = false;
  unsigned client_version = 11;
  unsigned status = 0;
  std::uint64_t bytes_sent = 0;
  std::chrono::nanoseconds upstream_time{0};
  outcome result = outcome::error;
  std::string_view rejected_by;
};

session::session(worker_context& ctx, tcp::socket socket)
    : ctx_(ctx), client_(std::move(socket)) {
  error_code ec;
  client_.socket().set_option(tcp::no_delay(true), ec);
  client_.socket().non_blocking(true, ec);  // for send_now(); asynchronous operations are unaffected
  const auto remote = client_.socket().remote_endpoint(ec);
  if (!ec) {
    const auto addr = remote.address();
    peer_ = addr.is_v4() ? common::ip_address::from_v4(addr.to_v4().to_bytes())
                         : common::ip_address::from_v6(addr.to_v6().to_bytes());
    peer_len_ = peer_.format_to(peer_text_.data());
  }
  ctx_.sessions.push_back(*this);
}

session::~session() = default;

net::awaitable<void> session::run(std::unique_ptr<session> self) { co_await self->serve(); }

char* session::body_buffer() {
  if (!body_buf_) {
    if (!ctx_.spare_body_buffers.empty()) {
      body_buf_ = std::move(ctx_.spare_body_buffers.back());
      ctx_.spare_body_buffers.pop_back();
    } else {
      body_buf_.reset(new char[body_chunk_bytes]);
    }
  }
  return body_buf_.get();
}

void session::return_body_buffer() {
  if (body_buf_ && ctx_.spare_body_buffers.size() < worker_context::max_spare_body_buffers) {
    ctx_.spare_body_buffers.push_back(std::move(body_buf_));
  }
  body_buf_.reset();
}

void session::close_if_idle() {
  if (waiting_for_request_) client_.cancel();
}

void session::force_close() {
  error_code ec;
  client_.socket().close(ec);
  if (upstream_in_use_ != nullptr) upstream_in_use_->stream.close();
}

net::awaitable<void> session::serve() {
  buffer_.reserve(initial_buffer_bytes);
  for (;;) {
    if (ctx_.draining || !client_.socket().is_open()) break;
    const bool keep = co_await serve_request();
    return_body_buffer();
    if (!keep) break;
  }
  co_await linger_close();
}

net::awaitable<void> session::linger_close() {
  if (!client_.socket().is_open()) co_return;
  error_code ec;
  client_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (!ec && !ctx_.draining) {
    client_.expires_after(linger_time);
    std::size_t drained = 0;
    while (drained < linger_max_bytes) {
      buffer_.clear();
      auto [rec, n] = co_await client_.socket().async_read_some(buffer_.prepare(initial_buffer_bytes), use_tuple);
      if (rec) break;
      drained += n;
    }
    (void)client_.settle({});
  }
  client_.socket().close(ec);
}

// The head is read with parser.put over our own reads rather than http::async_read_header so that the
// deadline can change when the first byte arrives (idle_timeout before it, header_timeout for the whole
// head after it) and so that obs-fold can be seen in the raw bytes, which Beast would unfold silently.
net::awaitable<session::head_status> session::read_head() {
  const auto& server = rt_->settings.server;
  // Both heads of the last request go before their memory is taken back.
  res_.reset();
  req_.reset();
  arena_.reset();
  req_.emplace(std::piecewise_construct, std::make_tuple(), std::make_tuple(arena_allocator<char>(arena_)));
  req_->header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(server.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  req_->body_limit(server.max_body_bytes);

  // The header deadline is set only when a read is needed after the head has begun: a head that
  // arrives whole (nearly always) costs no deadline at all.
  bool started = buffer_.size() > 0;
  std::optional<steady::time_point> head_deadline;
  waiting_for_request_ = !started;
  for (;;) {
    if (buffer_.size() > 0) {
      error_code ec;
      const auto n = req_->put(buffer_.data(), ec);
      if (ec == http::error::need_more) ec = {};
      if (ec == http::error::header_limit) co_return head_status::too_large_header;
      if (ec == http::error::body_limit) co_return head_status::too_large_body;
      if (ec) co_return head_status::bad;
      // Beast consumes the head a whole field at a time, so a fold never spans two put() calls.
      if (has_obs_fold(std::string_view(static_cast<const char*>(buffer_.data().data()), n))) {
        co_return head_status::bad;
      }
      buffer_.consume(n);
      if (req_->is_header_done()) co_return head_status::ok;
    }
    if (!started) {
      // Idle since the last response went out (finish() read the clock then), or since now.
      client_.expires_at((finished_at_ ? *finished_at_ : steady::now()) + server.idle_timeout);
    } else {
      if (!head_deadline) head_deadline = steady::now() + server.header_timeout;
      client_.expires_at(*head_deadline);
    }
    auto [rec, n] = co_await client_.socket().async_read_some(
        buffer_.prepare(beast::read_size(buffer_, max_read_bytes)), use_tuple);
    const auto ec = client_.settle(rec);
    if (ec) {
      waiting_for_request_ = false;
      if (ec == beast::error::timeout) co_return started ? head_status::header_timeout : head_status::idle_timeout;
      co_return head_status::closed;  // EOF, reset, or cancelled by drain: nothing to answer
    }
    buffer_.commit(n);
    started = true;
    waiting_for_request_ = false;
  }
}

net::awaitable<bool> session::write_local(request_state& rs, unsigned status, bool keep_alive) {
  const auto mode = rt_->settings.rate_limit_headers;
  const limiter::limit_status* limits = rs.limiter_saw && rs.decision.matched ? &rs.decision.status : nullptr;
  format_error(reply_, status, keep_alive, mode, limits);
  rs.status = status;
  client_.expires_after(rt_->settings.server.idle_timeout);
  auto [ec, n] = co_await net::async_write(client_.socket(), net::buffer(reply_.data(), reply_.size()), use_tuple);
  rs.bytes_sent += n;
  co_return !client_.settle(ec);
}

// Reads and drops the rest of the current request's body (after a local reply), so the connection can
// carry the next request. Bounded by max_body_bytes through the parser's body_limit.
net::awaitable<bool> session::skip_request_body() {
  auto& body = req_->get().body();
  req_->eager(true);
  while (!req_->is_done()) {
    body.data = body_buffer();
    body.size = body_chunk_bytes;
    client_.expires_after(rt_->settings.server.idle_timeout);
    auto [rec, n] = co_await http::async_read_some(client_.socket(), buffer_, *req_, use_tuple);
    const auto ec = client_.settle(rec);
    if (ec && ec != http::error::need_buffer) co_return false;
  }
  co_return true;
}

void session::finish(request_state& rs) {
  const auto end = steady::now();
  finished_at_ = end;
  const auto total = std::chrono::duration_cast<std::chrono::nanoseconds>(end - rs.start);
  ctx_.metrics.count_request(rs.result, rs.status, total);
  if (log::access_log_enabled()) {
    const auto& req = req_->get();
    log::access_entry entry;
    entry.time = std::chrono::system_clock::now() -
                 std::chrono::duration_cast<std::chrono::system_clock::duration>(total);
    entry.client = std::string_view(peer_text_.data(), peer_len_);
    entry.method = req.method_string();
    entry.target = req.target();
    entry.status = rs.status;
    entry.bytes_sent = rs.bytes_sent;
    entry.total = total;
    entry.upstream = rs.upstream_time;
    entry.limit = rs.rejected_by;
    log::log_access(entry);
  }
}

net::awaitable<bool> session::serve_request() {
  if (ctx_.current != rt_) rt_ = ctx_.current;  // a reload reaches the session between requests
  const auto& settings = rt_->settings;

  const auto head = co_await read_head();
  request_state rs;
  rs.start = steady::now();
  switch (head) {
    case head_status::ok:
      break;
    case head_status::closed:
    case head_status::idle_timeout:
      co_return false;
    case head_status::header_timeout:
      // tcp_stream closes the socket when its deadline passes, so a slow head ends with a plain close
      // (as nginx does for client_header_timeout) rather than a 408.
      ctx_.metrics.bad_requests.add();
      co_return false;
    case head_status::too_large_header:
    case head_status::too_large_body:
    case head_status::bad: {
      const unsigned status = head == head_status::too_large_header ? 431
                              : head == head_status::too_large_body ? 413
                                                                    : 400;
      ctx_.metrics.bad_requests.add();
      co_await write_local(rs, status, false);
      finish(rs);
      co_return false;
    }
  }

  auto& req = req_->get();
  if (auto problem = check_request_head(req); problem != head_problem::none) {
    spdlog::logger& events = *log::events();
    events.debug("refused request client={} problem={}", std::string_view(peer_text_.data(), peer_len_),
                 to_string(problem));
    ctx_.metrics.bad_requests.add();
    co_await write_local(rs, 400, false);
    finish(rs);
    co_return false;
  }
  rs.client_version = req.version();
  rs.wants_keep_alive = req.keep_alive();
  rs.head_request = req.method() == http::verb::head;

  join_forwarded_for(req, forwarded_for_);
  limiter::request_view view;
  view.method = req.method_string();
  view.target = req.target();
  view.peer = peer_;
  view.forwarded_for = forwarded_for_;
  view.find_header = &find_field;
  view.header_ctx = &req.base();
  auto decided = rt_->decider->decide_now(view, rs.start);
  if (!decided) {
    auto remote = co_await rt_->decider->decide(view, rs.start);
    decided = remote;
  }
  rs.decision = *decided;
  rs.limiter_saw = true;
  const auto& d = rs.decision;

  for (auto mask = d.dry_run_mask; mask != 0; mask &= mask - 1) {
    const auto i = static_cast<std::size_t>(std::countr_zero(mask));
    if (i >= rt_->dry_run_rejected.size()) break;
    rt_->dry_run_rejected[i]->add(ctx_.index);
    log::events()->info("dry_run limit={} client={} method={} target={}", rt_->limit_names[i],
                        std::string_view(peer_text_.data(), peer_len_), view.method, view.target);
  }

  if (!d.allowed) {
    for (auto mask = d.rejected_mask; mask != 0; mask &= mask - 1) {
      const auto i = static_cast<std::size_t>(std::countr_zero(mask));
      if (i < rt_->rate_limited.size()) rt_->rate_limited[i]->add(ctx_.index);
    }
    rs.result = outcome::limited;
    rs.rejected_by = d.rejected_by;
    // A body the client has not sent yet (Expect: 100-continue) may never come: close instead of waiting.
    // Local replies carry no Connection: keep-alive, so an HTTP/1.0 client is closed after them.
    bool keep = rs.wants_keep_alive && rs.client_version >= 11 && !ctx_.draining &&
                (req_->is_done() || !expects_continue(req));
    format_rate_limited(reply_, d, settings.rate_limit_headers, keep);
    rs.status = 429;
    error_code ec;
    std::size_t n = send_now(client_.socket(), net::buffer(reply_.data(), reply_.size()), ec);
    if (!ec && n < reply_.size()) {
      client_.expires_after(settings.server.idle_timeout);
      auto [aec, more] = co_await net::async_write(client_.socket(), net::buffer(reply_.data() + n, reply_.size() - n),
                                                   use_tuple);
      ec = client_.settle(aec);
      n += more;
    }
    rs.bytes_sent = n;
    if (ec) keep = false;
    if (keep && !req_->is_done()) keep = co_await skip_request_body();
    finish(rs);
    co_return keep;
  }

  if (expects_continue(req) && !req_->is_done()) {
    client_.expires_after(settings.server.idle_timeout);
    auto [ec, n] = co_await net::async_write(client_.socket(), net::buffer(continue_reply), use_tuple);
    if (client_.settle(ec)) co_return false;
  }

  const bool keep = co_await forward(rs);
  finish(rs);
  co_return keep && !ctx_.draining;
}

namespace {

// The reply and metric for a pool error.
std::pair<unsigned, upstream_error> map_pool_error(const error_code& ec) {
  using upstream::pool_errc;
  if (ec == pool_errc::queue_full) return {503, upstream_error::queue_full};
  if (ec == pool_errc::queue_timeout) return {503, upstream_error::queue_timeout};
  if (ec == pool_errc::shutting_down) return {503, upstream_error::count_};  // draining, not an upstream fault
  if (ec == pool_errc::connect_timeout) return {502, upstream_error::connect_timeout};
  return {502, upstream_error::connect_refused};
}

}  // namespace

// since: when the wait began (the request's start for its first connection: the limiter's few
// microseconds count as waiting, which saves a clock read). Sets acquired_at_.
net::awaitable<std::tuple<error_code, upstream::connection_ptr>> session::acquire_upstream(bool fresh_only,
                                                                                         steady::time_point since) {
  auto [ec, conn] = co_await ctx_.pool.acquire(fresh_only);
  note_acquired(since);
  co_return std::tuple<error_code, upstream::connection_ptr>{ec, std::move(conn)};
}

void session::note_acquired(steady::time_point since) {
  acquired_at_ = steady::now();
  ctx_.metrics.pool_wait.observe(acquired_at_ - since);
}

// No upstream connection (pool_errc): the matching reply and metric, through fail_upstream.
net::awaitable<bool> session::fail_pool(request_state& rs, const error_code& ec) {
  const auto [status, kind] = map_pool_error(ec);
  co_return co_await fail_upstream(rs, status, kind);
}

// A local error before any of the response was sent: the client keeps the connection only when its
// request body has been read in full.
net::awaitable<bool> session::fail_upstream(request_state& rs, unsigned status, admin::upstream_error kind) {
  if (kind != upstream_error::count_) ctx_.metrics.upstream_errors[static_cast<unsigned>(kind)].add();
  rs.result = outcome::error;
  const bool keep = rs.wants_keep_alive && rs.client_version >= 11 && !ctx_.draining && req_->is_done();
  const bool written = co_await write_local(rs, status, keep);
  co_return written && keep;
}

net::awaitable<bool> session::forward(request_state& rs) {
  const auto& settings = rt_->settings;
  auto& req = req_->get();
  auto& wm = ctx_.metrics;
  const bool idempotent = is_idempotent(req.method());
  const bool chunked_in = req_->chunked();
  // reply_ holds the request head until the response head replaces it (a retry sends it again).
  write_request_head(req.base(), std::string_view(peer_text_.data(), peer_len_), forwarded_for_, chunked_in, reply_);

  // An idle connection is taken without a coroutine; otherwise the pool connects or queues.
  upstream::connection_ptr conn = ctx_.pool.try_acquire_idle(rs.start);
  if (conn) {
    note_acquired(rs.start);
  } else {
    auto [aec, acquired] = co_await acquire_upstream(false, rs.start);
    if (aec) co_return co_await fail_pool(rs, aec);
    conn = std::move(acquired);
  }
  if (conn->requests > 0 && (!idempotent || !req_->is_done()) && upstream::peer_closed(*conn)) {
    // Never risk a request that could not be sent again (non-idempotent, or its body still streaming
    // from the client) on a connection the upstream may be closing.
    ctx_.pool.release(std::move(conn), false);
    auto [fec, fresh] = co_await acquire_upstream(true, steady::now());
    if (fec) co_return co_await fail_pool(rs, fec);
    conn = std::move(fresh);
  }

  conn->buffer.reserve(body_chunk_bytes);
  auto& body = req.body();
  std::size_t held = 0;  // body bytes in body_buf_; the whole body when fills <= 1 and the parser is done
  int fills = 0;
  bool retried = false;
  steady::time_point sent_at;
  req_->eager(true);

  for (;;) {  // at most two attempts: the second on a fresh connection after a stale one failed
    upstream_in_use_ = conn.get();
    const bool reused = conn->requests > 0;
    error_code up_ec;
    bool client_failed = false;
    bool head_written = false;
    bool write_suspended = false;  // the request took more than the one send() that follows acquisition
    for (;;) {
      framed_write out;
      if (retried) {
        // Resending: the whole body (if any) is still in body_buf_; see `resendable` below.
        out.piece(fills == 1 ? body_buffer() : nullptr, fills == 1 ? held : 0, chunked_in, true);
      } else if (!req_->is_done() && (head_written || buffer_.size() > 0)) {
        // Body bytes already buffered go out with the head in one write; otherwise the head goes
        // first and the body follows as the client sends it.
        body.data = body_buffer();
        body.size = body_chunk_bytes;
        client_.expires_after(settings.server.idle_timeout);
        auto [cec, rn] = co_await http::async_read_some(client_.socket(), buffer_, *req_, use_tuple);
        auto rec = client_.settle(cec);
        if (rec == http::error::need_buffer) rec = {};
        if (rec) {
          up_ec = rec;
          client_failed = true;
          break;
        }
        const auto filled = body_chunk_bytes - body.size;
        if (filled == 0 && !req_->is_done()) continue;
        ++fills;
        held = filled;
        out.piece(body_buffer(), filled, chunked_in, req_->is_done());
      } else {
        out.piece(nullptr, 0, chunked_in, req_->is_done());
      }
      if (!head_written) out.head(reply_.data(), reply_.size());
      head_written = true;
      error_code wec;
      const std::size_t wn = send_now(conn->stream.socket(), out.buffers(), wec);
      if (!wec && wn < out.size()) {
        write_suspended = true;
        conn->stream.expires_after(settings.upstream.response_timeout);
        auto [uec, more] = co_await net::async_write(conn->stream.socket(), skip_bytes(out.buffers(), wn), use_tuple);
        wec = conn->stream.settle(uec);
      }
      if (wec) {
        up_ec = wec;
        break;
      }
      if (out.last()) break;
    }
    if (client_failed) {
      ctx_.pool.release(std::move(conn), false);
      upstream_in_use_ = nullptr;
      if (up_ec == http::error::body_limit) {
        // A chunked body grew past max_body_bytes mid-stream: nothing of the response has been sent.
        wm.bad_requests.add();
        rs.result = outcome::error;
        co_await write_local(rs, 413, false);
      }
      co_return false;
    }

    if (!up_ec) {
      // The response is awaited from when the request was sent: right after the connection was acquired
      // when it went out in one send() (no clock read), otherwise now.
      sent_at = fills == 0 && !write_suspended ? acquired_at_ : steady::now();
      // One deadline for the response head, 1xx responses included.
      up_ec = co_await read_response_head(*conn, rs.head_request, sent_at + settings.upstream.response_timeout);
    }
    if (!up_ec) break;

    const bool no_response_byte = !res_.has_value() || (!res_->got_some() && !interim_seen_);
    // Safe to send again: nothing of the body was taken from the client beyond what body_buf_ holds.
    const bool resendable = idempotent && req_->is_done() && fills <= 1;
    ctx_.pool.release(std::move(conn), false);
    upstream_in_use_ = nullptr;
    if (reused && !retried && resendable && no_response_byte && is_stale_failure(up_ec)) {
      wm.upstream_errors[static_cast<unsigned>(upstream_error::retried)].add();
      retried = true;
      auto [fec, fresh] = co_await acquire_upstream(true, steady::now());
      if (fec) co_return co_await fail_pool(rs, fec);
      conn = std::move(fresh);
      conn->buffer.reserve(body_chunk_bytes);
      continue;
    }
    if (up_ec == beast::error::timeout) co_return co_await fail_upstream(rs, 504, upstream_error::response_timeout);
    if (is_stale_failure(up_ec) || up_ec == http::error::partial_message || up_ec == net::error::operation_aborted ||
        up_ec == net::error::bad_descriptor) {
      co_return co_await fail_upstream(rs, 502, upstream_error::reset);
    }
    co_return co_await fail_upstream(rs, 502, upstream_error::bad_response);
  }

  rs.upstream_time = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - sent_at);
  wm.upstream_duration.observe(rs.upstream_time);

  rs.status = res_->status();
  const auto framing =
      client_response_framing(rs.head_request, rs.status, res_->content_length().has_value(), rs.client_version);
  const bool upstream_keeps = res_->keep_alive();
  bool keep = client_keeps_alive(rs.wants_keep_alive, framing, ctx_.draining) && req_->is_done();
  const limiter::limit_status* limits = rs.decision.matched ? &rs.decision.status : nullptr;
  // The field views point into conn->buffer: the head is serialised now, before the body is read into it.
  write_response_head(res_->status(), res_->reason(), res_->fields(), res_->content_length(), framing, keep,
                      rs.client_version, settings.rate_limit_headers, limits, reply_);
  const bool chunked_out = framing == body_framing::chunked;

  bool response_started = false;
  bool failed = false;
  for (;;) {
    framed_write out;
    // The head goes out alone only when no body byte is buffered yet, so a streaming upstream's head is
    // not held back; otherwise head and first body bytes leave in one write.
    if (!res_->is_done() && (response_started || conn->buffer.size() > 0)) {
      res_->set_body_window(body_buffer(), body_chunk_bytes);
      // What the buffer holds first (with a small response, all of it), without a coroutine.
      auto rec = parse_buffered(*conn);
      if (!rec && !res_->is_done() && res_->body_size() == body_chunk_bytes) {
        rec = co_await read_response_body(*conn, settings.upstream.response_timeout);
      }
      if (rec) {
        failed = true;
        const auto kind = read_failure_kind(rec);
        if (!response_started) {
          ctx_.pool.release(std::move(conn), false);
          upstream_in_use_ = nullptr;
          co_return co_await fail_upstream(rs, kind == upstream_error::response_timeout ? 504 : 502, kind);
        }
        // Cut mid-response: counted as a timeout or a reset, whatever the cause.
        const auto counted = kind == upstream_error::response_timeout ? kind : upstream_error::reset;
        wm.upstream_errors[static_cast<unsigned>(counted)].add();
        break;
      }
      const auto filled = body_chunk_bytes - res_->body_size();
      if (filled == 0 && !res_->is_done()) continue;
      out.piece(body_buffer(), filled, chunked_out, res_->is_done());
    } else {
      out.piece(nullptr, 0, chunked_out, res_->is_done());
    }
    if (!response_started) out.head(reply_.data(), reply_.size());
    error_code wec;
    std::size_t wn = send_now(client_.socket(), out.buffers(), wec);
    if (!wec && wn < out.size()) {
      client_.expires_after(settings.server.idle_timeout);
      auto [cec, more] = co_await net::async_write(client_.socket(), skip_bytes(out.buffers(), wn), use_tuple);
      wec = client_.settle(cec);
      wn += more;
    }
    rs.bytes_sent += wn;
    response_started = true;
    if (wec) {
      failed = true;
      break;
    }
    if (out.last()) break;
  }
  rs.result = outcome::forwarded;
  ctx_.pool.release(std::move(conn), !failed && upstream_keeps && res_->is_done());
  upstream_in_use_ = nullptr;
  co_return keep && !failed;
}

// Hands what conn.buffer holds to res_ and drops what it consumed.
error_code session::parse_buffered(upstream::connection& conn) {
  auto& buf = conn.buffer;
  error_code ec;
  if (buf.size() > 0) {
    buf.consume(res_->put(std::string_view(static_cast<const char*>(buf.data().data()), buf.size()), ec));
  }
  return ec;
}

// Settles one read from the upstream into conn.buffer: commits the bytes, or hands EOF to res_, which
// completes a close-delimited body and is an error otherwise (end_of_stream: a stale connection).
error_code session::settle_upstream_read(upstream::connection& conn, error_code rec, std::size_t n) {
  const auto ec = conn.stream.settle(rec);
  if (ec == net::error::eof) {
    error_code eof_ec;
    res_->put_eof(eof_ec);
    return eof_ec;
  }
  if (!ec) conn.buffer.commit(n);
  return ec;
}

// Reads until a final response head is parsed (1xx responses are dropped: sluice answers
// Expect: 100-continue itself), every read under one deadline for the whole head. The head's field views
// point into conn.buffer, which must not be read into before the head has been used.
net::awaitable<error_code> session::read_response_head(upstream::connection& conn, bool head_request,
                                                       steady::time_point deadline) {
  res_.emplace(response_fields_, head_request, upstream_header_limit);
  interim_seen_ = false;
  for (;;) {
    if (const auto ec = parse_buffered(conn)) co_return ec;
    if (res_->is_header_done()) {
      const unsigned status = res_->status();
      if (status == 101) co_return http::error::bad_value;  // Upgrade was stripped: a protocol violation
      if (status >= 200) co_return error_code{};
      interim_seen_ = true;  // the upstream has the request: a failure from here on is not a stale connection
      res_.emplace(response_fields_, head_request, upstream_header_limit);
      continue;
    }
    conn.stream.expires_at(deadline);
    auto& buf = conn.buffer;
    auto [rec, n] = co_await conn.stream.socket().async_read_some(buf.prepare(beast::read_size(buf, max_read_bytes)),
                                                                   use_tuple);
    if (const auto ec = settle_upstream_read(conn, rec, n)) co_return ec;
  }
}

// Fills the body window set on res_ with what conn.buffer holds, reading from the upstream (each read
// under `timeout`) when it holds nothing usable; returns when the window got bytes or the body ended.
net::awaitable<error_code> session::read_response_body(upstream::connection& conn, std::chrono::nanoseconds timeout) {
  for (;;) {
    if (const auto ec = parse_buffered(conn)) co_return ec;
    if (res_->is_done() || res_->body_size() < body_chunk_bytes) co_return error_code{};
    conn.stream.expires_after(timeout);
    auto& buf = conn.buffer;
    auto [rec, n] = co_await conn.stream.socket().async_read_some(buf.prepare(beast::read_size(buf, max_read_bytes)),
                                                                   use_tuple);
    if (const auto ec = settle_upstream_read(conn, rec, n)) co_return ec;
  }
}

}  // namespace sluice::proxy
