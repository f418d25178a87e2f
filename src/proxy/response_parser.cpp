#include "proxy/response_parser.hpp"

#include <array>
#include <cstring>

#include "common/http_text.hpp"

namespace sluice::proxy {

namespace {

// Character classes as one table lookup per byte: bit 1 = tchar (RFC 9110 §5.6.2), bit 2 = a field
// value octet (§5.5: VCHAR, obs-text, SP, HTAB).
constexpr unsigned char tchar_bit = 1;
constexpr unsigned char value_bit = 2;
constexpr std::array<unsigned char, 256> char_classes = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    constexpr std::string_view tchar_symbols = "!#$%&'*+-.^_`|~";
    const bool tchar = alnum || tchar_symbols.find(static_cast<char>(c)) != std::string_view::npos;
    const bool value = c == '\t' || (c >= 0x20 && c != 0x7f);
    t[static_cast<std::size_t>(c)] = static_cast<unsigned char>((tchar ? tchar_bit : 0) | (value ? value_bit : 0));
  }
  return t;
}();

// True when every byte of s has the class bit.
bool all_of_class(std::string_view s, unsigned char bit) {
  unsigned char acc = bit;
  for (const char c : s) acc &= char_classes[static_cast<unsigned char>(c)];
  return acc != 0;
}

// The names the framing and hop-by-hop rules look at; every other field is field::unknown here.
http::field classify(std::string_view name) {
  switch (name.size()) {
    case 2: return common::iequals_ascii(name, "te") ? http::field::te : http::field::unknown;
    case 7:
      if (common::iequals_ascii(name, "trailer")) return http::field::trailer;
      if (common::iequals_ascii(name, "upgrade")) return http::field::upgrade;
      return http::field::unknown;
    case 10:
      if (common::iequals_ascii(name, "connection")) return http::field::connection;
      if (common::iequals_ascii(name, "keep-alive")) return http::field::keep_alive;
      return http::field::unknown;
    case 14: return common::iequals_ascii(name, "content-length") ? http::field::content_length : http::field::unknown;
    case 16: return common::iequals_ascii(name, "proxy-connection") ? http::field::proxy_connection : http::field::unknown;
    case 17: return common::iequals_ascii(name, "transfer-encoding") ? http::field::transfer_encoding : http::field::unknown;
    default: return http::field::unknown;
  }
}

// Calls f(element) for each element of a comma-separated list, trimmed; empty elements skipped.
template <class F>
void for_each_element(std::string_view list, F&& f) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    const auto element = common::trim_ows(list.substr(0, comma));
    if (!element.empty()) f(element);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// The next line of data ending in CRLF, without it; nullopt when data holds no complete line.
std::optional<std::string_view> take_line(std::string_view data, std::size_t& used) {
  const auto lf = data.find('\n');
  if (lf == std::string_view::npos) return std::nullopt;
  used = lf + 1;
  if (lf == 0 || data[lf - 1] != '\r') return std::string_view{};  // a bare LF: refused by the caller
  return data.substr(0, lf - 1);
}

// take_line for the chunked framing's own lines: at most max_line bytes, bad_chunk past that.
std::optional<std::string_view> take_bounded_line(std::string_view data, std::size_t& used, error_code& ec) {
  auto line = take_line(data.substr(0, std::min(data.size(), response_parser::max_line + 2)), used);
  if (!line && data.size() >= response_parser::max_line + 2) ec = http::error::bad_chunk;
  return line;
}

}  // namespace

response_parser::response_parser(std::vector<field_line>& fields, bool head_request, std::size_t header_limit)
    : fields_(fields), header_limit_(header_limit), head_request_(head_request) {
  fields_.clear();
}

bool response_parser::keep_alive() const {
  if (until_close_ || close_) return false;
  return version_ >= 11 || keep_alive_;
}

std::size_t response_parser::put(std::string_view data, error_code& ec) {
  if (!data.empty()) got_some_ = true;
  std::size_t total = 0;
  while (!data.empty() && !ec) {
    std::size_t used = 0;
    switch (state_) {
      case state::head:
        used = parse_head(data, ec);
        if (used == 0) return total;  // need the rest of the head
        break;
      case state::body_length:
        used = copy_body(data, remaining_);
        remaining_ -= used;
        if (remaining_ == 0) state_ = state::done;
        if (used == 0) return total;  // window full
        break;
      case state::body_eof:
        used = copy_body(data, data.size());
        if (used == 0) return total;
        break;
      case state::chunk_size: {
        const auto line = take_bounded_line(data, used, ec);
        if (!line) return total;
        std::uint64_t size = 0;
        std::size_t i = 0;
        for (; i < line->size(); ++i) {
          const char c = (*line)[i];
          int digit;
          if (c >= '0' && c <= '9') {
            digit = c - '0';
          } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            digit = (c | 0x20) - 'a' + 10;
          } else {
            break;
          }
          if (size > (std::uint64_t{1} << 59)) {
            ec = http::error::bad_chunk;
            return total;
          }
          size = size * 16 + static_cast<std::uint64_t>(digit);
        }
        // At least one digit, then nothing or chunk extensions (BWS ";" ...), which are dropped.
        const auto rest = common::trim_ows(line->substr(i));
        if (i == 0 || (!rest.empty() && rest.front() != ';') || !all_of_class(rest, value_bit)) {
          ec = http::error::bad_chunk;
          return total;
        }
        remaining_ = size;
        state_ = size == 0 ? state::trailer : state::chunk_data;
        break;
      }
      case state::chunk_data:
        used = copy_body(data, remaining_);
        remaining_ -= used;
        if (remaining_ == 0) state_ = state::chunk_crlf;
        if (used == 0) return total;
        break;
      case state::chunk_crlf:
        if (data.size() < 2) {
          if (data[0] != '\r') ec = http::error::bad_chunk;
          return total;
        }
        if (data[0] != '\r' || data[1] != '\n') {
          ec = http::error::bad_chunk;
          return total;
        }
        used = 2;
        state_ = state::chunk_size;
        break;
      case state::trailer: {
        const auto line = take_bounded_line(data, used, ec);
        if (!line) return total;
        trailer_bytes_ += used;
        if (trailer_bytes_ > header_limit_) {
          ec = http::error::header_limit;
          return total;
        }
        if (line->empty()) {
          if (used != 2) {  // a bare LF
            ec = http::error::bad_chunk;
            return total;
          }
          state_ = state::done;
        }
        break;
      }
      case state::done:
        return total;  // bytes after the message are the next response's (or garbage): not ours
    }
    total += used;
    data.remove_prefix(used);
  }
  return total;
}

void response_parser::put_eof(error_code& ec) {
  if (state_ == state::done) return;
  if (state_ == state::body_eof) {
    state_ = state::done;
    return;
  }
  ec = got_some_ ? http::error::partial_message : http::error::end_of_stream;
}

std::size_t response_parser::copy_body(std::string_view data, std::uint64_t limit) {
  std::size_t n = data.size();
  if (n > limit) n = static_cast<std::size_t>(limit);
  if (n > window_size_) n = window_size_;
  if (n == 0) return 0;
  std::memcpy(window_, data.data(), n);
  window_ += n;
  window_size_ -= n;
  return n;
}

std::size_t response_parser::parse_head(std::string_view data, error_code& ec) {
  // data always starts at the head's first byte (nothing is consumed before the head is whole), so the
  // search resumes where the last call stopped: a head trickled in byte by byte costs linear time.
  std::size_t end = std::string_view::npos;
  for (std::size_t i = data.find('\n', scanned_); i != std::string_view::npos; i = data.find('\n', i + 1)) {
    if (i == 0 || data[i - 1] != '\r') {
      ec = http::error::bad_field;  // a bare LF: refused now rather than waited on until the timeout
      return 0;
    }
    if (i >= 3 && data[i - 2] == '\n' && data[i - 3] == '\r') {
      end = i - 3;
      break;
    }
  }
  if (end == std::string_view::npos) {
    if (data.size() >= header_limit_) ec = http::error::header_limit;
    // Resume at the last line start: its LF may be the one before the final CRLF.
    scanned_ = data.size() < 4 ? 0 : data.size() - 3;
    return 0;
  }
  const std::size_t head_size = end + 4;
  if (head_size > header_limit_) {
    ec = http::error::header_limit;
    return 0;
  }
  std::string_view rest = data.substr(0, end + 2);  // every line with its CRLF
  std::size_t used = 0;
  auto line = take_line(rest, used);
  if (!line || !parse_status_line(*line)) {
    ec = http::error::bad_status;
    return 0;
  }
  rest.remove_prefix(used);
  while (!rest.empty()) {
    line = take_line(rest, used);
    rest.remove_prefix(used);
    if (!line || line->empty()) {  // a bare LF inside the head
      ec = http::error::bad_field;
      return 0;
    }
    const auto colon = line->find(':');
    if (colon == 0 || colon == std::string_view::npos) {
      ec = http::error::bad_field;  // no name, or a folded continuation line (obs-fold)
      return 0;
    }
    const auto name = line->substr(0, colon);
    if (!all_of_class(name, tchar_bit)) {
      ec = http::error::bad_field;
      return 0;
    }
    const auto value = common::trim_ows(line->substr(colon + 1));
    if (!all_of_class(value, value_bit)) {
      ec = http::error::bad_value;
      return 0;
    }
    if (fields_.size() >= max_fields) {
      ec = http::error::header_limit;
      return 0;
    }
    fields_.push_back(field_line{classify(name), name, value});
  }
  if (!parse_framing(ec)) return 0;
  return head_size;
}

bool response_parser::parse_status_line(std::string_view line) {
  // HTTP-version SP 3DIGIT [SP reason-phrase]; HTTP/1.0 and HTTP/1.1 only.
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[8] != ' ') return false;
  if (line[7] != '0' && line[7] != '1') return false;
  version_ = line[7] == '1' ? 11 : 10;
  unsigned code = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return false;
    code = code * 10 + static_cast<unsigned>(line[i] - '0');
  }
  if (code < 100) return false;
  status_ = code;
  if (line.size() == 12) return true;
  if (line[12] != ' ') return false;
  reason_ = line.substr(13);
  return all_of_class(reason_, value_bit);
}

bool response_parser::parse_framing(error_code& ec) {
  bool has_encoding = false;
  bool other_coding = false;
  bool bad = false;
  for (const auto& f : fields_) {
    switch (f.id) {
      case http::field::content_length:
        if (f.value.empty()) bad = true;
        for_each_element(f.value, [&](std::string_view v) {
          std::uint64_t n = 0;
          if (v.size() > 18) bad = true;
          for (const char c : v) {
            if (c < '0' || c > '9') bad = true;
            n = n * 10 + static_cast<std::uint64_t>(c - '0');
          }
          if (content_length_ && *content_length_ != n) bad = true;
          content_length_ = n;
        });
        if (bad || !content_length_) {
          ec = http::error::bad_content_length;
          return false;
        }
        break;
      case http::field::transfer_encoding:
        // Codings across every line, in order. Only a lone "chunked" is relayed: the field is hop-by-hop,
        // so any other coding would reach the client unlabelled.
        for_each_element(f.value, [&](std::string_view coding) {
          if (has_encoding || !common::iequals_ascii(coding, "chunked")) other_coding = true;
          has_encoding = true;
        });
        break;
      case http::field::connection:
        for_each_element(f.value, [&](std::string_view token) {
          if (common::iequals_ascii(token, "close")) close_ = true;
          if (common::iequals_ascii(token, "keep-alive")) keep_alive_ = true;
        });
        break;
      default:
        break;
    }
  }
  if ((has_encoding && content_length_) || other_coding) {
    ec = http::error::bad_transfer_encoding;  // RFC 9112 §6.1: a message with both is suspect
    return false;
  }
  chunked_ = has_encoding;
  // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means its framing cannot be trusted to
  // leave the connection in sync: read this one, then close.
  if (has_encoding && version_ < 11) close_ = true;
  if (head_request_ || (status_ >= 100 && status_ < 200) || status_ == 204 || status_ == 304) {
    state_ = state::done;
  } else if (chunked_) {
    state_ = state::chunk_size;
  } else if (content_length_) {
    remaining_ = *content_length_;
    state_ = remaining_ == 0 ? state::done : state::body_length;
  } else {
    state_ = state::body_eof;
    until_close_ = true;
  }
  return true;
}

}  // namespace sluice::proxy
