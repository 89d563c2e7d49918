-- Ends queue-nats orders in Redis, each one atomically: forget the pending record and move the
-- units it held. Actions: 'settle' (PostgreSQL holds the order: the units are no longer in
-- flight) and 'release' (it never will: they go back on the shelf). An order holds units while its
-- pending record exists, and the record goes in the call that moves them, so ending an order
-- twice moves its units once.
-- KEYS[1]: pending hash; KEYS[2..1+m]: stock keys; KEYS[2+m..1+2m]: in-flight keys.
-- ARGV[1]: m; then per order: order id, action, line count k, and k pairs (key index, quantity).
-- Returns how many orders still held units, or -j, moving nothing, when stock key j is missing:
-- holds must not end while a recovery may be counting them (the caller recovers the key and
-- ends them again).
local m = tonumber(ARGV[1])
for j = 1, m do
  if redis.call('EXISTS', KEYS[1 + j]) == 0 then
    return -j
  end
end
local held = 0
local at = 2
while at <= #ARGV do
  local order, action, k = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local first = at + 3
  if redis.call('HDEL', KEYS[1], order) == 1 then
    held = held + 1
    for i = 0, k - 1 do
      local j = tonumber(ARGV[first + 2 * i])
      local quantity = ARGV[first + 2 * i + 1]
      if action == 'release' then
        redis.call('INCRBY', KEYS[1 + j], quantity)
      end
      redis.call('DECRBY', KEYS[1 + m + j], quantity)
    end
  end
  at = first + 2 * k
end
return held
