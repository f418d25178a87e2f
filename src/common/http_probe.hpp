#pragma once

#include <chrono>
#include <string_view>

namespace sluice::common {

/// One blocking HTTP/1.1 GET of url ("http://HOST:PORT/PATH"; HOST may be a name, IPv4 or [IPv6]; port
/// defaults to 80, path to "/"); connect, send and status line all within timeout (a host name goes
/// through the system resolver and its own timeouts: health checks should give an address).
/// Returns 0 when the status is 2xx, 1 otherwise (bad URL, refused, timeout, non-2xx, not HTTP), like a
/// health check command. Prints nothing and raises no signal. Thread-safe.
[[nodiscard]] int http_probe(std::string_view url, std::chrono::milliseconds timeout);

}  // namespace sluice::common
