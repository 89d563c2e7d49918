-- Rewrites a quiet product's mirror from PostgreSQL: only if nothing moved since the caller read
-- the shelf (same stock) and no unit is in flight, so no purchase is counted twice or missed.
-- KEYS[1]: stock key; KEYS[2]: in-flight key; KEYS[3]: resync set.
-- ARGV[1]: the stock the caller saw; ARGV[2]: PostgreSQL's stock; ARGV[3]: product id.
-- Returns 1 when written (or already equal), 0 when the product was busy.
local stock = redis.call('GET', KEYS[1])
local inflight = tonumber(redis.call('GET', KEYS[2]) or '0')
if stock ~= ARGV[1] or inflight ~= 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[3])
return 1
