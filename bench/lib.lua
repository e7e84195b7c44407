-- Shared by the bench/*.lua wrk scripts: the demo users' tokens and todo ids, request
-- rotation, non-2xx counting, an optional request cap, and one machine-readable line.
--
-- Each scenario script defines make_request(user, n) and then dofile()s this file.
-- wrk is started as: wrk ... -s bench/<scenario>.lua <url> -- <users.lua> [<cap>]
-- where users.lua (written by bench/run.py) returns {{token=..., username=..., ids={...}}, ...}
-- and cap, if given and > 0, stops each thread after that many responses.

local threads = {}
local next_thread_id = 0

-- Runs in wrk's main Lua state once per thread before the run.
function setup(thread)
   thread:set("thread_id", next_thread_id)
   next_thread_id = next_thread_id + 1
   table.insert(threads, thread)
end

-- Runs in each thread's own Lua state.
function init(args)
   users = (args[1] and args[1] ~= "") and dofile(args[1]) or {}
   cap = tonumber(args[2] or "0") or 0
   sent = 0
   responses = 0
   non2xx = 0
   -- Threads start at different users so that they do not move in step.
   offset = (thread_id or 0) * 17
end

function request()
   sent = sent + 1
   local user = nil
   if #users > 0 then
      user = users[((sent + offset) % #users) + 1]
   end
   return make_request(user, sent + offset)
end

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
   if cap > 0 and responses >= cap then
      wrk.thread:stop()
   end
end

function bearer(user)
   return "Bearer " .. user.token
end

-- Runs in the main state after the run: one line for bench/run.py to parse.
function done(summary, latency, requests)
   local counted = 0
   local completed = 0
   for _, thread in ipairs(threads) do
      counted = counted + (thread:get("non2xx") or 0)
      completed = completed + (thread:get("responses") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "responses": %d, "duration_us": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "max_us": %d, "non2xx": %d, "status_errors": %d, ' ..
      '"connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
      summary.requests, completed, summary.duration,
      latency:percentile(50), latency:percentile(99), latency.max, counted, e.status,
      e.connect, e.read, e.write, e.timeout))
end
