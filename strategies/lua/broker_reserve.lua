-- Reserves one queue-nats order before it is published to the broker, all or nothing: every
-- line's units taken and the pending record written. Idempotency keys are claimed in PostgreSQL
-- before this runs.
-- KEYS[1]: pending hash (order id -> payload); KEYS[2..1+n]: stock keys; KEYS[2+n..1+2n]:
-- in-flight keys.
-- ARGV[1]: order id; ARGV[2]: payload (JSON); ARGV[3..2+n]: quantities to reserve.
-- Returns {0, ''} when reserved, {1, i} when line i is short of stock, {2, i} when line i's stock
-- key is missing (the caller recovers it from PostgreSQL and tries again). Only {0, ...} writes.
local n = #ARGV - 2
for i = 1, n do
  local stock = redis.call('GET', KEYS[1 + i])
  if not stock then
    return {2, tostring(i)}
  end
  if tonumber(stock) < tonumber(ARGV[2 + i]) then
    return {1, tostring(i)}
  end
end
for i = 1, n do
  redis.call('DECRBY', KEYS[1 + i], ARGV[2 + i])
  redis.call('INCRBY', KEYS[1 + n + i], ARGV[2 + i])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {0, ''}
