#include "common/http_probe.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <string>
#include <utility>

#include "common/http_text.hpp"

// Plain POSIX sockets on purpose: the probe runs as `sluice --probe` inside a container health check,
// so it must start fast and depend on nothing but libc.
namespace sluice::common {

namespace {

using probe_clock = std::chrono::steady_clock;

constexpr int probe_ok = 0;
constexpr int probe_failed = 1;
// A status line longer than this is not an HTTP server we are talking to.
constexpr std::size_t max_status_line_bytes = 1024;

struct probe_target {
  std::string host;            ///< without brackets, for getaddrinfo
  std::string port;            ///< digits, for getaddrinfo
  std::string_view authority;  ///< as written, for the Host header
  std::string_view path;       ///< starts with '/'
};

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

bool valid_port(std::string_view digits) {
  if (digits.empty() || digits.size() > 5) return false;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  return ec == std::errc{} && end == digits.data() + digits.size() && value >= 1 && value <= 65535;
}

// Strict on purpose: whatever reaches the request line must not be able to inject bytes into it.
std::optional<probe_target> parse_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (url.size() < scheme.size() || !iequals_ascii(url.substr(0, scheme.size()), scheme)) return std::nullopt;
  url.remove_prefix(scheme.size());
  if (const auto hash = url.find('#'); hash != std::string_view::npos) url = url.substr(0, hash);

  probe_target target;
  const auto slash = url.find('/');
  target.authority = url.substr(0, slash);
  target.path = slash == std::string_view::npos ? std::string_view("/") : url.substr(slash);
  for (const char c : target.path) {
    if (c <= 0x20 || c >= 0x7f) return std::nullopt;
  }

  std::string_view host;
  std::string_view port = "80";
  auto authority = target.authority;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    const auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
    }
    for (const char c : host) {
      if (!is_alnum(c) && c != ':' && c != '.' && c != '%') return std::nullopt;
    }
  } else {
    const auto colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    for (const char c : host) {
      if (!is_alnum(c) && c != '.' && c != '-' && c != '_') return std::nullopt;
    }
  }
  if (host.empty() || !valid_port(port)) return std::nullopt;
  target.host = std::string(host);
  target.port = std::string(port);
  return target;
}

class socket_fd {
 public:
  explicit socket_fd(int fd) : fd_(fd) {}
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  ~socket_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// True when fd is ready for events (or has an error the next call reports) before deadline.
bool wait_until(int fd, short events, probe_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - probe_clock::now());
    if (left.count() <= 0) return false;
    pollfd entry{fd, events, 0};
    const int ready = ::poll(&entry, 1, static_cast<int>(left.count()));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

int connect_first(const addrinfo* candidates, probe_clock::time_point deadline) {
  for (const auto* ai = candidates; ai != nullptr; ai = ai->ai_next) {
    socket_fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) continue;
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return fd.release();
    if (errno != EINPROGRESS) continue;
    if (!wait_until(fd.get(), POLLOUT, deadline)) return -1;
    int error = 0;
    socklen_t length = sizeof(error);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0) return fd.release();
  }
  return -1;
}

bool send_all(int fd, std::string_view data, probe_clock::time_point deadline) {
  while (!data.empty()) {
    // MSG_NOSIGNAL: a peer that closed early must fail the probe, not kill it with SIGPIPE.
    const auto sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      data.remove_prefix(static_cast<std::size_t>(sent));
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_until(fd, POLLOUT, deadline)) return false;
    } else if (sent < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

// "HTTP/1.x DDD[ reason]" -> true for 2xx.
bool status_line_is_success(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  constexpr std::string_view version = "HTTP/1.";
  if (line.size() < version.size() + 5 || line.substr(0, version.size()) != version) return false;
  line.remove_prefix(version.size());
  if (line[0] < '0' || line[0] > '9' || line[1] != ' ') return false;
  const auto code = line.substr(2, 3);
  for (const char c : code) {
    if (c < '0' || c > '9') return false;
  }
  if (line.size() > 5 && line[5] != ' ') return false;
  return code[0] == '2';
}

int read_status(int fd, probe_clock::time_point deadline) {
  char buffer[max_status_line_bytes];
  std::size_t filled = 0;
  while (filled < sizeof(buffer)) {
    if (!wait_until(fd, POLLIN, deadline)) return probe_failed;
    const auto got = ::recv(fd, buffer + filled, sizeof(buffer) - filled, 0);
    if (got == 0) return probe_failed;
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return probe_failed;
    }
    const std::string_view seen(buffer, filled + static_cast<std::size_t>(got));
    if (const auto end = seen.find('\n', filled); end != std::string_view::npos) {
      return status_line_is_success(seen.substr(0, end)) ? probe_ok : probe_failed;
    }
    filled = seen.size();
  }
  return probe_failed;
}

}  // namespace

int http_probe(std::string_view url, std::chrono::milliseconds timeout) {
  const auto deadline = probe_clock::now() + timeout;
  const auto target = parse_url(url);
  if (!target) return probe_failed;

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* candidates = nullptr;
  if (::getaddrinfo(target->host.c_str(), target->port.c_str(), &hints, &candidates) != 0) return probe_failed;
  const int connected = connect_first(candidates, deadline);
  ::freeaddrinfo(candidates);
  if (connected < 0) return probe_failed;
  const socket_fd fd(connected);

  std::string request;
  request.reserve(128 + target->path.size() + target->authority.size());
  request.append("GET ").append(target->path).append(" HTTP/1.1\r\nHost: ").append(target->authority);
  request.append("\r\nUser-Agent: sluice-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  if (!send_all(fd.get(), request, deadline)) return probe_failed;
  return read_status(fd.get(), deadline);
}

}  // namespace sluice::common
