package view

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/redis/rueidis"
)

// snapshot reads every key of the view, to compare before and after a refused batch.
func snapshot(t *testing.T, c rueidis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Do(ctx, c.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		typ, _ := c.Do(ctx, c.B().Type().Key(k).Build()).ToString()
		var v any
		switch typ {
		case "zset":
			v, err = c.Do(ctx, c.B().Zrange().Key(k).Min("0").Max("-1").Withscores().Build()).AsZScores()
		case "hash":
			v, err = c.Do(ctx, c.B().Hgetall().Key(k).Build()).AsStrMap()
		default:
			v, err = c.Do(ctx, c.B().Get().Key(k).Build()).ToString()
		}
		if err != nil {
			t.Fatalf("read %s: %v", k, err)
		}
		out[k] = fmt.Sprint(v)
	}
	return out
}

// TestApplyIsAllOrNothing is issue 9's regression: a failure in the middle of the old script
// (there, "too many results to unpack"; here, a key of the wrong type met after the counts)
// left the counts and the offsets written, and the retry took the moved offsets for another
// writer's and skipped the batch. Now the script checks every key before its first write: a
// refused batch changes nothing, and Go learns which hotel is at fault.
func TestApplyIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := New(c)
			first := NewBatch()
			add(first, "u1", "h1", map[string]int64{"a": 500})
			first.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: 1}
			first.Sources[0] = map[int32]int64{2: 10}
			if err := v.Apply(ctx, "t", first); err != nil {
				t.Fatal(err)
			}
			// Something other than searchflow wrote a string where hotel h9's prices live.
			if err := c.Do(ctx, c.B().Set().Key(minPricePrefix+"h9").Value("x").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, c)

			b := NewBatch()
			for i := 0; i < 1200; i++ { // several chunks of counts, written before the prices
				add(b, fmt.Sprintf("user-%d", i), "h1", map[string]int64{"a": 100, "b": 200})
			}
			add(b, "u1", "h9", map[string]int64{"a": 1})
			b.Offsets[0] = PartitionOffsets{Expect: 1, Next: 1202}
			b.Sources[0] = map[int32]int64{2: 1300}
			err := v.Apply(ctx, "t", b)
			var refused *RefusedError
			if !errors.As(err, &refused) || refused.Hotel != "h9" || refused.Damaged {
				t.Fatalf("err = %#v, want a refusal naming hotel h9", err)
			}
			var conflict *OffsetConflictError
			if errors.As(err, &conflict) {
				t.Fatal("a refused script must never read as an offset conflict")
			}
			if after := snapshot(t, c); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused batch changed the view:\nbefore %v\nafter  %v", before, after)
			}
			offs, _ := v.Offsets(ctx, "t", []int32{0})
			if offs[0] != 1 {
				t.Errorf("offset moved to %d", offs[0])
			}

			// A key every batch writes, damaged: the refusal blames no hotel.
			if err := c.Do(ctx, c.B().Del().Key(minPricePrefix+"h9").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if err := c.Do(ctx, c.B().Set().Key(Advertisers.key()).Value("x").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			before = snapshot(t, c)
			err = v.Apply(ctx, "t", b)
			if !errors.As(err, &refused) || !refused.Damaged || refused.Hotel != "" {
				t.Fatalf("err = %#v, want the view reported damaged", err)
			}
			if after := snapshot(t, c); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused batch changed the view")
			}
		})
	}
}

// TestApplyChunksLargeCalls applies one hotel with 4,500 advertisers and 4,000 users in one batch:
// past unpack's limit on Redis 7 and far past it on miniredis, unless every variadic call is
// chunked.
func TestApplyChunksLargeCalls(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			b := NewBatch()
			prices := map[string]int64{}
			for i := 0; i < 4500; i++ {
				prices[fmt.Sprintf("advertiser-%04d", i)] = int64(10000 - i)
			}
			add(b, "u0", "big", prices)
			for i := 1; i < 4000; i++ {
				b.Count(fmt.Sprintf("u%d", i), "big")
			}
			b.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: 4000}
			if err := v.Apply(ctx, "t", b); err != nil {
				t.Fatal(err)
			}
			total, hotels, err := v.MinPrices(ctx, 0, 10)
			if err != nil || total != 1 || len(hotels[0].Prices) != 4500 || hotels[0].Prices["advertiser-4499"] != 5501 {
				t.Fatalf("min prices: %d hotels, %d advertisers, err %v", total, len(hotels[0].Prices), err)
			}
			users, _, _ := v.Counts(ctx, Users, 0, 1)
			advs, _, _ := v.Counts(ctx, Advertisers, 0, 1)
			_, hotelCounts, _ := v.Counts(ctx, Hotels, 0, 1)
			if users != 4000 || advs != 4500 || hotelCounts[0].Count != 4000 {
				t.Errorf("users %d advertisers %d hotel count %v", users, advs, hotelCounts)
			}
		})
	}
}

// TestApplyRefusesInexactNumbers: a price a double score would round is refused before anything
// is sent (the transformer dead-letters such prices; this guards the view itself).
func TestApplyRefusesInexactNumbers(t *testing.T) {
	v := New(rawClients(t)["redis-server"])
	b := NewBatch()
	add(b, "u", "h", map[string]int64{"a": MaxExactScore + 1})
	b.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: 1}
	var refused *RefusedError
	if err := v.Apply(context.Background(), "t", b); !errors.As(err, &refused) || refused.Hotel != "h" {
		t.Fatalf("err = %v, want a refusal naming the hotel", err)
	}
	offs, _ := v.Offsets(context.Background(), "t", []int32{0})
	if offs[0] != NoOffset {
		t.Error("the offset moved")
	}
}

func TestBatchBytesGrowsWithContent(t *testing.T) {
	b := NewBatch()
	empty := b.Bytes()
	add(b, "user", "hotel", map[string]int64{"advertiser": 5})
	one := b.Bytes()
	add(b, "user", "hotel", map[string]int64{"advertiser": 4}) // the same ids: no new argument bytes
	if one <= empty || b.Bytes() != one {
		t.Errorf("bytes %d -> %d -> %d", empty, one, b.Bytes())
	}
	if got, want := len(fmt.Sprint(b.args())), one; got > want {
		t.Errorf("args are %d bytes, Bytes() estimates %d: the estimate must not fall short", got, want)
	}
}
