// Microbenchmarks of the limiter's decision and of its memory per tracked key.
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>

#include "limiter/bucket_table.hpp"
#include "limiter/local_limiter.hpp"

namespace {

using namespace std::chrono_literals;
using namespace sluice::limiter;
namespace config = sluice::config;

const time_point t0 = time_point{} + 1000s;

/// One per-ip limit over a table bounded at one million keys.
struct fixture {
  fixture(double rate, std::uint64_t burst) : table(1'000'000), limiter(make_config(rate, burst), table) {}

  static config::config make_config(double rate, std::uint64_t burst) {
    config::config cfg;
    config::limit l;
    l.name = "per-ip";
    l.key = config::key_kind::ip;
    l.refill.tokens_per_second = rate;
    l.burst = burst;
    cfg.limits.push_back(l);
    return cfg;
  }

  bucket_table table;
  local_limiter limiter;
};

/// A limit that never refuses during a run, so every iteration takes the full admit path.
fixture& roomy_fixture() {
  static fixture f(1e6, 1'000'000'000);
  return f;
}

/// A flood: the table already at its bound with buckets that stay below full for the whole run, so every
/// new client costs an insert plus its share of the amortised least-recently-used eviction.
fixture& flooded_fixture();

request_view request_from(std::uint32_t v4) {
  request_view v;
  v.method = "GET";
  v.target = "/api/items";
  v.peer = sluice::common::ip_address::from_v4({static_cast<std::uint8_t>(v4 >> 24), static_cast<std::uint8_t>(v4 >> 16),
                                                static_cast<std::uint8_t>(v4 >> 8), static_cast<std::uint8_t>(v4)});
  return v;
}

fixture& flooded_fixture() {
  static fixture f(0.001, 10);
  static const bool filled = [] {
    for (std::uint32_t i = 0; i < 1'100'000; ++i) (void)f.limiter.decide_now(request_from(0x30000000u + i), t0);
    return true;
  }();
  (void)filled;
  return f;
}

std::size_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0;
  unsigned long resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// A client that already has a bucket: lookup, token math, status. Each thread is its own client.
void BM_decide_existing_key(benchmark::State& state) {
  auto& f = roomy_fixture();
  const request_view req = request_from(0x0a000001u + static_cast<std::uint32_t>(state.thread_index()));
  time_point now = t0;
  for (auto _ : state) {
    now += 1us;
    auto d = f.limiter.decide_now(req, now);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_decide_existing_key)->Threads(1)->Threads(2)->UseRealTime();

// Every request from a new client: an insert, and once the table is at its bound, evictions too.
void BM_decide_new_key(benchmark::State& state) {
  auto& f = flooded_fixture();
  static std::atomic<std::uint32_t> next_client{0x40000000u};
  time_point now = t0;
  for (auto _ : state) {
    now += 1us;
    const request_view req = request_from(next_client.fetch_add(1, std::memory_order_relaxed));
    auto d = f.limiter.decide_now(req, now);
    benchmark::DoNotOptimize(d);
  }
  if (state.thread_index() == 0) {  // counters of all threads are summed
    state.counters["tracked_keys"] = static_cast<double>(f.table.size());
    state.counters["lossy_evictions"] = static_cast<double>(f.table.lossy_evictions());
  }
}
BENCHMARK(BM_decide_new_key)->Threads(1)->Threads(2)->UseRealTime();

// Bytes per key with one million keys tracked: the table's own account and the process's RSS growth.
void BM_bytes_per_key_1m(benchmark::State& state) {
  for (auto _ : state) {
    const std::size_t rss_before = resident_bytes();
    auto table = std::make_unique<bucket_table>(1'000'000);
    const token_bucket bucket(1, 10);
    for (std::uint64_t k = 1; k <= 1'200'000; ++k) {
      bucket_op op{};
      op.key = k * 0x9E3779B97F4A7C15ULL;
      op.bucket = &bucket;
      op.enforced = true;
      benchmark::DoNotOptimize(table->apply(std::span<bucket_op>(&op, 1), t0));
    }
    const std::size_t rss_after = resident_bytes();
    const double keys = static_cast<double>(table->size());
    state.counters["keys"] = keys;
    state.counters["bytes_per_key"] = static_cast<double>(table->memory_bytes()) / keys;
    state.counters["rss_bytes_per_key"] = static_cast<double>(rss_after - rss_before) / keys;
  }
}
BENCHMARK(BM_bytes_per_key_1m)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
