-- GET /users/me and GET /todos?limit=20 in turn, as one of the demo users (rotating).
function make_request(user, n)
   local path = (n % 2 == 0) and "/users/me" or "/todos?limit=20"
   return wrk.format("GET", path, {["Authorization"] = bearer(user)})
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
