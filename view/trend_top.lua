-- Read one shard's part of a window (view/trendread.go): its counts over the buckets from the
-- query's first bucket on, read atomically with the stream time that decides which buckets the
-- shard's sum holds.
--
-- KEYS: 1 state hash, 2 the window's sum of the kind, 3 .. the buckets (hashes, id -> events)
--       before the query's first bucket that the sum still holds (the caller derives them from
--       the stream time it read).
-- ARGV: 1 window seconds, 2 bucket seconds, 3 the first open bucket the caller derived ("" when
--       the partition had no stream time), 4 members wanted (-1: all).
-- Returns {"moved"} when the stored stream time opens another first bucket than ARGV[3] (read
-- again), else {stream time or "", number of ids, id, -count, id, -count, ...}: with no bucket to
-- subtract the first ARGV[4] ids of the sum in its order; otherwise, unordered, at least the
-- ARGV[4] ids with the highest counts once those buckets are subtracted.

local st = redis.call('HGET', KEYS[1], 'stream')
local open = ''
if st then
  open = math.floor((tonumber(st) - tonumber(ARGV[1])) / tonumber(ARGV[2]))
end
if (st and tonumber(ARGV[3]) ~= open) or (not st and ARGV[3] ~= '') then
  return {'moved'}
end
local want = tonumber(ARGV[4])
local sum = KEYS[2]
local total = redis.call('ZCARD', sum)
if #KEYS == 2 then
  local out = {st or '', total}
  for _, v in ipairs(redis.call('ZRANGE', sum, 0, want - 1 < 0 and -1 or want - 1, 'WITHSCORES')) do
    out[#out + 1] = v
  end
  return out
end

-- The counts to take off: the buckets before the query's.
local off, members = {}, {}
for i = 3, #KEYS do
  local r = redis.call('HGETALL', KEYS[i])
  for j = 1, #r, 2 do
    if not off[r[j]] then members[#members + 1] = r[j] end
    off[r[j]] = (off[r[j]] or 0) + tonumber(r[j + 1])
  end
end
-- Ids whose whole count was in those buckets are not in the window.
local chunk = 500
for c = 1, #members, chunk do
  local part = {}
  for i = c, math.min(c + chunk - 1, #members) do part[#part + 1] = members[i] end
  local scores = redis.call('ZMSCORE', sum, unpack(part))
  for j, m in ipairs(part) do
    if scores[j] and -tonumber(scores[j]) == off[m] then total = total - 1 end
  end
end

-- The top ids: walk the sum in its order (count descending); an id's count in the window is its
-- sum's less what is taken off, so the walk can stop once `want` ids have a window count above
-- the sum's count where it stands: no id further on can pass them.
local out, above, from, page = {st or '', total}, {}, 0, math.max(want, 100)
while true do
  local r = redis.call('ZRANGE', sum, from, from + page - 1, 'WITHSCORES')
  if #r == 0 then break end
  for j = 1, #r, 2 do
    local n = -tonumber(r[j + 1]) - (off[r[j]] or 0)
    if n > 0 then
      out[#out + 1] = r[j]
      out[#out + 1] = -n
      above[#above + 1] = n
    end
  end
  local bound = -tonumber(r[#r])
  if want >= 0 then
    local higher = 0
    for _, n in ipairs(above) do
      if n > bound then higher = higher + 1 end
    end
    if higher >= want then break end
  end
  from, page = from + page, page * 2
end
return out
