#include "proxy/runtime.hpp"

#include "limiter/local_limiter.hpp"
#include "upstream/resolve.hpp"

namespace sluice::proxy {

std::shared_ptr<const runtime> make_runtime(config::config settings, limiter::bucket_table& table,
                                            admin::metrics& m, std::uint64_t generation) {
  auto rt = std::make_shared<runtime>();
  rt->servers = upstream::resolve_servers(settings.upstream.servers);
  auto local = std::make_unique<limiter::local_limiter>(settings, table);
  for (const auto& name : local->rule_names()) {
    rt->limit_names.push_back(name);
    rt->rate_limited.push_back(&m.rate_limited(name));
    rt->dry_run_rejected.push_back(&m.dry_run_rejected(name));
  }
  rt->decider = std::move(local);
  rt->settings = std::move(settings);
  rt->generation = generation;
  return rt;
}

}  // namespace sluice::proxy
