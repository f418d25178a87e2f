#include "upstream/resolve.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace sluice::upstream {

std::vector<tcp::endpoint> resolve_servers(const std::vector<config::endpoint>& servers) {
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  std::vector<tcp::endpoint> endpoints;
  for (const auto& server : servers) {
    error_code ec;
    const auto results = resolver.resolve(server.host, std::to_string(server.port),
                                          tcp::resolver::numeric_service, ec);
    if (ec) {
      throw std::runtime_error("upstream.servers: cannot resolve \"" + server.text + "\": " + ec.message());
    }
    if (results.empty()) {
      throw std::runtime_error("upstream.servers: \"" + server.text + "\" resolves to no address");
    }
    for (const auto& entry : results) {
      const tcp::endpoint ep = entry.endpoint();
      // The resolver lists an address once per socket type; keep each one once.
      if (std::find(endpoints.begin(), endpoints.end(), ep) == endpoints.end()) endpoints.push_back(ep);
    }
  }
  return endpoints;
}

}  // namespace sluice::upstream
