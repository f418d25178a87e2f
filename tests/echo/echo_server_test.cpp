#include <catch2/catch.hpp>

#include <csignal>
#include <future>
#include <regex>
#include <thread>

#include "echo/echo_server.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "support/run.hpp"

using namespace std::chrono_literals;
using namespace std::string_literals;
using sluice::echo::echo_server;
using sluice::test::parsed_response;
using sluice::test::raw_client;

namespace {

const sluice::tcp::endpoint loopback_any{sluice::net::ip::make_address_v4("127.0.0.1"), 0};

/// An echo_server on 127.0.0.1:0 with two threads, serving for the length of a test.
struct running_echo {
  running_echo() : server(loopback_any, 2) { server.start(); }
  echo_server server;
  [[nodiscard]] std::uint16_t port() const { return server.port(); }
};

std::string get(std::string_view target, std::string_view extra_headers = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: echo\r\n" + std::string(extra_headers) + "\r\n";
}

parsed_response exchange(std::uint16_t port, const std::string& request) {
  raw_client client(port);
  client.send(request);
  return client.read_response();
}

std::string abc_pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

}  // namespace

TEST_CASE("every path without a route answers 200 with the fixed body", "[echo]") {
  running_echo echo;
  const auto target = GENERATE(as<std::string>{}, "/", "/anything/at/all?x=1", "/status", "/bytes", "/echoes");
  const auto res = exchange(echo.port(), get(target));
  CHECK(res.status == 200);
  CHECK(res.body == std::string(sluice::echo::hello_body));
  CHECK(res.header("content-length") == std::to_string(sluice::echo::hello_body.size()));
  CHECK(res.keep_alive);
}

TEST_CASE("a request body on a plain route is read and discarded, keeping the connection usable", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  client.send("POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 200000\r\n\r\n" + std::string(200000, 'x'));
  client.send("POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  client.send(get("/status/202"));
  CHECK(client.read_response().status == 200);
  CHECK(client.read_response().status == 200);
  CHECK(client.read_response().status == 202);
}

TEST_CASE("/status/CODE answers that code", "[echo]") {
  running_echo echo;
  const auto [code, body] = GENERATE(table<unsigned, std::string>({
      {200, "200 OK\n"},
      {201, "201 Created\n"},
      {404, "404 Not Found\n"},
      {418, "418 Unknown\n"},
      {503, "503 Service Unavailable\n"},
      {599, "599 Network Connect Timeout Error\n"},
      {597, "597 Unknown\n"},
  }));
  const auto res = exchange(echo.port(), get("/status/" + std::to_string(code)));
  CHECK(res.status == code);
  CHECK(res.body == body);
}

TEST_CASE("/status/204 and /status/304 carry no body", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  client.send(get("/status/204") + get("/status/304") + get("/"));
  const auto no_content = client.read_response();
  CHECK(no_content.status == 204);
  CHECK_FALSE(no_content.header("content-length"));
  CHECK(no_content.body_size == 0);
  const auto not_modified = client.read_response();
  CHECK(not_modified.status == 304);
  CHECK(not_modified.body_size == 0);
  CHECK(client.read_response().body == std::string(sluice::echo::hello_body));
}

TEST_CASE("route parameters that are not valid answer 400 and keep the connection", "[echo]") {
  running_echo echo;
  const auto target = GENERATE(as<std::string>{}, "/status/99", "/status/100", "/status/199", "/status/600",
                               "/status/abc", "/status/", "/delay/soon", "/delay/-1", "/bytes/x", "/bytes/1099511627777",
                               "/chunked/1000001", "/chunked/", "/bytes/99999999999999999999999");
  raw_client client(echo.port());
  client.send(get(target) + get("/"));
  const auto res = client.read_response();
  CHECK(res.status == 400);
  CHECK(res.keep_alive);
  CHECK(client.read_response().status == 200);
}

TEST_CASE("/delay/MS answers only after MS milliseconds", "[echo]") {
  running_echo echo;
  const auto start = std::chrono::steady_clock::now();
  const auto res = exchange(echo.port(), get("/delay/150"));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(res.status == 200);
  CHECK(res.body == std::string(sluice::echo::hello_body));
  CHECK(elapsed >= 150ms);
  CHECK(elapsed < 5s);
}

TEST_CASE("/bytes/N sends exactly N bytes with Content-Length", "[echo]") {
  running_echo echo;
  const std::uint64_t n = GENERATE(as<std::uint64_t>{}, 0, 1, 65519, 65520, 65521, 1000000);
  const auto res = exchange(echo.port(), get("/bytes/" + std::to_string(n)));
  CHECK(res.status == 200);
  CHECK(res.header("content-length") == std::to_string(n));
  CHECK(res.body_size == n);
  CHECK(res.body == abc_pattern(static_cast<std::size_t>(n)));
}

TEST_CASE("/bytes/N with a large N streams every byte", "[echo]") {
  running_echo echo;
  constexpr std::uint64_t n = 256ull << 20;
  raw_client client(echo.port(), 60s);
  client.send(get("/bytes/" + std::to_string(n)) + get("/"));
  const auto res = client.read_response({.head_request = false, .max_body = 64});
  CHECK(res.status == 200);
  CHECK(res.body_size == n);
  CHECK(res.body == abc_pattern(64));
  CHECK(client.read_response().status == 200);  // nothing beyond the N bytes was sent
}

TEST_CASE("/chunked/N is chunked with N chunks", "[echo]") {
  running_echo echo;
  const std::size_t n = GENERATE(as<std::size_t>{}, 0, 1, 5, 20000);
  raw_client client(echo.port());
  client.send(get("/chunked/" + std::to_string(n)) + get("/"));
  const auto res = client.read_response();
  CHECK(res.status == 200);
  CHECK(res.chunked);
  CHECK_FALSE(res.header("content-length"));
  CHECK(res.chunk_count == n);
  std::string expected;
  for (std::size_t i = 0; i < n; ++i) expected += std::to_string(i) + "\n";
  CHECK(res.body == expected);
  CHECK(client.read_response().status == 200);
}

TEST_CASE("/chunked/N to an HTTP/1.0 client is delimited by closing the connection", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  client.send("GET /chunked/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  const auto text = client.read_until_closed();
  CHECK(text.find("Transfer-Encoding") == std::string::npos);
  CHECK(text.find("Connection: close\r\n") != std::string::npos);
  CHECK(text.ends_with("\r\n\r\n0\n1\n2\n"));
}

TEST_CASE("/echo answers with the request's method, target, headers and body", "[echo]") {
  running_echo echo;
  SECTION("a body with Content-Length") {
    const auto res = exchange(echo.port(), "PUT /echo?a=1&b=2 HTTP/1.1\r\nHost: echo\r\nX-Trace: t1\r\nx-lower: v\r\n"
                                           "Content-Length: 11\r\n\r\nhello\0world"s);
    CHECK(res.status == 200);
    CHECK(res.header("content-type") == "text/plain");
    CHECK(res.body == std::string("PUT /echo?a=1&b=2 HTTP/1.1\nHost: echo\nX-Trace: t1\nx-lower: v\n"
                                  "Content-Length: 11\n\nhello") + std::string(1, '\0') + "world");
  }
  SECTION("a chunked body is echoed decoded") {
    const auto res = exchange(echo.port(), "POST /echo HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    CHECK(res.body == "POST /echo HTTP/1.1\nHost: echo\nTransfer-Encoding: chunked\n\nabcde");
  }
  SECTION("without a body") {
    const auto res = exchange(echo.port(), get("/echo", "X-A: 1\r\n"));
    CHECK(res.body == "GET /echo HTTP/1.1\nHost: echo\nX-A: 1\n\n");
  }
}

TEST_CASE("/echo refuses a body over 10 MiB with 413 and closes", "[echo]") {
  running_echo echo;
  SECTION("announced by Content-Length") {
    raw_client client(echo.port());
    client.send("POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: " +
                std::to_string(sluice::echo::max_echo_body_bytes + 1) + "\r\n\r\n");
    const auto res = client.read_response();
    CHECK(res.status == 413);
    CHECK_FALSE(res.keep_alive);
    CHECK(client.is_closed());
  }
  SECTION("arriving in chunks") {
    raw_client client(echo.port());
    client.send("POST /echo HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n");
    const std::string chunk(1 << 20, 'x');
    for (int i = 0; i < 11; ++i) {
      if (client.try_send("100000\r\n" + chunk + "\r\n")) break;  // the server may close before all is sent
    }
    const auto res = client.read_response();
    CHECK(res.status == 413);
    CHECK(client.is_closed());
  }
  SECTION("exactly 10 MiB is accepted") {
    raw_client client(echo.port());
    client.send("POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: " +
                std::to_string(sluice::echo::max_echo_body_bytes) + "\r\n\r\n" +
                std::string(sluice::echo::max_echo_body_bytes, 'y'));
    const auto res = client.read_response();
    CHECK(res.status == 200);
    CHECK(res.body.ends_with("\n\n" + std::string(sluice::echo::max_echo_body_bytes, 'y')));
  }
}

TEST_CASE("a keep-alive connection carries several requests", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  for (int i = 0; i < 5; ++i) {
    client.send(get("/status/" + std::to_string(200 + i)));
    const auto res = client.read_response();
    CHECK(res.status == static_cast<unsigned>(200 + i));
    CHECK(res.keep_alive);
    CHECK_FALSE(res.header("connection"));
  }
  CHECK_FALSE(client.is_closed(20ms));
}

TEST_CASE("pipelined requests are answered in order", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  client.send(get("/delay/100") + get("/status/201") + get("/bytes/10") + get("/echo") + get("/chunked/2"));
  CHECK(client.read_response().status == 200);
  CHECK(client.read_response().status == 201);
  CHECK(client.read_response().body == "abcdefghij");
  CHECK(client.read_response().body.starts_with("GET /echo HTTP/1.1\n"));
  CHECK(client.read_response().chunk_count == 2);
}

TEST_CASE("HEAD gets the GET head and no body", "[echo]") {
  running_echo echo;
  const auto [target, length] = GENERATE(table<std::string, std::string>({
      {"/", std::to_string(sluice::echo::hello_body.size())},
      {"/bytes/100000", "100000"},
      {"/status/404", "14"},
      {"/echo", "32"},  // "HEAD /echo HTTP/1.1\nHost: echo\n\n"
  }));
  raw_client client(echo.port());
  client.send("HEAD " + target + " HTTP/1.1\r\nHost: echo\r\n\r\n" + get("/status/202"));
  const auto res = client.read_response({.head_request = true});
  CHECK(res.header("content-length") == length);
  // A body byte sent after the head would be parsed as the next response and fail this read.
  const auto next = client.read_response();
  CHECK(next.status == 202);
}

TEST_CASE("HEAD of /chunked/N announces chunked coding and sends no chunk", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  client.send("HEAD /chunked/5 HTTP/1.1\r\nHost: echo\r\n\r\n" + get("/status/202"));
  const auto res = client.read_response({.head_request = true});
  CHECK(res.header("transfer-encoding") == "chunked");
  CHECK(client.read_response().status == 202);
}

TEST_CASE("connection persistence follows the request's version and Connection header", "[echo]") {
  running_echo echo;
  SECTION("HTTP/1.0 without keep-alive closes after the response") {
    raw_client client(echo.port());
    client.send("GET / HTTP/1.0\r\n\r\n");
    const auto res = client.read_response();
    CHECK(res.status == 200);
    CHECK(res.header("connection") == "close");
    CHECK(client.is_closed());
  }
  SECTION("HTTP/1.0 with keep-alive stays open and says so") {
    raw_client client(echo.port());
    client.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const auto res = client.read_response();
    CHECK(res.header("connection") == "keep-alive");
    client.send("GET /status/201 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(client.read_response().status == 201);
  }
  SECTION("HTTP/1.1 with Connection: close closes after the response") {
    raw_client client(echo.port());
    client.send(get("/bytes/5", "Connection: close\r\n"));
    const auto res = client.read_response();
    CHECK(res.body == "abcde");
    CHECK(res.header("connection") == "close");
    CHECK(client.is_closed());
  }
}

TEST_CASE("a malformed request gets 400 and the connection closes", "[echo]") {
  running_echo echo;
  const auto request = GENERATE(as<std::string>{},
                                "garbage\r\n\r\n",
                                "GET / HTTP/1.1\r\nHost echo\r\n\r\n",
                                "GET / HTTP/2.5\r\nHost: echo\r\n\r\n",
                                "GET / HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                                "POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: x\r\n\r\n",
                                "POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  raw_client client(echo.port());
  client.send(request);
  const auto res = client.read_response();
  CHECK(res.status == 400);
  CHECK(res.header("connection") == "close");
  CHECK(client.is_closed());
}

TEST_CASE("a request head over 16 KiB gets 431 and the connection closes", "[echo]") {
  running_echo echo;
  raw_client client(echo.port());
  client.send(get("/", "X-Big: " + std::string(17 * 1024, 'b') + "\r\n"));
  const auto res = client.read_response();
  CHECK(res.status == 431);
  CHECK(client.is_closed());
}

TEST_CASE("a client that leaves mid-request does not disturb the server", "[echo]") {
  running_echo echo;
  {
    raw_client leaver(echo.port());
    leaver.send("GET /delay/50 HTTP/1.1\r\nHo");
  }
  {
    raw_client leaver(echo.port());
    leaver.send(get("/bytes/100000000"));
  }
  CHECK(exchange(echo.port(), get("/")).status == 200);
}

TEST_CASE("stop closes open connections, cuts a pending delay and lets wait return", "[echo]") {
  echo_server server(loopback_any, 2);
  server.start();
  raw_client idle(server.port());
  idle.send(get("/"));
  CHECK(idle.read_response().status == 200);
  raw_client waiting(server.port());
  waiting.send(get("/delay/60000"));
  CHECK_FALSE(waiting.is_closed(20ms));

  auto stopped = std::async(std::launch::async, [&] {
    server.stop();
    server.wait();
  });
  REQUIRE(stopped.wait_for(5s) == std::future_status::ready);
  CHECK(idle.is_closed());
  CHECK(waiting.is_closed());
  CHECK(raw_client::connect_refused(server.port()));
}

TEST_CASE("listen addresses parse as host:port", "[echo]") {
  using sluice::echo::parse_endpoint;
  CHECK(parse_endpoint("127.0.0.1:9000") == sluice::tcp::endpoint(sluice::net::ip::make_address("127.0.0.1"), 9000));
  CHECK(parse_endpoint("[::1]:80") == sluice::tcp::endpoint(sluice::net::ip::make_address("::1"), 80));
  CHECK(parse_endpoint("0.0.0.0:0")->port() == 0);
  const auto bad = GENERATE(as<std::string>{}, "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "localhost:80",
                            ":80", "127.0.0.1:8x", "[::1:80");
  CHECK_FALSE(parse_endpoint(bad));
}

namespace {

/// The port sluice-echo prints on stdout once it listens, under a deadline.
std::uint16_t announced_port(sluice::test::child_process& proc) {
  const std::regex line(R"(listening on 127\.0\.0\.1:(\d+) )");
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < until) {
    std::smatch m;
    const auto text = proc.stdout_text();
    if (std::regex_search(text, m, line)) return static_cast<std::uint16_t>(std::stoul(m[1]));
    if (const auto code = proc.try_wait()) FAIL("sluice-echo exited with " << *code << ": " << proc.stderr_text());
    std::this_thread::sleep_for(10ms);
  }
  FAIL("sluice-echo did not announce its port; stderr: " << proc.stderr_text());
  return 0;
}

}  // namespace

TEST_CASE("the sluice-echo binary serves until SIGTERM or SIGINT and then exits 0", "[echo][process]") {
  const int sig = GENERATE(SIGTERM, SIGINT);
  sluice::test::child_process proc(SLUICE_ECHO_BIN, {"--listen", "127.0.0.1:0", "--threads", "2"});
  const auto port = announced_port(proc);
  sluice::test::wait_for_port(port, 5s, &proc);
  {
    raw_client client(port);
    client.send(get("/status/201"));
    CHECK(client.read_response().status == 201);
  }
  proc.signal(sig);
  CHECK(proc.wait(5s) == 0);
  CHECK(raw_client::connect_refused(port));
}

TEST_CASE("the sluice-echo binary refuses a listen address that does not parse", "[echo][process]") {
  sluice::test::child_process proc(SLUICE_ECHO_BIN, {"--listen", "nowhere"});
  CHECK(proc.wait(5s) != 0);
  CHECK(proc.stderr_text().find("nowhere") != std::string::npos);
}
