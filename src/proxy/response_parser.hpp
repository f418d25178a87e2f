#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "net.hpp"

namespace sluice::proxy {

/// One field line of a parsed head, viewing the bytes it was parsed from.
struct field_line {
  http::field id;         ///< set for the names framing and hop-by-hop rules need; field::unknown otherwise
  std::string_view name;  ///< as received
  std::string_view value;  ///< without surrounding whitespace
};

/// Parses an upstream HTTP/1.x response for relaying (RFC 9112), without copying the head: the status line
/// and field lines are recorded as views into the bytes given to put(), which the caller keeps (the
/// connection's read buffer, until it is read into again: the session writes the client's head first).
/// Body bytes are copied into a caller-supplied window (set_body_window()), chunked framing removed.
///
/// Framing: none for HEAD requests, 1xx, 204 and 304; chunked for Transfer-Encoding: chunked;
/// Content-Length (equal duplicates allowed); otherwise until the upstream closes. Refused, as errors:
/// a bad status line or version, a field line that is not `token ":" value` (obs-fold, bare LF),
/// Content-Length with Transfer-Encoding, a coding other than a lone chunked (it could not be relayed:
/// Transfer-Encoding is hop-by-hop), differing, empty or malformed lengths, a bad chunk, a head over
/// header_limit bytes or with more than max_fields field lines. Chunk extensions and trailers are read
/// and dropped. An HTTP/1.0 response with Transfer-Encoding is read, then its connection is not kept.
/// Use from one thread.
class response_parser {
 public:
  static constexpr std::size_t max_fields = 256;
  /// Longest chunk-size line (with extensions) or trailer line accepted.
  static constexpr std::size_t max_line = 4096;

  /// fields: where the field lines go (cleared first); owned by the caller so its capacity is reused.
  response_parser(std::vector<field_line>& fields, bool head_request, std::size_t header_limit);

  /// Parses from data and returns the bytes consumed. Before the head is complete nothing is consumed
  /// until all of it is in data (it is parsed in one piece); after it, body bytes are copied into the
  /// window until it is full. ec: an http::error for a malformed message.
  std::size_t put(std::string_view data, error_code& ec);
  /// The upstream closed the connection: completes a close-delimited body, otherwise an error
  /// (http::error::end_of_stream before any byte, partial_message after some).
  void put_eof(error_code& ec);

  /// Where the next body bytes go; body_size() counts down as they arrive.
  void set_body_window(char* data, std::size_t size) {
    window_ = data;
    window_size_ = size;
  }
  [[nodiscard]] std::size_t body_size() const { return window_size_; }

  [[nodiscard]] bool got_some() const { return got_some_; }
  [[nodiscard]] bool is_header_done() const { return state_ != state::head; }
  [[nodiscard]] bool is_done() const { return state_ == state::done; }

  [[nodiscard]] unsigned status() const { return status_; }
  [[nodiscard]] std::string_view reason() const { return reason_; }
  [[nodiscard]] unsigned version() const { return version_; }
  [[nodiscard]] const std::vector<field_line>& fields() const { return fields_; }
  [[nodiscard]] bool chunked() const { return chunked_; }
  [[nodiscard]] std::optional<std::uint64_t> content_length() const { return content_length_; }
  /// The upstream may keep the connection: HTTP/1.1 without "close", HTTP/1.0 with "keep-alive", and a
  /// body that does not end with the connection.
  [[nodiscard]] bool keep_alive() const;

 private:
  enum class state { head, body_length, body_eof, chunk_size, chunk_data, chunk_crlf, trailer, done };

  std::size_t parse_head(std::string_view data, error_code& ec);
  bool parse_status_line(std::string_view line);
  bool parse_framing(error_code& ec);
  std::size_t copy_body(std::string_view data, std::uint64_t limit);

  std::vector<field_line>& fields_;
  std::size_t header_limit_;
  bool head_request_;
  state state_ = state::head;
  bool got_some_ = false;
  unsigned status_ = 0;
  unsigned version_ = 11;
  std::string_view reason_;
  bool chunked_ = false;
  bool close_ = false;        ///< Connection: close
  bool keep_alive_ = false;   ///< Connection: keep-alive
  bool until_close_ = false;  ///< the body ends when the upstream closes
  std::optional<std::uint64_t> content_length_;
  std::uint64_t remaining_ = 0;    ///< body or chunk bytes still to come
  std::size_t trailer_bytes_ = 0;
  std::size_t scanned_ = 0;        ///< head bytes already searched for the end of the head
  char* window_ = nullptr;
  std::size_t window_size_ = 0;
};

}  // namespace sluice::proxy
