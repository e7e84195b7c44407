-- POST /auth/token with a new random username every time and a wrong password: the
-- flood of issue #14 (never throttled per name; each one costs a bcrypt check).
function make_request(user, n)
   local name = "flood" .. tostring(math.random(1, 2147483647))
   local body = "username=" .. name .. "&password=not-the-password"
   return wrk.format("POST", "/auth/token", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
   }, body)
end

math.randomseed(os.time())
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
