#include "proxy/head_arena.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <string>

namespace {

using namespace sluice;
using namespace sluice::proxy;

// The arena is 4 KiB of inline storage: keep it off the test thread's stack frame.
std::unique_ptr<head_arena> make_arena() { return std::make_unique<head_arena>(); }

std::string parse_and_read(head_arena& arena, const std::string& raw, std::string_view name) {
  http::request_parser<http::empty_body, arena_allocator<char>> parser(
      std::piecewise_construct, std::make_tuple(), std::make_tuple(arena_allocator<char>(arena)));
  parser.header_limit(1024 * 1024);
  beast::error_code ec;
  parser.put(net::buffer(raw.data(), raw.size()), ec);
  REQUIRE(!ec);
  REQUIRE(parser.is_header_done());
  const auto& fields = parser.get().base();
  auto it = fields.find(name);
  return it == fields.end() ? std::string("<absent>") : std::string(it->value());
}

}  // namespace

TEST_CASE("the head arena bumps within its block, spills past it, and reset takes the block back", "[proxy]") {
  auto arena = make_arena();
  void* a = arena->allocate(100, 8);
  void* b = arena->allocate(10, 16);
  CHECK(reinterpret_cast<std::uintptr_t>(b) % 16 == 0);
  CHECK(static_cast<std::byte*>(b) >= static_cast<std::byte*>(a) + 100);
  CHECK(arena->used() <= 128);
  void* big = arena->allocate(head_arena::block_bytes, 8);  // does not fit: from the heap
  CHECK(arena->used() <= 128);
  arena->deallocate(big, head_arena::block_bytes, 8);
  arena->deallocate(a, 100, 8);  // no-op inside the block
  arena->reset();
  CHECK(arena->used() == 0);
  CHECK(arena->allocate(100, 8) == a);
}

TEST_CASE("heads parse into arena fields, small ones inside the block and big ones past it", "[proxy]") {
  auto arena = make_arena();
  CHECK(parse_and_read(*arena, "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n", "X-A") == "1");
  CHECK(arena->used() > 0);
  CHECK(arena->used() < head_arena::block_bytes);
  arena->reset();

  std::string raw = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 200; ++i) raw += "X-Field-" + std::to_string(i) + ": " + std::string(40, 'v') + "\r\n";
  raw += "X-Last: end\r\n\r\n";
  CHECK(parse_and_read(*arena, raw, "X-Last") == "end");
  CHECK(parse_and_read(*arena, raw, "X-Field-150") == std::string(40, 'v'));
}
