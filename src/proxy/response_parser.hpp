#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "net.hpp"

namespace sluice::proxy {

/// One field line of a parsed head, viewing the bytes it was parsed from.
struct field_line {
  http::field id;         ///< field::unknown for names Beast does not know
  std::string_view name;  ///< as received
  std::string_view value;
};

/// Parses an upstream response for relaying: Beast's tokenizer and framing (Content-Length, chunked,
/// close-delimited, HEAD via skip()), but the head is not copied into a basic_fields container. The
/// status line and field lines are recorded as views into the bytes the head was parsed from, which the
/// read buffer holds until the next read into it: the session serialises the client's head right after
/// the head is read, before it reads the body. Body bytes go into a caller-supplied window, as with
/// http::buffer_body: set_body_window(), then read; need_buffer when the window is full.
///
/// A response with more than max_fields field lines is refused (header_limit), so the recorded list is
/// bounded. Trailer fields of a chunked body are parsed and dropped. Use from one thread.
class response_parser : public http::basic_parser<false> {
 public:
  static constexpr std::size_t max_fields = 256;

  /// fields: where the field lines go (cleared first); owned by the caller so its capacity is reused.
  explicit response_parser(std::vector<field_line>& fields) : fields_(fields) { fields_.clear(); }

  [[nodiscard]] unsigned status() const { return status_; }
  [[nodiscard]] std::string_view reason() const { return reason_; }
  [[nodiscard]] unsigned version() const { return version_; }
  /// The field lines of the head; views valid until the read buffer is read into again.
  [[nodiscard]] const std::vector<field_line>& fields() const { return fields_; }

  /// Where the next body bytes go; body_size() counts down as they arrive.
  void set_body_window(char* data, std::size_t size) {
    body_data_ = data;
    body_size_ = size;
  }
  [[nodiscard]] std::size_t body_size() const { return body_size_; }

 private:
  // Beast passes boost::core::string_view; it converts to std::string_view.
  void on_request_impl(http::verb, beast::string_view, beast::string_view, int, error_code& ec) override {
    ec = http::error::bad_method;  // never called for a response parser
  }
  void on_response_impl(int code, beast::string_view reason, int version, error_code&) override {
    status_ = static_cast<unsigned>(code);
    reason_ = reason;
    version_ = static_cast<unsigned>(version);
  }
  void on_field_impl(http::field id, beast::string_view name, beast::string_view value, error_code& ec) override {
    if (head_done_) return;  // a trailer of a chunked body: dropped
    if (fields_.size() >= max_fields) {
      ec = http::error::header_limit;
      return;
    }
    fields_.push_back(field_line{id, name, value});
  }
  void on_header_impl(error_code&) override { head_done_ = true; }
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(beast::string_view body, error_code& ec) override { return take(body, ec); }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, error_code& ec) override {
    return take(body, ec);
  }
  void on_finish_impl(error_code&) override {}

  /// Copies what fits into the body window; need_buffer when not all of it did.
  std::size_t take(std::string_view body, error_code& ec) {
    if (body_data_ == nullptr) {
      ec = http::error::need_buffer;
      return 0;
    }
    const std::size_t n = body.size() < body_size_ ? body.size() : body_size_;
    std::memcpy(body_data_, body.data(), n);
    body_data_ += n;
    body_size_ -= n;
    if (n < body.size()) ec = http::error::need_buffer;
    return n;
  }

  std::vector<field_line>& fields_;
  std::string_view reason_;
  unsigned status_ = 0;
  unsigned version_ = 11;
  bool head_done_ = false;
  char* body_data_ = nullptr;
  std::size_t body_size_ = 0;
};

}  // namespace sluice::proxy
