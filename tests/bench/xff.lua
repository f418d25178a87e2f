-- Each request comes from a new client address (X-Forwarded-For), cycling through 2^24 addresses.
-- request() is the shared bench/xff.lua verbatim. The rest is for run.sh: init() takes an optional start
-- (`wrk ... -s xff.lua URL -- START`) so a warm-up and the measured run use disjoint addresses, and done()
-- prints how many addresses were issued (each wrk thread has its own Lua state, so it asks the threads).
counter = 0
request = function()
  counter = counter + 1
  local n = counter % 16777216
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/", { ["X-Forwarded-For"] = ip })
end

start = 0

init = function(args)
  start = tonumber(args[1]) or 0
  counter = start
end

local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

done = function(summary, latency, requests)
  local issued = 0
  for _, thread in ipairs(threads) do
    issued = issued + thread:get("counter") - thread:get("start")
  end
  io.write(string.format("xff addresses issued: %d\n", issued))
end
