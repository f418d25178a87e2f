#pragma once

#include <vector>

#include "config/config.hpp"
#include "net.hpp"

namespace sluice::upstream {

/// Resolves upstream.servers to endpoints, blocking (start-up and reload only, never on the data path).
/// A name with several addresses gives one endpoint per address, in resolver order (as nginx does), so
/// round robin and failover cover them all. Throws std::runtime_error naming the server text on failure.
[[nodiscard]] std::vector<tcp::endpoint> resolve_servers(const std::vector<config::endpoint>& servers);

}  // namespace sluice::upstream
