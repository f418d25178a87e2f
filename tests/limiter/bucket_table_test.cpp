#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "limiter/bucket_table.hpp"

using namespace std::chrono_literals;
using namespace sluice::limiter;

namespace {

const time_point t0 = time_point{} + 100s;
const sip_key test_seed{42, 43};

bucket_op op(std::uint64_t key, const token_bucket& b, bool enforced = true) {
  bucket_op o{};
  o.key = key;
  o.bucket = &b;
  o.enforced = enforced;
  return o;
}

/// Admits one request for a single key; answers whether it was admitted.
bool hit(bucket_table& table, std::uint64_t key, const token_bucket& b, time_point now) {
  bucket_op o = op(key, b);
  return table.apply(std::span<bucket_op>(&o, 1), now);
}

/// Keys spread over all shards (the table uses bits 32.. for the shard).
std::uint64_t spread_key(std::uint64_t i) { return i * 0x9E3779B97F4A7C15ULL; }

}  // namespace

TEST_CASE("a bucket in the table admits burst requests and then refuses until it refills", "[limiter]") {
  bucket_table table(1000, test_seed);
  const token_bucket b(1, 3);
  for (int i = 0; i < 3; ++i) CHECK(hit(table, 7, b, t0));
  CHECK_FALSE(hit(table, 7, b, t0));
  CHECK(hit(table, 8, b, t0));  // another key has its own bucket
  CHECK_FALSE(hit(table, 7, b, t0 + 999ms));
  CHECK(hit(table, 7, b, t0 + 1s));
  CHECK(table.size() == 2);
}

TEST_CASE("a rejected request takes no token from any bucket", "[limiter]") {
  bucket_table table(1000, test_seed);
  const token_bucket small(1, 1);
  const token_bucket large(1, 5);
  REQUIRE(hit(table, 1, small, t0));
  // Now the small bucket is empty: requests touching both buckets are refused and leave the large one alone.
  for (int i = 0; i < 10; ++i) {
    std::vector<bucket_op> ops{op(1, small), op(2, large)};
    CHECK_FALSE(table.apply(ops, t0));
    CHECK_FALSE(ops[0].had_token);
    CHECK(ops[1].had_token);
    CHECK(large.remaining(ops[1].state, t0) == 5);
  }
  // A bucket that did not exist is not created by a refused request.
  CHECK(table.size() == 1);
  for (int i = 0; i < 5; ++i) CHECK(hit(table, 2, large, t0));
  CHECK_FALSE(hit(table, 2, large, t0));
}

TEST_CASE("a dry-run bucket never refuses but is drained while it has tokens", "[limiter]") {
  bucket_table table(1000, test_seed);
  const token_bucket b(1, 2);
  for (int i = 0; i < 4; ++i) {
    std::vector<bucket_op> ops{op(5, b, false)};
    CHECK(table.apply(ops, t0));
    CHECK(ops[0].had_token == (i < 2));
  }
}

TEST_CASE("at its bound a shard drops full buckets first, without loss", "[limiter]") {
  bucket_table table(64, test_seed, 1);
  const token_bucket b(10, 2);
  for (std::uint64_t k = 0; k < 64; ++k) REQUIRE(hit(table, spread_key(k), b, t0));
  REQUIRE(table.size() == 64);
  // Half of them take a second token at t0 + 50ms; at t0 + 150ms the rest are full again, the busy half not.
  for (std::uint64_t k = 0; k < 32; ++k) REQUIRE(hit(table, spread_key(k), b, t0 + 50ms));
  const time_point later = t0 + 150ms;
  REQUIRE(hit(table, spread_key(1000), b, later));
  CHECK(table.lossless_evictions() == 32);
  CHECK(table.lossy_evictions() == 0);
  CHECK(table.size() == 33);
  // The busy half kept their state: each has one token left, not two.
  for (std::uint64_t k = 0; k < 32; ++k) {
    REQUIRE(hit(table, spread_key(k), b, later));
    CHECK_FALSE(hit(table, spread_key(k), b, later));
  }
}

TEST_CASE("when no bucket is full the least recently used go, and are counted as lossy", "[limiter]") {
  bucket_table table(64, test_seed, 1);
  const token_bucket b(0.001, 5);  // nothing refills during the test
  // 64 keys used at increasing times: key k last at t0 + k * 10ms.
  for (std::uint64_t k = 0; k < 64; ++k) REQUIRE(hit(table, spread_key(k), b, t0 + k * 10ms));
  REQUIRE(table.size() == 64);
  const time_point later = t0 + 1s;
  REQUIRE(hit(table, spread_key(5000), b, later));
  CHECK(table.lossless_evictions() == 0);
  // A batch (1/32 of the bound, at least 1) went; the oldest: key 0 and key 1.
  CHECK(table.lossy_evictions() == 2);
  CHECK(table.size() == 63);
  // Evicted buckets come back full (5 tokens); survivors kept their debt (4 tokens).
  auto tokens_left = [&](std::uint64_t key) {
    int n = 0;
    while (hit(table, key, b, later)) ++n;
    return n;
  };
  CHECK(tokens_left(spread_key(0)) == 5);
  CHECK(tokens_left(spread_key(63)) == 4);
  CHECK(tokens_left(spread_key(40)) == 4);
}

TEST_CASE("a flood of distinct clients cannot grow the table past its bound", "[limiter]") {
  const std::uint64_t max_keys = 2000;
  bucket_table table(max_keys, test_seed);
  REQUIRE(table.shard_count() > 1);
  const token_bucket b(1, 10);
  std::size_t memory_at_bound = 0;
  std::uint64_t peak = 0;
  for (std::uint64_t k = 0; k < 10 * max_keys; ++k) {
    REQUIRE(hit(table, spread_key(k + 1), b, t0 + std::chrono::microseconds(k)));
    peak = std::max(peak, table.size());
    if (k + 1 == 2 * max_keys) memory_at_bound = table.memory_bytes();
  }
  CHECK(peak <= max_keys);
  CHECK(table.size() <= max_keys);
  CHECK(table.lossy_evictions() + table.lossless_evictions() + table.size() == 10 * max_keys);
  CHECK(table.lossy_evictions() > 0);
  CHECK(table.memory_bytes() == memory_at_bound);  // full shards churn in place: no regrowth
}

TEST_CASE("set_max_keys trims shards over their new bound and lets them grow again", "[limiter]") {
  bucket_table table(4096, test_seed);
  const token_bucket b(0.001, 5);
  for (std::uint64_t k = 0; k < 3000; ++k) REQUIRE(hit(table, spread_key(k + 1), b, t0));
  REQUIRE(table.size() > 2000);
  table.set_max_keys(500, t0 + 1s);
  CHECK(table.max_keys() == 500);
  CHECK(table.size() <= 500);
  CHECK(table.lossy_evictions() > 0);
  const auto small_memory = table.memory_bytes();
  table.set_max_keys(8000, t0 + 1s);
  CHECK(table.memory_bytes() == small_memory);  // a higher bound costs nothing until keys arrive
  for (std::uint64_t k = 0; k < 7000; ++k) REQUIRE(hit(table, spread_key(k + 100000), b, t0 + 2s));
  CHECK(table.size() > 6000);
  CHECK(table.size() <= 8000);
  CHECK(table.memory_bytes() > small_memory);
}

TEST_CASE("memory follows the keys held, not the bound", "[limiter][memory]") {
  // A table sized for two million keys holding a hundred thousand costs what those keys need.
  bucket_table table(2'000'000, test_seed);
  const std::size_t empty = table.memory_bytes();
  CHECK(empty < 256 * 1024);  // the shard structs only
  const token_bucket b(1, 10);
  for (std::uint64_t k = 0; k < 100'000; ++k) REQUIRE(hit(table, spread_key(k + 1), b, t0));
  REQUIRE(table.size() == 100'000);
  const double per_key = static_cast<double>(table.memory_bytes()) / static_cast<double>(table.size());
  CAPTURE(table.memory_bytes(), empty);
  CHECK(per_key <= 64.0);
  // Lowering the bound below what is held gives the memory back.
  table.set_max_keys(20'000, t0 + 1s);
  CHECK(table.size() <= 20'000);
  CHECK(table.memory_bytes() < empty + 20'000 * 64);
}

TEST_CASE("a table of one million keys costs at most 64 bytes per key", "[limiter][memory]") {
  // memory_bytes() = this object + the shard structs + every byte the maps' allocator handed out (Boost's
  // slot array of (15 * G - 1) 24-byte entries and G + 1 16-byte group words in one buffer per shard).
  const std::uint64_t max_keys = 1'000'000;
  bucket_table table(max_keys, test_seed);
  const token_bucket b(1, 10);
  std::uint64_t admitted = 0;
  for (std::uint64_t k = 0; k < max_keys + max_keys / 5; ++k) admitted += hit(table, spread_key(k + 1), b, t0);
  REQUIRE(admitted == max_keys + max_keys / 5);
  const double per_key = static_cast<double>(table.memory_bytes()) / static_cast<double>(table.size());
  CAPTURE(table.memory_bytes(), table.size(), table.shard_count());
  WARN("bytes per key at 1M keys: " << per_key << " (" << table.size() << " keys, " << table.memory_bytes()
                                    << " bytes)");
  CHECK(table.size() > max_keys * 95 / 100);
  CHECK(per_key <= 64.0);
}

TEST_CASE("threads hammering one key together are never admitted beyond the rate", "[limiter][threads]") {
  bucket_table table(1000, test_seed);
  const double rate = 1000;
  const std::uint64_t burst = 50;
  const token_bucket b(rate, burst);
  std::atomic<std::uint64_t> admitted{0};
  std::atomic<std::uint64_t> refused{0};
  const auto start = clock::now();
  const auto stop_at = start + 200ms;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (;;) {
        const auto now = clock::now();
        if (now >= stop_at) return;
        // Two buckets per request, so the all-or-nothing path with several keys runs concurrently too.
        bucket_op ops[2] = {op(77, b), op(spread_key(78), b)};
        if (table.apply(ops, now)) {
          admitted.fetch_add(1, std::memory_order_relaxed);
        } else {
          refused.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
  CAPTURE(admitted.load(), refused.load(), elapsed);
  CHECK(admitted.load() >= burst);
  CHECK(static_cast<double>(admitted.load()) <= static_cast<double>(burst) + rate * elapsed + 1);
  CHECK(refused.load() > 0);
}
