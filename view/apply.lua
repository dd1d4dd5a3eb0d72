-- Apply one aggregator batch, all or nothing (write.go describes the arguments and keys).
--
-- Redis does not roll back a script that fails part-way: every write made before an error stays.
-- So this script runs in two halves. The first decodes, checks and computes everything that can
-- fail — the sections, the stored offsets, the type of every key it will write, the current
-- scores — and writes nothing. The second only writes, with arguments already known to be good,
-- and writes the partitions' offsets last.
--
-- KEYS: 1 users, 2 hotels, 3 advertisers (sorted sets, score = -count), 4 offsets hash,
--       5 index of hotels with min prices.
-- ARGV (each section one JSON document, decoded by cjson):
--   1 min-price key prefix
--   2 [[partition, expected stored offset or -1 for none, next offset], ...]
--   3, 4, 5 increments for KEYS 1..3: [member, increment, member, increment, ...]
--   6 minimum prices: [hotel, [price, advertiser, price, advertiser, ...], hotel, [...], ...]
--   7 source watermarks: [[partition, source partition, highest source offset], ...]
--   8 key prefix of the per-partition source hashes
-- Returns an empty array when applied, or pairs (partition, stored offset or -1) for every
-- partition whose stored offset differs from the expected one; then nothing is written.
-- Errors (nothing written): "VIEWKEY <type> <key>" when a key every batch writes has the wrong
-- type, "HOTELKEY <type> <hotel>" when one hotel's min-price key has.

-- Members per variadic call: unpack has a limit (about 8,000 values on Redis 7, fewer in
-- miniredis's gopher-lua).
local chunk = 500

-- First half: decode, check, compute. No write.
local offsets = cjson.decode(ARGV[2])
local incs = {cjson.decode(ARGV[3]), cjson.decode(ARGV[4]), cjson.decode(ARGV[5])}
local mins = cjson.decode(ARGV[6])
local marks = cjson.decode(ARGV[7])

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
-- The offsets first: a batch another writer already applied is a conflict, whatever else it meets.
local e = check(KEYS[4], 'hash', 'VIEWKEY', KEYS[4])
if e then return e end
local conflicts = {}
for _, o in ipairs(offsets) do
  local stored = redis.call('HGET', KEYS[4], o[1])
  local have = -1
  if stored then have = tonumber(stored) end
  if have ~= o[2] then
    conflicts[#conflicts + 1] = o[1]
    conflicts[#conflicts + 1] = have
  end
end
if #conflicts > 0 then
  return conflicts
end

for i = 1, 3 do
  e = check(KEYS[i], 'zset', 'VIEWKEY', KEYS[i])
  if e then return e end
end
e = check(KEYS[5], 'zset', 'VIEWKEY', KEYS[5])
if e then return e end
local markKeys = {}
for _, m in ipairs(marks) do
  local key = ARGV[8] .. m[1]
  if not markKeys[key] then
    markKeys[key] = true
    e = check(key, 'hash', 'VIEWKEY', key)
    if e then return e end
  end
end
for h = 1, #mins, 2 do
  e = check(ARGV[1] .. mins[h], 'zset', 'HOTELKEY', mins[h])
  if e then return e end
end

-- The new scores of the counts: read the current ones a chunk at a time (ZMSCORE), add the
-- increments, keep the score/member pairs for the second half.
local writes = {}
for z = 1, 3 do
  local inc = incs[z]
  for c = 1, #inc, 2 * chunk do
    local last = math.min(c + 2 * chunk - 1, #inc)
    local members = {}
    for i = c, last, 2 do
      members[#members + 1] = inc[i]
    end
    local current = redis.call('ZMSCORE', KEYS[z], unpack(members))
    local scored = {}
    for j = 1, #members do
      local score = -inc[c + 2 * j - 1]
      if current[j] then
        score = score + tonumber(current[j])
      end
      scored[2 * j - 1] = score
      scored[2 * j] = members[j]
    end
    writes[#writes + 1] = {KEYS[z], scored}
  end
end

-- Second half: write. Nothing below can fail on a key's type or an argument's shape.
for _, w in ipairs(writes) do
  redis.call('ZADD', w[1], unpack(w[2]))
end
-- Minimum prices: ZADD LT only ever lowers a score.
local index = {}
for h = 1, #mins, 2 do
  local prices = mins[h + 1]
  for c = 1, #prices, 2 * chunk do
    local part = {}
    for i = c, math.min(c + 2 * chunk - 1, #prices) do
      part[#part + 1] = prices[i]
    end
    redis.call('ZADD', ARGV[1] .. mins[h], 'LT', unpack(part))
  end
  index[#index + 1] = 0
  index[#index + 1] = mins[h]
  if #index >= 2 * chunk then
    redis.call('ZADD', KEYS[5], unpack(index))
    index = {}
  end
end
if #index > 0 then
  redis.call('ZADD', KEYS[5], unpack(index))
end
for _, m in ipairs(marks) do
  redis.call('HSET', ARGV[8] .. m[1], m[2], m[3])
end
for _, o in ipairs(offsets) do
  redis.call('HSET', KEYS[4], o[1], o[3])
end
return {}
