-- GET /todos/{id}: a todo owned by the token's user (rotating users and their ids).
function make_request(user, n)
   local id = user.ids[(n % #user.ids) + 1]
   return wrk.format("GET", "/todos/" .. id, {["Authorization"] = bearer(user)})
end

expected_status = 200
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
