-- GET /admin/users?limit=20 as an admin: the first page of users.
function make_request(user, n)
   return wrk.format("GET", "/admin/users?limit=20", {["Authorization"] = bearer(user)})
end

expected_status = 200
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
