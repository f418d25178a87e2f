#include "proxy/local_reply.hpp"

#include <array>
#include <iterator>

namespace sluice::proxy {

namespace {

std::string_view reason(unsigned status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
  }
}

void append(reply_buffer& out, std::string_view s) { out.append(s.data(), s.data() + s.size()); }

void finish_head(reply_buffer& out, bool keep_alive) {
  // Local replies are always sent as HTTP/1.1 with a Content-Length, so keep-alive needs no header for
  // 1.1 clients; HTTP/1.0 keep-alive clients are rare enough for an explicit close to be the safe default.
  if (!keep_alive) append(out, "Connection: close\r\n");
  append(out, "\r\n");
}

}  // namespace

std::string_view error_name(unsigned status) {
  switch (status) {
    case 400: return "bad_request";
    case 408: return "request_timeout";
    case 413: return "payload_too_large";
    case 429: return "rate_limited";
    case 431: return "request_header_fields_too_large";
    case 502: return "bad_gateway";
    case 503: return "service_unavailable";
    case 504: return "gateway_timeout";
    default: return "error";
  }
}

void append_rate_limit_lines(reply_buffer& out, config::header_mode mode, const limiter::limit_status& s) {
  using config::header_mode;
  if (mode == header_mode::latest || mode == header_mode::both) {
    fmt::format_to(std::back_inserter(out),
                   "RateLimit-Policy: \"{}\";q={};w={}\r\nRateLimit: \"{}\";r={};t={}\r\n", s.name, s.burst,
                   s.window_seconds, s.name, s.remaining, s.reset_seconds);
  }
  if (mode == header_mode::legacy || mode == header_mode::both) {
    fmt::format_to(std::back_inserter(out), "RateLimit-Limit: {}\r\nRateLimit-Remaining: {}\r\nRateLimit-Reset: {}\r\n",
                   s.burst, s.remaining, s.reset_seconds);
  }
}

void format_rate_limited(reply_buffer& out, const limiter::decision& d, config::header_mode mode,
                         bool keep_alive) {
  out.clear();
  // Content-Length needs the body's size, so the body is formatted first into inline storage of its own.
  fmt::basic_memory_buffer<char, 256> body;
  fmt::format_to(std::back_inserter(body), R"({{"error":"rate_limited","limit":"{}","retry_after":{}}})",
                 d.rejected_by, d.retry_after_seconds);
  fmt::format_to(std::back_inserter(out),
                 "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
                 "Retry-After: {}\r\n",
                 body.size(), d.retry_after_seconds);
  if (d.matched) append_rate_limit_lines(out, mode, d.status);
  finish_head(out, keep_alive);
  out.append(body.data(), body.data() + body.size());
}

void format_error(reply_buffer& out, unsigned status, bool keep_alive, config::header_mode mode,
                  const limiter::limit_status* limits) {
  out.clear();
  const auto name = error_name(status);
  // {"error":""} is 12 bytes around the name.
  fmt::format_to(std::back_inserter(out),
                 "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", status,
                 reason(status), name.size() + 12);
  if (limits != nullptr) append_rate_limit_lines(out, mode, *limits);
  finish_head(out, keep_alive);
  fmt::format_to(std::back_inserter(out), R"({{"error":"{}"}})", name);
}

}  // namespace sluice::proxy
