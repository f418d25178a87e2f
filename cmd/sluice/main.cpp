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
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include "admin/admin_server.hpp"
#include "common/http_probe.hpp"
#include "common/ip_address.hpp"
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

// "localhost" is what admin_server binds as 127.0.0.1; any other host that is not a loopback literal
// (including 0.0.0.0 and ::) may be reachable from other machines.
bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  const auto addr = common::ip_address::parse(host);
  if (!addr) return false;
  if (addr->is_v4()) return addr->bytes()[12] == 127;
  return *addr == *common::ip_address::parse("::1");
}

// Settings that are valid but let outsiders do what only the operator should: one line each, logged at
// start-up and after every reload so a risky file never goes unnoticed.
std::vector<std::string> risky_settings(const config::config& cfg) {
  std::vector<std::string> warnings;
  for (const auto& block : cfg.server.trusted_proxies) {
    if (block.prefix_bits() != 0) continue;
    warnings.push_back("server.trusted_proxies contains " + block.network().to_string() +
                       "/0: any client can choose its address through X-Forwarded-For");
  }
  if (cfg.admin.listen && !is_loopback_host(cfg.admin.listen->host)) {
    warnings.push_back("admin.listen " + cfg.admin.listen->text +
                       " is not a loopback address: admin endpoints have no authentication");
  }
  return warnings;
}

void log_summary(const server::server& srv, const config::config& cfg, std::uint16_t admin_port) {
  std::string upstreams;
  for (const auto& s : cfg.upstream.servers) upstreams += (upstreams.empty() ? "" : ",") + s.text;
  std::string limits;
  for (const auto& l : cfg.limits) limits += (limits.empty() ? "" : ",") + l.name + (l.dry_run ? "(dry-run)" : "");
  log::events()->info(
      "sluice {} listening listen={} port={} threads={} upstreams={} upstream_max_connections={} limits=[{}] "
      "rate_limit_headers={} max_connections={} admin={} admin_port={}",
      SLUICE_VERSION, cfg.listen.text, srv.port(), srv.worker_count(), upstreams, cfg.upstream.max_connections,
      limits, header_mode_name(cfg.rate_limit_headers), cfg.server.max_connections,
      cfg.admin.listen ? cfg.admin.listen->text : std::string("off"), admin_port);
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
    for (const auto& w : risky_settings(*cfg)) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("ok\n");
    return 0;
  }

  log::init_logging(cfg->log);
  auto& events = *log::events();
  for (const auto& w : risky_settings(*cfg)) events.warn("{}", w);
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
    log_summary(srv, *cfg, admin_listener ? admin_listener->port() : 0);

    net::steady_timer delay_timer(control);
    std::thread waiter;
    bool stopping = false;

    std::function<void()> arm_reload = [&] {
      reload_signal.async_wait([&](error_code ec, int) {
        if (ec) return;
        auto result = config::load_file(config_path);
        if (!result.errors.empty() || !result.value) {
          for (const auto& e : result.errors) events.error("reload rejected: {}", e.to_string());
          srv.count_rejected_reload();
        } else {
          auto next = std::move(*result.value);
          // Command-line overrides outlive the file they overrode (both were validated at start-up).
          if (!o.listen.empty()) next.listen = cfg->listen;
          if (!o.log_level.empty()) next.log.level = *parse_level(o.log_level);
          // The admin listener is bound once; warnings describe the settings actually in effect.
          const auto file_admin = next.admin.listen;
          next.admin.listen = cfg->admin.listen;
          const bool admin_changed = file_admin.has_value() != cfg->admin.listen.has_value() ||
                                     (file_admin && file_admin->text != cfg->admin.listen->text);
          try {
            srv.reload(next);
            events.info("reloaded config={} generation={}", config_path, srv.current()->generation);
            if (admin_changed) {
              events.warn("reload cannot change admin.listen (still {}); restart to apply {}",
                          cfg->admin.listen ? cfg->admin.listen->text : std::string("off"),
                          file_admin ? file_admin->text : std::string("off"));
            }
            for (const auto& w : risky_settings(next)) events.warn("{}", w);
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
          // Exit code 1 (README "Process"). No shutdown_logging(): workers may still be logging, and
          // tearing the loggers down under them could crash instead of exiting.
          events.warn("second signal {}: exiting at once", sig);
          events.flush();
          std::fflush(stdout);
          std::_Exit(1);
        }
        stopping = true;
        srv.announce_drain();
        // Drain timings come from the config in effect, which a reload may have changed.
        const auto drain = srv.current()->settings.drain;
        events.info("draining signal={} delay_ms={} timeout_ms={}", sig,
                    std::chrono::duration_cast<std::chrono::milliseconds>(drain.delay).count(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(drain.timeout).count());
        arm_stop();
        delay_timer.expires_after(drain.delay);
        delay_timer.async_wait([&, drain](error_code) {
          srv.begin_drain();
          // wait() blocks; it runs beside the control loop so a second signal still gets through.
          waiter = std::thread([&, drain] {
            const auto result = srv.wait(drain.timeout);
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
