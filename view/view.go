// Package view owns searchflow's Redis view: the key schema, the aggregator's atomic batch apply
// and the reads the API serves. It is the only package that knows key names.
//
// Layout (all under the "{searchflow}:" prefix):
//
//	users, hotels, advertisers   sorted sets, member = id, score = -count (so that ZRANGE by rank
//	                             yields count descending, ties by id ascending)
//	minprice:<hotel>             sorted set, member = advertiser, score = lowest eurocents ever seen
//	                             for that hotel (ZADD LT keeps the minimum atomically)
//	minprice_hotels              sorted set of hotel ids with a min-price hash (score 0, id order)
//	offsets:<topic>              hash partition -> next offset already applied to this view
//	sources:<topic>:<partition>  hash source partition -> highest source offset applied from it
//	                             through that partition (see Batch.Sources)
package view

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/jsonw"
)

// The hash tag keeps every key in one slot, so the Lua apply is also valid on Redis Cluster.
const prefix = "{searchflow}:"

// Kind names one of the three counters the view keeps.
type Kind string

// The counted kinds, as the API names them.
const (
	Users       Kind = "users"
	Hotels      Kind = "hotels"
	Advertisers Kind = "advertisers"
)

func (k Kind) key() string { return prefix + string(k) }

const (
	minPricePrefix  = prefix + "minprice:"
	minPriceHotels  = prefix + "minprice_hotels"
	offsetKeyPrefix = prefix + "offsets:"
	sourceKeyPrefix = prefix + "sources:"
)

// cacheTTL bounds how long rueidis keeps a read in its client-side cache. Redis invalidates a
// cached key as soon as it changes (RESP3 client tracking), so the TTL is only a safety net; the
// cache pays off because the API is read far more often than a batch lands.
const cacheTTL = 5 * time.Second

//go:embed apply.lua
var applyLua string

// View reads and writes the metrics in one Redis database.
type View struct {
	client rueidis.Client
	apply  *rueidis.Lua
}

// New returns a view over client. The client is owned by the caller.
func New(client rueidis.Client) *View {
	return &View{client: client, apply: rueidis.NewLuaScript(applyLua)}
}

// Ping checks that Redis answers.
func (v *View) Ping(ctx context.Context) error {
	if err := v.client.Do(ctx, v.client.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("view: ping redis: %w", err)
	}
	return nil
}

// NoOffset is the stored offset of a partition this view has never applied.
const NoOffset int64 = -1

// OffsetConflictError reports that a partition's stored offset is not what the batch expected:
// another writer applied it, or Redis lost its data. Nothing of the batch was written.
type OffsetConflictError struct {
	Topic  string
	Stored map[int32]int64 // partition -> offset found in Redis (NoOffset when absent)
}

func (e *OffsetConflictError) Error() string {
	return fmt.Sprintf("view: stored offsets of %s moved: %v", e.Topic, e.Stored)
}

// Offsets returns the next offset to consume for each partition of topic, NoOffset for a
// partition this view holds nothing of.
func (v *View) Offsets(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	out := make(map[int32]int64, len(partitions))
	if len(partitions) == 0 {
		return out, nil
	}
	fields := make([]string, len(partitions))
	for i, p := range partitions {
		fields[i] = strconv.Itoa(int(p))
	}
	vals, err := v.client.Do(ctx, v.client.B().Hmget().Key(offsetKeyPrefix+topic).Field(fields...).Build()).ToArray()
	if err != nil {
		return nil, fmt.Errorf("view: read offsets of %s: %w", topic, err)
	}
	for i, p := range partitions {
		out[p] = NoOffset
		if i < len(vals) {
			if n, err := vals[i].AsInt64(); err == nil {
				out[p] = n
			}
		}
	}
	return out, nil
}

// Sources returns, for each of partitions, the highest upstream offset applied from each
// upstream partition (empty when none).
func (v *View) Sources(ctx context.Context, topic string, partitions []int32) (map[int32]map[int32]int64, error) {
	out := make(map[int32]map[int32]int64, len(partitions))
	if len(partitions) == 0 {
		return out, nil
	}
	cmds := make(rueidis.Commands, len(partitions))
	for i, p := range partitions {
		cmds[i] = v.client.B().Hgetall().Key(sourceKeyPrefix + topic + ":" + strconv.Itoa(int(p))).Build()
	}
	for i, r := range v.client.DoMulti(ctx, cmds...) {
		m, err := r.AsIntMap()
		if err != nil {
			return nil, fmt.Errorf("view: read sources of %s partition %d: %w", topic, partitions[i], err)
		}
		srcs := make(map[int32]int64, len(m))
		for sp, so := range m {
			n, err := strconv.Atoi(sp)
			if err != nil {
				return nil, fmt.Errorf("view: sources of %s partition %d: bad field %q", topic, partitions[i], sp)
			}
			srcs[int32(n)] = so
		}
		out[partitions[i]] = srcs
	}
	return out, nil
}

// Entry is one counted id.
type Entry struct {
	ID    string
	Count int64
}

// Counts returns the number of distinct ids of kind and the page [offset, offset+limit) of them,
// count descending, ties by id ascending.
func (v *View) Counts(ctx context.Context, kind Kind, offset, limit int) (int64, []Entry, error) {
	resps := v.client.DoMultiCache(ctx,
		rueidis.CT(v.client.B().Zcard().Key(kind.key()).Cache(), cacheTTL),
		rueidis.CT(v.client.B().Zrange().Key(kind.key()).Min(strconv.Itoa(offset)).Max(strconv.Itoa(offset+limit-1)).Withscores().Cache(), cacheTTL),
	)
	total, err := resps[0].AsInt64()
	if err != nil {
		return 0, nil, fmt.Errorf("view: count %s: %w", kind, err)
	}
	scores, err := resps[1].AsZScores()
	if err != nil {
		return 0, nil, fmt.Errorf("view: read %s: %w", kind, err)
	}
	entries := make([]Entry, len(scores))
	for i, s := range scores {
		entries[i] = Entry{ID: s.Member, Count: int64(-s.Score)}
	}
	return total, entries, nil
}

// HotelPrices is each advertiser's lowest price for one hotel.
type HotelPrices struct {
	HotelID string
	Prices  map[string]int64
}

// MinPrices returns the number of hotels with prices and the page [offset, offset+limit) of them
// in hotel id order.
func (v *View) MinPrices(ctx context.Context, offset, limit int) (int64, []HotelPrices, error) {
	resps := v.client.DoMultiCache(ctx,
		rueidis.CT(v.client.B().Zcard().Key(minPriceHotels).Cache(), cacheTTL),
		rueidis.CT(v.client.B().Zrange().Key(minPriceHotels).Min(strconv.Itoa(offset)).Max(strconv.Itoa(offset+limit-1)).Cache(), cacheTTL),
	)
	total, err := resps[0].AsInt64()
	if err != nil {
		return 0, nil, fmt.Errorf("view: count hotels with prices: %w", err)
	}
	hotels, err := resps[1].AsStrSlice()
	if err != nil {
		return 0, nil, fmt.Errorf("view: read hotels with prices: %w", err)
	}
	if len(hotels) == 0 {
		return total, nil, nil
	}
	cmds := make([]rueidis.CacheableTTL, len(hotels))
	for i, h := range hotels {
		cmds[i] = rueidis.CT(v.client.B().Zrange().Key(minPricePrefix+h).Min("0").Max("-1").Withscores().Cache(), cacheTTL)
	}
	out := make([]HotelPrices, len(hotels))
	for i, r := range v.client.DoMultiCache(ctx, cmds...) {
		scores, err := r.AsZScores()
		if err != nil {
			return 0, nil, fmt.Errorf("view: read prices of hotel %s: %w", hotels[i], err)
		}
		m := make(map[string]int64, len(scores))
		for _, s := range scores {
			m[s.Member] = int64(s.Score)
		}
		out[i] = HotelPrices{HotelID: hotels[i], Prices: m}
	}
	return total, out, nil
}

// Apply writes one batch atomically: the counters, the minimum prices and the partitions' next
// offsets, in one Lua script. The script first checks that every partition's stored offset equals
// the batch's Expect; if any differs, nothing is written and an *OffsetConflictError says what
// Redis holds. Applying the same batch twice is therefore impossible.
func (v *View) Apply(ctx context.Context, topic string, b *Batch) error {
	if b.Empty() {
		return nil
	}
	keys := []string{Users.key(), Hotels.key(), Advertisers.key(), offsetKeyPrefix + topic, minPriceHotels}
	args := append(b.args(), sourceKeyPrefix+topic+":")
	res, err := v.apply.Exec(ctx, v.client, keys, args).ToArray()
	if err != nil {
		return fmt.Errorf("view: apply batch to redis: %w", err)
	}
	if len(res) == 0 {
		return nil
	}
	conflict := &OffsetConflictError{Topic: topic, Stored: map[int32]int64{}}
	for i := 0; i+1 < len(res); i += 2 {
		p, err1 := res[i].AsInt64()
		off, err2 := res[i+1].AsInt64()
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("view: apply batch: unexpected script reply: %w", err)
		}
		conflict.Stored[int32(p)] = off
	}
	return conflict
}

// PartitionOffsets is what a batch knows about one partition: the offset the view must hold
// before it (NoOffset if none) and the offset it holds after.
type PartitionOffsets struct {
	Expect, Next int64
}

// Batch is a set of metric updates coalesced in memory, applied to Redis in one step.
type Batch struct {
	Offsets map[int32]PartitionOffsets
	// Sources is, per partition of the batch, the highest offset it applies from each partition
	// of the upstream (raw) topic. Stored with the offsets, it lets the aggregator recognise an
	// event the upstream stage produced twice.
	Sources   map[int32]map[int32]int64
	counts    [3]map[string]int64
	minPrices map[string]map[string]int64 // hotel -> advertiser -> price
}

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	b := &Batch{Offsets: map[int32]PartitionOffsets{}, Sources: map[int32]map[int32]int64{},
		minPrices: map[string]map[string]int64{}}
	for i := range b.counts {
		b.counts[i] = map[string]int64{}
	}
	return b
}

// Add folds one event: its user, its hotel and each advertiser count once, and each advertiser's
// lowest price in it competes for the hotel's minimum.
func (b *Batch) Add(user, hotel string, advertiserMinPrices map[string]int64) {
	b.Count(user, hotel)
	for adv, price := range advertiserMinPrices {
		b.CountAdvertiser(adv)
		b.OfferPrice(hotel, adv, price)
	}
}

// Count counts one event for its user and its hotel.
func (b *Batch) Count(user, hotel string) {
	b.counts[0][user]++
	b.counts[1][hotel]++
}

// CountAdvertiser counts one event for an advertiser.
func (b *Batch) CountAdvertiser(adv string) { b.counts[2][adv]++ }

// OfferPrice lets price compete for the hotel's minimum of adv.
func (b *Batch) OfferPrice(hotel, adv string, price int64) {
	prices := b.minPrices[hotel]
	if prices == nil {
		prices = make(map[string]int64, 4)
		b.minPrices[hotel] = prices
	}
	if cur, ok := prices[adv]; !ok || price < cur {
		prices[adv] = price
	}
}

// MinPrices calls fn with every (hotel, advertiser, lowest price) the batch carries.
func (b *Batch) MinPrices(fn func(hotel, adv string, price int64)) {
	for hotel, prices := range b.minPrices {
		for adv, price := range prices {
			fn(hotel, adv, price)
		}
	}
}

// Empty reports whether the batch would change nothing.
func (b *Batch) Empty() bool { return len(b.Offsets) == 0 && len(b.counts[0]) == 0 }

// args encodes the batch for apply.lua: one JSON document per section, so Redis parses a handful
// of arguments (and cjson decodes each section in C) instead of a few per event.
func (b *Batch) args() []string {
	parts := make([]int32, 0, len(b.Offsets))
	for p := range b.Offsets {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	buf := make([]byte, 0, 64*len(parts))
	buf = append(buf, '[')
	for i, p := range parts {
		if i > 0 {
			buf = append(buf, ',')
		}
		o := b.Offsets[p]
		buf = append(buf, '[')
		buf = strconv.AppendInt(buf, int64(p), 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, o.Expect, 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, o.Next, 10)
		buf = append(buf, ']')
	}
	args := []string{minPricePrefix, string(append(buf, ']'))}
	for _, c := range b.counts {
		buf = append(buf[:0], '[')
		first := true
		for id, n := range c {
			if !first {
				buf = append(buf, ',')
			}
			first = false
			buf = jsonw.AppendString(buf, id)
			buf = append(buf, ',')
			buf = strconv.AppendInt(buf, n, 10)
		}
		args = append(args, string(append(buf, ']')))
	}
	buf = append(buf[:0], '[')
	first := true
	for hotel, prices := range b.minPrices {
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = jsonw.AppendString(buf, hotel)
		buf = append(buf, ",["...)
		j := 0
		for adv, price := range prices {
			if j > 0 {
				buf = append(buf, ',')
			}
			j++
			buf = strconv.AppendInt(buf, price, 10)
			buf = append(buf, ',')
			buf = jsonw.AppendString(buf, adv)
		}
		buf = append(buf, ']')
	}
	args = append(args, string(append(buf, ']')))
	buf = append(buf[:0], '[')
	first = true
	for p, srcs := range b.Sources {
		for sp, so := range srcs {
			if !first {
				buf = append(buf, ',')
			}
			first = false
			buf = append(buf, '[')
			buf = strconv.AppendInt(buf, int64(p), 10)
			buf = append(buf, ',')
			buf = strconv.AppendInt(buf, int64(sp), 10)
			buf = append(buf, ',')
			buf = strconv.AppendInt(buf, so, 10)
			buf = append(buf, ']')
		}
	}
	return append(args, string(append(buf, ']')))
}
