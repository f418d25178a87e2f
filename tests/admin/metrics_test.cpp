#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "admin/metrics.hpp"

using namespace std::chrono_literals;
using sluice::admin::histogram_bounds_seconds;
using sluice::admin::metrics;
using sluice::admin::outcome;
using sluice::admin::process_gauges;
using sluice::admin::relaxed_histogram;
using sluice::admin::upstream_error;

namespace {

/// A scrape parsed back: sample values by series ("name{labels}" as written), families by TYPE, and the
/// order in which series appeared. Fails the test on any line that is not valid text format 0.0.4.
struct scrape {
  std::map<std::string, double> values;
  std::map<std::string, std::string> types;
  std::vector<std::string> order;

  [[nodiscard]] double at(const std::string& series) const {
    const auto it = values.find(series);
    INFO("series " << series);
    REQUIRE(it != values.end());
    return it->second;
  }
};

scrape parse(const std::string& text) {
  scrape out;
  REQUIRE_FALSE(text.empty());
  REQUIRE(text.back() == '\n');
  std::istringstream in(text);
  std::string line;
  std::set<std::string> helped;
  while (std::getline(in, line)) {
    INFO("line: " << line);
    REQUIRE_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      const auto name = line.substr(7, line.find(' ', 7) - 7);
      CHECK(helped.insert(name).second);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      const auto rest = line.substr(7);
      const auto space = rest.find(' ');
      REQUIRE(space != std::string::npos);
      const auto name = rest.substr(0, space);
      const auto type = rest.substr(space + 1);
      CHECK((type == "counter" || type == "gauge" || type == "histogram"));
      CHECK(helped.count(name) == 1);  // HELP comes first
      CHECK(out.types.emplace(name, type).second);
      continue;
    }
    REQUIRE(line[0] != '#');
    // The value follows the last space that is outside a label value.
    std::size_t split = std::string::npos;
    bool in_quotes = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\' && in_quotes) {
        ++i;
      } else if (line[i] == '"') {
        in_quotes = !in_quotes;
      } else if (line[i] == ' ' && !in_quotes) {
        split = i;
      }
    }
    REQUIRE_FALSE(in_quotes);
    REQUIRE(split != std::string::npos);
    const auto series = line.substr(0, split);
    const auto name = series.substr(0, series.find('{'));
    // Every sample belongs to a family declared before it.
    bool declared = out.types.count(name) == 1;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s(suffix);
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
        const auto base = name.substr(0, name.size() - s.size());
        if (out.types.count(base) && out.types.at(base) == "histogram") declared = true;
      }
    }
    CHECK(declared);
    std::size_t used = 0;
    const double value = std::stod(line.substr(split + 1), &used);
    CHECK(used == line.size() - split - 1);
    CHECK(out.values.emplace(series, value).second);
    out.order.push_back(series);
  }
  return out;
}

constexpr unsigned outcome_index(outcome o) { return static_cast<unsigned>(o); }

}  // namespace

TEST_CASE("a fresh registry renders every required family in valid text format", "[admin]") {
  metrics m(2);
  const auto s = parse(m.render_prometheus(process_gauges{}));
  const std::map<std::string, std::string> required = {
      {"sluice_requests_total", "counter"},
      {"sluice_rate_limited_total", "counter"},
      {"sluice_dry_run_rejected_total", "counter"},
      {"sluice_upstream_connections", "gauge"},
      {"sluice_upstream_queue_waiting", "gauge"},
      {"sluice_client_connections", "gauge"},
      {"sluice_client_connections_accepted_total", "counter"},
      {"sluice_tracked_keys", "gauge"},
      {"sluice_evictions_total", "counter"},
      {"sluice_request_duration_seconds", "histogram"},
      {"sluice_upstream_response_duration_seconds", "histogram"},
      {"sluice_upstream_pool_wait_seconds", "histogram"},
      {"sluice_upstream_errors_total", "counter"},
      {"sluice_responses_total", "counter"},
      {"sluice_bad_requests_total", "counter"},
      {"sluice_access_log_dropped_total", "counter"},
      {"sluice_config_generation", "gauge"},
      {"sluice_config_reloads_total", "counter"},
      {"sluice_draining", "gauge"},
      {"sluice_build_info", "gauge"},
      {"sluice_start_time_seconds", "gauge"},
  };
  for (const auto& [name, type] : required) {
    INFO(name);
    REQUIRE(s.types.count(name) == 1);
    CHECK(s.types.at(name) == type);
  }
  for (const auto* o : {"forwarded", "limited", "error"}) {
    CHECK(s.at(std::string("sluice_requests_total{outcome=\"") + o + "\"}") == 0);
  }
  for (const auto* k : {"connect_refused", "connect_timeout", "reset", "bad_response", "response_timeout",
                        "queue_timeout", "queue_full", "retried"}) {
    CHECK(s.at(std::string("sluice_upstream_errors_total{kind=\"") + k + "\"}") == 0);
  }
  for (const auto* c : {"1xx", "2xx", "3xx", "4xx", "5xx"}) {
    CHECK(s.at(std::string("sluice_responses_total{code_class=\"") + c + "\"}") == 0);
  }
  CHECK(s.at("sluice_build_info{version=\"" SLUICE_VERSION "\"}") == 1);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // The exported value is rounded to milliseconds, so it may lie up to 0.5 ms after the true start.
  CHECK(s.at("sluice_start_time_seconds") <= now + 0.001);
  CHECK(s.at("sluice_start_time_seconds") > now - 60);
}

TEST_CASE("counts written by several worker threads are summed at scrape", "[admin]") {
  constexpr unsigned workers = 4;
  constexpr unsigned per_worker = 5000;
  metrics m(workers);
  auto& per_ip = m.rate_limited("per-ip");
  auto& shadow = m.dry_run_rejected("shadow");
  std::vector<std::thread> threads;
  std::atomic<bool> scraping{true};
  // A concurrent scraper: under TSan this proves the read side races with nothing.
  std::thread scraper([&] {
    while (scraping.load()) (void)m.render_prometheus(process_gauges{});
  });
  for (unsigned w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      auto& block = m.worker(w);
      for (unsigned i = 0; i < per_worker; ++i) {
        block.client_connections.inc();
        block.client_connections_total.add();
        block.count_request(outcome::forwarded, 200, 2ms);
        block.count_request(outcome::limited, 429, 50us);
        block.upstream_errors[static_cast<unsigned>(upstream_error::reset)].add();
        block.upstream_duration.observe(1ms);
        block.pool_wait.observe(0ns);
        per_ip.add(w);
        shadow.add(w);
        if (i % 2 == 0) block.client_connections.dec();
      }
    });
  }
  for (auto& t : threads) t.join();
  scraping = false;
  scraper.join();

  const double n = workers * per_worker;
  const auto s = parse(m.render_prometheus(process_gauges{}));
  CHECK(s.at("sluice_requests_total{outcome=\"forwarded\"}") == n);
  CHECK(s.at("sluice_requests_total{outcome=\"limited\"}") == n);
  CHECK(s.at("sluice_requests_total{outcome=\"error\"}") == 0);
  CHECK(s.at("sluice_responses_total{code_class=\"2xx\"}") == n);
  CHECK(s.at("sluice_responses_total{code_class=\"4xx\"}") == n);
  CHECK(s.at("sluice_rate_limited_total{limit=\"per-ip\"}") == n);
  CHECK(s.at("sluice_dry_run_rejected_total{limit=\"shadow\"}") == n);
  CHECK(s.at("sluice_upstream_errors_total{kind=\"reset\"}") == n);
  CHECK(s.at("sluice_client_connections") == n / 2);
  CHECK(s.at("sluice_client_connections_accepted_total") == n);
  CHECK(s.at("sluice_request_duration_seconds_count") == 2 * n);
  CHECK(s.at("sluice_request_duration_seconds_bucket{le=\"0.0001\"}") == n);
  CHECK(s.at("sluice_request_duration_seconds_bucket{le=\"0.0025\"}") == 2 * n);
  CHECK(s.at("sluice_request_duration_seconds_sum") == Approx(n * (0.002 + 0.00005)));
  CHECK(s.at("sluice_upstream_response_duration_seconds_bucket{le=\"0.001\"}") == n);
  CHECK(s.at("sluice_upstream_pool_wait_seconds_bucket{le=\"0.0001\"}") == n);
  CHECK(per_ip.total() == n);
}

TEST_CASE("a histogram bucket counts observations up to and including its bound", "[admin]") {
  auto [observed, first_bucket] = GENERATE(table<std::chrono::nanoseconds, std::size_t>({
      {0ns, 0},
      {100us, 0},
      {100001ns, 1},
      {1ms, 3},
      {1000001ns, 4},
      {30s, 13},
      {30001ms, 14},
      {-5ns, 0},
  }));
  relaxed_histogram h;
  h.observe(observed);
  CAPTURE(observed.count());
  for (std::size_t i = 0; i <= histogram_bounds_seconds.size(); ++i) {
    INFO("bucket " << i);
    CHECK(h.cumulative(i) == (i >= first_bucket ? 1U : 0U));
  }
  CHECK(h.count() == 1);
  CHECK(h.sum_seconds() == Approx(std::max<double>(observed.count(), 0) / 1e9));
}

TEST_CASE("histogram lines are cumulative with +Inf equal to the count", "[admin]") {
  metrics m(1);
  auto& h = m.worker(0).request_duration;
  for (std::chrono::nanoseconds d : {50us, 300us, 300us, 4000us, 2000000us, 60000000us}) h.observe(d);
  const auto s = parse(m.render_prometheus(process_gauges{}));
  const std::string name = "sluice_request_duration_seconds";
  const std::vector<std::pair<std::string, double>> expected = {
      {"0.0001", 1}, {"0.00025", 1}, {"0.0005", 3}, {"0.001", 3}, {"0.0025", 3}, {"0.005", 4},
      {"0.01", 4},   {"0.025", 4},   {"0.05", 4},   {"0.1", 4},   {"0.25", 4},   {"1", 4},
      {"5", 5},      {"30", 5},      {"+Inf", 6}};
  std::vector<std::string> order;
  for (const auto& [le, count] : expected) {
    const auto series = name + "_bucket{le=\"" + le + "\"}";
    CHECK(s.at(series) == count);
    order.push_back(series);
  }
  order.push_back(name + "_sum");
  order.push_back(name + "_count");
  const auto first = std::find(s.order.begin(), s.order.end(), order.front());
  REQUIRE(first != s.order.end());
  CHECK(std::vector<std::string>(first, first + static_cast<std::ptrdiff_t>(order.size())) == order);
  CHECK(s.at(name + "_count") == 6);
  CHECK(s.at(name + "_sum") == Approx(0.00005 + 0.0006 + 0.004 + 2 + 60));
}

TEST_CASE("limit series are sorted by name and survive as long as the registry", "[admin]") {
  metrics m(2);
  auto& b = m.rate_limited("b-limit");
  auto& a = m.rate_limited("a-limit");
  (void)m.rate_limited("c-limit");
  CHECK(&m.rate_limited("b-limit") == &b);  // same counter for the same name
  b.add(1);
  for (int i = 0; i < 100; ++i) (void)m.rate_limited("more-" + std::to_string(i));
  b.add(0);  // still valid after many insertions
  a.add(1);
  const auto s = parse(m.render_prometheus(process_gauges{}));
  CHECK(s.at("sluice_rate_limited_total{limit=\"a-limit\"}") == 1);
  CHECK(s.at("sluice_rate_limited_total{limit=\"b-limit\"}") == 2);
  CHECK(s.at("sluice_rate_limited_total{limit=\"c-limit\"}") == 0);
  std::vector<std::string> limited;
  for (const auto& series : s.order) {
    if (series.rfind("sluice_rate_limited_total{", 0) == 0) limited.push_back(series);
  }
  CHECK(limited.size() == 103);
  CHECK(std::is_sorted(limited.begin(), limited.end()));
  CHECK_FALSE(s.values.count("sluice_dry_run_rejected_total{limit=\"a-limit\"}"));
}

TEST_CASE("label values are escaped per the text format", "[admin]") {
  metrics m(1);
  m.rate_limited("quote\"back\\slash\nline").add(0);
  const auto text = m.render_prometheus(process_gauges{});
  CHECK(text.find("sluice_rate_limited_total{limit=\"quote\\\"back\\\\slash\\nline\"} 1\n") != std::string::npos);
  (void)parse(text);
}

TEST_CASE("process gauges sampled at scrape appear in their series", "[admin]") {
  metrics m(1);
  m.worker(0).access_log_dropped.add(2);
  m.worker(0).bad_requests.add(3);
  process_gauges g;
  g.upstream_busy = 7;
  g.upstream_idle = 3;
  g.upstream_queue_waiting = 11;
  g.tracked_keys = 12345;
  g.evictions_lossless = 5;
  g.evictions_lossy = 1;
  g.config_generation = 4;
  g.reloads_ok = 3;
  g.reloads_failed = 2;
  g.access_log_dropped = 40;
  g.draining = GENERATE(false, true);
  const auto s = parse(m.render_prometheus(g));
  CHECK(s.at("sluice_upstream_connections{state=\"busy\"}") == 7);
  CHECK(s.at("sluice_upstream_connections{state=\"idle\"}") == 3);
  CHECK(s.at("sluice_upstream_queue_waiting") == 11);
  CHECK(s.at("sluice_tracked_keys") == 12345);
  CHECK(s.at("sluice_evictions_total{kind=\"lossless\"}") == 5);
  CHECK(s.at("sluice_evictions_total{kind=\"lossy\"}") == 1);
  CHECK(s.at("sluice_config_generation") == 4);
  CHECK(s.at("sluice_config_reloads_total{result=\"ok\"}") == 3);
  CHECK(s.at("sluice_config_reloads_total{result=\"error\"}") == 2);
  CHECK(s.at("sluice_access_log_dropped_total") == 42);
  CHECK(s.at("sluice_bad_requests_total") == 3);
  CHECK(s.at("sluice_draining") == (g.draining ? 1 : 0));
}

TEST_CASE("series of a family are listed in sorted label order", "[admin]") {
  metrics m(1);
  const auto s = parse(m.render_prometheus(process_gauges{}));
  for (const std::string family : {"sluice_requests_total{", "sluice_upstream_errors_total{", "sluice_responses_total{",
                                   "sluice_evictions_total{", "sluice_config_reloads_total{",
                                   "sluice_upstream_connections{"}) {
    std::vector<std::string> series;
    for (const auto& x : s.order) {
      if (x.rfind(family, 0) == 0) series.push_back(x);
    }
    INFO(family);
    CHECK(series.size() >= 2);
    CHECK(std::is_sorted(series.begin(), series.end()));
  }
}
