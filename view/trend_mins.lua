-- Read one shard's minimum prices of some hotels over a window's buckets (view/trendread.go),
-- atomically with the stream time that says which buckets exist.
--
-- KEYS: 1 state hash, 2 .. the minimum hashes of the buckets to read.
-- ARGV: 1 window seconds, 2 bucket seconds, 3 the first open bucket the caller derived, 4 .. the
--       hotels.
-- Returns {"moved"} when the stored stream time opens another first bucket than ARGV[3], else one
-- array per bucket: the hotels' JSON values in ARGV order (false where a bucket has none).

local st = redis.call('HGET', KEYS[1], 'stream')
if not st or math.floor((tonumber(st) - tonumber(ARGV[1])) / tonumber(ARGV[2])) ~= tonumber(ARGV[3]) then
  return {'moved'}
end
-- HMGET a chunk of hotels at a time: unpack has a limit (about 8,000 values on Redis 7, fewer in
-- miniredis's gopher-lua).
local chunk = 500
local out = {}
for i = 2, #KEYS do
  local values = {}
  for c = 4, #ARGV, chunk do
    for _, v in ipairs(redis.call('HMGET', KEYS[i], unpack(ARGV, c, math.min(c + chunk - 1, #ARGV)))) do
      values[#values + 1] = v
    end
  end
  out[#out + 1] = values
end
return out
