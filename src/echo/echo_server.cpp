#include "echo/echo_server.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <unordered_set>

namespace sluice::echo {

namespace {

using reuse_port = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

constexpr std::size_t piece_bytes = 26 * 2520;  // ~64 KiB, a multiple of 26 so pieces continue a..z
constexpr std::size_t write_batch_bytes = 64 * 1024;

/// What one request asked for, filled by request_reader. Reused across a connection's requests so the
/// strings keep their capacity.
struct request_info {
  http::verb method = http::verb::unknown;
  std::string method_text;
  std::string target;
  unsigned version = 11;
  bool echo = false;      // /echo: fields and body are recorded
  std::string echo_text;  // request line and fields, /echo only
  std::string body;       // /echo only
};

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

/// A request parser that keeps only what sluice-echo needs: no per-field allocation, and bodies of
/// routes other than /echo are discarded as they stream in. Construct one per request (emplace).
class request_reader final : public http::basic_parser<true> {
 public:
  explicit request_reader(request_info& info) : info_(info) {}

 private:
  void on_request_impl(http::verb method, beast::string_view method_str, beast::string_view target, int version,
                       error_code&) override {
    info_.method = method;
    info_.method_text.assign(method_str.data(), method_str.size());
    info_.target.assign(target.data(), target.size());
    info_.version = static_cast<unsigned>(version);
    info_.echo = path_of(info_.target) == "/echo";
    info_.echo_text.clear();
    info_.body.clear();
    if (info_.echo) {
      // Set before the fields are parsed: Beast checks Content-Length against it when the head ends.
      body_limit(max_echo_body_bytes);
      info_.echo_text.append(info_.method_text).append(" ").append(info_.target);
      info_.echo_text.append(version == 10 ? " HTTP/1.0\n" : " HTTP/1.1\n");
    } else {
      body_limit(boost::none);
    }
  }
  void on_response_impl(int, beast::string_view, int, error_code&) override {}
  void on_field_impl(http::field, beast::string_view name, beast::string_view value, error_code&) override {
    if (!info_.echo) return;
    info_.echo_text.append(name.data(), name.size()).append(": ").append(value.data(), value.size()).append("\n");
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(beast::string_view body, error_code&) override {
    if (info_.echo) info_.body.append(body.data(), body.size());
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, error_code&) override {
    if (info_.echo) info_.body.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(error_code&) override {}

  request_info& info_;
};

enum class route_kind { hello, delay, status, bytes, chunked, echo, bad };

struct route {
  route_kind kind = route_kind::hello;
  std::uint64_t n = 0;  // milliseconds, status code, bytes or chunks
};

std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t n = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, n);
  if (text.empty() || ec != std::errc{} || ptr != end) return std::nullopt;
  return n;
}

route route_of(std::string_view target) {
  const auto path = path_of(target);
  const auto number_after = [&](std::string_view prefix) { return parse_number(path.substr(prefix.size())); };
  if (path == "/echo") return {route_kind::echo};
  if (path.starts_with("/delay/")) {
    const auto ms = number_after("/delay/");
    if (!ms) return {route_kind::bad};
    return {route_kind::delay, std::min(*ms, max_delay_ms)};
  }
  if (path.starts_with("/status/")) {
    const auto code = number_after("/status/");
    // 1xx cannot be a final answer, and HTTP/1.1 status codes have three digits.
    if (!code || *code < 200 || *code > 599) return {route_kind::bad};
    return {route_kind::status, *code};
  }
  if (path.starts_with("/bytes/")) {
    const auto n = number_after("/bytes/");
    if (!n || *n > max_stream_bytes) return {route_kind::bad};
    return {route_kind::bytes, *n};
  }
  if (path.starts_with("/chunked/")) {
    const auto n = number_after("/chunked/");
    if (!n || *n > max_chunks) return {route_kind::bad};
    return {route_kind::chunked, *n};
  }
  return {route_kind::hello};
}

/// How the response ends the exchange: HTTP/1.1 keep-alive is the default and needs no field.
enum class conn_mode { keep_alive = 0, keep_alive_10 = 1, close = 2 };

std::string_view connection_field(conn_mode mode) {
  switch (mode) {
    case conn_mode::keep_alive:
      return "";
    case conn_mode::keep_alive_10:
      return "Connection: keep-alive\r\n";
    case conn_mode::close:
      return "Connection: close\r\n";
  }
  return "";
}

enum class framing { length, chunked, none };

void append_number(std::string& out, std::uint64_t n, int base = 10) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n, base);
  out.append(digits, end);
}

beast::string_view reason_of(unsigned status) {
  const auto known = http::int_to_status(status);
  return known == http::status::unknown ? beast::string_view("Unknown") : http::obsolete_reason(known);
}

void append_head(std::string& out, unsigned status, std::string_view content_type, framing how,
                 std::uint64_t content_length, conn_mode mode) {
  const auto reason = reason_of(status);
  out.append("HTTP/1.1 ");
  append_number(out, status);
  out.append(" ").append(reason.data(), reason.size()).append("\r\nServer: sluice-echo\r\n");
  if (!content_type.empty()) out.append("Content-Type: ").append(content_type).append("\r\n");
  if (how == framing::length) {
    out.append("Content-Length: ");
    append_number(out, content_length);
    out.append("\r\n");
  } else if (how == framing::chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  }
  out.append(connection_field(mode)).append("\r\n");
}

/// The hello reply's head per conn_mode, serialised once.
const std::array<std::string, 3>& hello_heads() {
  static const std::array<std::string, 3> heads = [] {
    std::array<std::string, 3> h;
    for (const auto mode : {conn_mode::keep_alive, conn_mode::keep_alive_10, conn_mode::close}) {
      append_head(h[static_cast<std::size_t>(mode)], 200, "text/plain", framing::length, hello_body.size(), mode);
    }
    return h;
  }();
  return heads;
}

const std::string& pattern_piece() {
  static const std::string piece = [] {
    std::string s(piece_bytes, '\0');
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('a' + i % 26);
    return s;
  }();
  return piece;
}

bool is_http_error(const error_code& ec) {
  return &ec.category() == &http::make_error_code(http::error::bad_method).category();
}

void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "sluice-echo: connection ended by exception: %s\n", ex.what());
  }
}

}  // namespace

std::optional<tcp::endpoint> parse_endpoint(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const auto port = parse_number(text.substr(colon + 1));
  if (!port || *port > 65535 || host.empty()) return std::nullopt;
  error_code ec;
  const auto address = net::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  return tcp::endpoint{address, static_cast<std::uint16_t>(*port)};
}

namespace {

struct connection {
  connection(net::io_context& ioc, tcp::socket s) : socket(std::move(s)), timer(ioc) {}
  tcp::socket socket;
  net::steady_timer timer;  // /delay
};

/// Writes a short local reply that closes the connection (400, 413, 431).
net::awaitable<void> send_error(connection& c, unsigned status, std::string_view body, std::string& out) {
  out.clear();
  append_head(out, status, "text/plain", framing::length, body.size(), conn_mode::close);
  const std::array<net::const_buffer, 2> bufs{net::buffer(out), net::buffer(body)};
  [[maybe_unused]] auto [ec, n] = co_await net::async_write(c.socket, bufs, use_tuple);  // closing anyway
}

/// Answers every route but hello; false when the connection must close.
net::awaitable<bool> respond(connection& c, const request_info& info, route r, conn_mode mode, bool head_only,
                             std::string& out) {
  out.clear();
  switch (r.kind) {
    case route_kind::hello:
    case route_kind::delay: {
      if (r.kind == route_kind::delay) {
        c.timer.expires_after(std::chrono::milliseconds(r.n));
        auto [ec] = co_await c.timer.async_wait(use_tuple);
        if (ec) co_return false;  // stopping
      }
      const auto& head = hello_heads()[static_cast<std::size_t>(mode)];
      const std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(hello_body.data(), head_only ? 0 : hello_body.size())};
      auto [ec, n] = co_await net::async_write(c.socket, bufs, use_tuple);
      co_return !ec;
    }
    case route_kind::bad: {
      constexpr std::string_view body = "bad route parameter\n";
      append_head(out, 400, "text/plain", framing::length, body.size(), mode);
      if (!head_only) out.append(body);
      auto [ec, n] = co_await net::async_write(c.socket, net::buffer(out), use_tuple);
      co_return !ec;
    }
    case route_kind::status: {
      const auto code = static_cast<unsigned>(r.n);
      if (code == 204 || code == 304) {
        // RFC 9110 15.3.5 / 15.4.5: no content, and 204 must not carry Content-Length.
        append_head(out, code, "", framing::none, 0, mode);
      } else {
        const auto reason = reason_of(code);
        const std::size_t body_size = 3 + 1 + reason.size() + 1;  // "CODE REASON\n"
        append_head(out, code, "text/plain", framing::length, body_size, mode);
        if (!head_only) {
          append_number(out, code);
          out.append(" ").append(reason.data(), reason.size()).append("\n");
        }
      }
      auto [ec, n] = co_await net::async_write(c.socket, net::buffer(out), use_tuple);
      co_return !ec;
    }
    case route_kind::bytes: {
      append_head(out, 200, "application/octet-stream", framing::length, r.n, mode);
      std::uint64_t left = head_only ? 0 : r.n;
      const std::string& piece = pattern_piece();
      // The head goes out with the first piece in one write.
      std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(left, piece.size()));
      const std::array<net::const_buffer, 2> first{net::buffer(out), net::buffer(piece.data(), len)};
      auto [ec, n] = co_await net::async_write(c.socket, first, use_tuple);
      if (ec) co_return false;
      left -= len;
      while (left > 0) {
        len = static_cast<std::size_t>(std::min<std::uint64_t>(left, piece.size()));
        auto [wec, wn] = co_await net::async_write(c.socket, net::buffer(piece.data(), len), use_tuple);
        if (wec) co_return false;
        left -= len;
      }
      co_return true;
    }
    case route_kind::chunked: {
      // HTTP/1.0 has no chunked coding: the same payloads, delimited by closing the connection.
      const bool chunked = info.version >= 11;
      if (!chunked) mode = conn_mode::close;
      append_head(out, 200, "text/plain", chunked ? framing::chunked : framing::none, 0, mode);
      for (std::uint64_t i = 0; i < r.n && !head_only; ++i) {
        char payload[32];
        const auto [end, tec] = std::to_chars(payload, payload + sizeof payload - 1, i);
        *end = '\n';
        const auto payload_size = static_cast<std::size_t>(end + 1 - payload);
        if (chunked) {
          append_number(out, payload_size, 16);
          out.append("\r\n").append(payload, payload_size).append("\r\n");
        } else {
          out.append(payload, payload_size);
        }
        if (out.size() >= write_batch_bytes) {
          auto [ec, n] = co_await net::async_write(c.socket, net::buffer(out), use_tuple);
          if (ec) co_return false;
          out.clear();
        }
      }
      if (chunked && !head_only) out.append("0\r\n\r\n");
      auto [ec, n] = co_await net::async_write(c.socket, net::buffer(out), use_tuple);
      co_return !ec && mode != conn_mode::close;
    }
    case route_kind::echo: {
      const std::uint64_t size = info.echo_text.size() + 1 + info.body.size();
      append_head(out, 200, "text/plain", framing::length, size, mode);
      const std::array<net::const_buffer, 4> bufs{net::buffer(out), net::buffer(info.echo_text),
                                                   net::buffer("\n", 1), net::buffer(info.body)};
      if (head_only) {
        auto [ec, n] = co_await net::async_write(c.socket, net::buffer(out), use_tuple);
        co_return !ec;
      }
      auto [ec, n] = co_await net::async_write(c.socket, bufs, use_tuple);
      co_return !ec;
    }
  }
  co_return false;
}

}  // namespace

struct echo_server::worker {
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_retry{ioc};
  std::thread thread;
  bool stopping = false;                          // worker thread only
  std::unordered_set<connection*> connections;  // worker thread only

  net::awaitable<void> accept_loop();
  net::awaitable<void> serve(std::unique_ptr<connection> c);
  void stop_now();
};

net::awaitable<void> echo_server::worker::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (stopping) co_return;
    if (ec) {
      // EMFILE and friends persist: pause instead of spinning, and keep accepting afterwards.
      std::fprintf(stderr, "sluice-echo: accept failed: %s\n", ec.message().c_str());
      accept_retry.expires_after(std::chrono::milliseconds(100));
      [[maybe_unused]] auto [tec] = co_await accept_retry.async_wait(use_tuple);  // stop cancels it
      if (stopping) co_return;
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto c = std::make_unique<connection>(ioc, std::move(socket));
    connections.insert(c.get());
    net::co_spawn(ioc, serve(std::move(c)), log_exception);
  }
}

net::awaitable<void> echo_server::worker::serve(std::unique_ptr<connection> c) {
  beast::flat_buffer buffer;
  request_info info;
  std::string out;  // heads and batched chunks of the non-hello routes
  std::optional<request_reader> reader;
  const auto& heads = hello_heads();
  for (;;) {
    reader.emplace(info);
    reader->header_limit(max_header_bytes);
    auto [ec, n] = co_await http::async_read_header(c->socket, buffer, *reader, use_tuple);
    if (!ec && !reader->is_done()) {
      auto [bec, bn] = co_await http::async_read(c->socket, buffer, *reader, use_tuple);
      ec = bec;
    }
    if (ec) {
      // The client leaving (EOF, with or without part of a request) is a normal close, not an error.
      if (is_http_error(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message) {
        if (ec == http::error::header_limit) {
          co_await send_error(*c, 431, "request header too large\n", out);
        } else if (ec == http::error::body_limit) {
          co_await send_error(*c, 413, "request body too large\n", out);
        } else {
          co_await send_error(*c, 400, "bad request\n", out);
        }
      }
      break;
    }

    const bool keep_alive = reader->keep_alive() && !stopping;
    const conn_mode mode =
        !keep_alive ? conn_mode::close : (info.version == 10 ? conn_mode::keep_alive_10 : conn_mode::keep_alive);
    const bool head_only = info.method == http::verb::head;
    const route r = route_of(info.target);
    bool open = true;
    if (r.kind == route_kind::hello) {
      // The hot path (benchmarks): a pre-serialised reply in one gathered write, no coroutine frame.
      const auto& head = heads[static_cast<std::size_t>(mode)];
      const std::array<net::const_buffer, 2> bufs{net::buffer(head),
                                                  net::buffer(hello_body.data(), head_only ? 0 : hello_body.size())};
      auto [wec, wn] = co_await net::async_write(c->socket, bufs, use_tuple);
      open = !wec;
    } else {
      open = co_await respond(*c, info, r, mode, head_only, out);
    }
    if (!open || !keep_alive) break;
  }
  error_code ignored;
  c->socket.shutdown(tcp::socket::shutdown_send, ignored);
  c->socket.close(ignored);
  connections.erase(c.get());
}

void echo_server::worker::stop_now() {
  stopping = true;
  error_code ignored;
  acceptor.close(ignored);
  accept_retry.cancel();
  for (auto* c : connections) {
    c->socket.close(ignored);
    c->timer.cancel();
  }
}

echo_server::echo_server(const tcp::endpoint& listen, std::size_t threads) {
  threads = std::max<std::size_t>(threads, 1);
  tcp::endpoint ep = listen;
  for (std::size_t i = 0; i < threads; ++i) {
    auto w = std::make_unique<worker>();
    w->acceptor.open(ep.protocol());
    w->acceptor.set_option(tcp::acceptor::reuse_address(true));
    w->acceptor.set_option(reuse_port(true));
    w->acceptor.bind(ep);
    w->acceptor.listen(net::socket_base::max_listen_connections);
    if (i == 0) {
      port_ = w->acceptor.local_endpoint().port();
      ep.port(port_);  // the other threads share the port the first bind picked
    }
    workers_.push_back(std::move(w));
  }
}

echo_server::~echo_server() {
  stop();
  wait();
}

void echo_server::start() {
  for (auto& w : workers_) {
    net::co_spawn(w->ioc, w->accept_loop(), log_exception);
    w->thread = std::thread([w = w.get()] {
      try {
        w->ioc.run();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "sluice-echo: worker ended by exception: %s\n", e.what());
      }
    });
  }
}

void echo_server::stop() {
  for (auto& w : workers_) net::post(w->ioc, [w = w.get()] { w->stop_now(); });
}

void echo_server::wait() {
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

}  // namespace sluice::echo
