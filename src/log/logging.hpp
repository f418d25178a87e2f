#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/logger.h>

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

/// Where the two loggers write. Tests pass ostream sinks; main uses the defaults (stderr, stdout).
struct log_sinks {
  spdlog::sink_ptr events;  ///< the "sluice" event logger's sink (written synchronously)
  spdlog::sink_ptr access;  ///< the "access" logger's sink (written by the async thread); not the same object
  std::size_t access_queue_entries = 8192;  ///< bounded queue; when full the oldest line is dropped and counted
};

/// Creates the named loggers ("sluice" for events on stderr, "access" on stdout through an asynchronous
/// bounded queue that drops and counts when full). Call once from main before any other thread starts.
void init_logging(const config::log_settings& settings);
/// Same, writing to the given (non-null, distinct) sinks. Replaces loggers from an earlier init (tests).
/// Not thread-safe.
void init_logging(const config::log_settings& settings, log_sinks sinks);
/// The "sluice" event logger: log with fmt placeholders and key=value fields. Before init_logging (and
/// after shutdown_logging) a logger that discards everything. Thread-safe to log through; the reference
/// is to one process-wide pointer that init/shutdown reassign (never while other threads log). A logger
/// it pointed to stays alive, silenced, after it is replaced.
[[nodiscard]] const std::shared_ptr<spdlog::logger>& events();
/// Applies a reloaded log level, format and access_log switch. Thread-safe.
void apply_log_settings(const config::log_settings& settings);
/// True when an access line would be written; check before building an access_entry. Thread-safe, cheap.
[[nodiscard]] bool access_log_enabled();
/// Queues one access line (text or JSON per log.format). Never blocks. Thread-safe.
void log_access(const access_entry& entry);
/// The access line for entry in the given format, without a line break. Pure; thread-safe.
[[nodiscard]] std::string format_access_line(const access_entry& entry, config::log_format format);
/// Access lines dropped because the queue was full, since start. Thread-safe.
[[nodiscard]] std::uint64_t access_log_dropped();
/// Writes every queued access line, stops the async thread and drops both loggers. Call once at the end
/// of main, after every thread that logs has stopped.
void shutdown_logging();

}  // namespace sluice::log
