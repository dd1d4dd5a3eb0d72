package view

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/redis/rueidis"
	"github.com/searchflow/searchflow/trends"
)

// The operator's side of the view: a whole shard read at one instant (for `searchflow verify`),
// and the removal of the stored layout (for `searchflow rebuild --all`).

// dumpLua reads one shard in one read-only script, so that its offset and its contents are of
// the same instant even while its aggregator writes. Every key it reads is in the shard's slot. It
// declares them in KEYS where the caller can know them: a hotel shard's caller declares the hotels
// of the price index it read just before. A hotel indexed in between (an aggregator indexes one
// with its first price), and the trend buckets (which ones exist depends on the stream time the
// script finds), are read by their names, which carry the shard's hash tag: Redis lets a script
// read an undeclared key of its own slot. So the read settles in one call however the shard moves.
//
// KEYS: 1 state, 2 sources, 3 .. 2+k the count sets; hotel shards then: 3+k the price index,
// 4+k .. one min-price key per hotel of ARGV, in its order, then one cheapest-per-search key per
// hotel of ARGV, in its order; then the trend keys (trenddump.go).
// ARGV: 1 k, 2 "1" when the shard has a price index, 3 the trend windows declared ("" for none,
// see trenddump.go), 4 and 5 the shard's min-price and cheapest-per-search key prefixes, 6 .. the
// declared hotels.
// Returns {"ok", state, sources, index, count set 1 .. k, min prices of each hotel of the index,
// cheapest-per-search prices of each hotel of the index, then per trend window {first bucket,
// last bucket} open at the stored stream time, its sums and those buckets (trenddump.go)}:
// hashes as flat field/value lists, sorted sets as flat member/score lists (the index as members
// only). No call spreads a list over arguments (no unpack), so no list is too long for it.
// Errors: "VIEWKEY <type> <key>" when a key holds another type than the view writes there.
const dumpLua = `
local k = tonumber(ARGV[1])
local function check(key, kind)
  local t = redis.call('TYPE', key)
  if type(t) == 'table' then t = t['ok'] end
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('VIEWKEY ' .. t .. ' ' .. key)
  end
end
local e = check(KEYS[1], 'hash') or check(KEYS[2], 'hash')
if e then return e end
local index, declared, n = {}, {}, #ARGV - 5
if ARGV[2] == '1' then
  e = check(KEYS[3 + k], 'zset')
  if e then return e end
  index = redis.call('ZRANGE', KEYS[3 + k], 0, -1)
  for i = 6, #ARGV do declared[ARGV[i]] = i - 5 end
end
local out = {'ok', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), index}
for i = 1, k do
  e = check(KEYS[2 + i], 'zset')
  if e then return e end
  out[#out + 1] = redis.call('ZRANGE', KEYS[2 + i], 0, -1, 'WITHSCORES')
end
for scope = 0, 1 do
  for _, hotel in ipairs(index) do
    local key = ARGV[4 + scope] .. hotel
    if declared[hotel] then key = KEYS[3 + k + scope * n + declared[hotel]] end
    e = check(key, 'zset')
    if e then return e end
    out[#out + 1] = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  end
end
if ARGV[3] == '' then return out end
local st = tonumber(redis.call('HGET', KEYS[1], 'stream') or '')
for _, w in ipairs(cjson.decode(ARGV[3])) do
  -- w: {window seconds, bucket seconds, first sum key, kinds, 1 with minimums, minimum hash prefix}
  local first, last = 0, -1
  if st then first, last = math.floor((st - w[1]) / w[2]), math.floor(st / w[2]) end
  out[#out + 1] = {first, last}
  local function read(key, kind)
    e = check(key, kind)
    if e then return e end
    if kind == 'zset' then
      out[#out + 1] = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    else
      out[#out + 1] = redis.call('HGETALL', key)
    end
  end
  for i = 0, w[4] - 1 do
    e = read(KEYS[w[3] + i], 'zset')
    if e then return e end
  end
  for b = first, last do
    for i = 0, w[4] - 1 do
      e = read(KEYS[w[3] + i] .. ':' .. b, 'hash')
      if e then return e end
    end
    if w[5] == 1 then
      e = read(w[6] .. b, 'hash')
      if e then return e end
    end
  end
end
return out
`

// ShardDump is one shard as it was at one instant: its offset and everything it counts.
type ShardDump struct {
	Shard Shard
	// Next is the next offset of the shard's partition the shard does not hold yet; NoOffset when
	// it holds nothing.
	Next int64
	// Rebuilding is set while ResetShard empties the shard, or after a reset that stopped
	// half-way: the contents are then partly deleted.
	Rebuilding bool
	// Sources is the highest raw offset applied through the shard, per raw partition.
	Sources map[int32]int64
	// Counts holds, per kind the shard counts (Users; or Hotels and Advertisers), each id's count.
	Counts map[Kind]map[string]int64
	// PricedHotels is the hotel shard's index of hotels with prices, in id order.
	PricedHotels []string
	// MinPrices is each indexed hotel's lowest price per advertiser (a hotel whose key is empty
	// or missing is left out); Cheapest the same over each search's cheapest offer.
	MinPrices map[string]map[string]int64
	Cheapest  map[string]map[string]int64
	// Stream is the partition's stream time; Trends the shard's windows (trenddump.go), when
	// the view keeps trends.
	Stream trends.StreamTime
	Trends []WindowDump
}

// DamagedError reports a shard key that holds what the view never writes: another type, a
// count or price that is not an integer, an offset that is not a number. The shard could not
// be read whole.
type DamagedError struct {
	Shard   Shard
	Key     string
	Problem string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("view: shard %v is damaged: key %s %s", e.Shard, e.Key, e.Problem)
}

// ReadShard reads a shard whole at one instant, with one read-only script (EVAL_RO) whose keys
// are all in the shard's slot: on Redis Cluster it runs on the shard's master. The shard's
// offset and contents are therefore consistent even while its aggregator applies batches. It
// returns a *DamagedError for a key the view could not have written.
func (v *View) ReadShard(ctx context.Context, sh Shard) (ShardDump, error) {
	lua := rueidis.NewLuaScriptReadOnly(dumpLua)
	kinds := sh.Role.kinds()
	var hotels []string
	if sh.Role == HotelShards {
		idx, err := v.client.Do(ctx, v.client.B().Zrange().Key(sh.Key(minPriceHotelsKey)).Min("0").Max("-1").Build()).AsStrSlice()
		var reply *rueidis.RedisError
		if errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "WRONGTYPE") {
			return ShardDump{}, &DamagedError{Shard: sh, Key: sh.Key(minPriceHotelsKey), Problem: "is not a sorted set"}
		}
		if err != nil {
			return ShardDump{}, fmt.Errorf("view: read the price index of shard %v: %w", sh, err)
		}
		hotels = idx
	}
	spec, err := v.TrendSpec(ctx)
	if err != nil {
		return ShardDump{}, fmt.Errorf("view: read shard %v: %w", sh, err)
	}
	keys := []string{sh.Key(stateKey), sh.Key(sourcesKey)}
	for _, k := range kinds {
		keys = append(keys, sh.Key(string(k)))
	}
	args := []string{strconv.Itoa(len(kinds)), "0", "", sh.Key(minPriceKeyPrefix), sh.Key(cheapestKeyPrefix)}
	if sh.Role == HotelShards {
		keys = append(keys, sh.Key(minPriceHotelsKey))
		args[1] = "1"
		for _, scope := range []PriceScope{EveryOffer, CheapestPerSearch} {
			for _, h := range hotels {
				keys = append(keys, sh.Key(scope.keyPrefix()+h))
			}
		}
		args = append(args, hotels...)
	}
	var trendKeys []trendDumpWindow
	keys, args[2], trendKeys = trendDumpKeys(spec, sh, keys)
	reply, err := lua.Exec(ctx, v.client, keys, args).ToArray()
	if err != nil {
		return ShardDump{}, dumpError(sh, err)
	}
	if len(reply) < 4 {
		return ShardDump{}, fmt.Errorf("view: read shard %v: %d parts in the script's reply", sh, len(reply))
	}
	// The index the script saw gives the order of the prices.
	if hotels, err = reply[3].AsStrSlice(); err != nil {
		return ShardDump{}, fmt.Errorf("view: read shard %v: price index: %w", sh, err)
	}
	want := 4 + len(kinds) + 2*len(hotels)
	if len(reply) < want {
		return ShardDump{}, fmt.Errorf("view: read shard %v: %d parts in the script's reply, want at least %d", sh, len(reply), want)
	}
	d, err := decodeDump(sh, kinds, hotels, reply[:want])
	if err != nil {
		return d, err
	}
	return d, d.decodeTrends(trendKeys, reply[want:])
}

// dumpError turns the script's VIEWKEY reply into a *DamagedError.
func dumpError(sh Shard, err error) error {
	var reply *rueidis.RedisError
	if errors.As(err, &reply) {
		if code, rest, _ := strings.Cut(reply.Error(), " "); code == "VIEWKEY" {
			kind, key, _ := strings.Cut(rest, " ")
			return &DamagedError{Shard: sh, Key: key, Problem: "holds a " + kind}
		}
	}
	return fmt.Errorf("view: read shard %v: %w", sh, err)
}

// decodeDump reads the script's "ok" reply: state, sources, index, the count sets of kinds,
// then the min prices of hotels, then their cheapest-per-search prices.
func decodeDump(sh Shard, kinds []Kind, hotels []string, reply []rueidis.RedisMessage) (ShardDump, error) {
	d := ShardDump{Shard: sh, Next: NoOffset, Sources: map[int32]int64{}, Counts: map[Kind]map[string]int64{},
		MinPrices: map[string]map[string]int64{}, Cheapest: map[string]map[string]int64{}}
	if want := 4 + len(kinds) + 2*len(hotels); len(reply) != want {
		return d, fmt.Errorf("view: read shard %v: %d parts in the script's reply, want %d", sh, len(reply), want)
	}
	lists := make([][]string, len(reply)-1)
	for i := range lists {
		l, err := reply[i+1].AsStrSlice()
		if err != nil {
			return d, fmt.Errorf("view: read shard %v: part %d of the reply: %w", sh, i+1, err)
		}
		lists[i] = l
	}
	if err := d.decodeState(lists[0], lists[1]); err != nil {
		return d, err
	}
	d.PricedHotels = lists[2]
	for i, k := range kinds {
		counts, err := scores(sh, sh.Key(string(k)), lists[3+i], true)
		if err != nil {
			return d, err
		}
		d.Counts[k] = counts
	}
	for s, byHotel := range []map[string]map[string]int64{d.MinPrices, d.Cheapest} {
		scope := PriceScope(s)
		for i, h := range hotels {
			prices, err := scores(sh, sh.Key(scope.keyPrefix()+h), lists[3+len(kinds)+s*len(hotels)+i], false)
			if err != nil {
				return d, err
			}
			if len(prices) > 0 {
				byHotel[h] = prices
			}
		}
	}
	return d, nil
}

// decodeState reads the state and sources hashes, each a flat field/value list.
func (d *ShardDump) decodeState(state, sources []string) error {
	for i := 0; i+1 < len(state); i += 2 {
		switch state[i] {
		case "next":
			n, err := strconv.ParseInt(state[i+1], 10, 64)
			if err != nil {
				return &DamagedError{Shard: d.Shard, Key: d.Shard.Key(stateKey), Problem: fmt.Sprintf("has next = %q, not an offset", state[i+1])}
			}
			d.Next = n
		case "rebuilding":
			d.Rebuilding = true
		case streamField:
			t, err := strconv.ParseInt(state[i+1], 10, 64)
			if err != nil {
				return &DamagedError{Shard: d.Shard, Key: d.Shard.Key(stateKey), Problem: fmt.Sprintf("has stream = %q, not a time", state[i+1])}
			}
			d.Stream = trends.StreamTime{T: t, Set: true}
		}
	}
	for i := 0; i+1 < len(sources); i += 2 {
		p, err1 := strconv.ParseInt(sources[i], 10, 32)
		o, err2 := strconv.ParseInt(sources[i+1], 10, 64)
		if err1 != nil || err2 != nil {
			return &DamagedError{Shard: d.Shard, Key: d.Shard.Key(sourcesKey),
				Problem: fmt.Sprintf("has %q = %q, not a partition and an offset", sources[i], sources[i+1])}
		}
		d.Sources[int32(p)] = o
	}
	return nil
}

// scores reads a flat member/score list; negate for the count sets, whose score is -count. A
// score that is not an integer the view could have written makes the key damaged.
func scores(sh Shard, key string, flat []string, negate bool) (map[string]int64, error) {
	out := make(map[string]int64, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		f, err := strconv.ParseFloat(flat[i+1], 64)
		if negate {
			f = -f
		}
		if err != nil || f != math.Trunc(f) || math.Abs(f) > MaxExactScore {
			return nil, &DamagedError{Shard: sh, Key: key, Problem: fmt.Sprintf("scores %q with %s, not an integer of at most 2^53", flat[i], flat[i+1])}
		}
		out[flat[i]] = int64(f)
	}
	return out, nil
}

// DeleteLayout deletes the stored layout and every key of a layout-1 view ({searchflow}:*,
// found by SCAN on every node and deleted through the client, so a cluster routes each DEL to
// its master). The next writer to Claim then stores its own layout. It does not touch the
// shards: reset them first (ResetShard), or their keys outlive the layout they belong to. It
// returns the number of keys deleted.
func (v *View) DeleteLayout(ctx context.Context) (int, error) {
	deleted := 0
	for _, node := range v.client.Nodes() {
		n, err := deleteMatching(ctx, node, legacyPrefix, "", func(ctx context.Context, keys []string) (int64, error) {
			return v.client.Do(ctx, v.client.B().Del().Key(keys...).Build()).AsInt64()
		})
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("view: delete the layout-1 keys: %w", err)
		}
	}
	n, err := v.client.Do(ctx, v.client.B().Del().Key(layoutKey).Build()).AsInt64()
	if err != nil {
		return deleted, fmt.Errorf("view: delete the layout: %w", err)
	}
	v.mu.Lock()
	if !v.claimed {
		v.shards = nil // a reader must not go on using the deleted layout
	}
	v.mu.Unlock()
	return deleted + int(n), nil
}

// legacyPrefix is the hash tag every key of a layout-1 view starts with.
const legacyPrefix = "{searchflow}:"
