-- The frontend session mix: each wrk connection is one virtual user, signed in as a
-- user of its own (run this script with as many threads as connections: one connection
-- per thread, so each thread's state is one user's session, and each answer is read
-- by the request that asked for it).
--
-- A virtual user goes round a cycle of 20 requests, in the proportions a todo app sees
-- (mostly reads):
--   GET /todos?limit=20 (list)                      8  40%
--   GET /todos/{id} (read one)                      3  15%
--   GET /users/me                                   2  10%
--   POST /todos (create)                            2  10%
--   PATCH /todos/{id} (edit title and priority)     2  10%
--   PATCH /todos/{id} {"complete": true}            2  10%
--   DELETE /todos/{id}                              1   5%
-- Reads, edits and completions go to the user's own todos (the seeded ones and the ones
-- it made); a delete takes the oldest todo it made itself, so it is always a real 204.
-- Besides the cycle, POST /auth/refresh with its refresh token (API v2): first as each
-- connection's first request (as a frontend does when it is loaded: its access token
-- lives in memory only), so every connection refreshes at least once in every run, then
-- every REFRESH_EVERY requests: with a frontend's request every second or so, every few
-- minutes of a user's life. The new tokens are used from
-- then on, and written out after the run (the file given as wrk's third argument) for
-- run.py to hand to the next run; a refresh left unanswered when wrk stopped is
-- reported as lost (run.py signs that user in again).
-- Every answer is checked for its route's own status (200, 201 or 204).

REFRESH_EVERY = 200
CYCLE = {
   "list", "read", "list", "create", "me", "list", "patch", "list", "read", "complete",
   "list", "create", "list", "me", "patch", "list", "read", "complete", "list", "delete",
}
KINDS = {"list", "read", "me", "create", "patch", "complete", "delete", "refresh"}
EXPECTED = {
   list = 200, read = 200, me = 200, create = 201, patch = 200, complete = 200,
   delete = 204, refresh = 200,
}

refreshed = 0
extra_counters = {"refreshed"}
for _, kind in ipairs(KINDS) do
   _G["n_" .. kind] = 0
   _G["bad_" .. kind] = 0
   table.insert(extra_counters, "n_" .. kind)
   table.insert(extra_counters, "bad_" .. kind)
end

local function start()
   user_index = (thread_id or 0) + 1
   me = users[user_index]
   token = me.token
   refresh_token = me.refresh
   seeded = me.ids
   made = {}        -- ids of todos this virtual user made and has not deleted, oldest first
   made_first = 1
   made_last = 0
   step = 0
   life = 0
   next_refresh = 1
   pending = nil
   lost = 0
end

local function some_todo(n)
   if made_last >= made_first and n % 2 == 0 then
      return made[made_last]  -- the newest one it made
   end
   return seeded[(n % #seeded) + 1]
end

local function json_request(method, path, body)
   return wrk.format(method, path, {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
   }, body)
end

function make_request(_, n)
   if me == nil then
      start()
   end
   if pending ~= nil and life == 1 then
      -- wrk builds thread 0's first request once before the run, to check it, and
      -- never sends it: this is the real first request.
      life = 0
      step = 0
      next_refresh = 1
   elseif pending == "refresh" then
      lost = 1  -- asked, never answered (the connection broke): that token may be used up
   end
   life = life + 1
   local kind
   if life >= next_refresh then
      kind = "refresh"
      next_refresh = life + REFRESH_EVERY
   else
      step = step % #CYCLE + 1
      kind = CYCLE[step]
      if kind == "delete" and made_last < made_first then
         kind = "create"  -- nothing of its own to delete yet (not after the first cycle)
      end
   end
   pending = kind
   local auth = {["Authorization"] = "Bearer " .. token}
   if kind == "list" then
      return wrk.format("GET", "/todos?limit=20", auth)
   elseif kind == "read" then
      return wrk.format("GET", "/todos/" .. some_todo(life), auth)
   elseif kind == "me" then
      return wrk.format("GET", "/users/me", auth)
   elseif kind == "create" then
      return json_request("POST", "/todos", string.format(
         '{"title": "made in a session %d", "description": "from the mix", "priority": %d}',
         life, life % 5 + 1))
   elseif kind == "patch" then
      return json_request("PATCH", "/todos/" .. some_todo(life), string.format(
         '{"title": "edited in a session %d", "priority": %d}', life, life % 5 + 1))
   elseif kind == "complete" then
      return json_request("PATCH", "/todos/" .. some_todo(life + 1), '{"complete": true}')
   elseif kind == "delete" then
      local id = made[made_first]
      made[made_first] = nil
      made_first = made_first + 1
      return wrk.format("DELETE", "/todos/" .. id, auth)
   else
      return wrk.format("POST", "/auth/refresh", {["Content-Type"] = "application/json"},
         '{"refresh_token": "' .. refresh_token .. '"}')
   end
end

function check_response(status, headers, body)
   local kind = pending
   pending = nil
   if kind == nil then
      return false
   end
   _G["n_" .. kind] = _G["n_" .. kind] + 1
   local right = status == EXPECTED[kind]
   if right and kind == "create" then
      local id = tonumber(body:match('^{"id":%s*(%d+)') or body:match('"id":%s*(%d+)'))
      if id then
         made_last = made_last + 1
         made[made_last] = id
      else
         right = false
      end
   elseif right and kind == "refresh" then
      local access = body:match('"access_token":%s*"([^"]+)"')
      local renewed = body:match('"refresh_token":%s*"([^"]+)"')
      if access and renewed then
         token = access
         refresh_token = renewed
         refreshed = refreshed + 1
      else
         right = false
      end
   end
   if not right then
      _G["bad_" .. kind] = _G["bad_" .. kind] + 1
   end
   return right
end

-- After the run, in the main state: each virtual user's latest tokens, for the next run.
function finish(threads)
   local path = threads[1] and threads[1]:get("out_path") or ""
   local quiet = 0  -- answered, but never refreshed: the refresh went wrong
   local idle = 0  -- no answer at all in the run (a slow server; its p99 shows it)
   local file = (path ~= "") and io.open(path, "w") or nil
   for _, thread in ipairs(threads) do
      if (thread:get("responses") or 0) == 0 then
         idle = idle + 1
      elseif (thread:get("refreshed") or 0) == 0 then
         quiet = quiet + 1
      end
      local index = thread:get("user_index")
      if file and index then
         local lost = (thread:get("lost") == 1) or (thread:get("pending") == "refresh")
         file:write(string.format('{"index": %d, "token": "%s", "refresh": "%s", "lost": %s}\n',
            index, thread:get("token"), thread:get("refresh_token"), lost and "true" or "false"))
      end
   end
   if file then
      file:close()
   end
   return string.format(', "never_refreshed": %d, "idle": %d, "threads": %d',
      quiet, idle, #threads)
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
