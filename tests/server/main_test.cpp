#include <catch2/catch.hpp>

#include <csignal>
#include <regex>
#include <thread>

#include "support/process.hpp"
#include "server_fixture.hpp"

using namespace sluice;
using namespace sluice::test;
using namespace std::chrono_literals;

TEST_CASE("sluice --check prints ok for a good file and every error for a bad one", "[server]") {
  temp_dir dir;
  write_file(dir / "good.yaml", "listen: \"127.0.0.1:0\"\nupstream:\n  servers: [\"127.0.0.1:9000\"]\n");
  write_file(dir / "bad.yaml",
             "listen: \"127.0.0.1:0\"\nthreads: many\nlimits:\n  - name: a\n    key: ip\n    rate: fast\n    burst: 1\n");
  SECTION("good") {
    child_process p(SLUICE_BIN, {"--check", "--config", (dir / "good.yaml").string()});
    CHECK(p.wait(10s) == 0);
    CHECK(p.stdout_text() == "ok\n");
  }
  SECTION("bad") {
    child_process p(SLUICE_BIN, {"--check", "--config", (dir / "bad.yaml").string()});
    CHECK(p.wait(10s) == 1);
    const auto err = p.stderr_text();
    CHECK(err.find("threads") != std::string::npos);
    CHECK(err.find("limits[0].rate") != std::string::npos);
    CHECK(p.stdout_text().find("ok") == std::string::npos);
  }
  SECTION("missing file") {
    child_process p(SLUICE_BIN, {"--check", "--config", (dir / "nope.yaml").string()});
    CHECK(p.wait(10s) == 1);
    CHECK_FALSE(p.stderr_text().empty());
  }
}

TEST_CASE("sluice serves, then drains and exits 0 on SIGTERM", "[server]") {
  fake_upstream up([](const received_request& rq) { return reply::ok("via sluice").after(rq.target == "/slow" ? 300ms : 0ms); });
  temp_dir dir;
  write_file(dir / "sluice.yaml", "listen: \"127.0.0.1:0\"\nthreads: 1\nupstream:\n  servers: [\"" + up.address() +
                                      "\"]\nadmin:\n  listen: \"\"\nlog:\n  access_log: false\n");
  child_process p(SLUICE_BIN, {"--config", (dir / "sluice.yaml").string()});
  // The start-up line names the bound port.
  std::uint16_t port = 0;
  const std::regex port_re("port=([0-9]+)");
  REQUIRE(eventually([&] {
    std::smatch m;
    const auto err = p.stderr_text();
    if (!std::regex_search(err, m, port_re)) return false;
    port = static_cast<std::uint16_t>(std::stoi(m[1].str()));
    return true;
  }, 5000ms));
  raw_client c(port);
  c.send(get("/"));
  auto r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "via sluice");

  c.send(get("/slow"));
  REQUIRE(up.wait_for_requests(2, 2000ms));
  p.signal(SIGTERM);
  auto last = c.read_response();
  CHECK(last.status == 200);
  CHECK(last.header("Connection") == "close");
  CHECK(p.wait(10s) == 0);
  CHECK(p.stderr_text().find("drained") != std::string::npos);
}
