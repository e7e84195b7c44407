-- DELETE /todos/{id}: every request deletes a distinct todo that exists, owned by the
-- token's user. bench/run.py writes, before each run, the ids its users own as ranges
-- ({token=..., ranges={{first, last}, ...}}), enough for the run; each id is sent once.
-- The last id sent to each user is written out after the run (the file given as wrk's
-- third argument): the next run starts past it, so that a delete still in flight when
-- wrk stopped is never sent again.
-- Should they run out all the same, the request goes to /todos/0 (not a 204: counted
-- as a wrong status, and in "dry"), so a run that ran dry can never look fast.
function take(user)
   user.range = user.range or 1
   while user.ranges[user.range] do
      local range = user.ranges[user.range]
      user.next = user.next or range[1]
      if user.next <= range[2] then
         local id = user.next
         user.next = id + 1
         return id
      end
      user.range = user.range + 1
      user.next = nil
   end
   return nil
end

function make_request(user, n)
   local id = take(user)
   if id == nil then
      for _, other in ipairs(users) do
         id = take(other)
         if id then
            user = other
            break
         end
      end
   end
   if id == nil then
      dry = dry + 1
      id = 0
   else
      _G["sent_" .. user.index] = id
   end
   return wrk.format("DELETE", "/todos/" .. id, {["Authorization"] = bearer(user)})
end

-- After the run, in the main state: the last id sent to each user, for the next run.
function finish(threads)
   local path = threads[1] and threads[1]:get("out_path") or ""
   if path ~= "" then
      local file = io.open(path, "w")
      for index = 1, threads[1]:get("user_count") or 0 do
         local sent = threads[1]:get("sent_" .. index)
         if sent then
            file:write(string.format('{"index": %d, "sent": %d}\n', index, sent))
         end
      end
      file:close()
   end
   return ""
end

dry = 0
extra_counters = {"dry"}
expected_status = 204
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
