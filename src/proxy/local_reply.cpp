#include "proxy/local_reply.hpp"

#include <array>
#include <cstring>
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
  // Every forwarded response carries these, so they are appended piece by piece (fmt::format_int
  // for the numbers) rather than through a format string.
  using config::header_mode;
  if (mode == header_mode::latest || mode == header_mode::both) {
    append(out, "RateLimit-Policy: \"");
    append(out, s.name);
    append(out, "\";q=");
    append_number(out, s.burst);
    append(out, ";w=");
    append_number(out, s.window_seconds);
    append(out, "\r\nRateLimit: \"");
    append(out, s.name);
    append(out, "\";r=");
    append_number(out, s.remaining);
    append(out, ";t=");
    append_number(out, s.reset_seconds);
    append(out, "\r\n");
  }
  if (mode == header_mode::legacy || mode == header_mode::both) {
    append(out, "RateLimit-Limit: ");
    append_number(out, s.burst);
    append(out, "\r\nRateLimit-Remaining: ");
    append_number(out, s.remaining);
    append(out, "\r\nRateLimit-Reset: ");
    append_number(out, s.reset_seconds);
    append(out, "\r\n");
  }
}

void format_rate_limited(reply_buffer& out, const limiter::decision& d, config::header_mode mode,
                         bool keep_alive) {
  // The shed path: every piece is appended directly, no format string is parsed per reply.
  out.clear();
  const fmt::format_int retry_after(d.retry_after_seconds);
  const std::string_view retry(retry_after.data(), retry_after.size());
  // {"error":"rate_limited","limit":"","retry_after":} is 50 bytes around the name and the number.
  const std::size_t body_size = 50 + d.rejected_by.size() + retry.size();
  append(out, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: ");
  append_number(out, body_size);
  append(out, "\r\nRetry-After: ");
  append(out, retry);
  append(out, "\r\n");
  if (d.matched) append_rate_limit_lines(out, mode, d.status);
  finish_head(out, keep_alive);
  append(out, R"({"error":"rate_limited","limit":")");
  append(out, d.rejected_by);
  append(out, R"(","retry_after":)");
  append(out, retry);
  append(out, "}");
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
