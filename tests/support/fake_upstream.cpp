#include "support/fake_upstream.hpp"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include <boost/algorithm/string/predicate.hpp>

namespace sluice::test {

namespace {

constexpr std::size_t piece_bytes = 26 * 2048;  // a multiple of 26 so every piece continues the a..z pattern
constexpr std::size_t body_read_bytes = 64 * 1024;

const std::string& pattern_piece() {
  static const std::string piece = [] {
    std::string s(piece_bytes, '\0');
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('a' + i % 26);
    return s;
  }();
  return piece;
}

header_list copy_headers(const http::fields& fields) {
  header_list out;
  for (const auto& f : fields) out.emplace_back(std::string(f.name_string()), std::string(f.value()));
  return out;
}

}  // namespace

std::optional<std::string> find_header(const header_list& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (boost::algorithm::iequals(n, name)) return v;
  }
  return std::nullopt;
}

std::size_t count_header(const header_list& headers, std::string_view name) {
  return static_cast<std::size_t>(std::count_if(headers.begin(), headers.end(),
                                                [&](const auto& h) { return boost::algorithm::iequals(h.first, name); }));
}

reply reply::ok(std::string body) {
  reply r;
  r.body = std::move(body);
  return r;
}

reply reply::with_status(unsigned status, std::string body) {
  reply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

reply reply::bytes(std::uint64_t n) {
  reply r;
  r.body.clear();
  r.stream_bytes = n;
  return r;
}

reply reply::chunked(std::string body, std::size_t n) {
  reply r;
  r.body = std::move(body);
  r.chunks = n;
  return r;
}

reply reply::close_connection() {
  reply r;
  r.what = kind::close;
  return r;
}

reply reply::reset_connection() {
  reply r;
  r.what = kind::reset;
  return r;
}

reply reply::garbage(std::string bytes) {
  reply r;
  r.what = kind::garbage;
  r.raw = std::move(bytes);
  return r;
}

reply reply::partial() {
  reply r;
  r.what = kind::partial;
  r.raw = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
  return r;
}

reply reply::hang() {
  reply r;
  r.what = kind::hang;
  return r;
}

struct fake_upstream::impl {
  struct session {
    explicit session(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
    tcp::socket socket;
    net::steady_timer timer;
    bool idle = false;  // waiting for the head of its next request
    std::uint64_t id = 0;
  };

  impl(fake_upstream& o, handler h, options opts) : owner(o), opts(opts), handler_fn(std::move(h)) {}

  fake_upstream& owner;
  options opts;
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;
  std::promise<void> finished;

  mutable std::mutex mu;  // guards handler_fn and reqs
  mutable std::condition_variable reqs_changed;
  handler handler_fn;
  std::vector<received_request> reqs;

  // io_context thread only.
  std::unordered_map<std::uint64_t, session*> sessions;
  bool stopping = false;
  std::uint64_t next_id = 0;

  net::awaitable<void> accept_loop();
  net::awaitable<void> serve(std::shared_ptr<session> s);
  net::awaitable<bool> respond(session& s, const received_request& rq, const reply& r);
  void record(received_request rq);
  reply decide(const received_request& rq);
  void stop_all();
};

void fake_upstream::impl::record(received_request rq) {
  {
    std::lock_guard lock(mu);
    reqs.push_back(std::move(rq));
  }
  reqs_changed.notify_all();
}

reply fake_upstream::impl::decide(const received_request& rq) {
  handler h;
  {
    std::lock_guard lock(mu);
    h = handler_fn;
  }
  if (!h) return reply::ok();
  try {
    return h(rq);
  } catch (const std::exception& e) {
    // The handler runs off the test thread, where a Catch2 assertion must not fire: answer 500 instead.
    std::fprintf(stderr, "fake_upstream: handler threw: %s\n", e.what());
    return reply::with_status(500, "handler threw");
  }
}

void fake_upstream::impl::stop_all() {
  stopping = true;
  error_code ignored;
  acceptor.close(ignored);
  for (auto& [id, s] : sessions) {
    s->socket.close(ignored);
    s->timer.cancel();
  }
}

net::awaitable<void> fake_upstream::impl::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (stopping || !acceptor.is_open()) co_return;
    if (ec) continue;
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto s = std::make_shared<session>(std::move(socket));
    s->id = ++next_id;
    sessions.emplace(s->id, s.get());
    owner.accepted_.fetch_add(1);
    const auto open = owner.open_.fetch_add(1) + 1;
    if (open > owner.max_open_.load()) owner.max_open_.store(open);  // single writer: this thread
    net::co_spawn(ioc, serve(std::move(s)), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "fake_upstream: session ended by exception: %s\n", ex.what());
      }
    });
  }
}

net::awaitable<void> fake_upstream::impl::serve(std::shared_ptr<session> s) {
  beast::flat_buffer buffer;
  std::vector<char> body_buf(body_read_bytes);
  std::uint64_t index = 0;
  while (!stopping) {
    http::request_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    parser.header_limit(1 << 20);
    s->idle = true;
    auto [ec, n] = co_await http::async_read_header(s->socket, buffer, parser, use_tuple);
    s->idle = false;
    if (ec) break;

    received_request rq;
    {
      const auto& req = parser.get();
      rq.method = std::string(req.method_string());
      rq.target = std::string(req.target());
      rq.version = req.version();
      rq.headers = copy_headers(req.base());
      rq.chunked = parser.chunked();
      rq.keep_alive = parser.keep_alive();
      rq.connection = s->id;
      rq.index_on_connection = ++index;
    }
    bool body_ok = true;
    while (!parser.is_done()) {
      parser.get().body().data = body_buf.data();
      parser.get().body().size = body_buf.size();
      auto [bec, bn] = co_await http::async_read(s->socket, buffer, parser, use_tuple);
      if (bec == http::error::need_buffer) bec = {};
      if (bec) {
        body_ok = false;
        break;
      }
      const std::size_t got = body_buf.size() - parser.get().body().size;
      rq.body_size += got;
      const std::size_t keep = std::min(got, opts.max_recorded_body - std::min(opts.max_recorded_body, rq.body.size()));
      rq.body.append(body_buf.data(), keep);
    }
    if (!body_ok) break;

    const reply r = decide(rq);
    record(rq);
    const bool keep_going = co_await respond(*s, rq, r);
    if (!keep_going) break;
  }
  error_code ignored;
  s->socket.close(ignored);
  sessions.erase(s->id);
  owner.open_.fetch_sub(1);
}

net::awaitable<bool> fake_upstream::impl::respond(session& s, const received_request& rq, const reply& r) {
  error_code ignored;
  if (r.delay.count() > 0) {
    s.timer.expires_after(r.delay);
    auto [ec] = co_await s.timer.async_wait(use_tuple);
    if (ec || stopping) co_return false;
  }
  switch (r.what) {
    case reply::kind::close:
      s.socket.shutdown(tcp::socket::shutdown_both, ignored);
      co_return false;
    case reply::kind::reset:
      s.socket.set_option(net::socket_base::linger(true, 0), ignored);
      s.socket.close(ignored);
      co_return false;
    case reply::kind::garbage:
    case reply::kind::partial: {
      // A failed write needs no handling: the connection closes either way.
      [[maybe_unused]] auto [ec, n] = co_await net::async_write(s.socket, net::buffer(r.raw), use_tuple);
      s.socket.shutdown(tcp::socket::shutdown_send, ignored);
      co_return false;
    }
    case reply::kind::hang: {
      std::array<char, 4096> sink;
      for (;;) {
        auto [ec, n] = co_await s.socket.async_read_some(net::buffer(sink), use_tuple);
        if (ec) co_return false;
      }
    }
    case reply::kind::respond:
      break;
  }

  const bool keep_alive = rq.keep_alive && !r.close_after && !opts.close_after_each_response;
  const bool head_only = rq.method == "HEAD";
  http::response<http::empty_body> res{static_cast<http::status>(r.status), 11};
  for (const auto& [name, value] : r.headers) res.insert(name, value);
  if (r.chunks > 0) {
    res.chunked(true);
  } else {
    res.content_length(r.stream_bytes ? *r.stream_bytes : r.body.size());
  }
  res.keep_alive(keep_alive);
  std::ostringstream head_stream;
  head_stream << res.base();
  const std::string head = head_stream.str();

  if (head_only || (r.chunks == 0 && !r.stream_bytes)) {
    const std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(head_only ? std::string_view{} : r.body)};
    auto [ec, n] = co_await net::async_write(s.socket, bufs, use_tuple);
    if (ec) co_return false;
  } else if (r.chunks > 0) {
    auto [ec, n] = co_await net::async_write(s.socket, net::buffer(head), use_tuple);
    if (ec) co_return false;
    const std::size_t count = std::min(r.chunks, r.body.size());  // every piece non-empty: "0" ends a body
    std::size_t offset = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t len = (r.body.size() - offset) / (count - i);
      const std::string_view piece = std::string_view(r.body).substr(offset, len);
      offset += len;
      char size_line[32];
      const int size_len = std::snprintf(size_line, sizeof size_line, "%zx\r\n", piece.size());
      const std::array<net::const_buffer, 3> bufs{net::buffer(size_line, static_cast<std::size_t>(size_len)),
                                                  net::buffer(piece), net::buffer("\r\n", 2)};
      auto [cec, cn] = co_await net::async_write(s.socket, bufs, use_tuple);
      if (cec) co_return false;
    }
    auto [lec, ln] = co_await net::async_write(s.socket, net::buffer("0\r\n\r\n", 5), use_tuple);
    if (lec) co_return false;
  } else {
    auto [ec, n] = co_await net::async_write(s.socket, net::buffer(head), use_tuple);
    if (ec) co_return false;
    const std::string& piece = pattern_piece();
    std::uint64_t left = *r.stream_bytes;
    while (left > 0) {
      const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(left, piece.size()));
      auto [wec, wn] = co_await net::async_write(s.socket, net::buffer(piece.data(), len), use_tuple);
      if (wec) co_return false;
      left -= len;
    }
  }
  if (!keep_alive) {
    s.socket.shutdown(tcp::socket::shutdown_send, ignored);
    co_return false;
  }
  co_return true;
}

fake_upstream::fake_upstream(handler h, options opts) : impl_(std::make_unique<impl>(*this, std::move(h), opts)) {
  auto& a = impl_->acceptor;
  const tcp::endpoint ep{net::ip::make_address_v4("127.0.0.1"), 0};
  a.open(ep.protocol());
  a.set_option(tcp::acceptor::reuse_address(true));
  a.bind(ep);
  a.listen(net::socket_base::max_listen_connections);
  port_ = a.local_endpoint().port();
  net::co_spawn(impl_->ioc, impl_->accept_loop(), net::detached);
  impl_->thread = std::thread([this] {
    try {
      impl_->ioc.run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fake_upstream: io_context thread ended by exception: %s\n", e.what());
    }
    impl_->finished.set_value();
  });
}

fake_upstream::~fake_upstream() {
  auto done = impl_->finished.get_future();
  net::post(impl_->ioc, [this] { impl_->stop_all(); });
  if (done.wait_for(impl_->opts.stop_deadline) != std::future_status::ready) {
    std::fprintf(stderr, "fake_upstream: did not stop within the deadline; stopping its io_context\n");
    impl_->ioc.stop();
  }
  impl_->thread.join();
}

tcp::endpoint fake_upstream::endpoint() const { return {net::ip::make_address_v4("127.0.0.1"), port_}; }

std::string fake_upstream::address() const { return "127.0.0.1:" + std::to_string(port_); }

void fake_upstream::set_handler(handler h) {
  std::lock_guard lock(impl_->mu);
  impl_->handler_fn = std::move(h);
}

std::size_t fake_upstream::close_idle_connections() {
  auto closed = std::make_shared<std::promise<std::size_t>>();
  auto result = closed->get_future();
  net::post(impl_->ioc, [this, closed] {
    std::size_t count = 0;
    error_code ignored;
    for (auto& [id, s] : impl_->sessions) {
      if (!s->idle) continue;
      s->socket.shutdown(tcp::socket::shutdown_both, ignored);
      s->socket.close(ignored);
      ++count;
    }
    closed->set_value(count);
  });
  if (result.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    throw std::runtime_error("fake_upstream::close_idle_connections: the fake's thread did not answer in 5 s");
  }
  return result.get();
}

std::vector<received_request> fake_upstream::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->reqs;
}

std::size_t fake_upstream::request_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->reqs.size();
}

received_request fake_upstream::last_request() const {
  std::lock_guard lock(impl_->mu);
  if (impl_->reqs.empty()) throw std::logic_error("fake_upstream::last_request: no request received");
  return impl_->reqs.back();
}

bool fake_upstream::wait_for_requests(std::size_t n, std::chrono::milliseconds deadline) const {
  std::unique_lock lock(impl_->mu);
  return impl_->reqs_changed.wait_for(lock, deadline, [&] { return impl_->reqs.size() >= n; });
}

}  // namespace sluice::test
