-- POST /todos with a JSON body, as one of the demo users (rotating).
function make_request(user, n)
   local body = string.format(
      '{"title": "bench todo %d", "description": "made by make bench", "priority": %d}',
      n, n % 5 + 1)
   return wrk.format("POST", "/todos", {
      ["Authorization"] = bearer(user),
      ["Content-Type"] = "application/json",
   }, body)
end

expected_status = 201
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
