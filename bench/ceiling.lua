-- GET /todos?limit=20 against bench/ceiling.py: no token needed, none sent.
function make_request(user, n)
   return wrk.format("GET", "/todos?limit=20")
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
