#include <catch2/catch.hpp>

#include <csignal>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "server_fixture.hpp"

using namespace sluice;
using namespace sluice::test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

/// The parts of a sluice config file these tests vary; everything else is the contract's default.
struct file_settings {
  std::string upstream;                  ///< host:port of the upstream
  unsigned threads = 2;
  std::string admin = "127.0.0.1:0";
  std::string trusted_proxies = "[]";    ///< a YAML flow list
  std::string limits;                    ///< YAML block under "limits:" (already indented), or empty
  std::string drain_delay = "0s";
  std::string drain_timeout = "10s";
  std::string headers = "latest";
  std::string level = "info";
  bool access_log = false;
  std::string extra;                     ///< more top-level YAML (e.g. max_tracked_keys)
};

file_settings settings_for(const fake_upstream& up) {
  file_settings s;
  s.upstream = up.address();
  return s;
}

std::string yaml_of(const file_settings& s) {
  std::string y = "listen: \"127.0.0.1:0\"\n";
  y += "threads: " + std::to_string(s.threads) + "\n";
  y += "server:\n  trusted_proxies: " + s.trusted_proxies + "\n";
  y += "upstream:\n  servers: [\"" + s.upstream + "\"]\n";
  if (!s.limits.empty()) y += "limits:\n" + s.limits;
  y += "rate_limit_headers: " + s.headers + "\n";
  y += "drain:\n  delay: " + s.drain_delay + "\n  timeout: " + s.drain_timeout + "\n";
  y += "admin:\n  listen: \"" + s.admin + "\"\n";
  y += "log:\n  level: " + s.level + "\n  access_log: " + (s.access_log ? "true" : "false") + "\n";
  y += s.extra;
  return y;
}

/// One limit entry for file_settings::limits.
std::string limit_yaml(const std::string& name, const std::string& key, const std::string& rate, unsigned burst,
                       const std::string& path_prefix = "") {
  std::string y = "  - name: " + name + "\n    key: " + key + "\n    rate: " + rate + "\n    burst: " +
                  std::to_string(burst) + "\n";
  if (!path_prefix.empty()) y += "    when:\n      path_prefix: " + path_prefix + "\n";
  return y;
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::vector<std::string> lines_with(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    auto line = text.substr(start, end - start);
    if (line.find(what) != std::string::npos) out.push_back(line);
    start = end + 1;
  }
  return out;
}

/// The value of one sample line ("name{labels} value") of a Prometheus text page; nullopt when absent.
std::optional<double> sample_value(const std::string& page, const std::string& series) {
  const auto prefix = series + " ";
  std::size_t at = 0;
  while ((at = page.find(prefix, at)) != std::string::npos) {
    if (at == 0 || page[at - 1] == '\n') {
      const auto end = page.find('\n', at);
      return std::stod(page.substr(at + prefix.size(), end - at - prefix.size()));
    }
    at += prefix.size();
  }
  return std::nullopt;
}

double sample(const std::string& page, const std::string& series) {
  const auto v = sample_value(page, series);
  INFO("series " << series << " in\n" << page);
  REQUIRE(v.has_value());
  return *v;
}

/// A sluice process on 127.0.0.1 port 0 (proxy and admin), its config in a temp dir. Ports are read
/// from the start-up line, so nothing is guessed.
class sluice_process {
 public:
  explicit sluice_process(const file_settings& s) {
    write_file(dir_ / "sluice.yaml", yaml_of(s));
    proc_ = std::make_unique<child_process>(SLUICE_BIN, std::vector<std::string>{"--config", path()},
                                            child_process::options{.cwd = dir_.path(), .extra_env = {}});
    const std::regex re(" port=([0-9]+) .* admin_port=([0-9]+)");
    std::smatch m;
    const bool up = eventually([&] {
      const auto err = proc_->stderr_text();
      if (!std::regex_search(err, m, re)) return false;
      port_ = static_cast<std::uint16_t>(std::stoi(m[1].str()));
      admin_port_ = static_cast<std::uint16_t>(std::stoi(m[2].str()));
      return true;
    }, 10'000ms);
    INFO("sluice stderr:\n" << proc_->stderr_text());
    REQUIRE(up);
  }

  [[nodiscard]] std::string path() const { return (dir_ / "sluice.yaml").string(); }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::uint16_t admin_port() const { return admin_port_; }
  child_process& proc() { return *proc_; }
  [[nodiscard]] std::string err() const { return proc_->stderr_text(); }
  [[nodiscard]] std::string out() const { return proc_->stdout_text(); }

  /// Writes the file, sends SIGHUP and waits for main's verdict; true when the reload was accepted.
  bool reload(const std::string& yaml) {
    write_file(dir_ / "sluice.yaml", yaml);
    const auto before_ok = count_of(err(), "reloaded config=");
    const auto before_bad = count_of(err(), "reload rejected");
    proc_->signal(SIGHUP);
    bool ok = false;
    const bool answered = eventually([&] {
      const auto e = err();
      ok = count_of(e, "reloaded config=") > before_ok;
      return ok || count_of(e, "reload rejected") > before_bad;
    }, 5000ms);
    INFO("sluice stderr:\n" << err());
    REQUIRE(answered);
    return ok;
  }

  /// GET path on the admin listener, on a fresh connection.
  parsed_response admin_get(const std::string& path) {
    raw_client c(admin_port_, 5000ms);
    c.send(get(path));
    return c.read_response();
  }

  /// The /metrics page.
  std::string metrics() {
    const auto r = admin_get("/metrics");
    REQUIRE(r.status == 200);
    return r.body;
  }

 private:
  temp_dir dir_;
  std::unique_ptr<child_process> proc_;
  std::uint16_t port_ = 0;
  std::uint16_t admin_port_ = 0;
};

/// One request on a fresh connection to the proxy.
parsed_response fetch(std::uint16_t port, const std::string& target, const std::string& extra = "") {
  raw_client c(port, 5000ms);
  c.send(get(target, extra));
  return c.read_response();
}

long ms_since(steady::time_point t) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count());
}

}  // namespace

TEST_CASE("sluice warns at start-up about trusted_proxies /0 blocks and an admin listener off loopback",
          "[server][operations]") {
  fake_upstream up;
  using row = std::tuple<std::string, std::string, bool, bool>;
  const auto [trusted, admin, warn_xff, warn_admin] = GENERATE(table<std::string, std::string, bool, bool>({
      row{"[\"10.0.0.0/8\", \"127.0.0.1\"]", "127.0.0.1:0", false, false},
      row{"[]", "localhost:0", false, false},
      row{"[]", "[::1]:0", false, false},
      row{"[\"0.0.0.0/0\"]", "127.0.0.1:0", true, false},
      row{"[\"10.0.0.0/8\", \"::/0\"]", "127.0.0.1:0", true, false},
      row{"[]", "0.0.0.0:0", false, true},
  }));
  auto s = settings_for(up);
  s.trusted_proxies = trusted;
  s.admin = admin;
  sluice_process p(s);
  const auto err = p.err();
  INFO("trusted_proxies " << trusted << ", admin " << admin << "\nstderr:\n" << err);
  const auto xff = lines_with(err, "any client can choose its address through X-Forwarded-For");
  const auto adm = lines_with(err, "admin endpoints have no authentication");
  CHECK(xff.empty() == !warn_xff);
  CHECK(adm.empty() == !warn_admin);
  for (const auto& line : xff) {
    CHECK(line.find(" warn ") != std::string::npos);
    CHECK((line.find("0.0.0.0/0") != std::string::npos || line.find("::/0") != std::string::npos));
    CHECK(line.find("10.0.0.0/8") == std::string::npos);
  }
  for (const auto& line : adm) CHECK(line.find(admin) != std::string::npos);
  // The warnings do not stop the proxy: it serves.
  CHECK(fetch(p.port(), "/").status == 200);
  p.proc().signal(SIGTERM);
  CHECK(p.proc().wait(10s) == 0);
}

TEST_CASE("sluice repeats the risky-setting warnings after a reload that brings them in", "[server][operations]") {
  fake_upstream up;
  auto s = settings_for(up);
  sluice_process p(s);
  CHECK(lines_with(p.err(), "X-Forwarded-For").empty());

  s.trusted_proxies = "[\"::/0\"]";
  s.admin = "0.0.0.0:0";
  REQUIRE(p.reload(yaml_of(s)));
  const auto err = p.err();
  INFO(err);
  const auto after = err.substr(err.find("reloaded config="));
  CHECK(lines_with(after, "server.trusted_proxies contains ::/0: any client can choose its address through "
                          "X-Forwarded-For").size() == 1);
  // The admin listener is bound once: a reload that moves it is refused with a warning, and the risky
  // address never takes effect, so there is nothing to warn about.
  CHECK(lines_with(after, "reload cannot change admin.listen (still 127.0.0.1:0); restart to apply 0.0.0.0:0")
            .size() == 1);
  CHECK(lines_with(after, "admin endpoints have no authentication").empty());
  CHECK(p.admin_get("/healthz").status == 200);
}

TEST_CASE("under load SIGTERM lets all 20 requests in flight finish with Connection: close and refuses new ones",
          "[server][operations]") {
  fake_upstream up([](const received_request& rq) { return reply::ok("slow " + rq.target).after(500ms); });
  auto s = settings_for(up);
  s.drain_timeout = "20s";
  sluice_process p(s);

  constexpr int in_flight = 20;
  std::vector<std::unique_ptr<raw_client>> clients;
  for (int i = 0; i < in_flight; ++i) {
    clients.push_back(std::make_unique<raw_client>(p.port(), 10'000ms));
    clients.back()->send(get("/slow/" + std::to_string(i)));
  }
  REQUIRE(up.wait_for_requests(in_flight, 5000ms));
  const auto signalled = steady::now();
  p.proc().signal(SIGTERM);

  // The listener closes at once (drain.delay 0s) while the 20 requests still wait on the upstream.
  CHECK(eventually([&] { return raw_client::connect_refused(p.port(), 1000ms); }, 3000ms));
  CHECK(ms_since(signalled) < 500);
  CHECK(p.proc().running());

  for (int i = 0; i < in_flight; ++i) {
    parsed_response r;
    const auto ec = clients[i]->try_read_response(r);
    INFO("client " << i << ": " << ec.message());
    REQUIRE_FALSE(ec);
    CHECK(r.status == 200);
    CHECK(r.body == "slow /slow/" + std::to_string(i));
    CHECK(r.header("Connection") == "close");
    CHECK(clients[i]->is_closed(2000ms));
  }
  CHECK(p.proc().wait(10s) == 0);
  // Well within drain.timeout (20 s): the process leaves as soon as the last response is out.
  CHECK(ms_since(signalled) < 5000);
  CHECK(up.request_count() == in_flight);
  CHECK(p.err().find("drained: every request finished") != std::string::npos);
}

TEST_CASE("during drain.delay /readyz answers 503 while the proxy still serves; then the listener closes",
          "[server][operations]") {
  fake_upstream up([](const received_request& rq) {
    return rq.target == "/long" ? reply::ok("long").after(2500ms) : reply::ok("quick");
  });
  auto s = settings_for(up);
  s.drain_delay = "1s";
  sluice_process p(s);
  CHECK(p.admin_get("/readyz").status == 200);

  // A request that outlives the delay keeps the process up, so /healthz can be checked after it.
  raw_client long_client(p.port(), 10'000ms);
  long_client.send(get("/long"));
  REQUIRE(up.wait_for_requests(1, 5000ms));

  const auto signalled = steady::now();
  p.proc().signal(SIGTERM);
  CHECK(eventually([&] { return p.admin_get("/readyz").status == 503; }, 900ms));
  CHECK(p.admin_get("/healthz").status == 200);
  raw_client during(p.port(), 5000ms);
  during.send(get("/during"));
  const auto served = during.read_response();
  CHECK(served.status == 200);
  CHECK(served.body == "quick");
  CHECK(ms_since(signalled) < 1000);

  CHECK(eventually([&] { return raw_client::connect_refused(p.port(), 1000ms); }, 3000ms));
  CHECK(ms_since(signalled) >= 1000);
  // The idle keep-alive connection closes when the delay ends.
  CHECK(during.is_closed(2000ms));
  CHECK(p.admin_get("/healthz").status == 200);
  CHECK(p.admin_get("/readyz").status == 503);
  CHECK(p.proc().running());

  const auto last = long_client.read_response();
  CHECK(last.status == 200);
  CHECK(last.header("Connection") == "close");
  CHECK(p.proc().wait(10s) == 0);
}

TEST_CASE("a second SIGTERM during a long drain exits at once with code 1", "[server][operations]") {
  fake_upstream up([](const received_request&) { return reply::hang(); });
  auto s = settings_for(up);
  s.drain_timeout = "30s";
  sluice_process p(s);
  raw_client c(p.port(), 10'000ms);
  c.send(get("/hang"));
  REQUIRE(up.wait_for_requests(1, 5000ms));

  const auto signalled = steady::now();
  p.proc().signal(SIGTERM);
  REQUIRE(eventually([&] { return p.err().find("draining signal=15") != std::string::npos; }, 3000ms));
  CHECK(p.proc().running());
  p.proc().signal(SIGTERM);
  // README "Process": a second signal exits at once with code 1 (p.wait FAILs long before drain.timeout).
  CHECK(p.proc().wait(5s) == 1);
  CHECK(ms_since(signalled) < 5000);
  CHECK(p.err().find("second signal 15: exiting at once") != std::string::npos);
  CHECK(c.is_closed(2000ms));
}

TEST_CASE("a reload keeps the state of unchanged limits and starts a fresh bucket for a changed one",
          "[server][operations]") {
  fake_upstream up;
  auto s = settings_for(up);
  s.limits = limit_yaml("per-ip", "ip", "1/m", 3);
  sluice_process p(s);
  const auto m0 = p.metrics();
  CHECK(sample(m0, "sluice_config_generation") == 1);
  CHECK(sample(m0, "sluice_config_reloads_total{result=\"ok\"}") == 0);

  raw_client c(p.port(), 5000ms);
  for (int i = 0; i < 3; ++i) {
    c.send(get("/"));
    CHECK(c.read_response().status == 200);
  }
  c.send(get("/"));
  CHECK(c.read_response().status == 429);

  // Something else changes (header style, level, another limit): per-ip keeps its empty bucket.
  s.headers = "legacy";
  s.level = "debug";
  s.limits = limit_yaml("per-ip", "ip", "1/m", 3) + limit_yaml("other", "global", "100/s", 1000, "/other/");
  REQUIRE(p.reload(yaml_of(s)));
  // The legacy headers show the new config is in effect for this request.
  REQUIRE(eventually([&] {
    c.send(get("/"));
    return c.read_response().header("RateLimit-Limit").has_value();
  }));
  c.send(get("/"));
  const auto still = c.read_response();
  CHECK(still.status == 429);
  CHECK(still.header("RateLimit-Limit") == "3");
  CHECK(still.header("RateLimit-Remaining") == "0");
  CHECK(sample(p.metrics(), "sluice_config_generation") == 2);

  // burst 3 -> 10 is a different bucket, which starts full.
  s.limits = limit_yaml("per-ip", "ip", "1/m", 10);
  REQUIRE(p.reload(yaml_of(s)));
  REQUIRE(eventually([&] {
    c.send(get("/"));
    return c.read_response().header("RateLimit-Limit") == "10";
  }));
  // That probe took the first token; nine are left.
  for (int i = 0; i < 9; ++i) {
    c.send(get("/"));
    const auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.header("RateLimit-Remaining") == std::to_string(8 - i));
  }
  c.send(get("/"));
  CHECK(c.read_response().status == 429);

  const auto m = p.metrics();
  CHECK(sample(m, "sluice_config_generation") == 3);
  CHECK(sample(m, "sluice_config_reloads_total{result=\"ok\"}") == 2);
  CHECK(sample(m, "sluice_config_reloads_total{result=\"error\"}") == 0);
  CHECK(up.request_count() == 13);
}

TEST_CASE("an invalid file on SIGHUP changes nothing, logs every error with its line and is counted",
          "[server][operations]") {
  fake_upstream up;
  auto s = settings_for(up);
  s.limits = limit_yaml("per-ip", "ip", "1/m", 2);
  sluice_process p(s);
  raw_client c(p.port(), 5000ms);
  for (int i = 0; i < 2; ++i) {
    c.send(get("/"));
    CHECK(c.read_response().status == 200);
  }
  c.send(get("/"));
  CHECK(c.read_response().status == 429);

  // A bigger burst that would let requests through again, next to two errors.
  const std::string bad =
      "listen: \"127.0.0.1:0\"\n"                     // 1
      "threads: many\n"                               // 2
      "upstream:\n"                                   // 3
      "  servers: [\"" + up.address() + "\"]\n"       // 4
      "limits:\n"                                     // 5
      "  - name: per-ip\n"                            // 6
      "    key: ip\n"                                 // 7
      "    rate: fast\n"                              // 8
      "    burst: 100\n"                              // 9
      "admin:\n"                                      // 10
      "  listen: \"127.0.0.1:0\"\n";                  // 11
  REQUIRE_FALSE(p.reload(bad));
  const auto err = p.err();
  INFO(err);
  const auto rejected = lines_with(err, "reload rejected:");
  CHECK(rejected.size() == 2);
  CHECK(lines_with(err, "sluice.yaml:2:").size() == 1);
  CHECK(lines_with(err, "sluice.yaml:2:")[0].find("threads") != std::string::npos);
  CHECK(lines_with(err, "sluice.yaml:8:").size() == 1);
  CHECK(lines_with(err, "sluice.yaml:8:")[0].find("limits[0].rate") != std::string::npos);
  for (const auto& line : rejected) CHECK(line.find(" error ") != std::string::npos);

  for (int i = 0; i < 3; ++i) {
    c.send(get("/"));
    const auto r = c.read_response();
    CHECK(r.status == 429);
    CHECK(r.header("RateLimit-Policy") == "\"per-ip\";q=2;w=120");
  }
  CHECK(up.request_count() == 2);
  const auto m = p.metrics();
  CHECK(sample(m, "sluice_config_reloads_total{result=\"error\"}") == 1);
  CHECK(sample(m, "sluice_config_reloads_total{result=\"ok\"}") == 0);
  CHECK(sample(m, "sluice_config_generation") == 1);
}

TEST_CASE("a keep-alive connection open across a SIGHUP keeps working and sees the new config",
          "[server][operations]") {
  fake_upstream up;
  auto s = settings_for(up);
  sluice_process p(s);
  raw_client c(p.port(), 5000ms);
  c.send(get("/before"));
  const auto before = c.read_response();
  CHECK(before.status == 200);
  CHECK(before.keep_alive);
  CHECK_FALSE(before.header("RateLimit"));

  s.limits = limit_yaml("wide", "global", "100/s", 1000);
  REQUIRE(p.reload(yaml_of(s)));
  REQUIRE(eventually([&] {
    c.send(get("/after"));
    const auto r = c.read_response();
    return r.status == 200 && r.header("RateLimit").has_value();
  }));
  c.send(get("/again"));
  const auto again = c.read_response();
  CHECK(again.status == 200);
  CHECK(again.keep_alive);
  CHECK_FALSE(c.is_closed(50ms));
  CHECK(sample(p.metrics(), "sluice_client_connections") == 1);
  // Every request came over one client connection: the client saw no close.
  CHECK(sample(p.metrics(), "sluice_client_connections_accepted_total") == 1);
}

TEST_CASE("/metrics has every series of the contract and they move with traffic; an unknown path is 404",
          "[server][operations]") {
  fake_upstream up([](const received_request& rq) {
    if (rq.target == "/garbage") return reply::garbage();
    if (rq.target == "/slow") return reply::ok("slow").after(1500ms);
    return reply::ok();
  });
  auto s = settings_for(up);
  s.threads = 1;
  s.limits = limit_yaml("tight", "ip", "1/m", 1, "/limited") + limit_yaml("by-key", "header:X-Key", "1/m", 5);
  s.extra = "max_tracked_keys: 2\n";
  sluice_process p(s);

  const auto m0 = p.metrics();
  const std::vector<std::string> series = {
      "sluice_requests_total{outcome=\"forwarded\"}",
      "sluice_requests_total{outcome=\"limited\"}",
      "sluice_requests_total{outcome=\"error\"}",
      "sluice_upstream_connections{state=\"busy\"}",
      "sluice_upstream_connections{state=\"idle\"}",
      "sluice_upstream_queue_waiting",
      "sluice_client_connections",
      "sluice_tracked_keys",
      "sluice_evictions_total{kind=\"lossless\"}",
      "sluice_evictions_total{kind=\"lossy\"}",
      "sluice_request_duration_seconds_bucket{le=\"+Inf\"}",
      "sluice_request_duration_seconds_count",
      "sluice_request_duration_seconds_sum",
  };
  for (const auto& name : series) {
    INFO(name);
    CHECK(sample_value(m0, name) == 0.0);
  }
  CHECK(m0.find("# TYPE sluice_request_duration_seconds histogram") != std::string::npos);

  raw_client c(p.port(), 5000ms);
  auto send = [&](const std::string& target, const std::string& extra = "") {
    c.send(get(target, extra));
    return c.read_response().status;
  };
  CHECK(send("/a") == 200);
  CHECK(send("/limited") == 200);
  CHECK(send("/limited") == 429);
  CHECK(send("/limited") == 429);
  CHECK(send("/garbage") == 502);
  CHECK(send("/k", "X-Key: a\r\n") == 200);
  CHECK(send("/k", "X-Key: b\r\n") == 200);
  CHECK(send("/k", "X-Key: c\r\n") == 200);  // a third key in a table of two: the oldest goes, below full

  // Counters land just after the response bytes leave.
  std::string m;
  REQUIRE(eventually([&] {
    m = p.metrics();
    return sample(m, "sluice_request_duration_seconds_count") == 8;
  }));
  CHECK(sample(m, "sluice_requests_total{outcome=\"forwarded\"}") == 5);
  CHECK(sample(m, "sluice_requests_total{outcome=\"limited\"}") == 2);
  CHECK(sample(m, "sluice_requests_total{outcome=\"error\"}") == 1);
  CHECK(sample(m, "sluice_rate_limited_total{limit=\"tight\"}") == 2);
  CHECK(sample(m, "sluice_request_duration_seconds_bucket{le=\"+Inf\"}") == 8);
  CHECK(sample(m, "sluice_request_duration_seconds_sum") > 0);
  CHECK(sample(m, "sluice_client_connections") == 1);
  CHECK(sample(m, "sluice_upstream_connections{state=\"busy\"}") == 0);
  CHECK(sample(m, "sluice_upstream_connections{state=\"idle\"}") >= 1);
  CHECK(sample(m, "sluice_tracked_keys") == 2);
  CHECK(sample(m, "sluice_evictions_total{kind=\"lossy\"}") >= 1);

  // A request waiting on the upstream holds a busy connection.
  raw_client slow(p.port(), 5000ms);
  slow.send(get("/slow"));
  REQUIRE(eventually([&] { return sample(p.metrics(), "sluice_upstream_connections{state=\"busy\"}") == 1; }));
  CHECK(sample(p.metrics(), "sluice_client_connections") == 2);
  CHECK(slow.read_response().status == 200);

  const auto missing = p.admin_get("/nope");
  CHECK(missing.status == 404);
  CHECK(p.admin_get("/metricsx").status == 404);
}

TEST_CASE("the access log writes one stdout line per request when on, and none when off", "[server][operations]") {
  fake_upstream up;
  const bool on = GENERATE(true, false);
  auto s = settings_for(up);
  s.access_log = on;
  s.limits = limit_yaml("acl", "ip", "1/m", 1, "/lim");
  sluice_process p(s);
  {
    raw_client c(p.port(), 5000ms);
    c.send(get("/hello?x=1"));
    CHECK(c.read_response().status == 200);
    c.send(get("/lim"));
    CHECK(c.read_response().status == 200);
    c.send("POST /lim HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    CHECK(c.read_response().status == 429);
  }
  CHECK(p.admin_get("/healthz").status == 200);
  // Exiting flushes the asynchronous access queue, so stdout is complete afterwards.
  p.proc().signal(SIGTERM);
  REQUIRE(p.proc().wait(10s) == 0);
  const auto out = p.out();
  INFO("stdout:\n" << out);
  const auto lines = lines_with(out, " access ");
  if (!on) {
    CHECK(lines.empty());
    CHECK(out.empty());
    return;
  }
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].find("method=GET target=\"/hello?x=1\" status=200") != std::string::npos);
  CHECK(lines[1].find("method=GET target=/lim status=200") != std::string::npos);
  CHECK(lines[2].find("method=POST target=/lim status=429") != std::string::npos);
  CHECK(lines[2].find("limit=acl") != std::string::npos);
  CHECK(lines[0].find("limit=acl") == std::string::npos);
  // Admin requests are not proxy traffic.
  CHECK(out.find("/healthz") == std::string::npos);
}

TEST_CASE("the drain timings of a reloaded file apply to the next SIGTERM", "[server][operations]") {
  fake_upstream up([](const received_request&) { return reply::hang(); });
  auto s = settings_for(up);
  s.drain_timeout = "30s";
  sluice_process p(s);
  s.drain_timeout = "300ms";
  REQUIRE(p.reload(yaml_of(s)));
  raw_client c(p.port(), 10'000ms);
  c.send(get("/hang"));
  REQUIRE(up.wait_for_requests(1, 5000ms));

  const auto signalled = steady::now();
  p.proc().signal(SIGTERM);
  // With the start-up 30 s the wait below FAILs.
  CHECK(p.proc().wait(5s) == 0);
  CHECK(ms_since(signalled) >= 300);
  const auto err = p.err();
  INFO(err);
  CHECK(err.find("draining signal=15 delay_ms=0 timeout_ms=300") != std::string::npos);
  CHECK(err.find("drain timeout passed: cut client_connections=1 upstream_connections=1") != std::string::npos);
  CHECK(c.is_closed(2000ms));
}

TEST_CASE("a reload keeps the --log-level and --listen overrides of the command line", "[server][operations]") {
  fake_upstream up;
  auto s = settings_for(up);
  s.level = "error";
  temp_dir dir;
  write_file(dir / "sluice.yaml", yaml_of(s));
  const auto port = closed_port();
  child_process p(SLUICE_BIN, {"--config", (dir / "sluice.yaml").string(), "--log-level", "info", "--listen",
                               "127.0.0.1:" + std::to_string(port)});
  wait_for_port(port, 10s, &p);
  REQUIRE(eventually([&] { return p.stderr_text().find("listening") != std::string::npos; }));
  p.signal(SIGHUP);
  // The info line would be filtered out had the file's level: error replaced the override.
  REQUIRE(eventually([&] { return p.stderr_text().find("reloaded config=") != std::string::npos; }));
  const auto err = p.stderr_text();
  INFO(err);
  CHECK(err.find("reload cannot change listen") == std::string::npos);
  CHECK(fetch(port, "/").status == 200);
  p.signal(SIGTERM);
  CHECK(p.wait(10s) == 0);
}
