#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.hpp"

/// The validated, immutable configuration of one sluice process (CONTRACT.md "Configuration").
/// Plain structs: every member's default is what an omitted YAML key means. Loaded by config_loader.
namespace sluice::config {

using duration = std::chrono::nanoseconds;

/// host:port as written in the file; host is a literal address or a name resolved at start-up.
struct endpoint {
  std::string host;        ///< "0.0.0.0", "::", "127.0.0.1", "localhost" (brackets removed)
  std::uint16_t port = 0;  ///< 0 = any free port (tests)
  std::string text;        ///< as written, for logs and errors
};

/// A refill rate, e.g. "100/s" or "0.5/s".
struct rate {
  double tokens_per_second = 0;  ///< always > 0 once validated
  std::string text;              ///< as written
};

/// server: block.
struct server_settings {
  std::size_t max_connections = 10000;
  duration header_timeout = std::chrono::seconds(10);
  duration idle_timeout = std::chrono::seconds(60);
  std::size_t max_header_bytes = 16 * 1024;
  std::uint64_t max_body_bytes = 10 * 1024 * 1024;
  std::vector<common::cidr> trusted_proxies;
};

/// upstream: block.
struct upstream_settings {
  std::vector<endpoint> servers;  ///< at least one
  std::size_t max_connections = 128;
  std::size_t max_idle = 32;  ///< <= max_connections; omitted in the file: min(32, max_connections)
  duration idle_timeout = std::chrono::seconds(60);
  duration connect_timeout = std::chrono::seconds(2);
  duration response_timeout = std::chrono::seconds(30);
  duration queue_timeout = std::chrono::seconds(1);
  std::size_t max_queue = 1024;
};

enum class key_kind { ip, header, global };

/// limits[i].when: both filters must hold when present.
struct limit_filter {
  std::string path_prefix;           ///< empty = any path
  std::vector<std::string> methods;  ///< upper case; empty = any method
};

/// limits[i].overrides entry: a different rate/burst for one key value.
struct limit_override {
  std::string value;
  rate refill;
  std::uint64_t burst = 0;
};

/// One entry of limits:.
struct limit {
  std::string name;         ///< unique, [a-z0-9_-]+
  key_kind key = key_kind::ip;
  std::string header_name;  ///< key: header:NAME only, as written (matched case-insensitively)
  rate refill;              ///< the YAML key "rate"
  std::uint64_t burst = 0;  ///< >= 1
  unsigned ipv6_prefix = 64;  ///< key: ip only, 1..128
  std::optional<limit_filter> when;
  bool dry_run = false;
  std::vector<limit_override> overrides;
};

enum class header_mode { latest, legacy, both, none };

/// drain: block.
struct drain_settings {
  duration delay = std::chrono::seconds(0);
  duration timeout = std::chrono::seconds(30);
};

/// admin: block. An empty listen string disables the admin listener.
struct admin_settings {
  std::optional<endpoint> listen = endpoint{"127.0.0.1", 9901, "127.0.0.1:9901"};
};

enum class log_level { trace, debug, info, warn, error, off };
enum class log_format { text, json };

/// log: block.
struct log_settings {
  log_level level = log_level::info;
  log_format format = log_format::text;
  bool access_log = true;
};

/// The whole file. Immutable once loaded: share it as shared_ptr<const config>; reload swaps the pointer.
struct config {
  std::string source_path;  ///< the file it was loaded from
  endpoint listen{"0.0.0.0", 8080, "0.0.0.0:8080"};
  unsigned threads = 0;     ///< 0 = one per CPU core (resolved by the server, not here)
  server_settings server;
  upstream_settings upstream{{endpoint{"127.0.0.1", 9000, "127.0.0.1:9000"}}};
  std::vector<limit> limits;
  std::uint64_t max_tracked_keys = 1000000;
  header_mode rate_limit_headers = header_mode::latest;
  drain_settings drain;
  admin_settings admin;
  log_settings log;
};

}  // namespace sluice::config
