-- POST /auth/token (OAuth2 password form) for the demo users in turn: bcrypt-bound.
function make_request(user, n)
   local body = "username=" .. user.username .. "&password=password123"
   return wrk.format("POST", "/auth/token", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
   }, body)
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
