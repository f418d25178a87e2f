#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "config/config.hpp"
#include "server/server.hpp"
#include "support/fake_upstream.hpp"
#include "support/raw_client.hpp"

namespace sluice::test {

/// A config for an in-process sluice on 127.0.0.1:0 with one worker in front of `up`; no admin, no access log.
inline config::config proxy_config(const fake_upstream& up) {
  config::config c;
  c.listen = {"127.0.0.1", 0, "127.0.0.1:0"};
  c.threads = 1;
  c.upstream.servers = {config::endpoint{"127.0.0.1", up.port(), up.address()}};
  c.admin.listen = std::nullopt;
  c.log.access_log = false;
  c.drain.timeout = std::chrono::seconds(5);
  return c;
}

/// A started server that is drained (and checked to end) when the test ends.
struct running_server {
  explicit running_server(config::config c) : srv(std::make_unique<server::server>(std::move(c))) { srv->start(); }
  ~running_server() {
    srv->begin_drain();
    (void)srv->wait(std::chrono::seconds(5));
  }
  [[nodiscard]] std::uint16_t port() const { return srv->port(); }
  server::server* operator->() { return srv.get(); }
  std::unique_ptr<server::server> srv;
};

/// Polls cond every 5 ms until it holds or the deadline passes; its last answer. For counters the server
/// updates after the response bytes left (a client can read the response before the count lands).
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds deadline = std::chrono::milliseconds(3000)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

/// "GET target HTTP/1.1" with Host and optional extra header lines (each ending CRLF).
inline std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: example.test\r\n" + extra + "\r\n";
}

}  // namespace sluice::test
