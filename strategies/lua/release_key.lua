-- Frees an idempotency key, but only if it still names this order.
-- KEYS[1]: the idempotency key; ARGV[1]: the order id that claimed it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
