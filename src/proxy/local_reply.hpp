#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "config/config.hpp"
#include "limiter/decider.hpp"

/// Responses sluice makes itself (CONTRACT.md "On the wire"): the 429 and the 4xx/5xx errors, each with a
/// short JSON body, plus the rate limit header fields. Formatted into inline storage with fmt: no heap
/// allocation for ordinary limit names. Pure; thread-safe (touches only its arguments).
namespace sluice::proxy {

/// Where a local reply or a rewritten head is formatted: 1 KiB inline; grows on the heap (and keeps the
/// capacity) for larger heads or absurdly long limit names.
using reply_buffer = fmt::basic_memory_buffer<char, 1024>;

/// Appends s to out: one resize and one memcpy (fmt's buffer::append copies through a generic loop, slow
/// for the many short pieces of a head).
inline void append(reply_buffer& out, std::string_view s) {
  const std::size_t at = out.size();
  out.resize(at + s.size());
  std::memcpy(out.data() + at, s.data(), s.size());
}

/// Appends n in decimal (fmt::format_int: no format string, no allocation).
inline void append_number(reply_buffer& out, std::uint64_t n) {
  const fmt::format_int text(n);
  append(out, std::string_view(text.data(), text.size()));
}

/// Appends the rate limit header lines (each ending CRLF) for mode and the given limit state; nothing
/// for header_mode::none.
void append_rate_limit_lines(reply_buffer& out, config::header_mode mode, const limiter::limit_status& status);

/// Formats "429 Too Many Requests" for a rejecting decision: Retry-After, the JSON body
/// {"error":"rate_limited","limit":"NAME","retry_after":S}, the rate limit headers, and Connection: close
/// when keep_alive is false. out is cleared first.
void format_rate_limited(reply_buffer& out, const limiter::decision& decision, config::header_mode mode,
                         bool keep_alive);

/// Formats an error reply sluice makes itself: status is 400, 408, 413, 431, 502, 503 or 504; the body is
/// {"error":"NAME"} (bad_request, request_timeout, payload_too_large, request_header_fields_too_large,
/// bad_gateway, service_unavailable, gateway_timeout). Rate limit headers are added when `limits` is not
/// null (the limiter saw the request). out is cleared first.
void format_error(reply_buffer& out, unsigned status, bool keep_alive, config::header_mode mode,
                  const limiter::limit_status* limits);

/// The JSON error name for one of format_error's statuses ("bad_request", ...); "error" for others.
[[nodiscard]] std::string_view error_name(unsigned status);

}  // namespace sluice::proxy
