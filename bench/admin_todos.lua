-- GET /admin/todos?limit=20 as an admin: the first page of every owner's todos.
function make_request(user, n)
   return wrk.format("GET", "/admin/todos?limit=20", {["Authorization"] = bearer(user)})
end

expected_status = 200
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
