#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>
#include <sstream>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/ostream_sink.h>

#include "log/logging.hpp"

using namespace std::chrono_literals;
using sluice::config::log_format;
using sluice::config::log_level;
using sluice::config::log_settings;
namespace slog = sluice::log;

namespace {

// 2024-03-05T06:07:08.009Z
const auto fixed_time = std::chrono::system_clock::time_point(std::chrono::seconds(1709618828)) + 9ms;

slog::access_entry sample_entry() {
  slog::access_entry e;
  e.time = fixed_time;
  e.client = "10.1.2.3";
  e.method = "GET";
  e.target = "/api/items?id=7";
  e.status = 200;
  e.bytes_sent = 1234;
  e.total = 2'345'678ns;
  e.upstream = 1'500'000ns;
  return e;
}

/// Captures both loggers into strings for one test and restores the discarding state afterwards.
struct captured_logging {
  std::ostringstream events_out;
  std::ostringstream access_out;

  explicit captured_logging(log_settings settings, std::size_t queue = 8192) {
    slog::init_logging(settings, slog::log_sinks{std::make_shared<spdlog::sinks::ostream_sink_mt>(events_out),
                                                 std::make_shared<spdlog::sinks::ostream_sink_mt>(access_out), queue});
  }
  ~captured_logging() { slog::shutdown_logging(); }

  /// Access output once every queued line is written (stops the async thread).
  std::string access_after_shutdown() {
    slog::shutdown_logging();
    return access_out.str();
  }
};

/// A sink that blocks the async thread inside its first write until released, so a test can fill the queue.
class gate_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  /// Waits until the async thread is blocked inside sink_it_; false after the timeout.
  bool wait_entered(std::chrono::milliseconds timeout) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, timeout, [&] { return entered_; });
  }
  void release() {
    const std::lock_guard lock(m_);
    released_ = true;
    cv_.notify_all();
  }
  std::size_t written() {
    const std::lock_guard lock(m_);
    return written_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg&) override {
    std::unique_lock lock(m_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait_for(lock, 10s, [&] { return released_; });
    ++written_;
  }
  void flush_() override {}

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool released_ = false;
  std::size_t written_ = 0;
};

}  // namespace

TEST_CASE("a text access line has time, level, logger and every field as logfmt key=value", "[log]") {
  // Values holding '=', spaces, quotes or empty are quoted, as logfmt encoders do.
  auto e = sample_entry();
  SECTION("no limit") {
    CHECK(slog::format_access_line(e, log_format::text) ==
          "2024-03-05T06:07:08.009Z info access client=10.1.2.3 method=GET target=\"/api/items?id=7\" status=200 "
          "bytes=1234 duration_ms=2.346 upstream_ms=1.500 limit=\"\"");
  }
  SECTION("rejected by a limit, target without '='") {
    e.target = "/api/items";
    e.status = 429;
    e.upstream = 0ns;
    e.limit = "per-ip";
    CHECK(slog::format_access_line(e, log_format::text) ==
          "2024-03-05T06:07:08.009Z info access client=10.1.2.3 method=GET target=/api/items status=429 "
          "bytes=1234 duration_ms=2.346 upstream_ms=0.000 limit=per-ip");
  }
}

TEST_CASE("a JSON access line is one object with every field", "[log]") {
  auto e = sample_entry();
  e.limit = "per-key";
  CHECK(slog::format_access_line(e, log_format::json) ==
        R"({"time":"2024-03-05T06:07:08.009Z","level":"info","logger":"access","client":"10.1.2.3",)"
        R"("method":"GET","target":"/api/items?id=7","status":200,"bytes":1234,"duration_ms":2.346,)"
        R"("upstream_ms":1.500,"limit":"per-key"})");
}

TEST_CASE("quotes, backslashes, control characters and bad UTF-8 in a target are escaped", "[log]") {
  using row = std::tuple<std::string, std::string, std::string>;
  auto [target, json, text] = GENERATE(table<std::string, std::string, std::string>({
      row{"/a\"b", R"("/a\"b")", R"("/a\"b")"},
      row{"/a\\b", R"("/a\\b")", R"("/a\\b")"},
      row{"/a\nb", R"("/a\nb")", R"("/a\nb")"},
      row{"/a\r\tb", R"("/a\r\tb")", R"("/a\r\tb")"},
      row{std::string("/a\x01\x1f\x7f", 5), R"("/a\u0001\u001f\u007f")", R"("/a\u0001\u001f\u007f")"},
      row{"/a b", R"("/a b")", R"("/a b")"},
      row{"/caf\xc3\xa9", "\"/caf\xc3\xa9\"", "\"/caf\xc3\xa9\""},
      row{"/x\xff", R"("/x\ufffd")", R"("/x\ufffd")"},
      row{"/x\xc3", R"("/x\ufffd")", R"("/x\ufffd")"},
      row{"/x\xed\xa0\x80", R"("/x\ufffd\ufffd\ufffd")", R"("/x\ufffd\ufffd\ufffd")"},
      row{"/k=v", R"("/k=v")", R"("/k=v")"},
  }));
  auto e = sample_entry();
  e.target = target;
  const auto json_line = slog::format_access_line(e, log_format::json);
  const auto text_line = slog::format_access_line(e, log_format::text);
  CAPTURE(target, json_line, text_line);
  CHECK(json_line.find(",\"target\":" + json + ",") != std::string::npos);
  CHECK(text_line.find(" target=" + text + " ") != std::string::npos);
  CHECK(json_line.find('\n') == std::string::npos);
  CHECK(text_line.find('\n') == std::string::npos);
}

TEST_CASE("access lines reach the access sink in the configured format", "[log]") {
  const auto e = sample_entry();
  SECTION("text") {
    captured_logging capture(log_settings{log_level::info, log_format::text, true});
    REQUIRE(slog::access_log_enabled());
    slog::log_access(e);
    slog::log_access(e);
    const auto out = capture.access_after_shutdown();
    const auto line = slog::format_access_line(e, log_format::text) + "\n";
    CHECK(out == line + line);
    CHECK(capture.events_out.str().empty());
  }
  SECTION("json, switched by a reload") {
    captured_logging capture(log_settings{log_level::info, log_format::text, true});
    slog::apply_log_settings(log_settings{log_level::info, log_format::json, true});
    slog::log_access(e);
    CHECK(capture.access_after_shutdown() == slog::format_access_line(e, log_format::json) + "\n");
  }
}

TEST_CASE("the access log switch and the level decide whether access lines are written", "[log]") {
  captured_logging capture(log_settings{log_level::info, log_format::text, true});
  CHECK(slog::access_log_enabled());
  SECTION("access_log: false") {
    slog::apply_log_settings(log_settings{log_level::info, log_format::text, false});
    CHECK_FALSE(slog::access_log_enabled());
  }
  SECTION("a level above info") {
    auto level = GENERATE(log_level::warn, log_level::error, log_level::off);
    slog::apply_log_settings(log_settings{level, log_format::text, true});
    CHECK_FALSE(slog::access_log_enabled());
  }
  slog::log_access(sample_entry());
  CHECK(capture.access_after_shutdown().empty());
  CHECK_FALSE(slog::access_log_enabled());
}

TEST_CASE("access logging is off until init_logging and after shutdown_logging", "[log]") {
  slog::shutdown_logging();
  CHECK_FALSE(slog::access_log_enabled());
  slog::log_access(sample_entry());  // must not crash without loggers
  CHECK(slog::access_log_dropped() == 0);
  REQUIRE(slog::events());
  slog::events()->error("discarded");
}

TEST_CASE("a level change applies to the event logger", "[log]") {
  captured_logging capture(log_settings{log_level::info, log_format::text, true});
  slog::events()->debug("hidden n={}", 1);
  slog::events()->info("shown n={}", 2);
  slog::apply_log_settings(log_settings{log_level::debug, log_format::text, true});
  slog::events()->debug("shown n={}", 3);
  slog::apply_log_settings(log_settings{log_level::error, log_format::text, true});
  slog::events()->warn("hidden n={}", 4);
  slog::events()->error("shown n={}", 5);
  const auto out = capture.events_out.str();
  CHECK(out.find("hidden") == std::string::npos);
  CHECK(out.find(" info sluice shown n=2\n") != std::string::npos);
  CHECK(out.find(" debug sluice shown n=3\n") != std::string::npos);
  CHECK(out.find(" error sluice shown n=5\n") != std::string::npos);
}

TEST_CASE("event lines are text or one escaped JSON object per line", "[log]") {
  SECTION("text keeps a message on one line") {
    captured_logging capture(log_settings{log_level::info, log_format::text, true});
    slog::events()->warn("bad value=\"{}\"", "a\nb");
    const auto out = capture.events_out.str();
    // 2024-03-05T06:07:08.009Z is 24 characters.
    REQUIRE(out.size() > 25);
    CHECK(out[10] == 'T');
    CHECK(out[23] == 'Z');
    CHECK(out.substr(24) == " warn sluice bad value=\"a\\nb\"\n");
  }
  SECTION("json") {
    captured_logging capture(log_settings{log_level::info, log_format::json, true});
    slog::events()->info("reload ok path=\"{}\"", "C:\\x");
    const auto out = capture.events_out.str();
    CHECK(out.rfind("{\"time\":\"", 0) == 0);
    CHECK(out.find(R"(","level":"info","logger":"sluice","msg":"reload ok path=\"C:\\x\""})"
                   "\n") != std::string::npos);
  }
}

TEST_CASE("a full access queue drops the oldest lines and counts them without blocking", "[log]") {
  auto gate = std::make_shared<gate_sink>();
  std::ostringstream events_out;
  constexpr std::size_t queue = 4;
  slog::init_logging(log_settings{log_level::info, log_format::text, true},
                     slog::log_sinks{std::make_shared<spdlog::sinks::ostream_sink_mt>(events_out), gate, queue});
  const auto e = sample_entry();
  slog::log_access(e);
  REQUIRE(gate->wait_entered(5s));
  // The async thread holds the first line; the queue takes `queue` more and every line after that
  // overruns the oldest.
  constexpr std::size_t extra = 10;
  for (std::size_t i = 0; i < queue + extra; ++i) slog::log_access(e);
  CHECK(slog::access_log_dropped() == extra);
  gate->release();
  slog::shutdown_logging();
  CHECK(gate->written() == 1 + queue);
}

TEST_CASE("a reference to the event logger stays usable after shutdown and writes nothing", "[log]") {
  captured_logging capture(log_settings{log_level::info, log_format::text, true});
  auto& events = *slog::events();
  events.info("before");
  slog::shutdown_logging();
  events.info("after");
  const auto out = capture.events_out.str();
  CHECK(out.find("before") != std::string::npos);
  CHECK(out.find("after") == std::string::npos);
}
