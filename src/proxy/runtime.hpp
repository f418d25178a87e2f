#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "admin/metrics.hpp"
#include "config/config.hpp"
#include "limiter/bucket_table.hpp"
#include "limiter/decider.hpp"
#include "net.hpp"

namespace sluice::proxy {

/// Everything one configuration generation serves requests with: the config, the compiled limiter,
/// the resolved upstream endpoints and the per-limit metric counters. Immutable once built and shared
/// (shared_ptr<const runtime>) by every worker; a reload builds a new one. The decider is thread-safe.
struct runtime {
  config::config settings;
  std::unique_ptr<limiter::decider> decider;       ///< never null
  std::vector<tcp::endpoint> servers;              ///< upstream.servers resolved, at least one
  std::vector<std::string> limit_names;            ///< index i = bit i of the decision masks
  std::vector<admin::limit_counter*> rate_limited;      ///< index i: sluice_rate_limited_total{limit}
  std::vector<admin::limit_counter*> dry_run_rejected;  ///< index i: dry-run would-be rejections
  std::uint64_t generation = 0;                    ///< 1 for the start-up config, +1 per reload
};

/// Builds a runtime: a local limiter over table, upstream names resolved (blocking), counters registered
/// in m. Control plane only; throws std::runtime_error / std::invalid_argument with a clear message.
[[nodiscard]] std::shared_ptr<const runtime> make_runtime(config::config settings, limiter::bucket_table& table,
                                                          admin::metrics& m, std::uint64_t generation);

}  // namespace sluice::proxy
