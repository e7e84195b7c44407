-- GET /todos?limit=20 as one of the demo users (rotating).
function make_request(user, n)
   return wrk.format("GET", "/todos?limit=20", {["Authorization"] = bearer(user)})
end

expected_status = 200
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
