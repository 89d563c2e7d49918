-- Takes every line of one order, or none.
-- KEYS[1..n]: stock keys; KEYS[n+1..2n]: in-flight keys; ARGV[1..n]: quantities.
-- Returns {0} when reserved, {1, i} when line i is short of stock, {2, i} when line i's stock
-- key is missing (the caller recovers it from PostgreSQL and tries again).
local n = #ARGV
for i = 1, n do
  local stock = redis.call('GET', KEYS[i])
  if not stock then
    return {2, i}
  end
  if tonumber(stock) < tonumber(ARGV[i]) then
    return {1, i}
  end
end
for i = 1, n do
  redis.call('DECRBY', KEYS[i], ARGV[i])
  redis.call('INCRBY', KEYS[n + i], ARGV[i])
end
return {0}
