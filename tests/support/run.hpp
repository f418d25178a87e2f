#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <catch2/catch.hpp>

#include "net.hpp"

namespace sluice::test {

/// The deadline helpers use when a test gives none: long enough for a loaded CI box, short enough to fail.
inline constexpr std::chrono::milliseconds default_deadline{10'000};

/// Runs ioc on the calling thread until done() holds or the context runs out of work; returns done().
/// FAILs the test when the deadline (wall time) passes first. Restarts a stopped context before running.
/// Use from the test thread only (Catch2 assertions are not thread-safe).
bool run_until(net::io_context& ioc, std::chrono::milliseconds deadline, const std::function<bool()>& done);

/// Runs ioc until it runs out of work; FAILs the test when the deadline passes first. Test thread only.
void run_for_deadline(net::io_context& ioc, std::chrono::milliseconds deadline = default_deadline);

/// Runs a coroutine on ioc (driving ioc on the calling thread) and returns its result; rethrows what it
/// throws; FAILs the test when the deadline passes first. Other work on ioc (a server under test) keeps
/// running meanwhile. T must be default-constructible (an Asio co_spawn rule). Test thread only.
template <typename T>
T run_coro(net::io_context& ioc, net::awaitable<T> coro, std::chrono::milliseconds deadline = default_deadline) {
  // Shared state: after a FAIL the coroutine may still be pending in ioc and must not touch a dead frame.
  struct state {
    bool done = false;
    std::exception_ptr error;
    std::optional<T> value;
  };
  auto st = std::make_shared<state>();
  net::co_spawn(ioc, std::move(coro), [st](std::exception_ptr e, T value) {
    st->done = true;
    st->error = e;
    if (!e) st->value.emplace(std::move(value));
  });
  if (!run_until(ioc, deadline, [&] { return st->done; })) FAIL("io_context ran out of work before the coroutine finished");
  if (st->error) std::rethrow_exception(st->error);
  return std::move(*st->value);
}

/// run_coro for a coroutine without a result.
void run_coro(net::io_context& ioc, net::awaitable<void> coro, std::chrono::milliseconds deadline = default_deadline);

}  // namespace sluice::test
