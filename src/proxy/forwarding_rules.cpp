#include "proxy/forwarding_rules.hpp"

#include <algorithm>
#include <array>
#include <span>

#include "common/http_text.hpp"

namespace sluice::proxy {

namespace {

// Fields that never travel past one hop (RFC 9110 §7.6.1), plus the pre-standard Keep-Alive and
// Proxy-Connection that clients still send.
constexpr std::array<http::field, 6> fixed_hop_by_hop = {
    http::field::keep_alive, http::field::proxy_connection, http::field::te,
    http::field::trailer,    http::field::transfer_encoding, http::field::upgrade,
};

void append_field(reply_buffer& out, std::string_view name, std::string_view value) {
  append(out, name);
  append(out, ": ");
  append(out, value);
  append(out, "\r\n");
}

/// X-Forwarded-For, -Proto or -Host: replaced by sluice's own.
bool is_forwarded_field(std::string_view name) {
  constexpr std::string_view prefix = "X-Forwarded-";
  if (name.size() < prefix.size() + 3 || !beast::iequals(name.substr(0, prefix.size()), prefix)) return false;
  const auto rest = name.substr(prefix.size());
  return beast::iequals(rest, "For") || beast::iequals(rest, "Proto") || beast::iequals(rest, "Host");
}

// One way to read a field of either kind of head: Beast's containers, or field_line views.
template <class F>
http::field id_of(const F& f) { return f.name(); }
template <class F>
std::string_view name_of(const F& f) { return f.name_string(); }
template <class F>
std::string_view value_of(const F& f) { return f.value(); }
http::field id_of(const field_line& f) { return f.id; }
std::string_view name_of(const field_line& f) { return f.name; }
std::string_view value_of(const field_line& f) { return f.value; }

/// Which fields of a head never travel past one hop (RFC 9110 §7.6.1): the fixed ones and every field the
/// Connection lines name, except the framing and routing fields (dropping Content-Length or Host at a
/// client's request would desynchronise the upstream's idea of the message). The names are views into
/// the head, which must outlive this.
template <class Fields>
class hop_by_hop {
 public:
  explicit hop_by_hop(const Fields& head) : head_(head) {
    // A walk over the few fields of a head is cheaper than the field set's case-insensitive lookup.
    for (const auto& f : head) {
      if (id_of(f) != http::field::connection) continue;
      for (auto token : http::token_list{value_of(f)}) {
        if (beast::iequals(token, "connection") || beast::iequals(token, "content-length") ||
            beast::iequals(token, "host")) {
          continue;
        }
        if (count_ < named_.size()) {
          named_[count_++] = token;
        } else {
          overflow_ = true;  // more than 16 names is abuse: skips() then walks the Connection lines again
        }
      }
    }
  }

  [[nodiscard]] bool skips(const typename Fields::value_type& f) const {
    const auto id = id_of(f);
    if (std::find(fixed_hop_by_hop.begin(), fixed_hop_by_hop.end(), id) != fixed_hop_by_hop.end()) return true;
    if (id == http::field::connection) return true;
    if (count_ == 0 || id == http::field::content_length || id == http::field::host) return false;
    const auto name = name_of(f);
    for (std::size_t i = 0; i < count_; ++i) {
      if (beast::iequals(named_[i], name)) return true;
    }
    if (!overflow_) return false;
    for (const auto& c : head_) {
      if (id_of(c) != http::field::connection) continue;
      for (auto token : http::token_list{value_of(c)}) {
        if (beast::iequals(token, name)) return true;
      }
    }
    return false;
  }

 private:
  const Fields& head_;
  std::array<std::string_view, 16> named_;
  std::size_t count_ = 0;
  bool overflow_ = false;
};

}  // namespace

std::string_view to_string(head_problem p) {
  switch (p) {
    case head_problem::none: return "none";
    case head_problem::length_and_encoding: return "length_and_encoding";
    case head_problem::unsupported_encoding: return "unsupported_encoding";
    case head_problem::missing_host: return "missing_host";
    case head_problem::multiple_host: return "multiple_host";
    case head_problem::obs_fold: return "obs_fold";
  }
  return "unknown";
}

template <class Fields>
head_problem check_request_head(const http::request_header<Fields>& head) {
  const auto te = head.equal_range(http::field::transfer_encoding);
  if (te.first != te.second) {
    if (head.count(http::field::content_length) > 0) return head_problem::length_and_encoding;
    // Only a lone "chunked" is accepted: any other coding would reach the upstream undecoded after
    // Transfer-Encoding is stripped as hop-by-hop (RFC 9112 §6.1: 501 or 400 are both allowed).
    if (std::next(te.first) != te.second) return head_problem::unsupported_encoding;
    if (!beast::iequals(common::trim_ows(te.first->value()), "chunked")) return head_problem::unsupported_encoding;
  }
  const auto hosts = head.count(http::field::host);
  if (hosts > 1) return head_problem::multiple_host;
  if (hosts == 0 && head.version() >= 11) return head_problem::missing_host;
  return head_problem::none;
}

bool has_obs_fold(std::string_view raw_head) {
  for (std::size_t i = raw_head.find('\n'); i != std::string_view::npos && i + 1 < raw_head.size();
       i = raw_head.find('\n', i + 1)) {
    const char next = raw_head[i + 1];
    if (next == ' ' || next == '\t') return true;
  }
  return false;
}

template <class Allocator>
void join_forwarded_for(const http::basic_fields<Allocator>& fields, std::string& out) {
  out.clear();
  for (auto [it, end] = fields.equal_range("X-Forwarded-For"); it != end; ++it) {
    const auto value = common::trim_ows(it->value());
    if (value.empty()) continue;
    if (!out.empty()) out.append(", ");
    out.append(value.data(), value.size());
  }
}

template <class Fields>
void write_request_head(const http::request_header<Fields>& head, std::string_view peer,
                        std::string_view forwarded_for, bool body_chunked, reply_buffer& out) {
  out.clear();
  const hop_by_hop<Fields> hop(head);
  append(out, head.method_string());
  append(out, " ");
  append(out, head.target());
  append(out, " HTTP/1.1\r\n");
  bool length_written = false;
  std::string_view host;
  bool has_host = false;
  for (const auto& f : head) {
    if (hop.skips(f)) continue;
    const auto name = f.name_string();
    switch (f.name()) {
      case http::field::content_length:
        // The parser already proved duplicates equal; one field is what every upstream accepts.
        if (length_written) continue;
        length_written = true;
        break;
      case http::field::expect:
        if (beast::iequals(common::trim_ows(f.value()), "100-continue")) continue;
        break;
      case http::field::host:
        host = f.value();
        has_host = true;
        break;
      default:
        if (is_forwarded_field(name)) continue;
        break;
    }
    append_field(out, name, f.value());
  }
  append(out, "X-Forwarded-For: ");
  if (!forwarded_for.empty()) {
    append(out, forwarded_for);
    append(out, ", ");
  }
  append(out, peer);
  append(out, "\r\nX-Forwarded-Proto: http\r\n");
  if (has_host) append_field(out, "X-Forwarded-Host", host);
  if (body_chunked) append(out, "Transfer-Encoding: chunked\r\n");
  append(out, "\r\n");
}

body_framing client_response_framing(bool head_request, unsigned status, bool has_content_length,
                                     unsigned client_version) {
  if (head_request || (status >= 100 && status < 200) || status == 204 || status == 304) {
    return body_framing::none;
  }
  if (has_content_length) return body_framing::content_length;
  return client_version >= 11 ? body_framing::chunked : body_framing::close_delimited;
}

bool client_keeps_alive(bool client_wants_keep_alive, body_framing framing, bool draining) {
  return client_wants_keep_alive && !draining && framing != body_framing::close_delimited;
}

void write_response_head(unsigned status, std::string_view reason, std::span<const field_line> fields,
                         std::optional<std::uint64_t> content_length, body_framing framing, bool keep_alive,
                         unsigned client_version, config::header_mode mode, const limiter::limit_status* limits,
                         reply_buffer& out) {
  using config::header_mode;
  out.clear();
  const hop_by_hop<std::span<const field_line>> hop(fields);
  const bool replace_latest = limits != nullptr && (mode == header_mode::latest || mode == header_mode::both);
  const bool replace_legacy = limits != nullptr && (mode == header_mode::legacy || mode == header_mode::both);
  if (reason.empty()) reason = http::obsolete_reason(static_cast<http::status>(status));
  append(out, "HTTP/1.1 ");
  append_number(out, status);
  append(out, " ");
  append(out, reason);
  append(out, "\r\n");
  bool length_written = false;
  for (const auto& f : fields) {
    if (hop.skips(f)) continue;
    if (f.id == http::field::content_length) {
      // Equal duplicates ("2, 2", or two lines) go out as one normalised field, where the first was.
      if (!length_written && content_length) {
        append(out, "Content-Length: ");
        append_number(out, *content_length);
        append(out, "\r\n");
      }
      length_written = true;
      continue;
    }
    if ((replace_latest || replace_legacy) && f.name.size() >= 9 && beast::iequals(f.name.substr(0, 9), "RateLimit")) {
      const auto rest = f.name.substr(9);
      const bool latest = rest.empty() || beast::iequals(rest, "-Policy");
      const bool legacy =
          beast::iequals(rest, "-Limit") || beast::iequals(rest, "-Remaining") || beast::iequals(rest, "-Reset");
      if ((latest && replace_latest) || (legacy && replace_legacy)) continue;
    }
    append_field(out, f.name, f.value);
  }
  if (framing == body_framing::chunked) append(out, "Transfer-Encoding: chunked\r\n");
  if (!keep_alive) {
    append(out, "Connection: close\r\n");
  } else if (client_version < 11) {
    append(out, "Connection: keep-alive\r\n");
  }
  if (limits != nullptr) append_rate_limit_lines(out, mode, *limits);
  append(out, "\r\n");
}

bool is_idempotent(http::verb method) {
  switch (method) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::options:
    case http::verb::trace:
    case http::verb::put:
    case http::verb::delete_:
      return true;
    default:
      return false;
  }
}

// The hot path parses into arena-backed fields; tests and tools use Beast's default ones.
#define SLUICE_INSTANTIATE_FORWARDING_RULES(F)                                                                  \
  template head_problem check_request_head<F>(const http::request_header<F>&);                                \
  template void join_forwarded_for<F::allocator_type>(const F&, std::string&);                                \
  template void write_request_head<F>(const http::request_header<F>&, std::string_view, std::string_view, bool, \
                                      reply_buffer&);
SLUICE_INSTANTIATE_FORWARDING_RULES(http::fields)
SLUICE_INSTANTIATE_FORWARDING_RULES(head_fields)
#undef SLUICE_INSTANTIATE_FORWARDING_RULES

}  // namespace sluice::proxy
