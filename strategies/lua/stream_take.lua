-- The stream-deferred worker's decision for a batch of accepted orders, in stream order: take
-- every line of an order from the shelf, or record that it no longer fits. The decision is kept
-- per order id until the entry is settled, so a redelivered order gets the same answer and never
-- takes twice.
-- KEYS[1]: take decisions (order id -> 'taken' | 'short'); KEYS[2..1+m]: stock keys;
-- KEYS[2+m..1+2m]: in-flight keys.
-- ARGV[1]: m; then per order: order id, line count k, and k pairs (stock key index 1..m, quantity).
-- Returns one decision per order, in order. It stops early with 'missing:<j>' when stock key j is
-- missing, deciding nothing for that order or the ones after it (the caller recovers the key and
-- runs the batch again; decided orders then answer from their record).
local m = tonumber(ARGV[1])
local decisions = {}
local at = 2
while at <= #ARGV do
  local order = ARGV[at]
  local k = tonumber(ARGV[at + 1])
  local first = at + 2
  at = first + 2 * k
  local prior = redis.call('HGET', KEYS[1], order)
  if prior then
    decisions[#decisions + 1] = prior
  else
    local fits = true
    for i = 0, k - 1 do
      local j = tonumber(ARGV[first + 2 * i])
      local stock = redis.call('GET', KEYS[1 + j])
      if not stock then
        decisions[#decisions + 1] = 'missing:' .. j
        return decisions
      end
      if tonumber(stock) < tonumber(ARGV[first + 2 * i + 1]) then
        fits = false
      end
    end
    if fits then
      for i = 0, k - 1 do
        local j = tonumber(ARGV[first + 2 * i])
        local quantity = ARGV[first + 2 * i + 1]
        redis.call('DECRBY', KEYS[1 + j], quantity)
        redis.call('INCRBY', KEYS[1 + m + j], quantity)
      end
      redis.call('HSET', KEYS[1], order, 'taken')
      decisions[#decisions + 1] = 'taken'
    else
      redis.call('HSET', KEYS[1], order, 'short')
      decisions[#decisions + 1] = 'short'
    end
  end
end
return decisions
