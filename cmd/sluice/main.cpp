// sluice: the rate-limiting reverse proxy. Flags, config, logging, the server, the admin listener and
// the signals; everything else lives in src/.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include "admin/admin_server.hpp"
#include "common/http_probe.hpp"
#include "config/config_loader.hpp"
#include "log/logging.hpp"
#include "net.hpp"
#include "server/server.hpp"

namespace {

using namespace sluice;

struct overrides {
  std::string listen;
  std::string log_level;
};

std::optional<config::log_level> parse_level(const std::string& s) {
  if (s == "trace") return config::log_level::trace;
  if (s == "debug") return config::log_level::debug;
  if (s == "info") return config::log_level::info;
  if (s == "warn") return config::log_level::warn;
  if (s == "error") return config::log_level::error;
  if (s == "off") return config::log_level::off;
  return std::nullopt;
}

// Loads the file and applies the command-line overrides; prints every problem to stderr.
std::optional<config::config> load(const std::string& path, const overrides& o) {
  auto result = config::load_file(path);
  if (!result.errors.empty() || !result.value) {
    for (const auto& e : result.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    return std::nullopt;
  }
  auto cfg = std::move(*result.value);
  if (!o.listen.empty()) {
    auto ep = config::parse_endpoint(o.listen);
    if (!ep) {
      std::fprintf(stderr, "--listen: \"%s\" is not host:port\n", o.listen.c_str());
      return std::nullopt;
    }
    cfg.listen = *ep;
  }
  if (!o.log_level.empty()) {
    auto level = parse_level(o.log_level);
    if (!level) {
      std::fprintf(stderr, "--log-level: \"%s\" is not one of trace, debug, info, warn, error, off\n",
                   o.log_level.c_str());
      return std::nullopt;
    }
    cfg.log.level = *level;
  }
  return cfg;
}

std::string_view header_mode_name(config::header_mode m) {
  switch (m) {
    case config::header_mode::latest: return "latest";
    case config::header_mode::legacy: return "legacy";
    case config::header_mode::both: return "both";
    case config::header_mode::none: return "none";
  }
  return "?";
}

void log_summary(const server::server& srv, const config::config& cfg) {
  std::string upstreams;
  for (const auto& s : cfg.upstream.servers) upstreams += (upstreams.empty() ? "" : ",") + s.text;
  std::string limits;
  for (const auto& l : cfg.limits) limits += (limits.empty() ? "" : ",") + l.name + (l.dry_run ? "(dry-run)" : "");
  log::events()->info(
      "sluice {} listening listen={} port={} threads={} upstreams={} upstream_max_connections={} limits=[{}] "
      "rate_limit_headers={} max_connections={} admin={}",
      SLUICE_VERSION, cfg.listen.text, srv.port(), srv.worker_count(), upstreams, cfg.upstream.max_connections,
      limits, header_mode_name(cfg.rate_limit_headers), cfg.server.max_connections,
      cfg.admin.listen ? cfg.admin.listen->text : std::string("off"));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice: a rate-limiting HTTP/1.1 reverse proxy"};
  std::string config_path = "config/sluice.yaml";
  bool check = false;
  std::string probe_url;
  int probe_timeout_ms = 2000;
  overrides o;
  app.add_option("--config", config_path, "configuration file (YAML)")->capture_default_str();
  app.add_flag("--check", check, "validate the configuration, print ok or every error, and exit");
  app.add_option("--listen", o.listen, "override listen (host:port)");
  app.add_option("--log-level", o.log_level, "override log.level (trace|debug|info|warn|error|off)");
  app.add_option("--probe", probe_url, "GET this URL (e.g. http://127.0.0.1:9901/readyz); exit 0 on 2xx, else 1");
  app.add_option("--probe-timeout-ms", probe_timeout_ms, "timeout of --probe in milliseconds")->capture_default_str();
  app.set_version_flag("--version", std::string("sluice ") + SLUICE_VERSION);
  CLI11_PARSE(app, argc, argv);

  if (!probe_url.empty()) return common::http_probe(probe_url, std::chrono::milliseconds(probe_timeout_ms));

  auto cfg = load(config_path, o);
  if (!cfg) return 1;
  if (check) {
    std::printf("ok\n");
    return 0;
  }

  log::init_logging(cfg->log);
  auto& events = *log::events();
  int exit_code = 0;
  try {
    // Signals are caught from before the workers start, so an early SIGTERM drains instead of killing.
    net::io_context control(1);
    net::signal_set stop_signals(control, SIGINT, SIGTERM);
    net::signal_set reload_signal(control, SIGHUP);

    server::server srv(*cfg);
    std::unique_ptr<admin::admin_server> admin_listener;
    if (cfg->admin.listen) {
      admin_listener = std::make_unique<admin::admin_server>(
          control, *cfg->admin.listen, srv.metrics(), [&srv] { return srv.gauges(); },
          [&srv] { return !srv.draining(); });
    }
    srv.start();
    if (admin_listener) admin_listener->start();
    log_summary(srv, *cfg);

    net::steady_timer delay_timer(control);
    std::thread waiter;
    bool stopping = false;

    std::function<void()> arm_reload = [&] {
      reload_signal.async_wait([&](error_code ec, int) {
        if (ec) return;
        auto result = config::load_file(config_path);
        if (!result.errors.empty() || !result.value) {
          for (const auto& e : result.errors) events.error("reload rejected: {}", e.to_string());
        } else {
          try {
            srv.reload(std::move(*result.value));
            events.info("reloaded config={} generation={}", config_path, srv.current()->generation);
          } catch (const std::exception& e) {
            events.error("reload rejected: {}", e.what());
          }
        }
        arm_reload();
      });
    };
    arm_reload();

    std::function<void()> arm_stop = [&] {
      stop_signals.async_wait([&](error_code ec, int sig) {
        if (ec) return;
        if (stopping) {
          events.warn("second signal {}: exiting at once", sig);
          log::shutdown_logging();
          std::_Exit(1);
        }
        stopping = true;
        srv.announce_drain();
        events.info("draining signal={} delay_ms={} timeout_ms={}", sig,
                    std::chrono::duration_cast<std::chrono::milliseconds>(cfg->drain.delay).count(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(cfg->drain.timeout).count());
        arm_stop();
        delay_timer.expires_after(cfg->drain.delay);
        delay_timer.async_wait([&](error_code) {
          srv.begin_drain();
          // wait() blocks; it runs beside the control loop so a second signal still gets through.
          waiter = std::thread([&] {
            const auto result = srv.wait(cfg->drain.timeout);
            net::post(control, [&, result] {
              if (result.completed) {
                events.info("drained: every request finished");
              } else {
                events.warn("drain timeout passed: cut client_connections={} upstream_connections={}",
                            result.sessions_cut, result.upstream_cut);
              }
              stop_signals.cancel();
              reload_signal.cancel();
              if (admin_listener) admin_listener->stop();
            });
          });
        });
      });
    };
    arm_stop();

    control.run();
    if (waiter.joinable()) waiter.join();
  } catch (const std::exception& e) {
    events.error("{}", e.what());
    std::fprintf(stderr, "sluice: %s\n", e.what());
    exit_code = 1;
  }
  log::shutdown_logging();
  return exit_code;
}
