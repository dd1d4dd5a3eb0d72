package view

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/jsonw"
	"github.com/searchflow/searchflow/trends"
)

// The aggregator's side of the view: the batch it folds in memory, the script that applies it
// all or nothing together with the partitions' next offsets, and the reads of those offsets.

//go:embed apply.lua
var applyLua string

// NoOffset is the stored offset of a partition this view has never applied.
const NoOffset int64 = -1

// MaxExactScore is the largest integer a sorted-set score (a double) holds exactly. Counts and
// prices above it would be shown rounded, so Apply refuses them.
const MaxExactScore = 1 << 53

// MaxBatchBytes bounds the script arguments of one batch. Redis takes up to 512 MB in one
// argument, but a script runs alone on Redis's one thread: a bounded batch keeps every other
// client's wait bounded too. The aggregator closes a batch when it reaches this size.
const MaxBatchBytes = 32 << 20

// OffsetConflictError reports that a partition's stored offset is not what the batch expected:
// another writer applied it, or Redis lost its data. Nothing of those partitions was written.
type OffsetConflictError struct {
	Topic  string
	Stored map[int32]int64 // partition -> offset found in Redis (NoOffset when absent)
}

func (e *OffsetConflictError) Error() string {
	return fmt.Sprintf("view: stored offsets of %s moved: %v", e.Topic, e.Stored)
}

// RefusedError reports that the apply script refused a batch, or Apply refused to send it.
// Nothing of the refused partition was written. Unlike an outage, retrying the same batch will fail the same
// way.
type RefusedError struct {
	// Hotel, when set, is the hotel whose key is damaged: the batch's records of that hotel are
	// what makes it fail.
	Hotel string
	// Damaged is set when a key every batch writes has the wrong type: no record is at fault, the
	// view needs repair (see the README).
	Damaged bool
	Err     error
}

func (e *RefusedError) Error() string {
	switch {
	case e.Damaged:
		return "view: the view is damaged, every batch is refused: " + e.Err.Error()
	case e.Hotel != "":
		return fmt.Sprintf("view: hotel %q cannot be applied: %v", e.Hotel, e.Err)
	}
	return "view: the apply script refused the batch: " + e.Err.Error()
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Offsets returns the next offset to consume for each partition of role's topic, NoOffset for a
// partition this view holds nothing of. The view must be claimed (Claim).
func (v *View) Offsets(ctx context.Context, r Role, partitions []int32) (map[int32]int64, error) {
	states, err := v.States(ctx, r, partitions)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, len(states))
	for p, s := range states {
		out[p] = s.Next
	}
	return out, nil
}

// PartitionState is what a shard stores of its partition, read in one command: the next offset
// to consume (NoOffset for none) and the stream time after the events before it.
type PartitionState struct {
	Next   int64
	Stream trends.StreamTime
}

// States returns the stored state of each partition of role's topic. The view must be claimed.
func (v *View) States(ctx context.Context, r Role, partitions []int32) (map[int32]PartitionState, error) {
	out := make(map[int32]PartitionState, len(partitions))
	if len(partitions) == 0 {
		return out, nil
	}
	s, err := v.writerShards(r, partitions)
	if err != nil {
		return nil, err
	}
	cmds := make(rueidis.Commands, len(partitions))
	for i, p := range partitions {
		prefix, _ := s.of(r, p)
		cmds[i] = v.client.B().Hmget().Key(prefix+stateKey).Field("next", streamField).Build()
	}
	for i, res := range v.client.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err == nil && len(vals) != 2 {
			err = fmt.Errorf("%d values for 2 fields", len(vals))
		}
		if err != nil {
			return nil, fmt.Errorf("view: read the state of %s partition %d: %w", s.Topic(r), partitions[i], err)
		}
		st := PartitionState{Next: NoOffset}
		if n, err := vals[0].AsInt64(); err == nil {
			st.Next = n
		} else if !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("view: the offset of %s partition %d: %w", s.Topic(r), partitions[i], err)
		}
		if t, err := vals[1].AsInt64(); err == nil {
			st.Stream = trends.StreamTime{T: t, Set: true}
		} else if !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("view: the stream time of %s partition %d: %w", s.Topic(r), partitions[i], err)
		}
		out[partitions[i]] = st
	}
	return out, nil
}

// Sources returns, for each of partitions of role's topic, the highest upstream offset applied
// from each upstream partition (empty when none).
func (v *View) Sources(ctx context.Context, r Role, partitions []int32) (map[int32]map[int32]int64, error) {
	out := make(map[int32]map[int32]int64, len(partitions))
	if len(partitions) == 0 {
		return out, nil
	}
	s, err := v.writerShards(r, partitions)
	if err != nil {
		return nil, err
	}
	cmds := make(rueidis.Commands, len(partitions))
	for i, p := range partitions {
		prefix, _ := s.of(r, p)
		cmds[i] = v.client.B().Hgetall().Key(prefix + sourcesKey).Build()
	}
	for i, res := range v.client.DoMulti(ctx, cmds...) {
		m, err := res.AsIntMap()
		if err != nil {
			return nil, fmt.Errorf("view: read sources of %s partition %d: %w", s.Topic(r), partitions[i], err)
		}
		srcs := make(map[int32]int64, len(m))
		for sp, so := range m {
			n, err := strconv.Atoi(sp)
			if err != nil {
				return nil, fmt.Errorf("view: sources of %s partition %d: bad field %q", s.Topic(r), partitions[i], sp)
			}
			srcs[int32(n)] = so
		}
		out[partitions[i]] = srcs
	}
	return out, nil
}

// ShardError reports a partition the claimed layout has no shard for: the topic has more
// partitions than when the view was built.
type ShardError struct {
	Role      Role
	Partition int32
	Layout    Layout
}

func (e *ShardError) Error() string {
	return fmt.Sprintf("view: %s partition %d has no shard in %v: the topic grew partitions; rebuild the view (README, Operator commands)",
		e.Layout.Topic(e.Role), e.Partition, e.Layout)
}

// writerShards returns the claimed layout, checking that it has a shard for every partition.
func (v *View) writerShards(r Role, partitions []int32) (*shards, error) {
	v.mu.Lock()
	s, claimed := v.shards, v.claimed
	v.mu.Unlock()
	if !claimed {
		return nil, errors.New("view: write before Claim")
	}
	for _, p := range partitions {
		if _, ok := s.of(r, p); !ok {
			return nil, &ShardError{Role: r, Partition: p, Layout: s.Layout}
		}
	}
	return s, nil
}

// Apply writes a batch of role's topic, one atomic script per partition, each in its shard's
// slot: the counts, the minimum prices, the source marks and the partition's next offset. Each
// script checks and computes everything before its first write and writes the offset last, so a
// failure leaves nothing of that partition behind. Partitions the view took are marked in the
// batch (Batch.Applied) and not sent again when Apply is retried. It returns:
//
//   - nil: the view holds the whole batch;
//   - *OffsetConflictError: a stored offset is not the batch's Expect (another writer, or Redis
//     lost data); nothing of that partition written, so applying a batch twice is impossible;
//   - *RefusedError: a script (or Apply, for arguments a script cannot take) refused a
//     partition; nothing of it written, and the same batch would fail again;
//   - any other error: Redis could not be asked or could not answer now (TemporarilyUnavailable);
//     worth retrying as is.
//
// A conflict takes precedence over a refusal, and a refusal over an outage.
func (v *View) Apply(ctx context.Context, r Role, b *Batch) error {
	if b.Empty() {
		return nil
	}
	if err := b.check(); err != nil {
		return err
	}
	parts := b.pending()
	s, err := v.writerShards(r, parts)
	if err != nil {
		return &RefusedError{Err: err}
	}
	execs := make([]rueidis.LuaExec, len(parts))
	for i, p := range parts {
		prefix, _ := s.of(r, p)
		execs[i] = b.script(s.spec, r, p, prefix)
	}
	var conflict *OffsetConflictError
	var refused *RefusedError
	var outage error
	for i, res := range v.apply.run(ctx, v.client, execs) {
		p := parts[i]
		reply, err := res.ToArray()
		switch {
		case err != nil && refusal(err) != nil:
			if refused == nil {
				refused = refusal(err)
			}
		case err != nil:
			outage = fmt.Errorf("view: apply %s partition %d to redis: %w", s.Topic(r), p, err)
		case len(reply) == 0:
			b.applied[p] = true
		default:
			stored, err := reply[0].AsInt64()
			if err != nil {
				return &RefusedError{Err: fmt.Errorf("unexpected script reply: %w", err)}
			}
			if conflict == nil {
				conflict = &OffsetConflictError{Topic: s.Topic(r), Stored: map[int32]int64{}}
			}
			conflict.Stored[p] = stored
		}
	}
	switch {
	case conflict != nil:
		return conflict
	case refused != nil:
		return refused
	}
	return outage
}

// PartitionOffsets is what a batch knows about one partition: the offset the view must hold
// before it (NoOffset if none) and the offset it holds after.
type PartitionOffsets struct {
	Expect, Next int64
}

// Batch is a set of metric updates coalesced in memory, applied to Redis in one step per
// partition: each partition's part goes to that partition's shard.
type Batch struct {
	Offsets map[int32]PartitionOffsets
	// Sources is, per partition of the batch, the highest offset it applies from each partition
	// of the upstream (raw) topic. Stored with the offsets, it lets the aggregator recognise an
	// event the upstream stage produced twice.
	Sources map[int32]map[int32]int64
	parts   map[int32]*part
	applied map[int32]bool // partitions the view took (see Apply)
	bytes   int            // about the size of the scripts' arguments
	last    *part          // the part of lastP, the partition the latest call named
	lastP   int32
}

// part is one partition's counts and prices.
type part struct {
	counts    [3]map[string]int64         // users, hotels, advertisers
	minPrices map[string]map[string]int64 // hotel -> advertiser -> price
	wins      map[string]map[string]int64 // hotel -> advertiser -> its lowest winning price
	trend     *trendPart                  // nil when the batch has no event time of the partition
	// countBytes is about the size of the counts' arguments. A window that shares them (see
	// TrendShare) may have to copy them before the batch ends: the batch's bytes count that copy
	// in advance, once per sharing window (shares).
	countBytes, shares int
}

// kindIndex orders the counted kinds in a part.
func kindIndex(k Kind) int {
	switch k {
	case Hotels:
		return 1
	case Advertisers:
		return 2
	}
	return 0
}

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	return &Batch{Offsets: map[int32]PartitionOffsets{}, Sources: map[int32]map[int32]int64{},
		parts: map[int32]*part{}, applied: map[int32]bool{}}
}

func (b *Batch) part(p int32) *part {
	if b.last != nil && b.lastP == p {
		return b.last // a fold calls several times per event, for the same partition
	}
	pt := b.parts[p]
	if pt == nil {
		pt = &part{minPrices: map[string]map[string]int64{}, wins: map[string]map[string]int64{}}
		for i := range pt.counts {
			pt.counts[i] = map[string]int64{}
		}
		b.parts[p] = pt
	}
	b.last, b.lastP = pt, p
	return pt
}

// Per-entry overhead of the JSON arguments besides the strings themselves: quotes, commas,
// brackets and a number of up to 16 digits.
const entryBytes = 24

// Count counts one event of partition p for id, of kind. Users belong in user shards, hotels and
// advertisers in hotel shards: Apply sends only the kinds of its role.
func (b *Batch) Count(p int32, kind Kind, id string) {
	pt := b.part(p)
	c := pt.counts[kindIndex(kind)]
	n := len(c)
	c[id]++ // one map access: a new id shows in the length
	if len(c) > n {
		b.bytes += (len(id) + entryBytes) * (1 + pt.shares)
		pt.countBytes += len(id) + entryBytes
	}
}

// OfferPrice lets price, from an event of partition p, compete for the hotel's minimum of adv.
func (b *Batch) OfferPrice(p int32, hotel, adv string, price int64) {
	b.offer(b.part(p).minPrices, hotel, adv, price)
}

// OfferWin lets the price of an event's cheapest offer, adv's, compete for the hotel's
// cheapest-per-search minimum of adv (CheapestPerSearch).
func (b *Batch) OfferWin(p int32, hotel, adv string, price int64) {
	b.offer(b.part(p).wins, hotel, adv, price)
}

// offer keeps the lower of price and what byHotel holds for hotel and adv.
func (b *Batch) offer(byHotel map[string]map[string]int64, hotel, adv string, price int64) {
	prices := byHotel[hotel]
	if prices == nil {
		prices = make(map[string]int64, 4)
		byHotel[hotel] = prices
		b.bytes += 2*len(hotel) + len(prefixBytes) + entryBytes // the hotel, and its key
	}
	if cur, ok := prices[adv]; !ok || price < cur {
		if !ok {
			b.bytes += len(adv) + entryBytes
		}
		prices[adv] = price
	}
}

// prefixBytes stands for a shard's key prefix in the size estimate.
const prefixBytes = "searchflow:{s00000}:minprice:"

// MinPrices calls fn with every (hotel, advertiser, lowest price) the batch carries.
func (b *Batch) MinPrices(fn func(hotel, adv string, price int64)) {
	for _, pt := range b.parts {
		for hotel, prices := range pt.minPrices {
			for adv, price := range prices {
				fn(hotel, adv, price)
			}
		}
	}
}

// WinPrices calls fn with every (hotel, advertiser, lowest winning price) the batch carries.
func (b *Batch) WinPrices(fn func(hotel, adv string, price int64)) {
	for _, pt := range b.parts {
		for hotel, prices := range pt.wins {
			for adv, price := range prices {
				fn(hotel, adv, price)
			}
		}
	}
}

// Applied reports whether the view took partition p's part of the batch (see Apply).
func (b *Batch) Applied(p int32) bool { return b.applied[p] }

// Bytes is about the size of the batch's script arguments, a copy of the counts for every window
// that shares them included (it may need one before the batch ends: TrendUnshare).
func (b *Batch) Bytes() int { return b.bytes + perPartitionBytes*len(b.Offsets) }

// perPartitionBytes stands for the keys and offsets every partition of a batch sends.
const perPartitionBytes = 256

// Empty reports whether the batch would change nothing.
func (b *Batch) Empty() bool { return len(b.Offsets) == 0 && len(b.parts) == 0 }

// pending returns the partitions of the batch the view has not taken yet, in order.
func (b *Batch) pending() []int32 {
	parts := make([]int32, 0, len(b.Offsets))
	for p := range b.Offsets {
		if !b.applied[p] {
			parts = append(parts, p)
		}
	}
	slices.Sort(parts)
	return parts
}

// check refuses what the scripts cannot take exactly: a batch past MaxBatchBytes, counts or
// prices that a double score would round, and counts without the partition's offsets.
func (b *Batch) check() error {
	if n := b.Bytes(); n > MaxBatchBytes {
		return &RefusedError{Err: fmt.Errorf("batch of about %d bytes of arguments, over the %d byte limit", n, MaxBatchBytes)}
	}
	for p, pt := range b.parts {
		if _, ok := b.Offsets[p]; !ok {
			return &RefusedError{Err: fmt.Errorf("partition %d has counts but no offsets", p)}
		}
		for _, byHotel := range []map[string]map[string]int64{pt.minPrices, pt.wins} {
			for hotel, prices := range byHotel {
				for adv, price := range prices {
					if price < 1 || price > MaxExactScore {
						return &RefusedError{Hotel: hotel, Err: fmt.Errorf("advertiser %q: price %d is outside 1..2^53", adv, price)}
					}
				}
			}
		}
	}
	return nil
}

// kinds are the kinds role's shards count, in the order of apply.lua's count sets.
func (r Role) kinds() []Kind {
	if r == HotelShards {
		return []Kind{Hotels, Advertisers}
	}
	return []Kind{Users}
}

// script encodes partition p's part for apply.lua, in the shard under prefix: one JSON document
// per section, so Redis parses a handful of arguments (and cjson decodes each section in C)
// instead of a few per event.
func (b *Batch) script(spec TrendSpec, r Role, p int32, prefix string) rueidis.LuaExec {
	o := b.Offsets[p]
	pt := b.parts[p]
	if pt == nil {
		pt = &part{}
	}
	kinds := r.kinds()
	keys := []string{prefix + stateKey, prefix + sourcesKey}
	args := []string{strconv.FormatInt(o.Expect, 10), strconv.FormatInt(o.Next, 10), strconv.Itoa(len(kinds))}
	var w jsonList
	for _, k := range kinds {
		keys = append(keys, prefix+string(k))
		for id, n := range pt.counts[kindIndex(k)] {
			w.str(id)
			w.int(n)
		}
		args = append(args, w.take())
	}
	if r == HotelShards {
		keys = append(keys, prefix+minPriceHotelsKey)
	}
	for _, scope := range []PriceScope{EveryOffer, CheapestPerSearch} {
		byHotel := pt.minPrices
		if scope == CheapestPerSearch {
			byHotel = pt.wins
		}
		for hotel, prices := range byHotel {
			if r != HotelShards {
				break
			}
			keys = append(keys, prefix+scope.keyPrefix()+hotel)
			w.str(hotel)
			w.open()
			for adv, price := range prices {
				w.int(price)
				w.str(adv)
			}
			w.close()
		}
		args = append(args, w.take())
	}
	for sp, so := range b.Sources[p] {
		w.str(strconv.Itoa(int(sp)))
		w.str(strconv.FormatInt(so, 10))
	}
	args = append(args, w.take())
	keys, trend := pt.trend.args(spec, r, prefix, keys, pt.counts)
	args = append(args, trend)
	return rueidis.LuaExec{Keys: keys, Args: args}
}

// jsonList writes one JSON array of strings, integers and nested arrays, element by element.
type jsonList struct {
	buf   []byte
	first bool // the next element is the first of its array
}

func (l *jsonList) sep() {
	if len(l.buf) == 0 {
		l.buf, l.first = append(l.buf, '['), true
	}
	if !l.first {
		l.buf = append(l.buf, ',')
	}
	l.first = false
}

func (l *jsonList) str(s string) { l.sep(); l.buf = jsonw.AppendString(l.buf, s) }
func (l *jsonList) int(n int64)  { l.sep(); l.buf = strconv.AppendInt(l.buf, n, 10) }
func (l *jsonList) open()        { l.sep(); l.buf, l.first = append(l.buf, '['), true }
func (l *jsonList) close()       { l.buf, l.first = append(l.buf, ']'), false }

// ints writes a nested array of integers.
func (l *jsonList) ints(ns ...int64) {
	l.open()
	for _, n := range ns {
		l.int(n)
	}
	l.close()
}

// take returns the array written so far and starts a new one, reusing the buffer.
func (l *jsonList) take() string {
	if len(l.buf) == 0 {
		return "[]"
	}
	s := string(append(l.buf, ']'))
	l.buf, l.first = l.buf[:0], false
	return s
}

// refusal turns a script's error reply into a *RefusedError; nil for an outage.
func refusal(err error) *RefusedError {
	var reply *rueidis.RedisError
	if !errors.As(err, &reply) || TemporarilyUnavailable(err) {
		return nil
	}
	code, rest, _ := strings.Cut(reply.Error(), " ")
	kind, name, _ := strings.Cut(rest, " ")
	switch code {
	case "VIEWKEY":
		return &RefusedError{Damaged: true, Err: fmt.Errorf("key %s holds a %s", name, kind)}
	case "HOTELKEY":
		return &RefusedError{Hotel: name, Err: fmt.Errorf("its min-price key holds a %s, not a sorted set", kind)}
	}
	return &RefusedError{Err: err}
}
