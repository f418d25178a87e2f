#include "log/logging.hpp"

#include <atomic>
#include <ctime>
#include <iterator>
#include <vector>

#include <fmt/format.h>
#include <spdlog/async_logger.h>
#include <spdlog/details/thread_pool.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace sluice::log {

namespace {

constexpr const char* events_name = "sluice";
constexpr const char* access_name = "access";

using buffer = spdlog::memory_buf_t;

void append(buffer& out, std::string_view s) { out.append(s.data(), s.data() + s.size()); }

/// Writes t as RFC 3339 UTC with milliseconds ("2024-03-05T06:07:08.009Z"). The date part is cached per
/// thread for the current second: gmtime_r is the expensive bit.
void append_time(buffer& out, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms_total = floor<milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms_total >= 0 ? ms_total / 1000 : (ms_total - 999) / 1000);
  const auto ms = static_cast<unsigned>(ms_total - static_cast<long long>(secs) * 1000);
  thread_local std::time_t cached_secs = -1;
  thread_local char cached[20];  // "YYYY-MM-DDTHH:MM:SS"
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    fmt::format_to_n(cached, sizeof cached, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  out.append(cached, cached + 19);
  fmt::format_to(std::back_inserter(out), ".{:03}Z", ms);
}

/// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not valid UTF-8.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const auto cont = [&](std::size_t k) { return k < s.size() && (b(k) & 0xC0) == 0x80; };
  const unsigned char c = b(i);
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

/// Appends s as the inside of a JSON string (RFC 8259 section 7). Bytes that are not UTF-8 become U+FFFD so
/// the line stays valid JSON whatever a client put in its request target.
void append_json_escaped(buffer& out, std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const std::size_t n = utf8_sequence(s, i);
      if (n == 0) {
        append(out, "\\ufffd");
        ++i;
      } else {
        append(out, s.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"': append(out, "\\\""); break;
      case '\\': append(out, "\\\\"); break;
      case '\n': append(out, "\\n"); break;
      case '\r': append(out, "\\r"); break;
      case '\t': append(out, "\\t"); break;
      case '\b': append(out, "\\b"); break;
      case '\f': append(out, "\\f"); break;
      default:
        if (c < 0x20 || c == 0x7F) {
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

/// Appends a text-format value: bare when it is a plain token, else quoted with JSON escapes, so a line
/// splits on spaces the same way whatever a client sent (logfmt conventions).
void append_text_value(buffer& out, std::string_view v) {
  bool plain = !v.empty();
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7F || c == '"' || c == '=' || c == '\\' || c >= 0x80) {
      plain = false;
      break;
    }
  }
  if (plain) {
    append(out, v);
    return;
  }
  out.push_back('"');
  append_json_escaped(out, v);
  out.push_back('"');
}

/// Keeps a free-text event message on one line: control characters are escaped, the rest is kept.
void append_text_message(buffer& out, std::string_view s) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      switch (c) {
        case '\n': append(out, "\\n"); break;
        case '\r': append(out, "\\r"); break;
        case '\t': append(out, "\\t"); break;
        default: fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
      }
    } else {
      out.push_back(ch);
    }
  }
}

std::string_view level_name(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warn";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "off";
  }
}

spdlog::level::level_enum to_spdlog(config::log_level l) {
  switch (l) {
    case config::log_level::trace: return spdlog::level::trace;
    case config::log_level::debug: return spdlog::level::debug;
    case config::log_level::info: return spdlog::level::info;
    case config::log_level::warn: return spdlog::level::warn;
    case config::log_level::error: return spdlog::level::err;
    case config::log_level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

void append_ms(buffer& out, std::chrono::nanoseconds d) {
  // Microsecond resolution is what a human compares; more digits are noise from the clock read.
  fmt::format_to(std::back_inserter(out), "{:.3f}", static_cast<double>(d.count()) / 1e6);
}

void append_access_line(buffer& out, const access_entry& e, config::log_format format) {
  if (format == config::log_format::json) {
    append(out, "{\"time\":\"");
    append_time(out, e.time);
    append(out, "\",\"level\":\"info\",\"logger\":\"access\",\"client\":\"");
    append_json_escaped(out, e.client);
    append(out, "\",\"method\":\"");
    append_json_escaped(out, e.method);
    append(out, "\",\"target\":\"");
    append_json_escaped(out, e.target);
    fmt::format_to(std::back_inserter(out), "\",\"status\":{},\"bytes\":{},\"duration_ms\":", e.status, e.bytes_sent);
    append_ms(out, e.total);
    append(out, ",\"upstream_ms\":");
    append_ms(out, e.upstream);
    append(out, ",\"limit\":\"");
    append_json_escaped(out, e.limit);
    append(out, "\"}");
    return;
  }
  append_time(out, e.time);
  append(out, " info access client=");
  append_text_value(out, e.client);
  append(out, " method=");
  append_text_value(out, e.method);
  append(out, " target=");
  append_text_value(out, e.target);
  fmt::format_to(std::back_inserter(out), " status={} bytes={} duration_ms=", e.status, e.bytes_sent);
  append_ms(out, e.total);
  append(out, " upstream_ms=");
  append_ms(out, e.upstream);
  append(out, " limit=");
  append_text_value(out, e.limit);
}

std::atomic<bool> access_enabled{false};
std::atomic<config::log_format> current_format{config::log_format::text};

/// Formats event records as `time level logger message` or one JSON object, per the current log.format.
class event_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, buffer& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const std::string_view logger(msg.logger_name.data(), msg.logger_name.size());
    if (current_format.load(std::memory_order_relaxed) == config::log_format::json) {
      append(dest, "{\"time\":\"");
      append_time(dest, msg.time);
      append(dest, "\",\"level\":\"");
      append(dest, level_name(msg.level));
      append(dest, "\",\"logger\":\"");
      append_json_escaped(dest, logger);
      append(dest, "\",\"msg\":\"");
      append_json_escaped(dest, payload);
      append(dest, "\"}\n");
      return;
    }
    append_time(dest, msg.time);
    dest.push_back(' ');
    append(dest, level_name(msg.level));
    dest.push_back(' ');
    append(dest, logger);
    dest.push_back(' ');
    append_text_message(dest, payload);
    dest.push_back('\n');
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<event_formatter>();
  }
};

/// The access line is complete when it is queued; the sink only adds the line break.
class line_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, buffer& dest) override {
    dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
    dest.push_back('\n');
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<line_formatter>();
  }
};

struct logging_state {
  std::shared_ptr<spdlog::logger> events;
  // Event loggers replaced by init/shutdown are kept (silenced) so a `*events()` reference taken earlier,
  // as main holds one, never dangles. One per init: tests only make more than one.
  std::vector<std::shared_ptr<spdlog::logger>> retired;
  std::shared_ptr<spdlog::details::thread_pool> pool;
  std::shared_ptr<spdlog::async_logger> access;
};

std::shared_ptr<spdlog::logger> make_discarding_logger() {
  auto logger = std::make_shared<spdlog::logger>(events_name, std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::off);
  return logger;
}

logging_state& state() {
  static logging_state s{make_discarding_logger(), {}, nullptr, nullptr};
  return s;
}

}  // namespace

void init_logging(const config::log_settings& settings) {
  init_logging(settings, log_sinks{std::make_shared<spdlog::sinks::stderr_sink_mt>(),
                                   std::make_shared<spdlog::sinks::stdout_sink_mt>()});
}

void init_logging(const config::log_settings& settings, log_sinks sinks) {
  shutdown_logging();
  auto& s = state();
  sinks.events->set_formatter(std::make_unique<event_formatter>());
  sinks.access->set_formatter(std::make_unique<line_formatter>());
  s.events = std::make_shared<spdlog::logger>(events_name, sinks.events);
  // overrun_oldest: a full queue costs the oldest line (counted by the pool), never a blocked request.
  s.pool = std::make_shared<spdlog::details::thread_pool>(std::max<std::size_t>(sinks.access_queue_entries, 1), 1);
  s.access = std::make_shared<spdlog::async_logger>(access_name, sinks.access, s.pool,
                                                    spdlog::async_overflow_policy::overrun_oldest);
  spdlog::register_logger(s.events);
  spdlog::register_logger(s.access);
  apply_log_settings(settings);
}

const std::shared_ptr<spdlog::logger>& events() { return state().events; }

void apply_log_settings(const config::log_settings& settings) {
  auto& s = state();
  const auto level = to_spdlog(settings.level);
  current_format.store(settings.format, std::memory_order_relaxed);
  // Loggers are created once and not reassigned while other threads run, so reading the pointers is safe;
  // spdlog's set_level is an atomic store.
  if (s.access) s.access->set_level(level);
  s.events->set_level(level);
  access_enabled.store(s.access && settings.access_log && level <= spdlog::level::info, std::memory_order_relaxed);
}

bool access_log_enabled() { return access_enabled.load(std::memory_order_relaxed); }

void log_access(const access_entry& entry) {
  if (!access_log_enabled()) return;
  // Reused per thread: formatting an access line allocates nothing once the buffer has grown.
  thread_local buffer line;
  line.clear();
  append_access_line(line, entry, current_format.load(std::memory_order_relaxed));
  state().access->log(spdlog::level::info, spdlog::string_view_t(line.data(), line.size()));
}

std::string format_access_line(const access_entry& entry, config::log_format format) {
  buffer line;
  append_access_line(line, entry, format);
  return fmt::to_string(line);
}

std::uint64_t access_log_dropped() {
  const auto& pool = state().pool;
  return pool ? pool->overrun_counter() : 0;
}

void shutdown_logging() {
  auto& s = state();
  access_enabled.store(false, std::memory_order_relaxed);
  spdlog::drop(access_name);
  spdlog::drop(events_name);
  s.events->flush();
  s.events->set_level(spdlog::level::off);
  s.retired.push_back(std::move(s.events));
  s.events = make_discarding_logger();
  // The pool goes first: its destructor writes every queued line and joins the async thread, so the
  // access sink is destroyed after its last use by that thread (also in a way TSan can see).
  s.pool.reset();
  s.access.reset();
}

}  // namespace sluice::log
