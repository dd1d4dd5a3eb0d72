package view

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/jsonw"
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
// another writer applied it, or Redis lost its data. Nothing of the batch was written.
type OffsetConflictError struct {
	Topic  string
	Stored map[int32]int64 // partition -> offset found in Redis (NoOffset when absent)
}

func (e *OffsetConflictError) Error() string {
	return fmt.Sprintf("view: stored offsets of %s moved: %v", e.Topic, e.Stored)
}

// RefusedError reports that the apply script refused a batch, or Apply refused to send it.
// Nothing of the batch was written. Unlike an outage, retrying the same batch will fail the same
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

// Apply writes one batch atomically: the counters, the minimum prices, the source marks and the
// partitions' next offsets, in one Lua script that checks and computes everything before its
// first write and writes the offsets last, so a failure leaves nothing behind. It returns:
//
//   - nil: the view holds the batch;
//   - *OffsetConflictError: a stored offset is not the batch's Expect (another writer, or Redis
//     lost data); nothing written, so applying a batch twice is impossible;
//   - *RefusedError: the script (or Apply, for arguments the script cannot take) refused the
//     batch; nothing written, and the same batch would fail again;
//   - any other error: Redis could not be asked or could not answer now (TemporarilyUnavailable);
//     nothing written, worth retrying as is.
func (v *View) Apply(ctx context.Context, topic string, b *Batch) error {
	if b.Empty() {
		return nil
	}
	if err := b.check(); err != nil {
		return err
	}
	keys := []string{Users.key(), Hotels.key(), Advertisers.key(), offsetKeyPrefix + topic, minPriceHotels}
	args := append(b.args(), sourceKeyPrefix+topic+":")
	res, err := v.apply.Exec(ctx, v.client, keys, args).ToArray()
	if err != nil {
		if refused := refusal(err); refused != nil {
			return refused
		}
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
			return &RefusedError{Err: fmt.Errorf("unexpected script reply: %w", err)}
		}
		conflict.Stored[int32(p)] = off
	}
	return conflict
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
		return &RefusedError{Hotel: name, Err: fmt.Errorf("its key %s%s holds a %s, not a sorted set", minPricePrefix, name, kind)}
	}
	return &RefusedError{Err: err}
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
	bytes     int                         // about the size of the script's arguments
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

// Per-entry overhead of the JSON arguments besides the strings themselves: quotes, commas,
// brackets and a number of up to 16 digits.
const entryBytes = 24

func (b *Batch) count(i int, id string) {
	if _, ok := b.counts[i][id]; !ok {
		b.bytes += len(id) + entryBytes
	}
	b.counts[i][id]++
}

// Count counts one event for its user and its hotel.
func (b *Batch) Count(user, hotel string) {
	b.count(0, user)
	b.count(1, hotel)
}

// CountAdvertiser counts one event for an advertiser.
func (b *Batch) CountAdvertiser(adv string) { b.count(2, adv) }

// OfferPrice lets price compete for the hotel's minimum of adv.
func (b *Batch) OfferPrice(hotel, adv string, price int64) {
	prices := b.minPrices[hotel]
	if prices == nil {
		prices = make(map[string]int64, 4)
		b.minPrices[hotel] = prices
		b.bytes += len(hotel) + entryBytes
	}
	if cur, ok := prices[adv]; !ok || price < cur {
		if !ok {
			b.bytes += len(adv) + entryBytes
		}
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

// Bytes is about the size of the batch's script arguments.
func (b *Batch) Bytes() int { return b.bytes + 64*len(b.Offsets) }

// Empty reports whether the batch would change nothing.
func (b *Batch) Empty() bool { return len(b.Offsets) == 0 && len(b.counts[0]) == 0 }

// check refuses what the script cannot take exactly: a batch past MaxBatchBytes, and counts or
// prices that a double score would round.
func (b *Batch) check() error {
	if n := b.Bytes(); n > MaxBatchBytes {
		return &RefusedError{Err: fmt.Errorf("batch of about %d bytes of arguments, over the %d byte limit", n, MaxBatchBytes)}
	}
	for hotel, prices := range b.minPrices {
		for adv, price := range prices {
			if price < 1 || price > MaxExactScore {
				return &RefusedError{Hotel: hotel, Err: fmt.Errorf("advertiser %q: price %d is outside 1..2^53", adv, price)}
			}
		}
	}
	return nil
}

// args encodes the batch for apply.lua: one JSON document per section, so Redis parses a handful
// of arguments (and cjson decodes each section in C) instead of a few per event.
func (b *Batch) args() []string {
	var w jsonList
	parts := make([]int32, 0, len(b.Offsets))
	for p := range b.Offsets {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		o := b.Offsets[p]
		w.ints(int64(p), o.Expect, o.Next)
	}
	args := []string{minPricePrefix, w.take()}
	for _, c := range b.counts {
		for id, n := range c {
			w.str(id)
			w.int(n)
		}
		args = append(args, w.take())
	}
	for hotel, prices := range b.minPrices {
		w.str(hotel)
		w.open()
		for adv, price := range prices {
			w.int(price)
			w.str(adv)
		}
		w.close()
	}
	args = append(args, w.take())
	for p, srcs := range b.Sources {
		for sp, so := range srcs {
			w.ints(int64(p), int64(sp), so)
		}
	}
	return append(args, w.take())
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
