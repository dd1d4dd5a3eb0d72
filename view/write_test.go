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
	keys, err := c.Do(ctx, c.B().Keys().Pattern(keyPrefix+"*").Build()).AsStrSlice()
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
			v := claimed(t, c)
			first := newTestBatch()
			add(first, "u1", "h1", map[string]int64{"a": 500})
			first.at(0, PartitionOffsets{Expect: NoOffset, Next: 1})
			first.sources[0] = map[int32]int64{2: 10}
			if err := first.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			// Something other than searchflow wrote a string where hotel h9's prices live.
			if err := c.Do(ctx, c.B().Set().Key(shardKey(t, v, HotelShards, 0, minPriceKeyPrefix+"h9")).Value("x").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, c)

			b := newTestBatch()
			for i := 0; i < 1200; i++ { // several chunks of counts, written before the prices
				add(b, fmt.Sprintf("user-%d", i), "h1", map[string]int64{"a": 100, "b": 200})
			}
			add(b, "u1", "h9", map[string]int64{"a": 1})
			b.at(0, PartitionOffsets{Expect: 1, Next: 1202})
			b.sources[0] = map[int32]int64{2: 1300}
			err := b.apply(ctx, v)
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
			offs, _ := v.Offsets(ctx, UserShards, []int32{0})
			if offs[0] != 1 {
				t.Errorf("offset moved to %d", offs[0])
			}

			// A key every batch writes, damaged: the refusal blames no hotel.
			if err := c.Do(ctx, c.B().Del().Key(shardKey(t, v, HotelShards, 0, minPriceKeyPrefix+"h9")).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if err := c.Do(ctx, c.B().Set().Key(shardKey(t, v, HotelShards, 0, string(Advertisers))).Value("x").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			before = snapshot(t, c)
			err = b.apply(ctx, v)
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
			b := newTestBatch()
			prices := map[string]int64{}
			for i := 0; i < 4500; i++ {
				prices[fmt.Sprintf("advertiser-%04d", i)] = int64(10000 - i)
			}
			add(b, "u0", "big", prices)
			for i := 1; i < 4000; i++ {
				add(b, fmt.Sprintf("u%d", i), "big", nil)
			}
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: 4000})
			if err := b.apply(ctx, v); err != nil {
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
	v := claimed(t, rawClients(t)["redis-server"])
	b := newTestBatch()
	add(b, "u", "h", map[string]int64{"a": MaxExactScore + 1})
	b.at(0, PartitionOffsets{Expect: NoOffset, Next: 1})
	var refused *RefusedError
	if err := b.apply(context.Background(), v); !errors.As(err, &refused) || refused.Hotel != "h" {
		t.Fatalf("err = %v, want a refusal naming the hotel", err)
	}
	offs, _ := v.Offsets(context.Background(), UserShards, []int32{0})
	if offs[0] != NoOffset {
		t.Error("the offset moved")
	}
}

func TestBatchBytesGrowsWithContent(t *testing.T) {
	b := NewBatch()
	b.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: 1}
	empty := b.Bytes()
	event := func(price int64) {
		b.Count(0, Hotels, "hotel")
		b.Count(0, Advertisers, "advertiser")
		b.OfferPrice(0, "hotel", "advertiser", price)
	}
	event(5)
	one := b.Bytes()
	event(4) // the same ids: no new argument bytes
	if one <= empty || b.Bytes() != one {
		t.Errorf("bytes %d -> %d -> %d", empty, one, b.Bytes())
	}
	exec := b.script(TrendSpec{}, HotelShards, 0, "searchflow:{s12345}:")
	if got, want := len(fmt.Sprint(exec.Keys, exec.Args)), one; got > want {
		t.Errorf("the script's keys and args are %d bytes, Bytes() estimates %d: the estimate must not fall short", got, want)
	}
}
