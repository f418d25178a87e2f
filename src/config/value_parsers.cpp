// The scalar grammars of the configuration file (durations, sizes, rates, endpoints), declared in
// config_loader.hpp. Pure functions: no YAML, no messages; the loader turns nullopt into an error.
#include <charconv>
#include <cmath>
#include <limits>

#include "config/config_loader.hpp"

namespace sluice::config {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!is_digit(c)) return false;
  }
  return true;
}

/// Decimal digits to an unsigned 64-bit value; nullopt on anything else or overflow.
std::optional<std::uint64_t> parse_digits(std::string_view s) {
  if (!all_digits(s)) return std::nullopt;
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

/// Splits "123unit" into its leading digits and the rest.
std::pair<std::string_view, std::string_view> split_number(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && is_digit(text[i])) ++i;
  return {text.substr(0, i), text.substr(i)};
}

/// An RFC 1123 host name label by label; '_' is allowed because container service names use it.
bool is_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::string_view last_label;
  while (true) {
    const auto dot = host.find('.');
    const auto label = host.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (const char c : label) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '_';
      if (!ok) return false;
    }
    last_label = label;
    if (dot == std::string_view::npos) break;
    host.remove_prefix(dot + 1);
  }
  // A name whose last label is numeric reads as an IPv4 address (as in the URL standard), so "1.2.3" or
  // "256.1.1.1" is a typo, not a name to resolve.
  return !all_digits(last_label);
}

}  // namespace

std::optional<duration> parse_duration(std::string_view text) {
  const auto [digits, unit] = split_number(text);
  const auto count = parse_digits(digits);
  if (!count) return std::nullopt;
  std::uint64_t ns_per_unit = 0;
  if (unit == "ms") ns_per_unit = 1'000'000;
  else if (unit == "s") ns_per_unit = 1'000'000'000;
  else if (unit == "m") ns_per_unit = 60'000'000'000;
  else if (unit == "h") ns_per_unit = 3'600'000'000'000;
  else if (unit.empty() && *count == 0) return duration::zero();
  else return std::nullopt;
  constexpr auto max_ns = static_cast<std::uint64_t>(std::numeric_limits<duration::rep>::max());
  if (*count > max_ns / ns_per_unit) return std::nullopt;
  return duration(static_cast<duration::rep>(*count * ns_per_unit));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  const auto [digits, unit] = split_number(text);
  const auto count = parse_digits(digits);
  if (!count) return std::nullopt;
  std::uint64_t multiplier = 0;
  if (unit.empty()) multiplier = 1;
  else if (unit == "KiB") multiplier = std::uint64_t{1} << 10;
  else if (unit == "MiB") multiplier = std::uint64_t{1} << 20;
  else if (unit == "GiB") multiplier = std::uint64_t{1} << 30;
  else return std::nullopt;
  if (*count > std::numeric_limits<std::uint64_t>::max() / multiplier) return std::nullopt;
  return *count * multiplier;
}

std::optional<rate> parse_rate(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const auto number = text.substr(0, slash);
  const auto unit = text.substr(slash + 1);
  // Digits with an optional fraction only: from_chars alone would also take "1e3", "inf" and "nan".
  const auto [whole, rest] = split_number(number);
  if (whole.empty()) return std::nullopt;
  if (!rest.empty() && (rest.front() != '.' || !all_digits(rest.substr(1)))) return std::nullopt;
  double count = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), count);
  if (ec != std::errc{} || end != number.data() + number.size()) return std::nullopt;
  double seconds = 0;
  if (unit == "s") seconds = 1;
  else if (unit == "m") seconds = 60;
  else if (unit == "h") seconds = 3600;
  else return std::nullopt;
  const double per_second = count / seconds;
  if (!(per_second > 0) || !std::isfinite(per_second)) return std::nullopt;
  return rate{per_second, std::string(text)};
}

std::optional<endpoint> parse_endpoint(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    const auto addr = common::ip_address::parse(host);
    // Brackets are for IPv6 only ("[1.2.3.4]:80" is not a URL authority either).
    if (host.find(':') == std::string_view::npos || !addr) return std::nullopt;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    // An IPv6 address without brackets is ambiguous ("::1:80"); a name or IPv4 address has no colon.
    if (host.find(':') != std::string_view::npos) return std::nullopt;
    if (!common::ip_address::parse(host) && !is_host_name(host)) return std::nullopt;
  }
  if (port_text.size() > 5) return std::nullopt;
  const auto port = parse_digits(port_text);
  if (!port || *port > 65535) return std::nullopt;
  return endpoint{std::string(host), static_cast<std::uint16_t>(*port), std::string(text)};
}

}  // namespace sluice::config
