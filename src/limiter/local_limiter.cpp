#include "limiter/local_limiter.hpp"

#include <algorithm>
#include <stdexcept>

#include "limiter/client_key.hpp"

namespace sluice::limiter {
namespace {

/// The path part of a request-target: no query or fragment, and no scheme and authority (absolute-form).
std::string_view path_of(std::string_view target) {
  if (!target.empty() && target.front() != '/') {
    const auto scheme_end = target.find("://");
    if (scheme_end != std::string_view::npos) {
      const auto path_start = target.find('/', scheme_end + 3);
      target = path_start == std::string_view::npos ? std::string_view{"/"} : target.substr(path_start);
    }
  }
  // A plain loop: find_first_of calls memchr once per character.
  std::size_t end = 0;
  while (end < target.size() && target[end] != '?' && target[end] != '#') ++end;
  return target.substr(0, end);
}

}  // namespace

local_limiter::local_limiter(const config::config& cfg, bucket_table& table)
    : table_(table), trusted_(cfg.server.trusted_proxies) {
  if (cfg.limits.size() > max_limits) {
    throw std::invalid_argument("limits: at most 64 limits are supported, got " + std::to_string(cfg.limits.size()));
  }
  const sip_key& seed = table.seed();
  names_.reserve(cfg.limits.size());
  rules_.reserve(cfg.limits.size());
  for (const config::limit& l : cfg.limits) {
    names_.push_back(l.name);
    const double rate = l.refill.tokens_per_second;
    rule r{l.key,
           l.header_name,
           l.ipv6_prefix,
           l.dry_run,
           l.when.has_value(),
           l.when ? l.when->path_prefix : std::string{},
           l.when ? l.when->methods : std::vector<std::string>{},
           bucket_spec{token_bucket(rate, l.burst), limit_identity(seed, l, rate, l.burst)},
           {}};
    for (const config::limit_override& o : l.overrides) {
      const double orate = o.refill.tokens_per_second;
      override_spec spec{o.value, std::nullopt,
                         bucket_spec{token_bucket(orate, o.burst), limit_identity(seed, l, orate, o.burst)}};
      if (l.key == config::key_kind::ip) {
        spec.block = common::cidr::parse(o.value);
        if (!spec.block) continue;  // cannot match any address; the loader reports such values
      }
      r.overrides.push_back(std::move(spec));
    }
    if (l.key == config::key_kind::header) {
      std::stable_sort(r.overrides.begin(), r.overrides.end(),
                       [](const override_spec& a, const override_spec& b) { return a.value < b.value; });
    }
    rules_.push_back(std::move(r));
  }
}

const local_limiter::bucket_spec& local_limiter::spec_for(const rule& r, std::string_view header_value,
                                                          const common::ip_address& client) const {
  if (r.overrides.empty()) return r.base;
  if (r.kind == config::key_kind::header) {
    const auto it = std::lower_bound(r.overrides.begin(), r.overrides.end(), header_value,
                                     [](const override_spec& o, std::string_view v) { return o.value < v; });
    if (it != r.overrides.end() && it->value == header_value) return it->spec;
  } else if (r.kind == config::key_kind::ip) {
    for (const override_spec& o : r.overrides) {
      if (o.block->contains(client)) return o.spec;
    }
  }
  return r.base;
}

bool local_limiter::filter_matches(const rule& r, std::string_view method, std::string_view path) {
  if (!r.filtered) return true;
  if (!path.starts_with(r.path_prefix)) return false;
  if (r.methods.empty()) return true;
  return std::find(r.methods.begin(), r.methods.end(), method) != r.methods.end();
}

std::optional<decision> local_limiter::decide_now(const request_view& req, time_point now) {
  std::array<bucket_op, max_limits> ops;  // deliberately uninitialised: filled below up to count
  std::array<std::uint8_t, max_limits> rule_of;
  std::size_t count = 0;

  const std::string_view path = path_of(req.target);
  const sip_key& seed = table_.seed();
  std::optional<common::ip_address> client;  // derived once, only when an ip limit applies

  for (std::size_t i = 0; i < rules_.size(); ++i) {
    const rule& r = rules_[i];
    if (!filter_matches(r, req.method, path)) continue;
    std::uint64_t key = 0;
    const bucket_spec* spec = &r.base;
    switch (r.kind) {
      case config::key_kind::ip: {
        if (!client) client = client_address(req.peer, req.forwarded_for, trusted_);
        spec = &spec_for(r, {}, *client);
        key = ip_bucket_key(seed, spec->identity, grouped_address(*client, r.ipv6_prefix));
        break;
      }
      case config::key_kind::header: {
        const auto value = req.find_header ? req.find_header(req.header_ctx, r.header_name) : std::nullopt;
        if (!value) continue;  // no header: this limit does not apply
        spec = &spec_for(r, *value, common::ip_address{});
        key = header_bucket_key(seed, spec->identity, *value);
        break;
      }
      case config::key_kind::global:
        key = global_bucket_key(seed, spec->identity);
        break;
    }
    bucket_op& op = ops[count];
    op.key = key;
    op.bucket = &spec->bucket;
    op.enforced = !r.dry_run;
    rule_of[count] = static_cast<std::uint8_t>(i);
    ++count;
  }

  decision d;
  if (count == 0) return d;
  d.allowed = table_.apply(std::span<bucket_op>(ops.data(), count), now);

  std::chrono::nanoseconds longest_wait{-1};
  for (std::size_t k = 0; k < count; ++k) {
    const bucket_op& op = ops[k];
    const std::size_t i = rule_of[k];
    const std::uint64_t bit = std::uint64_t{1} << i;
    if (!op.enforced) {
      if (!op.had_token) d.dry_run_mask |= bit;
      continue;
    }
    const std::uint64_t remaining = op.bucket->remaining(op.state, now);
    if (!d.matched || remaining < d.status.remaining) {
      d.matched = true;
      d.status = limit_status{names_[i], op.bucket->burst(), op.bucket->window_seconds(), remaining,
                              op.bucket->seconds_until_full(op.state, now)};
    }
    if (!op.had_token) {
      d.rejected_mask |= bit;
      const auto wait = op.bucket->time_until_token(op.state, now);
      if (wait > longest_wait) {
        longest_wait = wait;
        d.rejected_by = names_[i];
        // The longest wait also bounds every other rejecting bucket's: Retry-After covers them all.
        d.retry_after_seconds = std::max<std::uint64_t>(1, op.bucket->seconds_until_token(op.state, now));
      }
    }
  }
  return d;
}

boost::asio::awaitable<decision> local_limiter::decide(const request_view& req, time_point now) {
  co_return *decide_now(req, now);
}

}  // namespace sluice::limiter
