-- Finishes stream entries once PostgreSQL committed (or the worker gave up on) them, atomically:
-- forget the pending order and its take decision (only stream-deferred records one), move the
-- units the order still holds, and XACK + XDEL the entry. Actions: 'settle' (persisted: the units are no longer in
-- flight), 'release' (not persisted: they go back on the shelf), 'dead' (release, and copy the
-- entry to the dead-letter stream).
-- An order holds units while its pending record exists (guard 'reserved': reserved at purchase)
-- or while its take decision says 'taken' (guard 'taken': taken by the worker). Both records go
-- in the same call that moves the units, so finishing an entry twice moves them once.
-- KEYS[1]: stream; KEYS[2]: pending hash; KEYS[3]: take decisions; KEYS[4]: dead-letter stream;
-- KEYS[5..4+m]: stock keys; KEYS[5+m..4+2m]: in-flight keys.
-- ARGV[1]: group; ARGV[2]: guard; ARGV[3]: m; then per entry: entry id, order id ('' when
-- unknown), action, payload, reason, deliveries, line count k, and k pairs (key index, quantity).
-- Returns how many entries still held units.
-- Returns -j, moving nothing, when stock key j is missing: holds must not end while a recovery
-- may be counting them (the caller recovers the key and settles again).
local group, guard, m = ARGV[1], ARGV[2], tonumber(ARGV[3])
for j = 1, m do
  if redis.call('EXISTS', KEYS[4 + j]) == 0 then
    return -j
  end
end
-- The units move once per product and the entries are acknowledged and deleted in one XACK and
-- one XDEL per chunk, after the loop: the script runs whole, so this reads the same as doing it
-- entry by entry, and a batch of hundreds costs a few commands instead of a few per entry.
local held = 0
local shelf, inflight = {}, {}
local entries = {}
local at = 4
while at <= #ARGV do
  local entry, order, action = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local k = tonumber(ARGV[at + 6])
  local first = at + 7
  local holds = false
  if order ~= '' then
    local was_pending = redis.call('HDEL', KEYS[2], order) == 1
    if guard == 'reserved' then
      holds = was_pending
    else
      local taken = redis.call('HGET', KEYS[3], order)
      if taken then
        redis.call('HDEL', KEYS[3], order)
      end
      holds = taken == 'taken'
    end
  end
  if holds then
    held = held + 1
    for i = 0, k - 1 do
      local j = tonumber(ARGV[first + 2 * i])
      local quantity = tonumber(ARGV[first + 2 * i + 1])
      if action ~= 'settle' then
        shelf[j] = (shelf[j] or 0) + quantity
      end
      inflight[j] = (inflight[j] or 0) + quantity
    end
  end
  if action == 'dead' then
    redis.call('XADD', KEYS[4], '*', 'entry_id', entry, 'order_id', order, 'payload', ARGV[at + 3],
      'reason', ARGV[at + 4], 'deliveries', ARGV[at + 5])
  end
  entries[#entries + 1] = entry
  at = first + 2 * k
end
for j, quantity in pairs(shelf) do
  redis.call('INCRBY', KEYS[4 + j], quantity)
end
for j, quantity in pairs(inflight) do
  redis.call('DECRBY', KEYS[4 + m + j], quantity)
end
-- unpack is bounded by Lua's C stack: chunks of 1,000 ids stay well inside it.
for from = 1, #entries, 1000 do
  local to = math.min(from + 999, #entries)
  -- A reset deletes the group with the stream; the entries are gone then and there is nothing to ack.
  redis.pcall('XACK', KEYS[1], group, unpack(entries, from, to))
  redis.call('XDEL', KEYS[1], unpack(entries, from, to))
end
return held
