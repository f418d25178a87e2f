#pragma once

#include <string_view>

/// Small text helpers for HTTP syntax shared by the modules that parse it. Pure, header-only.
namespace sluice::common {

/// s without leading and trailing optional whitespace (SP and HTAB, RFC 9110 §5.6.3).
[[nodiscard]] constexpr std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// ASCII case-insensitive equality (field names, tokens, schemes).
[[nodiscard]] constexpr bool iequals_ascii(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace sluice::common
