#include "proxy/forwarding_rules.hpp"

#include <algorithm>
#include <array>
#include <vector>

namespace sluice::proxy {

namespace {

// Fields that never travel past one hop (RFC 9110 §7.6.1), plus the pre-standard Keep-Alive and
// Proxy-Connection that clients still send.
constexpr std::array<http::field, 6> fixed_hop_by_hop = {
    http::field::keep_alive, http::field::proxy_connection, http::field::te,
    http::field::trailer,    http::field::transfer_encoding, http::field::upgrade,
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

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

head_problem check_request_head(const http::request_header<>& head) {
  const auto te = head.equal_range(http::field::transfer_encoding);
  if (te.first != te.second) {
    if (head.count(http::field::content_length) > 0) return head_problem::length_and_encoding;
    // Only a lone "chunked" is accepted: any other coding would reach the upstream undecoded after
    // Transfer-Encoding is stripped as hop-by-hop (RFC 9112 §6.1: 501 or 400 are both allowed).
    if (std::next(te.first) != te.second) return head_problem::unsupported_encoding;
    if (!beast::iequals(trim(te.first->value()), "chunked")) return head_problem::unsupported_encoding;
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

void strip_hop_by_hop(http::fields& fields) {
  // Names are collected first: erasing while walking the Connection range could invalidate its end.
  std::array<std::string_view, 16> named;
  std::size_t count = 0;
  bool overflow = false;
  for (auto [it, end] = fields.equal_range(http::field::connection); it != end; ++it) {
    for (auto token : http::token_list{it->value()}) {
      // Framing and routing fields stay even when Connection names them: dropping Content-Length or
      // Host at a client's request would desynchronise the upstream's idea of the message.
      if (beast::iequals(token, "connection") || beast::iequals(token, "content-length") ||
          beast::iequals(token, "host")) {
        continue;
      }
      if (count < named.size()) {
        named[count++] = token;
      } else {
        overflow = true;
      }
    }
  }
  // The views point into Connection values, which are erased last.
  for (std::size_t i = 0; i < count; ++i) fields.erase(named[i]);
  if (overflow) {
    // More than 16 names is abuse; take the slow path with owned copies rather than keep any of them.
    std::vector<std::string> rest;
    for (auto [it, end] = fields.equal_range(http::field::connection); it != end; ++it) {
      for (auto token : http::token_list{it->value()}) rest.emplace_back(token);
    }
    for (const auto& name : rest) {
      if (!beast::iequals(name, "connection") && !beast::iequals(name, "content-length") &&
          !beast::iequals(name, "host")) {
        fields.erase(name);
      }
    }
  }
  fields.erase(http::field::connection);
  for (auto f : fixed_hop_by_hop) fields.erase(f);
}

void join_forwarded_for(const http::fields& fields, std::string& out) {
  out.clear();
  for (auto [it, end] = fields.equal_range("X-Forwarded-For"); it != end; ++it) {
    const auto value = trim(it->value());
    if (value.empty()) continue;
    if (!out.empty()) out.append(", ");
    out.append(value.data(), value.size());
  }
}

void rewrite_request(http::request_header<>& head, std::string_view peer, std::string_view forwarded_for,
                     bool body_chunked) {
  strip_hop_by_hop(head);
  head.version(11);

  if (forwarded_for.empty()) {
    head.set("X-Forwarded-For", peer);
  } else {
    std::array<char, 512> local;
    const auto total = forwarded_for.size() + 2 + peer.size();
    if (total <= local.size()) {
      auto* p = std::copy(forwarded_for.begin(), forwarded_for.end(), local.data());
      *p++ = ',';
      *p++ = ' ';
      std::copy(peer.begin(), peer.end(), p);
      head.set("X-Forwarded-For", std::string_view(local.data(), total));
    } else {
      std::string joined;
      joined.reserve(total);
      joined.append(forwarded_for).append(", ").append(peer);
      head.set("X-Forwarded-For", joined);
    }
  }
  head.set("X-Forwarded-Proto", "http");
  if (auto host = head.find(http::field::host); host != head.end()) {
    head.set("X-Forwarded-Host", host->value());
  } else {
    head.erase("X-Forwarded-Host");
  }

  if (auto expect = head.find(http::field::expect);
      expect != head.end() && beast::iequals(trim(expect->value()), "100-continue")) {
    head.erase(expect);
  }
  if (head.count(http::field::content_length) > 1) {
    // The parser already proved the values equal; one field is what every upstream accepts.
    const std::string value(head.find(http::field::content_length)->value());
    head.set(http::field::content_length, value);
  }
  if (body_chunked) head.set(http::field::transfer_encoding, "chunked");
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

void rewrite_response(http::response_header<>& head, body_framing framing, bool keep_alive,
                      unsigned client_version) {
  strip_hop_by_hop(head);
  head.version(11);
  if (framing == body_framing::chunked) head.set(http::field::transfer_encoding, "chunked");
  if (!keep_alive) {
    head.set(http::field::connection, "close");
  } else if (client_version < 11) {
    head.set(http::field::connection, "keep-alive");
  }
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

}  // namespace sluice::proxy
