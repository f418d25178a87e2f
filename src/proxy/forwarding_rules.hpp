#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "net.hpp"
#include "proxy/head_arena.hpp"
#include "proxy/local_reply.hpp"
#include "proxy/response_parser.hpp"

/// The header rules of a forwarding proxy (RFC 9110 §7.6, RFC 9112 §6.3, CONTRACT.md "On the wire").
/// Pure functions over Beast headers: no I/O, no logging; heads are serialised, never edited in place.
/// Thread-safe (they touch only their arguments). The head functions exist for Beast's http::fields and for
/// head_fields (arena-backed, the hot path's).
namespace sluice::proxy {

/// What is wrong with a request head that Beast's parser accepted but a proxy must refuse (-> 400, close).
enum class head_problem {
  none,
  length_and_encoding,      ///< both Content-Length and Transfer-Encoding (smuggling)
  unsupported_encoding,     ///< Transfer-Encoding other than exactly "chunked"
  missing_host,             ///< HTTP/1.1 without Host (RFC 9112 §3.2)
  multiple_host,            ///< more than one Host field
  obs_fold,                 ///< a field line folded onto the next line (RFC 9112 §5.2)
};

/// A short name for logs ("length_and_encoding", ...).
[[nodiscard]] std::string_view to_string(head_problem p);

/// Checks a parsed request head for what Beast lets through and a proxy must refuse. Differing
/// Content-Length values and CL after TE: chunked are already parse errors in Beast.
template <class Fields>
[[nodiscard]] head_problem check_request_head(const http::request_header<Fields>& head);

/// True when raw head bytes (request line to the empty line) contain an obs-fold: a line starting with
/// SP or HTAB after the first line.
[[nodiscard]] bool has_obs_fold(std::string_view raw_head);

/// Every X-Forwarded-For line of the head joined with ", " into out (cleared first); empty when absent.
template <class Allocator>
void join_forwarded_for(const http::basic_fields<Allocator>& fields, std::string& out);

/// Serialises a client's request head for the upstream into out (cleared first), without changing head:
/// request line as HTTP/1.1; the hop-by-hop fields (Connection and every field it names but Content-Length
/// and Host, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade) left out; one
/// Content-Length of equal duplicates; "Expect: 100-continue" left out (sluice answers it itself);
/// X-Forwarded-For set to `forwarded_for, peer` (or `peer`), X-Forwarded-Proto: http, X-Forwarded-Host: the
/// Host value (client-sent ones replaced); Transfer-Encoding: chunked when the body arrives chunked (it is
/// re-framed, not relayed). forwarded_for is the joined value from join_forwarded_for.
template <class Fields>
void write_request_head(const http::request_header<Fields>& head, std::string_view peer,
                        std::string_view forwarded_for, bool body_chunked, reply_buffer& out);

/// How a response body is framed towards the client.
enum class body_framing {
  none,             ///< no body: HEAD, 1xx, 204, 304
  content_length,   ///< the upstream's Content-Length, kept
  chunked,          ///< unknown length, HTTP/1.1 client: re-framed as chunked
  close_delimited,  ///< unknown length, HTTP/1.0 client: the end of the body is the end of the connection
};

/// The client-side framing of a response: head_request = the request was HEAD; client_version 10 or 11.
[[nodiscard]] body_framing client_response_framing(bool head_request, unsigned status, bool has_content_length,
                                                   unsigned client_version);

/// Whether the client connection stays open after this response: the client asked for it (HTTP/1.1 without
/// "close", HTTP/1.0 with "keep-alive"), the framing allows it, and the server is not draining.
[[nodiscard]] bool client_keeps_alive(bool client_wants_keep_alive, body_framing framing, bool draining);

/// Serialises an upstream response head for the client into out (cleared first), from the status, reason
/// and field lines response_parser recorded: status line as HTTP/1.1 with the upstream's reason (the
/// standard one when it sent none); hop-by-hop fields left out; Content-Length as one field with the
/// parsed content_length; Transfer-Encoding: chunked when framing says so; Connection: close, or
/// keep-alive for an HTTP/1.0 client that keeps the connection; then, when limits is not null, the rate
/// limit fields of mode, replacing any of the same names the upstream sent.
void write_response_head(unsigned status, std::string_view reason, std::span<const field_line> fields,
                         std::optional<std::uint64_t> content_length, body_framing framing, bool keep_alive,
                         unsigned client_version, config::header_mode mode, const limiter::limit_status* limits,
                         reply_buffer& out);

/// True for methods RFC 9110 §9.2.2 calls idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE): a
/// request that may be sent again after a stale pooled connection failed.
[[nodiscard]] bool is_idempotent(http::verb method);

}  // namespace sluice::proxy
