-- Apply one partition's part of an aggregator batch to its shard, all or nothing (write.go
-- describes the batch). Every key it touches is in KEYS and carries the shard's hash tag: one slot.
--
-- Redis does not roll back a script that fails part-way: every write made before an error stays.
-- So this script runs in two halves. The first decodes, checks and computes everything that can
-- fail — the sections, the stored offset, the type of every key it will write, the current
-- scores — and writes nothing. The second only writes, with arguments already known to be good,
-- and writes the partition's next offset last.
--
-- KEYS: 1 state hash ("next"), 2 sources hash, 3 .. 2+k the shard's count sorted sets
--       (score = -count); hotel shards then: 3+k index of hotels with min prices, 4+k .. one
--       min-price sorted set per hotel of the mins section, in its order, then one
--       cheapest-per-search sorted set per hotel of the wins section, in its order.
-- ARGV: 1 expected stored offset (-1: none), 2 next offset, 3 k,
--       4 .. 3+k increments for the count sets, each a JSON [member, increment, ...],
--       4+k minimum prices: JSON [hotel, [price, advertiser, ...], hotel, [...], ...],
--       5+k minimum winning prices (each search's cheapest offer), the same shape,
--       6+k source watermarks: JSON [source partition, highest source offset, ...],
--       7+k trends (view/trends.go): "" for none, or JSON [[window, ...], stream time], each window
--       [[sum key per kind], [[kind, bucket key, [id, n, ...] or 0: the all-time increments of the
--       kind], ...] increments,
--        [[kind, bucket key], ...] closing buckets, [[hash key, [hotel, [adv, "price", ...], ...]], ...]
--        minimums, [hash key, ...] closing minimum hashes]; keys are indexes into KEYS.
-- Returns an empty array when applied, or {stored offset or -1} when the stored offset is not the
-- expected one; then nothing is written.
-- Errors (nothing written): "VIEWKEY <type> <key>" when a key every batch writes has the wrong
-- type, "HOTELKEY <type> <hotel>" when one hotel's min-price key has.

-- Members per variadic call: unpack has a limit (about 8,000 values on Redis 7, fewer in
-- miniredis's gopher-lua).
local chunk = 500

local k = tonumber(ARGV[3])
-- First half: decode, check, compute. No write.
local incs = {}
for i = 1, k do
  incs[i] = cjson.decode(ARGV[3 + i])
end
local mins = cjson.decode(ARGV[4 + k])
local wins = cjson.decode(ARGV[5 + k])
local marks = cjson.decode(ARGV[6 + k])
local trend = nil
if ARGV[7 + k] and ARGV[7 + k] ~= '' then
  trend = cjson.decode(ARGV[7 + k])
end
-- The first key of the wins section's hotels.
local winKeys = 4 + k + #mins / 2

local function typeof(key)
  local t = redis.call('TYPE', key)
  if type(t) == 'table' then
    t = t['ok']
  end
  return t
end
local function check(key, kind, code, name)
  local t = typeof(key)
  if t ~= 'none' and t ~= kind then
    return redis.error_reply(code .. ' ' .. t .. ' ' .. name)
  end
end
local function checkTrendKeys(windows)
  for _, win in ipairs(windows) do
    local zsets, hashes = {}, {}
    for _, i in ipairs(win[1]) do zsets[#zsets + 1] = i end
    for _, inc in ipairs(win[2]) do hashes[#hashes + 1] = inc[2] end
    for _, c in ipairs(win[3]) do hashes[#hashes + 1] = c[2] end
    for _, m in ipairs(win[4]) do hashes[#hashes + 1] = m[1] end
    for _, i in ipairs(win[5]) do hashes[#hashes + 1] = i end
    for _, i in ipairs(zsets) do
      local err = check(KEYS[i], 'zset', 'VIEWKEY', KEYS[i])
      if err then return err end
    end
    for _, i in ipairs(hashes) do
      local err = check(KEYS[i], 'hash', 'VIEWKEY', KEYS[i])
      if err then return err end
    end
  end
end

-- The offset first: a batch another writer already applied is a conflict, whatever else it meets.
local e = check(KEYS[1], 'hash', 'VIEWKEY', KEYS[1])
if e then return e end
-- A shard being rebuilt (View.ResetShard) takes nothing until the rebuild has emptied it.
if redis.call('HEXISTS', KEYS[1], 'rebuilding') == 1 then
  return redis.error_reply('TRYAGAIN the shard is being rebuilt')
end
local stored = redis.call('HGET', KEYS[1], 'next')
local have = -1
if stored then have = tonumber(stored) end
if have ~= tonumber(ARGV[1]) then
  return {have}
end

e = check(KEYS[2], 'hash', 'VIEWKEY', KEYS[2])
if e then return e end
for i = 1, k do
  e = check(KEYS[2 + i], 'zset', 'VIEWKEY', KEYS[2 + i])
  if e then return e end
end
local index = KEYS[3 + k]
if #mins > 0 or #wins > 0 then
  e = check(index, 'zset', 'VIEWKEY', index)
  if e then return e end
end
for h = 1, #mins, 2 do
  e = check(KEYS[3 + k + (h + 1) / 2], 'zset', 'HOTELKEY', mins[h])
  if e then return e end
end
for h = 1, #wins, 2 do
  e = check(KEYS[winKeys + (h - 1) / 2], 'zset', 'HOTELKEY', wins[h])
  if e then return e end
end

if trend then
  e = checkTrendKeys(trend[1])
  if e then return e end
end

-- The new scores of the counts: read the current ones a chunk at a time (ZMSCORE), add the
-- increments, keep the score/member pairs for the second half.
local writes = {}
for z = 1, k do
  local inc = incs[z]
  for c = 1, #inc, 2 * chunk do
    local last = math.min(c + 2 * chunk - 1, #inc)
    local members = {}
    for i = c, last, 2 do
      members[#members + 1] = inc[i]
    end
    local current = redis.call('ZMSCORE', KEYS[2 + z], unpack(members))
    local scored = {}
    for j = 1, #members do
      local score = -inc[c + 2 * j - 1]
      if current[j] then
        score = score + tonumber(current[j])
      end
      scored[2 * j - 1] = score
      scored[2 * j] = members[j]
    end
    writes[#writes + 1] = {KEYS[2 + z], scored}
  end
end

-- Trends: each window's buckets (hashes, id -> events) take their increments, the window's sum
-- (a sorted set, score -events) takes them too, the closing buckets leave the sum and are deleted,
-- and the minimum hashes keep each advertiser's lowest price.
local zadds, zrems, hsets, dels = {}, {}, {}, {}
-- sumWrites computes the new scores of the sum key for the score deltas of members (score units:
-- an event is -1), queued for the second half.
local function sumWrites(sum, members, delta)
  for c = 1, #members, chunk do
    local part = {}
    for i = c, math.min(c + chunk - 1, #members) do part[#part + 1] = members[i] end
    local current = redis.call('ZMSCORE', sum, unpack(part))
    local scored, gone = {}, {}
    for j, m in ipairs(part) do
      local score = delta(m, c + j - 1) + (current[j] and tonumber(current[j]) or 0)
      if score < 0 then
        scored[#scored + 1] = score
        scored[#scored + 1] = m
      elseif current[j] then
        gone[#gone + 1] = m
      end
    end
    if #scored > 0 then zadds[#zadds + 1] = {sum, scored} end
    if #gone > 0 then zrems[#zrems + 1] = {sum, gone} end
  end
end
-- hashChunks calls fn(fields, values, values of the fields in hash key, first index) for each
-- chunk of a list [field, value, ...], and queues the field/value pairs fn returns for HSET.
local function hashChunks(key, list, fn)
  for c = 1, #list, 2 * chunk do
    local fields, values = {}, {}
    for i = c, math.min(c + 2 * chunk - 1, #list), 2 do
      fields[#fields + 1] = list[i]
      values[#values + 1] = list[i + 1]
    end
    hsets[#hsets + 1] = {key, fn(fields, values, redis.call('HMGET', key, unpack(fields)))}
  end
end
-- bucketWrites queues a bucket's new counts for an increment list [id, n, ...]; it returns the
-- ids in order.
local function bucketWrites(key, list)
  local ids = {}
  hashChunks(key, list, function(part, incs, current)
    local pairs_ = {}
    for j, m in ipairs(part) do
      pairs_[#pairs_ + 1] = m
      pairs_[#pairs_ + 1] = incs[j] + (current[j] and tonumber(current[j]) or 0)
      ids[#ids + 1] = m
    end
    return pairs_
  end)
  return ids
end
local function trendSums(win)
  -- The common case, one bucket per kind and none closing: the sum takes the increments as they
  -- are. Otherwise an id's deltas are gathered first, so that each sum member is written once.
  local simple = #win[3] == 0
  local seen = {}
  for _, inc in ipairs(win[2]) do
    if seen[inc[1]] then simple = false end
    seen[inc[1]] = true
  end
  local delta = {}
  for kind = 1, #win[1] do delta[kind] = {} end
  for _, inc in ipairs(win[2]) do
    local list = inc[3]
    if list == 0 then list = incs[inc[1]] end -- the window counts what the batch counts all time
    local ids = bucketWrites(KEYS[inc[2]], list)
    if simple then
      sumWrites(KEYS[win[1][inc[1]]], ids, function(_, i) return -list[2 * i] end)
    else
      local d = delta[inc[1]]
      for i, m in ipairs(ids) do d[m] = (d[m] or 0) - list[2 * i] end
    end
  end
  if simple then return end
  for _, c in ipairs(win[3]) do
    local d, key = delta[c[1]], KEYS[c[2]]
    local r = redis.call('HGETALL', key)
    for j = 1, #r, 2 do d[r[j]] = (d[r[j]] or 0) + tonumber(r[j + 1]) end
    dels[#dels + 1] = key
  end
  for kind, d in ipairs(delta) do
    local members = {}
    for m in pairs(d) do members[#members + 1] = m end
    sumWrites(KEYS[win[1][kind]], members, function(m) return d[m] end)
  end
end
local function trendMins(win)
  for _, m in ipairs(win[4]) do
    hashChunks(KEYS[m[1]], m[2], function(hotels, offers, current)
      local pairs_ = {}
      for j, hotel in ipairs(hotels) do
        local low = {}
        if current[j] then low = cjson.decode(current[j]) end
        local o = offers[j]
        for i = 1, #o, 2 do
          local held = low[o[i]]
          if not held or tonumber(o[i + 1]) < tonumber(held) then low[o[i]] = o[i + 1] end
        end
        pairs_[#pairs_ + 1] = hotel
        pairs_[#pairs_ + 1] = cjson.encode(low)
      end
      return pairs_
    end)
  end
  for _, i in ipairs(win[5]) do dels[#dels + 1] = KEYS[i] end
end
if trend then
  for _, win in ipairs(trend[1]) do
    trendSums(win)
    trendMins(win)
  end
end

-- Second half: write. Nothing below can fail on a key's type or an argument's shape.
for _, w in ipairs(writes) do
  redis.call('ZADD', w[1], unpack(w[2]))
end
-- Minimum prices, of every offer and of each search's cheapest: ZADD LT only ever lowers a
-- score. Every hotel with either is in the index.
local listed = {}
local function lower(section, firstKey)
  for h = 1, #section, 2 do
    local prices = section[h + 1]
    local key = KEYS[firstKey + (h - 1) / 2]
    for c = 1, #prices, 2 * chunk do
      local part = {}
      for i = c, math.min(c + 2 * chunk - 1, #prices) do
        part[#part + 1] = prices[i]
      end
      redis.call('ZADD', key, 'LT', unpack(part))
    end
    listed[#listed + 1] = 0
    listed[#listed + 1] = section[h]
    if #listed >= 2 * chunk then
      redis.call('ZADD', index, unpack(listed))
      listed = {}
    end
  end
end
lower(mins, 4 + k)
lower(wins, winKeys)
if #listed > 0 then
  redis.call('ZADD', index, unpack(listed))
end
for m = 1, #marks, 2 do
  redis.call('HSET', KEYS[2], marks[m], marks[m + 1])
end
for _, z in ipairs(zadds) do
  redis.call('ZADD', z[1], unpack(z[2]))
end
for _, z in ipairs(zrems) do
  redis.call('ZREM', z[1], unpack(z[2]))
end
for _, h in ipairs(hsets) do
  redis.call('HSET', h[1], unpack(h[2]))
end
for c = 1, #dels, chunk do
  redis.call('DEL', unpack(dels, c, math.min(c + chunk - 1, #dels)))
end
if trend then
  redis.call('HSET', KEYS[1], 'stream', trend[2])
end
redis.call('HSET', KEYS[1], 'next', ARGV[2])
return {}
