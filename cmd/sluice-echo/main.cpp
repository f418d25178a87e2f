// sluice-echo: a small, fast HTTP/1.1 backend for demos, tests and benchmarks. Flags only; the server
// lives in src/echo/echo_server.
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <exception>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "echo/echo_server.hpp"
#include "net.hpp"

#include <boost/asio/signal_set.hpp>

int main(int argc, char** argv) {
  using namespace sluice;
  CLI::App app{"sluice-echo: answers every request 200 with a small body; /delay/MS, /status/CODE, /bytes/N, "
               "/chunked/N and /echo do what they say"};
  std::string listen = "127.0.0.1:9000";
  std::size_t threads = 1;
  app.add_option("--listen", listen, "host:port to listen on ([v6]:port for IPv6; port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--threads", threads, "worker threads, each with its own SO_REUSEPORT listener (0 = one per core)")
      ->capture_default_str();
  app.set_version_flag("--version", std::string(SLUICE_VERSION));
  CLI11_PARSE(app, argc, argv);

  const auto endpoint = echo::parse_endpoint(listen);
  if (!endpoint) {
    std::fprintf(stderr, "sluice-echo: --listen: \"%s\" is not host:port\n", listen.c_str());
    return 2;
  }
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());

  try {
    // Signals are caught from before the workers start, so an early SIGTERM still exits cleanly.
    net::io_context signal_ioc(1);
    net::signal_set signals(signal_ioc, SIGINT, SIGTERM);
    echo::echo_server server(*endpoint, threads);
    signals.async_wait([&server](error_code ec, int) {
      if (!ec) server.stop();
    });
    server.start();
    // Tests and scripts that pass port 0 read the port from this line.
    const auto address = endpoint->address();
    const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
    std::printf("sluice-echo listening on %s:%u with %zu thread(s)\n", host.c_str(),
                static_cast<unsigned>(server.port()), threads);
    std::fflush(stdout);
    signal_ioc.run();
    server.wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sluice-echo: %s\n", e.what());
    return 1;
  }
  return 0;
}
