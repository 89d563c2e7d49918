-- Puts a missing stock key back: PostgreSQL's stock minus the units of holds PostgreSQL does not
-- hold yet, computed by the caller from one snapshot. Holds cannot change while the key is
-- missing (every script that takes or finishes one refuses then), so the value is exact unless a
-- hold the caller listed is gone, in which case nothing is written and the caller starts again.
-- KEYS[1]: stock key; KEYS[2]: in-flight key; KEYS[3]: resync set; KEYS[4..]: the hash holding each
-- listed hold, in order.
-- ARGV[1]: the value to set; ARGV[2]: in-flight units of every listed hold; ARGV[3]: product id;
-- ARGV[4..]: the listed holds' order ids, in KEYS order.
-- Returns {1, value} when it wrote, {0, value} when the key exists already (another recovery won),
-- {-1} when a listed hold is gone.
local current = redis.call('GET', KEYS[1])
if current then
  return {0, tonumber(current)}
end
for i = 4, #KEYS do
  if redis.call('HEXISTS', KEYS[i], ARGV[i]) == 0 then
    return {-1}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
-- Purchases in flight when Redis lost its data may still commit to PostgreSQL: look again once
-- the product is quiet.
redis.call('SADD', KEYS[3], ARGV[3])
return {1, tonumber(ARGV[1])}
