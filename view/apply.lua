-- Apply one aggregator batch atomically (see view.go for the key layout).
-- KEYS: 1 users, 2 hotels, 3 advertisers (sorted sets, score = -count), 4 offsets hash,
--       5 index of hotels with min prices.
-- ARGV: 1 min-price hash key prefix; 2 partition count n, then n triples
--       (partition, expected stored offset or -1 for none, next offset);
--       then for each of KEYS 1..3: a count m and m pairs (member, increment);
--       then a count k and k triples (hotel, advertiser, lowest price in the batch).
-- Returns an empty array when applied, or pairs (partition, stored offset or -1) for every
-- partition whose stored offset differs from the expected one; then nothing is written.
local n = tonumber(ARGV[2])
local conflicts = {}
local i = 3
for _ = 1, n do
  local stored = redis.call('HGET', KEYS[4], ARGV[i])
  local have = -1
  if stored then have = tonumber(stored) end
  if have ~= tonumber(ARGV[i + 1]) then
    conflicts[#conflicts + 1] = tonumber(ARGV[i])
    conflicts[#conflicts + 1] = have
  end
  i = i + 3
end
if #conflicts > 0 then
  return conflicts
end
i = 3
for _ = 1, n do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
  i = i + 3
end
for z = 1, 3 do
  local m = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, m do
    redis.call('ZINCRBY', KEYS[z], -tonumber(ARGV[i + 1]), ARGV[i])
    i = i + 2
  end
end
local k = tonumber(ARGV[i])
i = i + 1
for _ = 1, k do
  local key = ARGV[1] .. ARGV[i]
  local price = tonumber(ARGV[i + 2])
  local cur = redis.call('HGET', key, ARGV[i + 1])
  if not cur or tonumber(cur) > price then
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2])
  end
  redis.call('ZADD', KEYS[5], 0, ARGV[i])
  i = i + 3
end
return {}
