#include "support/run.hpp"

namespace sluice::test {

bool run_until(net::io_context& ioc, std::chrono::milliseconds deadline, const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  if (ioc.stopped()) ioc.restart();
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) {
      FAIL("deadline of " << deadline.count() << " ms passed before the condition held");
    }
    ioc.run_one_until(until);
    if (ioc.stopped()) return done();  // out of work: nothing can change the condition any more
  }
  return true;
}

void run_for_deadline(net::io_context& ioc, std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  if (ioc.stopped()) ioc.restart();
  while (!ioc.stopped()) {
    if (std::chrono::steady_clock::now() >= until) {
      FAIL("deadline of " << deadline.count() << " ms passed with work still pending on the io_context");
    }
    ioc.run_one_until(until);
  }
}

void run_coro(net::io_context& ioc, net::awaitable<void> coro, std::chrono::milliseconds deadline) {
  struct state {
    bool done = false;
    std::exception_ptr error;
  };
  auto st = std::make_shared<state>();
  net::co_spawn(ioc, std::move(coro), [st](std::exception_ptr e) {
    st->done = true;
    st->error = e;
  });
  if (!run_until(ioc, deadline, [&] { return st->done; })) FAIL("io_context ran out of work before the coroutine finished");
  if (st->error) std::rethrow_exception(st->error);
}

}  // namespace sluice::test
