-- PATCH /todos/{id}: a todo owned by the token's user, a new priority and completion.
function make_request(user, n)
   local id = user.ids[(n % #user.ids) + 1]
   local body = string.format('{"priority": %d, "complete": %s}',
      n % 5 + 1, (n % 2 == 0) and "true" or "false")
   return wrk.format("PATCH", "/todos/" .. id, {
      ["Authorization"] = bearer(user),
      ["Content-Type"] = "application/json",
   }, body)
end

expected_status = 200
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
