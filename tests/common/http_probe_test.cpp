#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/http_probe.hpp"

using sluice::common::http_probe;
using namespace std::chrono_literals;

namespace {

// The probe's own timeout is the deadline of every test: a probe that hangs fails the elapsed checks.
constexpr auto probe_timeout = 2000ms;

// Binds 127.0.0.1 on a free port; listens when asked. Throws: test set-up, not code under test.
int bind_loopback(bool listen_too) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || (listen_too && ::listen(fd, 16) != 0)) {
    ::close(fd);
    throw std::runtime_error("bind/listen failed");
  }
  return fd;
}

std::uint16_t local_port(int fd) {
  sockaddr_in addr{};
  socklen_t length = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  return ntohs(addr.sin_port);
}

/// A loopback acceptor on its own thread: reads each request head, then answers a fixed byte string
/// (whole or one byte per send) and closes, or holds the connection open saying nothing.
class canned_server {
 public:
  enum class mode { answer, answer_bytewise, stay_silent };

  explicit canned_server(std::string response, mode how = mode::answer)
      : response_(std::move(response)), how_(how), listen_fd_(bind_loopback(true)), port_(local_port(listen_fd_)) {
    thread_ = std::thread([this] { run(); });
  }
  canned_server(const canned_server&) = delete;
  canned_server& operator=(const canned_server&) = delete;
  ~canned_server() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string url(std::string_view path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  [[nodiscard]] int connections() const { return connections_; }
  [[nodiscard]] std::string first_request() const {
    const std::lock_guard lock(mutex_);
    return first_request_;
  }

 private:
  // Polls in short slices so the destructor's stop flag ends the thread promptly.
  bool wait_readable(int fd) const {
    while (!stop_) {
      pollfd entry{fd, POLLIN, 0};
      if (::poll(&entry, 1, 10) > 0) return true;
    }
    return false;
  }

  void run() {
    while (wait_readable(listen_fd_)) {
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      ++connections_;
      serve(client);
      ::close(client);
    }
  }

  void serve(int client) {
    std::string head;
    char buffer[1024];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 16384 && wait_readable(client)) {
      const auto got = ::recv(client, buffer, sizeof(buffer), 0);
      if (got <= 0) break;
      head.append(buffer, static_cast<std::size_t>(got));
    }
    {
      const std::lock_guard lock(mutex_);
      if (first_request_.empty()) first_request_ = head;
    }
    if (how_ == mode::stay_silent) {
      while (wait_readable(client)) {
        if (::recv(client, buffer, sizeof(buffer), 0) <= 0) return;
      }
      return;
    }
    if (how_ == mode::answer_bytewise) {
      const int one = 1;
      ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      for (const char c : response_) {
        if (::send(client, &c, 1, MSG_NOSIGNAL) != 1) return;
      }
    } else if (!response_.empty()) {
      ::send(client, response_.data(), response_.size(), MSG_NOSIGNAL);
    }
    ::shutdown(client, SHUT_WR);
  }

  const std::string response_;
  const mode how_;
  const int listen_fd_;
  const std::uint16_t port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mutex_;
  std::string first_request_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("a 2xx status makes the probe succeed and any other status makes it fail", "[common]") {
  const auto [response, expected] = GENERATE(table<std::string, int>({
      {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0},
      {"HTTP/1.1 204 No Content\r\n\r\n", 0},
      {"HTTP/1.0 299 Whatever\r\n\r\n", 0},
      {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 0},
      {"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 0},
      {"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 1},
      {"HTTP/1.1 500 Internal Server Error\r\n\r\n", 1},
      {"HTTP/1.1 404 Not Found\r\n\r\n", 1},
      {"HTTP/1.1 301 Moved Permanently\r\nLocation: /\r\n\r\n", 1},
      {"HTTP/1.1 100 Continue\r\n\r\n", 1},
  }));
  SECTION("when the answer arrives in one piece") {
    const canned_server server(response);
    CHECK(http_probe(server.url("/healthz"), probe_timeout) == expected);
    CHECK(server.connections() == 1);
  }
  SECTION("when the answer arrives one byte at a time") {
    const canned_server server(response, canned_server::mode::answer_bytewise);
    CHECK(http_probe(server.url("/healthz"), probe_timeout) == expected);
  }
}

TEST_CASE("an answer that is not an HTTP/1.x status line makes the probe fail", "[common]") {
  const auto response = GENERATE(as<std::string>{},
                                 "",                              // closed without a word
                                 "hello world\r\n",
                                 "SSH-2.0-OpenSSH_9.2\r\n",
                                 "HTTP/2 200\r\n\r\n",
                                 "HTTP/1.1 2000 OK\r\n\r\n",
                                 "HTTP/1.1 20 OK\r\n\r\n",
                                 "HTTP/1.1 2x0 OK\r\n\r\n",
                                 "HTTP/1.1  200 OK\r\n\r\n",
                                 "http/1.1 200 OK\r\n\r\n",
                                 "HTTP/1.1 200 OK",               // closed before the line ended
                                 std::string(4096, 'x'));         // no line end in sight
  const canned_server server(response);
  CHECK(http_probe(server.url(), probe_timeout) == 1);
  CHECK(server.connections() == 1);
}

TEST_CASE("the probe sends a GET for the URL's path with its Host and asks to close", "[common]") {
  const canned_server server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  const std::string authority = "127.0.0.1:" + std::to_string(server.port());
  SECTION("an explicit path and query go through as written") {
    REQUIRE(http_probe(server.url("/readyz?verbose=1"), probe_timeout) == 0);
    const auto request = server.first_request();
    CHECK(request.rfind("GET /readyz?verbose=1 HTTP/1.1\r\n", 0) == 0);
    CHECK(request.find("\r\nHost: " + authority + "\r\n") != std::string::npos);
    CHECK(request.find("\r\nConnection: close\r\n") != std::string::npos);
  }
  SECTION("no path means /") {
    REQUIRE(http_probe("http://" + authority, probe_timeout) == 0);
    CHECK(server.first_request().rfind("GET / HTTP/1.1\r\n", 0) == 0);
  }
  SECTION("a fragment is not sent") {
    REQUIRE(http_probe(server.url("/healthz#top"), probe_timeout) == 0);
    CHECK(server.first_request().rfind("GET /healthz HTTP/1.1\r\n", 0) == 0);
  }
}

TEST_CASE("a refused connection makes the probe fail at once", "[common]") {
  // Bound but not listening: the port stays ours, and a connect to it is refused.
  const int fd = bind_loopback(false);
  const auto port = local_port(fd);
  const auto start = std::chrono::steady_clock::now();
  const int result = http_probe("http://127.0.0.1:" + std::to_string(port) + "/healthz", probe_timeout);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ::close(fd);
  CHECK(result == 1);
  CHECK(elapsed < probe_timeout / 2);
}

TEST_CASE("a server that never answers makes the probe fail when the timeout passes", "[common]") {
  const canned_server server("", canned_server::mode::stay_silent);
  constexpr auto timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  const int result = http_probe(server.url("/healthz"), timeout);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(result == 1);
  CHECK(server.connections() == 1);
  CHECK(elapsed >= timeout);
  CHECK(elapsed < timeout + 1500ms);
}

TEST_CASE("a malformed URL makes the probe fail without connecting", "[common]") {
  const canned_server server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  const std::string port = std::to_string(server.port());
  // The well-formed URL succeeds against this server, so each failure below is the parser's doing.
  REQUIRE(http_probe("http://127.0.0.1:" + port + "/", probe_timeout) == 0);
  REQUIRE(server.connections() == 1);

  const auto url = GENERATE_COPY(values<std::string>({
      "",
      "127.0.0.1:" + port + "/",
      "https://127.0.0.1:" + port + "/",
      "ftp://127.0.0.1:" + port + "/",
      "http://",
      "http://:" + port + "/",
      "http://127.0.0.1:/",
      "http://127.0.0.1:" + port + "0000/",
      "http://127.0.0.1:+" + port + "/",
      "http://127.0.0.1:" + port + "x/",
      "http://127.0.0.1:" + port + ":1/",
      "http://user@127.0.0.1:" + port + "/",
      "http://[127.0.0.1:" + port + "/",
      "http://[::1]x:" + port + "/",
      "http://127.0.0.1:" + port + "/a b",
      "http://127.0.0.1:" + port + "/a\r\nX-Injected: 1",
      "http://127.0.0.1:" + port + "/\xc3\xa9",
  }));
  CAPTURE(url);
  CHECK(http_probe(url, probe_timeout) == 1);
  CHECK(server.connections() == 1);
}

TEST_CASE("the scheme is matched without regard to case", "[common]") {
  const canned_server server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(http_probe("HTTP://127.0.0.1:" + std::to_string(server.port()) + "/", probe_timeout) == 0);
  CHECK(http_probe("Http://127.0.0.1:" + std::to_string(server.port()) + "/", probe_timeout) == 0);
}
