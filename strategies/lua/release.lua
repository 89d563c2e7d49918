-- Gives back a reservation whose order could not be persisted.
-- KEYS[1..n]: stock keys; KEYS[n+1..2n]: in-flight keys; ARGV[1..n]: quantities.
local n = #ARGV
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[i])
  redis.call('DECRBY', KEYS[n + i], ARGV[i])
end
return n
