-- Accepts one order into a strategy's stream, all or nothing: the reservation of every line (none
-- for stream-deferred), the pending record and the stream entry. Idempotency keys are claimed in
-- PostgreSQL before this runs.
-- KEYS[1]: pending hash (order id -> payload); KEYS[2]: stream; KEYS[3..2+n]: stock keys;
-- KEYS[3+n..2+2n]: in-flight keys.
-- ARGV[1]: order id; ARGV[2]: payload (JSON); ARGV[3..2+n]: quantities to reserve.
-- Returns {0, entry id} when accepted, {1, i} when line i is short of stock, {2, i} when line i's
-- stock key is missing (the caller recovers it from PostgreSQL and tries again). Only {0, ...}
-- writes anything.
local n = #ARGV - 2
for i = 1, n do
  local stock = redis.call('GET', KEYS[2 + i])
  if not stock then
    return {2, tostring(i)}
  end
  if tonumber(stock) < tonumber(ARGV[2 + i]) then
    return {1, tostring(i)}
  end
end
for i = 1, n do
  redis.call('DECRBY', KEYS[2 + i], ARGV[2 + i])
  redis.call('INCRBY', KEYS[2 + n + i], ARGV[2 + i])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local entry = redis.call('XADD', KEYS[2], '*', 'order_id', ARGV[1], 'payload', ARGV[2])
return {0, entry}
