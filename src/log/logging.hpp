#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "config/config.hpp"

namespace sluice::log {

/// One finished request, as the access log records it. Views are only read during log_access().
struct access_entry {
  std::chrono::system_clock::time_point time;  ///< when the request head was complete
  std::string_view client;       ///< client address text (the TCP peer)
  std::string_view method;
  std::string_view target;
  unsigned status = 0;
  std::uint64_t bytes_sent = 0;  ///< response bytes written to the client (head + body)
  std::chrono::nanoseconds total{0};
  std::chrono::nanoseconds upstream{0};  ///< 0 when the request was not forwarded
  std::string_view limit;        ///< the limit that rejected it, "" when none
};

/// Creates the named loggers ("sluice" for events, "access" on an asynchronous bounded queue that drops
/// and counts when full). Call once from main before any other thread starts.
void init_logging(const config::log_settings& settings);
/// Applies a reloaded log level, format and access_log switch. Thread-safe.
void apply_log_settings(const config::log_settings& settings);
/// True when an access line would be written; check before building an access_entry. Thread-safe, cheap.
[[nodiscard]] bool access_log_enabled();
/// Queues one access line (text or JSON per log.format). Never blocks. Thread-safe.
void log_access(const access_entry& entry);
/// Access lines dropped because the queue was full, since start. Thread-safe.
[[nodiscard]] std::uint64_t access_log_dropped();
/// Flushes and stops the async logger. Call once at the end of main.
void shutdown_logging();

}  // namespace sluice::log
