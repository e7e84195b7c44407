-- Shared by the bench/*.lua wrk scripts: the data run.py hands over (tokens, todo ids),
-- request rotation, status checking, an optional request cap, and one machine-readable
-- line.
--
-- Each scenario script defines make_request(user, n) and then dofile()s this file.
-- wrk is started as: wrk ... -s bench/<scenario>.lua <url> -- <data.lua> [<cap>] [<out>]
-- where data.lua (written by bench/run.py) returns a list of users,
-- {{token=..., username=..., ids={...}}, ...}, cap, if given and > 0, stops each thread
-- after that many responses, and out is a file the script may write after the run.
--
-- Optional globals a scenario script may set before dofile():
--   expected_status  the one status its answers must have (else any 2xx counts as right);
--   check_response(status, headers, body) -> true when the answer is right (replaces
--                    the status check; for scripts that follow their own answers);
--   extra_counters   names of per-thread numeric globals, summed into the result line;
--   finish(threads)  runs after the run in wrk's main state; returns extra JSON fields
--                    (a string starting with ", ") for the result line.
-- A wrong answer is counted in "non2xx" (the report's "wrong status"), never as speed.

local threads = {}
local next_thread_id = 0
WRONG_CODES = {
   200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 412, 413, 422, 429, 500, 502, 503, 504,
}

-- Runs in wrk's main Lua state once per thread before the run.
function setup(thread)
   thread:set("thread_id", next_thread_id)
   next_thread_id = next_thread_id + 1
   table.insert(threads, thread)
end

-- Runs in each thread's own Lua state.
function init(args)
   users = (args[1] and args[1] ~= "") and dofile(args[1]) or {}
   user_count = #users
   cap = tonumber(args[2] or "0") or 0
   out_path = args[3] or ""
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
   local right
   if check_response then
      right = check_response(status, headers, body)
   elseif expected_status then
      right = status == expected_status
   else
      right = status >= 200 and status <= 299
   end
   if not right then
      non2xx = non2xx + 1
      local key = "wrong_" .. status
      _G[key] = (_G[key] or 0) + 1
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
   local extra = {}
   for _, thread in ipairs(threads) do
      counted = counted + (thread:get("non2xx") or 0)
      completed = completed + (thread:get("responses") or 0)
      for _, name in ipairs(extra_counters or {}) do
         extra[name] = (extra[name] or 0) + (thread:get(name) or 0)
      end
   end
   local fields = {}
   for _, name in ipairs(extra_counters or {}) do
      table.insert(fields, string.format('"%s": %d', name, extra[name]))
   end
   -- Which statuses the wrong answers had (the usual suspects; the rest as "other").
   local wrong = {}
   local accounted = 0
   for _, code in ipairs(WRONG_CODES) do
      local n = 0
      for _, thread in ipairs(threads) do
         n = n + (thread:get("wrong_" .. code) or 0)
      end
      if n > 0 then
         table.insert(wrong, string.format('"%d": %d', code, n))
         accounted = accounted + n
      end
   end
   if counted > accounted then
      table.insert(wrong, string.format('"other": %d', counted - accounted))
   end
   local tail = (finish and finish(threads) or "") ..
      string.format(', "wrong": {%s}', table.concat(wrong, ", "))
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "responses": %d, "duration_us": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "max_us": %d, "non2xx": %d, "status_errors": %d, ' ..
      '"connect": %d, "read": %d, "write": %d, "timeout": %d, "extra": {%s}%s}\n',
      summary.requests, completed, summary.duration,
      latency:percentile(50), latency:percentile(99), latency.max, counted, e.status,
      e.connect, e.read, e.write, e.timeout, table.concat(fields, ", "), tail))
end
