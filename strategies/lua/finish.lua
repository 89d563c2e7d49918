-- Ends one order's reservation: 'settle' (PostgreSQL holds the order: the units stop being in
-- flight) or 'release' (it never will: they go back on the shelf). Only the call that removes the
-- record moves units, so finishing twice, or finishing a reservation Redis lost, moves nothing and
-- no in-flight counter can go below zero.
-- KEYS[1]: reservations hash; KEYS[2]: deadlines; KEYS[3..2+n]: stock keys; KEYS[3+n..2+2n]:
-- in-flight keys. ARGV[1]: order id; ARGV[2]: 'settle' | 'release'; ARGV[3..2+n]: quantities.
-- Returns 1 when it moved the units, 0 when the order held no reservation, and -i when stock key
-- i is missing: nothing moves then, so a recovery running meanwhile sees a frozen set of holds.
local n = (#KEYS - 2) / 2
local order, action = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[1], order) == 0 then
  return 0
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 0 then
    return -i
  end
end
redis.call('HDEL', KEYS[1], order)
redis.call('ZREM', KEYS[2], order)
for i = 1, n do
  if action == 'release' then
    redis.call('INCRBY', KEYS[2 + i], ARGV[2 + i])
  end
  redis.call('DECRBY', KEYS[2 + n + i], ARGV[2 + i])
end
return 1
