#include "admin/admin_server.hpp"

#include <list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>
#include <fmt/format.h>

#include "log/logging.hpp"

namespace sluice::admin {

namespace {

using request_parser = http::request_parser<http::empty_body>;
using response = http::response<http::string_body>;

constexpr std::string_view text_plain = "text/plain; charset=utf-8";
constexpr std::string_view prometheus_text = "text/plain; version=0.0.4; charset=utf-8";

// Written with a plain non-blocking send on the accept path: small enough for any socket buffer, and the
// accept loop never waits on a client it is turning away.
constexpr std::string_view too_many_connections =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 27\r\n"
    "Connection: close\r\n"
    "\r\n"
    "too many admin connections\n";

response make_response(http::status status, unsigned version, std::string_view content_type, std::string body) {
  response res{status, version};
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.content_length(res.body().size());
  return res;
}

net::ip::address parse_address(const config::endpoint& at) {
  const std::string& host = at.host == "localhost" ? std::string("127.0.0.1") : at.host;
  error_code ec;
  auto address = net::ip::make_address(host, ec);
  if (ec) {
    throw std::runtime_error(fmt::format("admin.listen: \"{}\" is not a literal IP address", at.host));
  }
  return address;
}

void log_exception(std::exception_ptr e, std::string_view where) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::events()->error("admin {} failed error=\"{}\"", where, ex.what());
  } catch (...) {
    log::events()->error("admin {} failed error=unknown", where);
  }
}

/// After an error response: stop sending, then read and drop what the client still sends for a moment, so
/// unread request bytes do not turn our close into a reset that destroys the response (nginx's lingering
/// close).
net::awaitable<void> linger_close(beast::tcp_stream& stream) {
  error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.expires_after(std::chrono::seconds(1));
  std::array<char, 4096> sink;
  for (std::size_t total = 0; total < 64 * 1024;) {
    auto [rec, n] = co_await stream.async_read_some(net::buffer(sink), use_tuple);
    if (rec) break;
    total += n;
  }
  stream.close();
}

void refuse(tcp::socket& socket) {
  error_code ec;
  socket.non_blocking(true, ec);
  socket.write_some(net::buffer(too_many_connections), ec);  // best effort: the client is turned away anyway
  socket.shutdown(tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

}  // namespace

struct admin_server::state {
  state(net::io_context& ioc, const metrics& r, gauges_fn g, ready_fn rd, admin_limits l)
      : strand(net::make_strand(ioc)),
        acceptor(strand),
        retry_timer(strand),
        registry(r),
        gauges(std::move(g)),
        ready(std::move(rd)),
        limits(l) {}

  net::strand<net::io_context::executor_type> strand;
  tcp::acceptor acceptor;
  net::steady_timer retry_timer;
  const metrics& registry;
  gauges_fn gauges;
  ready_fn ready;
  admin_limits limits;
  bool stopped = false;
  std::size_t active = 0;                      // accepted and not yet finished, including ones not started
  std::list<beast::tcp_stream*> connections;  // streams with I/O that stop() must close

  /// Keeps a connection counted and reachable by stop() for the life of its coroutine.
  class registration {
   public:
    registration(state& s, beast::tcp_stream& stream)
        : s_(s), it_(s.connections.insert(s.connections.end(), &stream)) {}
    ~registration() {
      s_.connections.erase(it_);
      --s_.active;
    }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;

   private:
    state& s_;
    std::list<beast::tcp_stream*>::iterator it_;
  };

  response route(const request_parser::value_type& req) {
    std::string_view target = req.target();
    target = target.substr(0, target.find('?'));
    const unsigned version = req.version();
    if (target != "/healthz" && target != "/readyz" && target != "/metrics") {
      return make_response(http::status::not_found, version, text_plain, "not found\n");
    }
    const bool head = req.method() == http::verb::head;
    if (!head && req.method() != http::verb::get) {
      auto res = make_response(http::status::method_not_allowed, version, text_plain, "method not allowed\n");
      res.set(http::field::allow, "GET, HEAD");
      return res;
    }
    response res;
    if (target == "/healthz") {
      res = make_response(http::status::ok, version, text_plain, "ok\n");
    } else if (target == "/readyz") {
      res = ready() ? make_response(http::status::ok, version, text_plain, "ready\n")
                    : make_response(http::status::service_unavailable, version, text_plain, "draining\n");
    } else {
      res = make_response(http::status::ok, version, prometheus_text, registry.render_prometheus(gauges()));
    }
    if (head) {
      // HEAD keeps the Content-Length a GET would have (RFC 9110 section 9.3.2) but sends no body.
      res.body().clear();
    }
    return res;
  }

  /// Accepts until stop(); each connection runs serve() on the strand.
  static net::awaitable<void> accept_loop(std::shared_ptr<state> s);
  /// One admin connection: keep-alive request/response until close, timeout or stop().
  static net::awaitable<void> serve(std::shared_ptr<state> s, tcp::socket socket);

  void do_stop() {
    if (stopped) return;
    stopped = true;
    error_code ec;
    acceptor.close(ec);
    retry_timer.cancel();
    for (beast::tcp_stream* stream : connections) stream->close();
  }
};

net::awaitable<void> admin_server::state::serve(std::shared_ptr<state> s, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  registration registered(*s, stream);
  if (s->stopped) co_return;  // stop() ran between accept and this coroutine's start
  beast::flat_buffer buffer;
  for (;;) {
    if (buffer.size() == 0) {
      // Idle between requests: the longer idle deadline applies until the first byte of the next head.
      stream.expires_after(s->limits.idle_timeout);
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(1024), use_tuple);
      if (ec) co_return;  // EOF, idle timeout or stop(): all a quiet close
      buffer.commit(n);
    }
    request_parser parser;
    parser.header_limit(static_cast<std::uint32_t>(s->limits.max_header_bytes));
    stream.expires_after(s->limits.read_timeout);
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    if (ec == http::error::header_limit) {
      auto res = make_response(http::status::request_header_fields_too_large, 11, text_plain,
                               "request header too large\n");
      res.keep_alive(false);
      auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
      if (!wec) co_await linger_close(stream);
      co_return;
    }
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted ||
        ec == net::error::connection_reset || ec == net::error::eof) {
      co_return;
    }
    if (ec) {
      auto res = make_response(http::status::bad_request, 11, text_plain, "bad request\n");
      res.keep_alive(false);
      auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
      if (!wec) co_await linger_close(stream);
      co_return;
    }
    const auto& req = parser.get();
    const auto length = parser.content_length();
    const bool has_body = parser.chunked() || (length && *length > 0);
    response res = has_body ? make_response(http::status::payload_too_large, req.version(), text_plain,
                                            "admin requests take no body\n")
                            : s->route(req);
    const bool keep_alive = !has_body && req.keep_alive();
    res.keep_alive(keep_alive);
    stream.expires_after(s->limits.read_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
    if (wec) co_return;
    if (has_body) {
      co_await linger_close(stream);
      co_return;
    }
    if (!keep_alive) {
      error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
  }
}

net::awaitable<void> admin_server::state::accept_loop(std::shared_ptr<state> s) {
  const net::any_io_executor socket_executor = s->strand;
  for (;;) {
    auto [ec, socket] = co_await s->acceptor.async_accept(socket_executor, use_tuple);
    if (s->stopped) co_return;
    if (ec) {
      // EMFILE and friends pass once connections close; an instant retry would spin, returning would stop
      // the admin listener for good.
      log::events()->warn("admin accept failed error=\"{}\" retry_ms={}", ec.message(),
                          s->limits.accept_retry.count());
      s->retry_timer.expires_after(s->limits.accept_retry);
      // A cancelled wait means stop(), which the check below sees; any other result means retry.
      co_await s->retry_timer.async_wait(use_tuple);
      if (s->stopped) co_return;
      continue;
    }
    if (s->active >= s->limits.max_connections) {
      log::events()->debug("admin connection refused reason=too_many max={}", s->limits.max_connections);
      refuse(socket);
      continue;
    }
    ++s->active;
    net::co_spawn(s->strand, serve(s, std::move(socket)),
                  [](std::exception_ptr e) { log_exception(e, "connection"); });
  }
}

admin_server::admin_server(net::io_context& ioc, const config::endpoint& at, const metrics& registry,
                           gauges_fn gauges, ready_fn ready, admin_limits limits)
    : state_(std::make_shared<state>(ioc, registry, std::move(gauges), std::move(ready), limits)) {
  const tcp::endpoint endpoint(parse_address(at), at.port);
  const std::string shown = at.text.empty() ? fmt::format("{}:{}", at.host, at.port) : at.text;
  auto& acceptor = state_->acceptor;
  error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error(fmt::format("admin.listen: cannot listen on {}: {}", shown, ec.message()));
  }
  port_ = acceptor.local_endpoint().port();
}

admin_server::~admin_server() { stop(); }

void admin_server::start() {
  net::co_spawn(state_->strand, state::accept_loop(state_), [](std::exception_ptr e) { log_exception(e, "listener"); });
}

void admin_server::stop() {
  net::dispatch(state_->strand, [s = state_] { s->do_stop(); });
}

}  // namespace sluice::admin
