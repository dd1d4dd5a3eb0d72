-- Apply one aggregator batch atomically (see view.go for the key layout).
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
local offsets = cjson.decode(ARGV[2])
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
for _, o in ipairs(offsets) do
  redis.call('HSET', KEYS[4], o[1], o[3])
end
for _, w in ipairs(cjson.decode(ARGV[7])) do
  redis.call('HSET', ARGV[8] .. w[1], w[2], w[3])
end

-- Counts: read the current scores of a chunk in one ZMSCORE and write the new ones in one
-- variadic ZADD, instead of one ZINCRBY per member (chunks stay below unpack's limit).
local chunk = 2000
for z = 1, 3 do
  local inc = cjson.decode(ARGV[2 + z])
  for c = 1, #inc, 2 * chunk do
    local last = math.min(c + 2 * chunk - 1, #inc)
    local members = {}
    for i = c, last, 2 do
      members[#members + 1] = inc[i]
    end
    local current = redis.call('ZMSCORE', KEYS[z], unpack(members))
    local pairs = {}
    for j = 1, #members do
      local score = -inc[c + 2 * j - 1]
      if current[j] then
        score = score + tonumber(current[j])
      end
      pairs[2 * j - 1] = score
      pairs[2 * j] = members[j]
    end
    redis.call('ZADD', KEYS[z], unpack(pairs))
  end
end

-- Minimum prices: one ZADD LT per hotel (it only ever lowers a score), and the hotel index in
-- chunks.
local mins = cjson.decode(ARGV[6])
local index = {}
for h = 1, #mins, 2 do
  redis.call('ZADD', ARGV[1] .. mins[h], 'LT', unpack(mins[h + 1]))
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
return {}
