#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace sluice::config {

/// One problem found in a configuration file, with where it is and what is allowed.
struct config_error {
  std::string file;      ///< path as given
  int line = 0;          ///< 1-based; 0 when the error is about the file as a whole
  int column = 0;        ///< 1-based
  std::string key_path;  ///< e.g. "limits[1].rate"
  std::string message;   ///< e.g. "\"fast\" is not a rate (expected N/s, N/m or N/h)"

  /// "FILE:LINE:COLUMN: KEY_PATH: MESSAGE", the form printed by --check and logged on reload.
  [[nodiscard]] std::string to_string() const;
};

/// The outcome of loading: a config when errors is empty, otherwise every error found.
struct load_result {
  std::optional<config> value;
  std::vector<config_error> errors;
};

/// Reads and validates a YAML file. Never throws; an unreadable file is one error. Thread-safe.
[[nodiscard]] load_result load_file(const std::string& path);
/// Validates YAML text; source_name stands in for the file name in errors. Thread-safe.
[[nodiscard]] load_result load_text(std::string_view yaml, const std::string& source_name);

/// "250ms", "10s", "2m", "1h" (also "0", "0s"); nullopt when malformed.
[[nodiscard]] std::optional<duration> parse_duration(std::string_view text);
/// "512", "16KiB", "10MiB", "1GiB" in bytes; nullopt when malformed.
[[nodiscard]] std::optional<std::uint64_t> parse_size(std::string_view text);
/// "100/s", "0.5/s", "60/m", "3600/h"; nullopt when malformed or not > 0.
[[nodiscard]] std::optional<rate> parse_rate(std::string_view text);
/// "host:port", "[v6]:port"; nullopt when malformed.
[[nodiscard]] std::optional<endpoint> parse_endpoint(std::string_view text);

}  // namespace sluice::config
