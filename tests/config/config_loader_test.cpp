#include <catch2/catch.hpp>

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "config/config_loader.hpp"

using namespace std::chrono_literals;
using namespace sluice::config;

namespace {

load_result load(const std::string& yaml) { return load_text(yaml, "test.yaml"); }

/// The single error the YAML must produce (fails the test when there are none or several).
config_error only_error(const std::string& yaml) {
  const auto result = load(yaml);
  for (const auto& e : result.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(result.errors.size() == 1);
  CHECK_FALSE(result.value);
  return result.errors.front();
}

/// A config that must load without errors.
config loaded(const std::string& yaml) {
  const auto result = load(yaml);
  for (const auto& e : result.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(result.errors.empty());
  REQUIRE(result.value);
  return *result.value;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// A fresh directory under /tmp, removed with everything in it at the end of the test.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sluice-config-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const auto file = path / name;
    std::ofstream(file) << text;
    return file.string();
  }
};

// One limit with its required keys, for tests about other keys of a limit (lines 1-5).
const std::string minimal_limit =
    "limits:\n"
    "  - name: per-ip\n"
    "    key: ip\n"
    "    rate: 100/s\n"
    "    burst: 200\n";

}  // namespace

TEST_CASE("an empty file means every default of the contract", "[config]") {
  const auto text = GENERATE(as<std::string>{}, "", "# only a comment\n", "---\n", "\n\n");
  CAPTURE(text);
  const auto cfg = loaded(text);
  CHECK(cfg.source_path == "test.yaml");
  CHECK(cfg.listen.host == "0.0.0.0");
  CHECK(cfg.listen.port == 8080);
  CHECK(cfg.threads == 0);
  CHECK(cfg.server.max_connections == 10000);
  CHECK(cfg.server.header_timeout == 10s);
  CHECK(cfg.server.idle_timeout == 60s);
  CHECK(cfg.server.max_header_bytes == 16 * 1024);
  CHECK(cfg.server.max_body_bytes == 10 * 1024 * 1024);
  CHECK(cfg.server.trusted_proxies.empty());
  REQUIRE(cfg.upstream.servers.size() == 1);
  CHECK(cfg.upstream.servers[0].host == "127.0.0.1");
  CHECK(cfg.upstream.servers[0].port == 9000);
  CHECK(cfg.upstream.max_connections == 128);
  CHECK(cfg.upstream.max_idle == 32);
  CHECK(cfg.upstream.idle_timeout == 60s);
  CHECK(cfg.upstream.connect_timeout == 2s);
  CHECK(cfg.upstream.response_timeout == 30s);
  CHECK(cfg.upstream.queue_timeout == 1s);
  CHECK(cfg.upstream.max_queue == 1024);
  CHECK(cfg.limits.empty());
  CHECK(cfg.max_tracked_keys == 1000000);
  CHECK(cfg.rate_limit_headers == header_mode::latest);
  CHECK(cfg.drain.delay == 0s);
  CHECK(cfg.drain.timeout == 30s);
  REQUIRE(cfg.admin.listen);
  CHECK(cfg.admin.listen->host == "127.0.0.1");
  CHECK(cfg.admin.listen->port == 9901);
  CHECK(cfg.log.level == log_level::info);
  CHECK(cfg.log.format == log_format::text);
  CHECK(cfg.log.access_log);
}

TEST_CASE("a block whose keys are all commented out means that block's defaults", "[config]") {
  const auto cfg = loaded("server:\n  # max_connections: 5\nlimits:\nlog:\n");
  CHECK(cfg.server.max_connections == 10000);
  CHECK(cfg.limits.empty());
  CHECK(cfg.log.level == log_level::info);
}

TEST_CASE("the example file config/sluice.yaml loads without errors", "[config]") {
  const std::string path = std::string(SLUICE_SOURCE_DIR) + "/config/sluice.yaml";
  const auto result = load_file(path);
  for (const auto& e : result.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(result.errors.empty());
  REQUIRE(result.value);
  const auto& cfg = *result.value;
  CHECK(cfg.source_path == path);
  CHECK(cfg.listen.text == "0.0.0.0:8080");
  REQUIRE(cfg.upstream.servers.size() == 1);
  CHECK(cfg.upstream.servers[0].text == "127.0.0.1:9000");
  REQUIRE(cfg.limits.size() == 1);
  CHECK(cfg.limits[0].name == "per-ip");
  CHECK(cfg.limits[0].key == key_kind::ip);
  CHECK(cfg.limits[0].refill.tokens_per_second == 100.0);
  CHECK(cfg.limits[0].burst == 200);
  REQUIRE(cfg.admin.listen);
  CHECK(cfg.admin.listen->text == "127.0.0.1:9901");
}

TEST_CASE("every key of the contract is read into the config", "[config]") {
  const auto cfg = loaded(R"(listen: "[::]:8443"
threads: 4
server:
  max_connections: 500
  header_timeout: 5s
  idle_timeout: 2m
  max_header_bytes: 32KiB
  max_body_bytes: 1GiB
  trusted_proxies: [10.0.0.0/8, "2001:db8::/32", 192.0.2.1]
upstream:
  servers: ["10.1.0.1:9000", "[::1]:9001", "backend:80"]
  max_connections: 64
  max_idle: 0
  idle_timeout: 30s
  connect_timeout: 250ms
  response_timeout: 1h
  queue_timeout: 100ms
  max_queue: 0
limits:
  - name: per-ip
    key: ip
    rate: 0.5/s
    burst: 3
    ipv6_prefix: 48
    when:
      path_prefix: /api/
      methods: [post, Put]
    dry_run: true
    overrides:
      "::ffff:192.0.2.7": { rate: 10/s, burst: 20 }
      2001:DB8::1: { rate: 60/m, burst: 5 }
  - name: per_key-2
    key: header:X-API-Key
    rate: 1000/s
    burst: 2000
    overrides:
      "partner-7f3a": { rate: 10000/s, burst: 20000 }
  - name: all
    key: global
    rate: 3600/h
    burst: 1
max_tracked_keys: 5000
rate_limit_headers: both
drain:
  delay: 5s
  timeout: 10s
admin:
  listen: "127.0.0.1:0"
log:
  level: debug
  format: json
  access_log: false
)");
  CHECK(cfg.listen.host == "::");
  CHECK(cfg.listen.port == 8443);
  CHECK(cfg.listen.text == "[::]:8443");
  CHECK(cfg.threads == 4);
  CHECK(cfg.server.max_connections == 500);
  CHECK(cfg.server.header_timeout == 5s);
  CHECK(cfg.server.idle_timeout == 2min);
  CHECK(cfg.server.max_header_bytes == 32 * 1024);
  CHECK(cfg.server.max_body_bytes == 1ull << 30);
  REQUIRE(cfg.server.trusted_proxies.size() == 3);
  CHECK(cfg.server.trusted_proxies[0].network().to_string() == "10.0.0.0");
  CHECK(cfg.server.trusted_proxies[0].prefix_bits() == 8);
  CHECK(cfg.server.trusted_proxies[1].prefix_bits() == 32);
  CHECK(cfg.server.trusted_proxies[2].prefix_bits() == 32);
  CHECK(cfg.server.trusted_proxies[2].network().to_string() == "192.0.2.1");
  REQUIRE(cfg.upstream.servers.size() == 3);
  CHECK(cfg.upstream.servers[1].host == "::1");
  CHECK(cfg.upstream.servers[1].port == 9001);
  CHECK(cfg.upstream.servers[2].host == "backend");
  CHECK(cfg.upstream.max_connections == 64);
  CHECK(cfg.upstream.max_idle == 0);
  CHECK(cfg.upstream.idle_timeout == 30s);
  CHECK(cfg.upstream.connect_timeout == 250ms);
  CHECK(cfg.upstream.response_timeout == 1h);
  CHECK(cfg.upstream.queue_timeout == 100ms);
  CHECK(cfg.upstream.max_queue == 0);
  REQUIRE(cfg.limits.size() == 3);
  const auto& ip = cfg.limits[0];
  CHECK(ip.name == "per-ip");
  CHECK(ip.key == key_kind::ip);
  CHECK(ip.refill.tokens_per_second == 0.5);
  CHECK(ip.refill.text == "0.5/s");
  CHECK(ip.burst == 3);
  CHECK(ip.ipv6_prefix == 48);
  REQUIRE(ip.when);
  CHECK(ip.when->path_prefix == "/api/");
  CHECK(ip.when->methods == std::vector<std::string>{"POST", "PUT"});
  CHECK(ip.dry_run);
  REQUIRE(ip.overrides.size() == 2);
  CHECK(ip.overrides[0].value == "192.0.2.7");
  CHECK(ip.overrides[0].refill.tokens_per_second == 10.0);
  CHECK(ip.overrides[0].burst == 20);
  CHECK(ip.overrides[1].value == "2001:db8::1");
  CHECK(ip.overrides[1].refill.tokens_per_second == 1.0);
  CHECK(ip.overrides[1].burst == 5);
  const auto& key = cfg.limits[1];
  CHECK(key.key == key_kind::header);
  CHECK(key.header_name == "X-API-Key");
  CHECK_FALSE(key.when);
  CHECK_FALSE(key.dry_run);
  REQUIRE(key.overrides.size() == 1);
  CHECK(key.overrides[0].value == "partner-7f3a");
  CHECK(key.overrides[0].burst == 20000);
  CHECK(cfg.limits[2].key == key_kind::global);
  CHECK(cfg.limits[2].refill.tokens_per_second == 1.0);
  CHECK(cfg.max_tracked_keys == 5000);
  CHECK(cfg.rate_limit_headers == header_mode::both);
  CHECK(cfg.drain.delay == 5s);
  CHECK(cfg.drain.timeout == 10s);
  REQUIRE(cfg.admin.listen);
  CHECK(cfg.admin.listen->port == 0);
  CHECK(cfg.log.level == log_level::debug);
  CHECK(cfg.log.format == log_format::json);
  CHECK_FALSE(cfg.log.access_log);
}

TEST_CASE("each invalid value is reported with its key path, line and the value", "[config]") {
  // yaml, key path, line, text that must appear in the message (the value, quoted)
  const auto [yaml, path, line, value] = GENERATE_REF(table<std::string, std::string, int, std::string>({
      {"listen: nohost\n", "listen", 1, "\"nohost\""},
      {"listen: \"1.2.3.4:70000\"\n", "listen", 1, "\"1.2.3.4:70000\""},
      {"listen: \"::1:8080\"\n", "listen", 1, "\"::1:8080\""},
      {"threads: 257\n", "threads", 1, "\"257\""},
      {"threads: -1\n", "threads", 1, "\"-1\""},
      {"threads: 1.5\n", "threads", 1, "\"1.5\""},
      {"server:\n  max_connections: 0\n", "server.max_connections", 2, "\"0\""},
      {"server:\n  header_timeout: 0s\n", "server.header_timeout", 2, "\"0s\""},
      {"server:\n  idle_timeout: 10\n", "server.idle_timeout", 2, "\"10\""},
      {"server:\n  max_header_bytes: 0\n", "server.max_header_bytes", 2, "\"0\""},
      {"server:\n  max_header_bytes: 2GiB\n", "server.max_header_bytes", 2, "\"2GiB\""},
      {"server:\n  max_body_bytes: 10MB\n", "server.max_body_bytes", 2, "\"10MB\""},
      {"server:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - 192.168.0.1\n    - 10.0.0.0/33\n",
       "server.trusted_proxies[2]", 5, "\"10.0.0.0/33\""},
      {"upstream:\n  servers: [\"127.0.0.1:0\"]\n", "upstream.servers[0]", 2, "\"127.0.0.1:0\""},
      {"upstream:\n  servers: [\"ok:80\", \"bad\"]\n", "upstream.servers[1]", 2, "\"bad\""},
      {"upstream:\n  servers: []\n", "upstream.servers", 2, "[]"},
      {"upstream:\n  max_connections: 0\n", "upstream.max_connections", 2, "\"0\""},
      {"upstream:\n  max_connections: 16\n  max_idle: 17\n", "upstream.max_idle", 3, "\"17\""},
      {"upstream:\n  max_queue: -1\n", "upstream.max_queue", 2, "\"-1\""},
      {"upstream:\n  idle_timeout: -1s\n", "upstream.idle_timeout", 2, "\"-1s\""},
      {"upstream:\n  connect_timeout: 0ms\n", "upstream.connect_timeout", 2, "\"0ms\""},
      {"upstream:\n  response_timeout: 1.5s\n", "upstream.response_timeout", 2, "\"1.5s\""},
      {"upstream:\n  queue_timeout: 0\n", "upstream.queue_timeout", 2, "\"0\""},
      {"limits:\n  - name: a\n    key: ip\n    rate: 1/s\n    burst: 1\n  - name: b\n    key: ip\n    rate: fast\n"
       "    burst: 1\n",
       "limits[1].rate", 8, "\"fast\""},
      {"limits:\n  - name: a\n    key: ip\n    rate: 0/s\n    burst: 1\n", "limits[0].rate", 4, "\"0/s\""},
      {"limits:\n  - name: a\n    key: ip\n    rate: 1/s\n    burst: 1.5\n", "limits[0].burst", 5, "\"1.5\""},
      {"limits:\n  - name: a\n    key: ip\n    rate: 1/s\n    burst: 0\n", "limits[0].burst", 5, "\"0\""},
      {"limits:\n  - name: a\n    key: ip\n    rate: 1/s\n    burst: -3\n", "limits[0].burst", 5, "\"-3\""},
      {"limits:\n  - name: Per IP\n    key: ip\n    rate: 1/s\n    burst: 1\n", "limits[0].name", 2, "\"Per IP\""},
      {"limits:\n  - name: \"\"\n    key: ip\n    rate: 1/s\n    burst: 1\n", "limits[0].name", 2, "\"\""},
      {"limits:\n  - name: " + std::string(65, 'a') + "\n    key: ip\n    rate: 1/s\n    burst: 1\n", "limits[0].name",
       2, "\"aaaa"},
      {"limits:\n  - name: a\n    key: cookie:x\n    rate: 1/s\n    burst: 1\n", "limits[0].key", 3, "\"cookie:x\""},
      {"limits:\n  - name: a\n    key: \"header:X API\"\n    rate: 1/s\n    burst: 1\n", "limits[0].key", 3,
       "\"header:X API\""},
      {"limits:\n  - name: a\n    key: \"header:\"\n    rate: 1/s\n    burst: 1\n", "limits[0].key", 3, "\"header:\""},
      {minimal_limit + "    ipv6_prefix: 0\n", "limits[0].ipv6_prefix", 6, "\"0\""},
      {minimal_limit + "    ipv6_prefix: 129\n", "limits[0].ipv6_prefix", 6, "\"129\""},
      {minimal_limit + "    when:\n      path_prefix: api/\n", "limits[0].when.path_prefix", 7, "\"api/\""},
      {minimal_limit + "    when:\n      path_prefix: \"/a b\"\n", "limits[0].when.path_prefix", 7, "\"/a b\""},
      {minimal_limit + "    when:\n      methods: [GET, \"GE T\"]\n", "limits[0].when.methods[1]", 7, "\"GE T\""},
      {minimal_limit + "    when:\n      methods: []\n", "limits[0].when.methods", 7, "[]"},
      {minimal_limit + "    dry_run: yes\n", "limits[0].dry_run", 6, "\"yes\""},
      {minimal_limit + "    overrides:\n      nope: { rate: 1/s, burst: 1 }\n", "limits[0].overrides[\"nope\"]", 7,
       "\"nope\""},
      {minimal_limit + "    overrides:\n      1.2.3.4: { rate: slow, burst: 1 }\n",
       "limits[0].overrides[\"1.2.3.4\"].rate", 7, "\"slow\""},
      {minimal_limit + "    overrides:\n      1.2.3.4: { rate: 1/s, burst: 0 }\n",
       "limits[0].overrides[\"1.2.3.4\"].burst", 7, "\"0\""},
      {minimal_limit + "    overrides:\n      1.2.3.4: { rate: 1/s, burst: 1 }\n      \"::ffff:1.2.3.4\": "
                       "{ rate: 1/s, burst: 1 }\n",
       "limits[0].overrides[\"::ffff:1.2.3.4\"]", 8, "\"::ffff:1.2.3.4\""},
      {"max_tracked_keys: 0\n", "max_tracked_keys", 1, "\"0\""},
      {"rate_limit_headers: draft\n", "rate_limit_headers", 1, "\"draft\""},
      {"drain:\n  delay: -1s\n", "drain.delay", 2, "\"-1s\""},
      {"drain:\n  timeout: 0s\n", "drain.timeout", 2, "\"0s\""},
      {"admin:\n  listen: nope\n", "admin.listen", 2, "\"nope\""},
      {"log:\n  level: verbose\n", "log.level", 2, "\"verbose\""},
      {"log:\n  format: xml\n", "log.format", 2, "\"xml\""},
      {"log:\n  access_log: 1\n", "log.access_log", 2, "\"1\""},
  }));
  CAPTURE(yaml);
  const auto e = only_error(yaml);
  CHECK(e.key_path == path);
  CHECK(e.line == line);
  CHECK(e.column >= 1);
  CHECK(contains(e.message, value));
  CHECK(contains(e.message, "(expected "));
  CHECK(contains(e.to_string(), "test.yaml:" + std::to_string(line) + ":"));
}

TEST_CASE("the rate error message says what a rate looks like", "[config]") {
  const auto e = only_error("limits:\n  - name: a\n    key: ip\n    rate: fast\n    burst: 1\n");
  CHECK(e.to_string() ==
        "test.yaml:4:11: limits[0].rate: \"fast\" is not a rate (expected N/s, N/m or N/h, N > 0, e.g. 100/s or 0.5/s)");
}

TEST_CASE("an unknown key is an error that lists the keys allowed there", "[config]") {
  SECTION("at the top level") {
    const auto e = only_error("listen: \"0.0.0.0:1\"\nlimit: []\n");
    CHECK(e.key_path == "limit");
    CHECK(e.line == 2);
    CHECK(e.column == 1);
    CHECK(contains(e.message, "unknown key \"limit\""));
    CHECK(contains(e.message, "did you mean \"limits\"?"));
    CHECK(contains(e.message, "listen, threads, server, upstream, limits, max_tracked_keys"));
  }
  SECTION("inside a block") {
    const auto e = only_error("server:\n  idle_timeout: 5s\n  max_conection: 10\n");
    CHECK(e.key_path == "server.max_conection");
    CHECK(e.line == 3);
    CHECK(e.column == 3);
    CHECK(contains(e.message, "\"max_conection\""));
    CHECK(contains(e.message, "did you mean \"max_connections\"?"));
  }
  SECTION("inside a limit, with no near miss to suggest") {
    const auto e = only_error(minimal_limit + "    colour: blue\n");
    CHECK(e.key_path == "limits[0].colour");
    CHECK(e.line == 6);
    CHECK_FALSE(contains(e.message, "did you mean"));
    CHECK(contains(e.message, "name, key, rate, burst, ipv6_prefix, when, dry_run, overrides"));
  }
  SECTION("inside an override") {
    const auto e = only_error(minimal_limit + "    overrides:\n      1.2.3.4: { rate: 1/s, burst: 1, brust: 2 }\n");
    CHECK(e.key_path == "limits[0].overrides[\"1.2.3.4\"].brust");
    CHECK(e.line == 7);
    CHECK(contains(e.message, "rate, burst"));
  }
}

TEST_CASE("a key given twice in one mapping is an error", "[config]") {
  SECTION("at the top level") {
    const auto e = only_error("threads: 2\nlisten: \"0.0.0.0:1\"\nthreads: 3\n");
    CHECK(e.key_path == "threads");
    CHECK(e.line == 3);
    CHECK(contains(e.message, "duplicate key \"threads\" (first at line 1"));
  }
  SECTION("inside a limit") {
    const auto e = only_error(minimal_limit + "    rate: 5/s\n");
    CHECK(e.key_path == "limits[0].rate");
    CHECK(e.line == 6);
    CHECK(contains(e.message, "first at line 4"));
  }
  SECTION("an override value written twice") {
    const auto e = only_error(minimal_limit +
                              "    overrides:\n      1.2.3.4: { rate: 1/s, burst: 1 }\n      1.2.3.4: { rate: 2/s, "
                              "burst: 1 }\n");
    CHECK(e.key_path == "limits[0].overrides[\"1.2.3.4\"]");
    CHECK(e.line == 8);
    CHECK(contains(e.message, "duplicate key \"1.2.3.4\""));
  }
}

TEST_CASE("a node of the wrong type is an error naming what belongs there", "[config]") {
  SECTION("a list where a duration belongs") {
    const auto e = only_error("server:\n  idle_timeout: [1s, 2s]\n");
    CHECK(e.key_path == "server.idle_timeout");
    CHECK(e.line == 2);
    CHECK(contains(e.message, "[1s, 2s] is a list (expected a duration"));
  }
  SECTION("a single value where a block belongs") {
    const auto e = only_error("upstream: \"127.0.0.1:9000\"\n");
    CHECK(e.key_path == "upstream");
    CHECK(contains(e.message, "\"127.0.0.1:9000\" is a single value (expected a mapping"));
  }
  SECTION("a single value where a list belongs") {
    const auto e = only_error("upstream:\n  servers: \"127.0.0.1:9000\"\n");
    CHECK(e.key_path == "upstream.servers");
    CHECK(e.line == 2);
    CHECK(contains(e.message, "is a single value (expected a list of host:port"));
  }
  SECTION("a mapping where a limit list belongs") {
    const auto e = only_error("limits:\n  name: a\n");
    CHECK(e.key_path == "limits");
    CHECK(contains(e.message, "{name: a} is a mapping (expected a list of limits"));
  }
  SECTION("a key without a value") {
    const auto e = only_error("threads:\nlisten: \"0.0.0.0:1\"\n");
    CHECK(e.key_path == "threads");
    CHECK(e.line == 1);
    CHECK(contains(e.message, "has no value (expected an integer from 0 to 256)"));
  }
  SECTION("a top level that is not a mapping") {
    const auto e = only_error("- listen\n");
    CHECK(e.key_path.empty());
    CHECK(e.line == 1);
    CHECK(contains(e.message, "[listen] is a list (expected a mapping of the keys listen"));
  }
}

TEST_CASE("a self-referencing alias is shown cut short in the error", "[config]") {
  const auto e = only_error("threads: &x [1, *x]\n");
  CHECK(e.key_path == "threads");
  CHECK(contains(e.message, "[1, [1, [1, [1, [...]]]]] is a list (expected an integer"));
}

TEST_CASE("booleans are true or false, never yes, on or quoted text", "[config]") {
  const auto text = GENERATE(as<std::string>{}, "yes", "no", "on", "True", "1", "\"true\"");
  const auto e = only_error("log:\n  access_log: " + text + "\n");
  CHECK(e.key_path == "log.access_log");
  CHECK(contains(e.message, "true or false"));
}

TEST_CASE("a quoted number where an integer belongs is an error", "[config]") {
  const auto e = only_error("threads: \"4\"\n");
  CHECK(e.key_path == "threads");
  CHECK(contains(e.message, "\"4\" is a quoted string"));
}

TEST_CASE("a YAML syntax error is one error with its line and column", "[config]") {
  const auto e = only_error("listen: \"0.0.0.0:1\"\nupstream:\n  servers: [\"127.0.0.1:9000\"\n  max_idle: 3\n");
  CHECK(e.key_path.empty());
  CHECK(e.line >= 3);
  CHECK(e.column >= 1);
  CHECK(contains(e.message, "YAML syntax error"));
  CHECK(contains(e.to_string(), "test.yaml:" + std::to_string(e.line) + ":" + std::to_string(e.column) + ": YAML"));
}

TEST_CASE("an unquoted IPv6 endpoint gets a hint to quote it", "[config]") {
  const auto e = only_error("threads: 1\nlisten: [::]:8080\n");
  CHECK(e.line == 2);
  CHECK(contains(e.message, "YAML syntax error"));
  CHECK(contains(e.message, "an IPv6 endpoint must be quoted, e.g. \"[::]:8080\""));
}

TEST_CASE("a second YAML document in the file is an error", "[config]") {
  const auto e = only_error("threads: 1\n---\nthreads: 2\n");
  CHECK(e.line == 3);
  CHECK(contains(e.message, "second YAML document"));
}

TEST_CASE("every error in a file is reported, in file order", "[config]") {
  const auto result = load(R"(threads: many
server:
  header_timeout: soon
upstream:
  servers: []
  bogus: 1
limits:
  - name: a
    key: ip
    burst: 0
log:
  level: loud
)");
  CHECK_FALSE(result.value);
  std::vector<std::pair<int, std::string>> got;
  for (const auto& e : result.errors) got.emplace_back(e.line, e.key_path);
  const std::vector<std::pair<int, std::string>> expected = {
      {1, "threads"},         {3, "server.header_timeout"}, {5, "upstream.servers"}, {6, "upstream.bogus"},
      {8, "limits[0].rate"},  {10, "limits[0].burst"},      {12, "log.level"},
  };
  CHECK(got == expected);
}

TEST_CASE("a limit without name, key, rate or burst is an error for each missing key", "[config]") {
  const auto result = load("limits:\n  - dry_run: true\n");
  REQUIRE(result.errors.size() == 4);
  const std::vector<std::string> paths = {result.errors[0].key_path, result.errors[1].key_path,
                                          result.errors[2].key_path, result.errors[3].key_path};
  CHECK(paths == std::vector<std::string>{"limits[0].name", "limits[0].key", "limits[0].rate", "limits[0].burst"});
  for (const auto& e : result.errors) {
    CHECK(e.line == 2);
    CHECK(contains(e.message, "is missing"));
  }
}

TEST_CASE("an empty list item is one error at its dash", "[config]") {
  const auto e = only_error(minimal_limit + "  -\n\nlog:\n  level: info\n");
  CHECK(e.key_path == "limits[1]");
  CHECK(e.line == 6);
  CHECK(e.column == 3);
  CHECK(contains(e.message, "has no value (expected a mapping with name, key, rate and burst)"));
}

TEST_CASE("two limits with the same name are an error", "[config]") {
  const auto e = only_error(minimal_limit + "  - name: per-ip\n    key: global\n    rate: 1/s\n    burst: 1\n");
  CHECK(e.key_path == "limits[1].name");
  CHECK(e.line == 6);
  CHECK(contains(e.message, "\"per-ip\" is already the name of limits[0]"));
}

TEST_CASE("more than 64 limits is an error", "[config]") {
  std::string yaml = "limits:\n";
  for (int i = 0; i < 65; ++i) {
    yaml += "  - { name: l" + std::to_string(i) + ", key: global, rate: 1/s, burst: 1 }\n";
  }
  const auto e = only_error(yaml);
  CHECK(e.key_path == "limits");
  CHECK(contains(e.message, "has 65 entries (expected at most 64 limits)"));
  yaml.resize(yaml.rfind("  - "));
  CHECK(loaded(yaml).limits.size() == 64);
}

TEST_CASE("ipv6_prefix is only allowed with key ip", "[config]") {
  const auto e = only_error("limits:\n  - name: g\n    key: global\n    rate: 1/s\n    burst: 1\n    ipv6_prefix: 56\n");
  CHECK(e.key_path == "limits[0].ipv6_prefix");
  CHECK(e.line == 6);
  CHECK(contains(e.message, "\"56\""));
  CHECK(contains(e.message, "only with key: ip"));
}

TEST_CASE("overrides are refused for a global limit", "[config]") {
  const auto e = only_error(
      "limits:\n  - name: g\n    key: global\n    rate: 1/s\n    burst: 1\n    overrides:\n      x: { rate: 2/s, burst: 2 "
      "}\n");
  CHECK(e.key_path == "limits[0].overrides");
  CHECK(e.line == 7);
  CHECK(contains(e.message, "not allowed with key: global"));
}

TEST_CASE("an override needs both rate and burst", "[config]") {
  const auto e = only_error(minimal_limit + "    overrides:\n      1.2.3.4: { rate: 2/s }\n");
  CHECK(e.key_path == "limits[0].overrides[\"1.2.3.4\"].burst");
  CHECK(e.line == 7);
  CHECK(contains(e.message, "is missing"));
}

TEST_CASE("a header key keeps the header name as written", "[config]") {
  const auto cfg = loaded("limits:\n  - name: k\n    key: header:x-Tenant_ID\n    rate: 1/s\n    burst: 1\n");
  REQUIRE(cfg.limits.size() == 1);
  CHECK(cfg.limits[0].key == key_kind::header);
  CHECK(cfg.limits[0].header_name == "x-Tenant_ID");
}

TEST_CASE("methods are upper-cased once each and a filter without conditions is no filter", "[config]") {
  SECTION("methods") {
    const auto cfg = loaded(minimal_limit + "    when:\n      methods: [get, GET, Post]\n");
    REQUIRE(cfg.limits[0].when);
    CHECK(cfg.limits[0].when->methods == std::vector<std::string>{"GET", "POST"});
    CHECK(cfg.limits[0].when->path_prefix.empty());
  }
  SECTION("an empty when") {
    const auto cfg = loaded(minimal_limit + "    when: {}\n");
    CHECK_FALSE(cfg.limits[0].when);
  }
}

TEST_CASE("an empty admin listen disables the admin listener", "[config]") {
  CHECK_FALSE(loaded("admin:\n  listen: \"\"\n").admin.listen);
  const auto e = only_error("admin:\n  listen:\n");
  CHECK(e.key_path == "admin.listen");
  CHECK(contains(e.message, "has no value"));
}

TEST_CASE("an omitted max_idle follows a smaller max_connections", "[config]") {
  CHECK(loaded("upstream:\n  max_connections: 8\n").upstream.max_idle == 8);
  CHECK(loaded("upstream:\n  max_connections: 100\n").upstream.max_idle == 32);
  CHECK(loaded("upstream:\n  max_connections: 8\n  max_idle: 8\n").upstream.max_idle == 8);
}

TEST_CASE("config_error::to_string gives FILE:LINE:COLUMN: KEY_PATH: MESSAGE", "[config]") {
  CHECK(config_error{"a.yaml", 3, 7, "limits[1].rate", "bad"}.to_string() == "a.yaml:3:7: limits[1].rate: bad");
  CHECK(config_error{"a.yaml", 2, 1, "", "YAML syntax error: x"}.to_string() == "a.yaml:2:1: YAML syntax error: x");
  CHECK(config_error{"a.yaml", 0, 0, "", "cannot open"}.to_string() == "a.yaml: cannot open");
}

TEST_CASE("load_file reads the file and names it in every error", "[config]") {
  temp_dir dir;
  SECTION("a valid file") {
    const auto path = dir.write("ok.yaml", "threads: 3\n");
    const auto result = load_file(path);
    REQUIRE(result.value);
    CHECK(result.value->threads == 3);
    CHECK(result.value->source_path == path);
  }
  SECTION("an invalid file") {
    const auto path = dir.write("bad.yaml", "threads: 3\nthreads: 4\nlog: {level: loud}\n");
    const auto result = load_file(path);
    CHECK_FALSE(result.value);
    REQUIRE(result.errors.size() == 2);
    CHECK(result.errors[0].to_string().starts_with(path + ":2:1: threads: "));
    CHECK(result.errors[1].to_string().starts_with(path + ":3:14: log.level: \"loud\""));
  }
  SECTION("a missing file is one error naming the file") {
    const auto path = (dir.path / "absent.yaml").string();
    const auto result = load_file(path);
    CHECK_FALSE(result.value);
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].file == path);
    CHECK(result.errors[0].line == 0);
    CHECK(contains(result.errors[0].to_string(), path + ": cannot open the file: No such file or directory"));
  }
  SECTION("a directory is one error naming it") {
    const auto result = load_file(dir.path.string());
    CHECK_FALSE(result.value);
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].file == dir.path.string());
    CHECK(contains(result.errors[0].message, "Is a directory"));
  }
  SECTION("an empty file means all defaults") {
    const auto result = load_file(dir.write("empty.yaml", ""));
    REQUIRE(result.value);
    CHECK(result.value->listen.port == 8080);
  }
}

TEST_CASE("loads on several threads at once give the same results", "[config]") {
  // load_text is documented thread-safe (reload runs beside the workers); TSan builds check the claim.
  const std::string good = minimal_limit + "upstream:\n  servers: [\"10.0.0.1:80\"]\n";
  const std::string bad = "threads: lots\nlog: {level: loud}\n";
  std::vector<std::size_t> good_limits(4);
  std::vector<std::size_t> bad_errors(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 20; ++round) {
        const auto g = load_text(good, "good.yaml");
        good_limits[i] = g.value ? g.value->limits.size() : 0;
        bad_errors[i] = load_text(bad, "bad.yaml").errors.size();
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(good_limits == std::vector<std::size_t>(4, 1));
  CHECK(bad_errors == std::vector<std::size_t>(4, 2));
}
