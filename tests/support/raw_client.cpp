#include "support/raw_client.hpp"

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace sluice::test {

namespace {

tcp::endpoint loopback(std::uint16_t port) { return {net::ip::make_address_v4("127.0.0.1"), port}; }

bool is_close_error(const error_code& ec) {
  return ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::connection_aborted ||
         ec == net::error::broken_pipe || ec == http::error::end_of_stream;
}

}  // namespace

raw_client::raw_client(std::uint16_t port, std::chrono::milliseconds timeout)
    : own_ioc_(std::make_unique<net::io_context>(1)), ioc_(own_ioc_.get()), socket_(*ioc_), timeout_(timeout) {
  bool done = false;
  error_code result;
  socket_.async_connect(loopback(port), [&](error_code ec) {
    result = ec;
    done = true;
  });
  if (!drive(done, timeout_)) FAIL("raw_client: connect to 127.0.0.1:" << port << " timed out");
  if (result) FAIL("raw_client: connect to 127.0.0.1:" << port << " failed: " << result.message());
  socket_.set_option(tcp::no_delay(true));
}

raw_client::raw_client(net::io_context& ioc, std::uint16_t port, std::chrono::milliseconds timeout)
    : ioc_(&ioc), socket_(ioc), timeout_(timeout) {
  bool done = false;
  error_code result;
  socket_.async_connect(loopback(port), [&](error_code ec) {
    result = ec;
    done = true;
  });
  if (!drive(done, timeout_)) FAIL("raw_client: connect to 127.0.0.1:" << port << " timed out");
  if (result) FAIL("raw_client: connect to 127.0.0.1:" << port << " failed: " << result.message());
  socket_.set_option(tcp::no_delay(true));
}

raw_client::~raw_client() {
  error_code ignored;
  socket_.close(ignored);  // drive() never leaves an operation pending, so no handler outlives us
}

bool raw_client::drive(const bool& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  if (ioc_->stopped()) ioc_->restart();
  while (!done && std::chrono::steady_clock::now() < until) {
    ioc_->run_one_until(until);
    if (ioc_->stopped()) ioc_->restart();  // our operation is pending, so more work will come
  }
  if (done) return true;
  error_code ignored;
  socket_.cancel(ignored);
  const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done && std::chrono::steady_clock::now() < grace) {
    ioc_->run_one_until(grace);
    if (ioc_->stopped()) ioc_->restart();
  }
  if (!done) {
    // A handler that still references the caller's frame must never run: there is no safe way on.
    std::fprintf(stderr, "raw_client: a cancelled operation did not complete; aborting\n");
    std::abort();
  }
  return false;
}

error_code raw_client::try_send(std::string_view bytes) {
  bool done = false;
  error_code result;
  net::async_write(socket_, net::buffer(bytes.data(), bytes.size()), [&](error_code ec, std::size_t) {
    result = ec;
    done = true;
  });
  if (!drive(done, timeout_)) return net::error::timed_out;
  return result;
}

void raw_client::send(std::string_view bytes) {
  const auto ec = try_send(bytes);
  if (ec) FAIL("raw_client: send of " << bytes.size() << " bytes failed: " << ec.message());
}

error_code raw_client::try_read_response(parsed_response& out, read_options opts) {
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  parser.header_limit(1 << 20);
  if (opts.head_request) parser.skip(true);
  std::size_t chunks = 0;
  auto on_chunk = [&chunks](std::uint64_t size, beast::string_view, error_code&) {
    if (size > 0) ++chunks;
  };
  parser.on_chunk_header(on_chunk);

  bool done = false;
  error_code result;
  http::async_read_header(socket_, buffer_, parser, [&](error_code ec, std::size_t) {
    result = ec;
    done = true;
  });
  if (!drive(done, timeout_)) return net::error::timed_out;
  if (result) {
    if (is_close_error(result)) peer_closed_ = true;
    return result;
  }

  out = parsed_response{};
  const auto& res = parser.get();
  out.status = res.result_int();
  out.reason = std::string(res.reason());
  out.version = res.version();
  for (const auto& f : res.base()) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.chunked = parser.chunked();

  std::vector<char> piece(64 * 1024);
  while (!parser.is_done()) {
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    done = false;
    http::async_read(socket_, buffer_, parser, [&](error_code ec, std::size_t) {
      result = ec;
      done = true;
    });
    if (!drive(done, timeout_)) return net::error::timed_out;
    if (result == http::error::need_buffer) result = {};
    if (result) {
      if (is_close_error(result)) peer_closed_ = true;
      return result;
    }
    const std::size_t got = piece.size() - parser.get().body().size;
    out.body_size += got;
    const std::size_t room = opts.max_body - std::min(opts.max_body, out.body.size());
    out.body.append(piece.data(), std::min(got, room));
  }
  out.chunk_count = chunks;
  out.keep_alive = parser.keep_alive();
  return {};
}

parsed_response raw_client::read_response(read_options opts) {
  parsed_response out;
  const auto ec = try_read_response(out, opts);
  if (ec == net::error::timed_out) FAIL("raw_client: no complete response within " << timeout_.count() << " ms");
  if (ec) FAIL("raw_client: reading a response failed: " << ec.message());
  return out;
}

std::string raw_client::read_until_closed() {
  std::string out(static_cast<const char*>(buffer_.data().data()), buffer_.size());
  buffer_.consume(buffer_.size());
  std::vector<char> piece(64 * 1024);
  while (!peer_closed_) {
    bool done = false;
    error_code result;
    std::size_t got = 0;
    socket_.async_read_some(net::buffer(piece), [&](error_code ec, std::size_t n) {
      result = ec;
      got = n;
      done = true;
    });
    if (!drive(done, timeout_)) FAIL("raw_client: the peer did not close within " << timeout_.count() << " ms");
    out.append(piece.data(), got);
    if (result) {
      if (!is_close_error(result)) FAIL("raw_client: read failed: " << result.message());
      peer_closed_ = true;
    }
  }
  return out;
}

bool raw_client::is_closed(std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  while (!peer_closed_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return false;
    bool done = false;
    error_code result;
    std::size_t got = 0;
    auto space = buffer_.prepare(64 * 1024);
    socket_.async_read_some(space, [&](error_code ec, std::size_t n) {
      result = ec;
      got = n;
      done = true;
    });
    if (!drive(done, std::chrono::duration_cast<std::chrono::milliseconds>(until - now))) return false;
    buffer_.commit(got);
    if (result) {
      if (!is_close_error(result)) FAIL("raw_client: read failed: " << result.message());
      peer_closed_ = true;
    }
  }
  return true;
}

void raw_client::shutdown_send() {
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
}

void raw_client::close() {
  error_code ignored;
  socket_.close(ignored);
}

std::uint16_t raw_client::local_port() const {
  error_code ec;
  const auto ep = socket_.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

bool raw_client::connect_refused(std::uint16_t port, std::chrono::milliseconds deadline) {
  net::io_context ioc(1);
  tcp::socket socket(ioc);
  error_code result;
  bool done = false;
  socket.async_connect(loopback(port), [&](error_code ec) {
    result = ec;
    done = true;
  });
  ioc.run_for(deadline);
  if (!done) FAIL("raw_client::connect_refused: connect to port " << port << " neither succeeded nor failed in time");
  return result == net::error::connection_refused;
}

}  // namespace sluice::test
