-- Reservations past their deadline, by Redis's own clock, at most ARGV[1] of them.
-- KEYS[1]: reservations hash; KEYS[2]: deadlines.
-- Returns a flat list: order id, record, order id, record, … A deadline whose record is gone is
-- dropped on the way.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ms, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, order in ipairs(due) do
  local record = redis.call('HGET', KEYS[1], order)
  if record then
    out[#out + 1] = order
    out[#out + 1] = record
  else
    redis.call('ZREM', KEYS[2], order)
  end
end
return out
