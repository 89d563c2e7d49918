-- Takes every line of one order and records the reservation, tied to its order id and deadline.
-- KEYS[1]: reservations hash; KEYS[2]: deadlines sorted set; KEYS[3..2+n]: stock keys;
-- KEYS[3+n..2+2n]: in-flight keys.
-- ARGV[1]: order id; ARGV[2]: record (`strategy;id:qty;…`); ARGV[3]: time to live in ms;
-- ARGV[4]: 'check' (take all or nothing: redis-lua) or 'decr' (decrement without looking, the
-- caller gives it back when a counter went negative: redis-decr); ARGV[5..4+n]: quantities.
-- Returns {0, left_1, …, left_n} when taken, {1, i} when line i is short of stock ('check'),
-- {2, i} when line i's stock key is missing (the caller recovers it and tries again), {3} when
-- this order already holds a reservation. Only {0, …} writes anything.
local n = (#KEYS - 2) / 2
local order, record, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('HEXISTS', KEYS[1], order) == 1 then
  return {3}
end
for i = 1, n do
  local stock = redis.call('GET', KEYS[2 + i])
  if not stock then
    return {2, i}
  end
  if mode == 'check' and tonumber(stock) < tonumber(ARGV[4 + i]) then
    return {1, i}
  end
end
local reply = {0}
for i = 1, n do
  reply[#reply + 1] = redis.call('DECRBY', KEYS[2 + i], ARGV[4 + i])
  redis.call('INCRBY', KEYS[2 + n + i], ARGV[4 + i])
end
local now = redis.call('TIME')
local deadline = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl
redis.call('HSET', KEYS[1], order, record)
redis.call('ZADD', KEYS[2], deadline, order)
return reply
