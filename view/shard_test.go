package view

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/redistest"
)

// masterRanges are the slot ranges `redis-cli --cluster create` gives n masters.
func masterRanges(n int) [][2]int {
	out := make([][2]int, n)
	per := float64(slots) / float64(n)
	first := 0
	for i := range n {
		last := int(float64(i+1)*per) - 1
		if i == n-1 {
			last = slots - 1
		}
		out[i] = [2]int{first, last}
		first = last + 1
	}
	return out
}

// TestShardsSpreadEvenly: arbitrary hash tags can put 4 of 6 shards on one of 3 masters; the
// view's tags are chosen for their slots, so 3 partitions per topic (6 shards) on 3 masters put 2
// on each, and so on for other even splits.
func TestShardsSpreadEvenly(t *testing.T) {
	v := New(nil)
	for _, tt := range []struct{ partitions, masters int }{{3, 3}, {6, 3}, {6, 6}, {4, 2}, {8, 4}, {12, 3}} {
		s := v.shardsOf(Layout{UsersTopic: "p", Users: tt.partitions, HotelsTopic: "h", Hotels: tt.partitions})
		perMaster := make([]int, tt.masters)
		seen := map[uint16]bool{}
		for r := range s.prefix {
			for _, prefix := range s.prefix[r] {
				slot := Slot(prefix + "users")
				if seen[slot] {
					t.Errorf("%d partitions: two shards in slot %d", tt.partitions, slot)
				}
				seen[slot] = true
				for m, rg := range masterRanges(tt.masters) {
					if int(slot) >= rg[0] && int(slot) <= rg[1] {
						perMaster[m]++
					}
				}
			}
		}
		want := 2 * tt.partitions / tt.masters
		for m, n := range perMaster {
			if n != want {
				t.Errorf("%d partitions on %d masters: master %d holds %d shards, want %d (%v)", tt.partitions, tt.masters, m, n, want, perMaster)
			}
		}
	}
	// The tag is the slot's: every key of a shard lands in it.
	s := v.shardsOf(Layout{UsersTopic: "p", Users: 3, HotelsTopic: "h", Hotels: 3})
	prefix, _ := s.of(HotelShards, 1)
	if a, b := Slot(prefix+"minprice:some hotel"), Slot(prefix+stateKey); a != b {
		t.Errorf("keys of one shard in slots %d and %d", a, b)
	}
}

func TestSlotIsRedisCRC16(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]uint16{"123456789": 12739, "foo": 12182, "{user1000}.following": 3443} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestMergeTopMatchesGlobalOrder: the k-way merge of the shards' pages is the first n of all
// members sorted as Redis sorts one sorted set.
func TestMergeTopMatchesGlobalOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var lists [][]rueidis.ZScore
		var all []rueidis.ZScore
		for range rng.IntN(6) + 1 {
			var l []rueidis.ZScore
			for range rng.IntN(30) {
				z := rueidis.ZScore{Member: fmt.Sprintf("m%d", rng.IntN(1000)), Score: -float64(rng.IntN(5))}
				l = append(l, z)
			}
			l = slices.CompactFunc(sortZ(l), func(a, b rueidis.ZScore) bool { return a.Member == b.Member })
			lists = append(lists, l)
			all = append(all, l...)
		}
		n := rng.IntN(60)
		var got []rueidis.ZScore
		for _, m := range mergeTop(lists, n) {
			got = append(got, m.ZScore)
		}
		want := sortZ(all)[:min(n, len(all))]
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("round %d: merge of %d lists, first %d: got %v, want %v", round, len(lists), n, got, want)
		}
	}
}

func sortZ(l []rueidis.ZScore) []rueidis.ZScore {
	slices.SortFunc(l, func(a, b rueidis.ZScore) int {
		return cmp.Or(cmp.Compare(a.Score, b.Score), cmp.Compare(a.Member, b.Member))
	})
	return l
}

// TestPageCostDoesNotGrowWithTheView: with 100,000 hotels in 6 shards, a page of 100 reads about
// 100 members per shard, however many hotels there are. The members are counted as the view's
// reads return them, with client-side caching off so that every read goes to Redis.
func TestPageCostDoesNotGrowWithTheView(t *testing.T) {
	const hotels, shards = 100_000, 6
	srv := redistest.Start(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	v := New(c)
	ctx := context.Background()
	if err := v.Claim(ctx, Layout{UsersTopic: "p", Users: shards, HotelsTopic: "h", Hotels: shards}); err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	for i := range hotels {
		p := int32(i % shards)
		hotel := fmt.Sprintf("hotel-%06d", i)
		for range i%5 + 1 {
			b.Count(p, Hotels, hotel)
		}
		b.Count(p, Advertisers, "a")
		b.OfferPrice(p, hotel, "a", int64(1000+i))
	}
	for p := range int32(shards) {
		b.Offsets[p] = PartitionOffsets{Expect: NoOffset, Next: hotels / shards}
	}
	if err := v.Apply(ctx, HotelShards, b); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct{ offset, limit int }{{0, 100}, {500, 100}} {
		before := v.MembersRead()
		total, page, err := v.Counts(ctx, Hotels, tt.offset, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		read := v.MembersRead() - before
		if total != hotels || len(page) != tt.limit {
			t.Fatalf("count %d and %d entries, want %d and %d", total, len(page), hotels, tt.limit)
		}
		if most := int64((tt.offset + tt.limit) * shards); read > most {
			t.Errorf("a page at offset %d of %d hotels read %d members, want at most %d", tt.offset, tt.limit, read, most)
		}
		// Count descending (hotels with i%5 == 4 are counted 5 times), ties by id.
		if page[0].Count != 5 || page[0].ID != fmt.Sprintf("hotel-%06d", 4+5*tt.offset) {
			t.Errorf("page at %d starts with %+v", tt.offset, page[0])
		}
		t.Logf("hotels offset %d limit %d: %d members read for %d hotels in %d shards", tt.offset, tt.limit, read, hotels, shards)
	}
	before := v.MembersRead()
	total, prices, err := v.MinPrices(ctx, 0, 100)
	if err != nil || total != hotels || len(prices) != 100 || prices[0].HotelID != "hotel-000000" || prices[99].HotelID != "hotel-000099" {
		t.Fatalf("min prices: %d hotels, page %d, err %v", total, len(prices), err)
	}
	if read, most := v.MembersRead()-before, int64(100*shards+100); read > most {
		t.Errorf("a page of min prices read %d members, want at most %d", read, most)
	}
}

// TestAdvertisersSumAcrossShards: each hotel shard counts its part of every advertiser; a page
// sums the parts. count is the number of distinct advertisers (the union), not the sum of the
// shards' counts, and the read costs at most the distinct advertisers times the shards — the
// bound the README states for up to 10,000 advertisers.
func TestAdvertisersSumAcrossShards(t *testing.T) {
	const advertisers, shards = 10_000, 4
	c := redistest.Start(t).Client(t)
	v := New(c)
	ctx := context.Background()
	if err := v.Claim(ctx, Layout{UsersTopic: "p", Users: shards, HotelsTopic: "h", Hotels: shards}); err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	want := map[string]int64{}
	for i := range advertisers {
		adv := fmt.Sprintf("adv-%05d", i)
		// Advertiser i is seen in i%shards+1 shards, once in each but the first, twice there.
		for s := range i%shards + 1 {
			b.Count(int32(s), Advertisers, adv)
			want[adv]++
			if s == 0 {
				b.Count(0, Advertisers, adv)
				want[adv]++
			}
		}
	}
	for p := range int32(shards) {
		b.Offsets[p] = PartitionOffsets{Expect: NoOffset, Next: 1}
	}
	if err := v.Apply(ctx, HotelShards, b); err != nil {
		t.Fatal(err)
	}
	before := v.MembersRead()
	total, page, err := v.Counts(ctx, Advertisers, 0, advertisers)
	if err != nil {
		t.Fatal(err)
	}
	if read := v.MembersRead() - before; read > advertisers*shards {
		t.Errorf("read %d members, want at most %d", read, advertisers*shards)
	}
	if total != advertisers || len(page) != advertisers {
		t.Fatalf("count %d, %d entries, want %d", total, len(page), advertisers)
	}
	for i, e := range page {
		if e.Count != want[e.ID] {
			t.Fatalf("%s counted %d, want %d", e.ID, e.Count, want[e.ID])
		}
		if i > 0 && (page[i-1].Count < e.Count || page[i-1].Count == e.Count && page[i-1].ID > e.ID) {
			t.Fatalf("out of order at %d: %+v then %+v", i, page[i-1], e)
		}
	}
}

// TestClaimRefusesAnotherLayout: a view built from other topics or another partition count, or
// in layout 1, is refused with a LayoutError that says how to rebuild; the same layout is
// claimed again freely.
func TestClaimRefusesAnotherLayout(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := claimed(t, c)
			if err := New(c).Claim(ctx, testLayout); err != nil {
				t.Errorf("claiming the same layout again: %v", err)
			}
			other := testLayout
			other.Hotels = 8
			var wrong *LayoutError
			if err := New(c).Claim(ctx, other); !errors.As(err, &wrong) {
				t.Errorf("another partition count: err %v, want a LayoutError", err)
			}
			// Readers in another process find the shards in the stored layout.
			if _, l, err := New(c).Shards(ctx); err != nil || l != testLayout {
				t.Errorf("stored layout %v (%v), want %v", l, err, testLayout)
			}
			_ = v
			if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if err := c.Do(ctx, c.B().Hset().Key(legacyOffsetsPrefix+"t").FieldValue().FieldValue("0", "12").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			err := New(c).Claim(ctx, testLayout)
			if !errors.As(err, &wrong) || !reflect.DeepEqual(wrong.Found, "layout 1 (every key under {searchflow}:, one slot)") {
				t.Errorf("a layout-1 view: err %v, want a LayoutError naming layout 1", err)
			}
		})
	}
}

// TestResetShardRebuildsOneShardExactly: a reset empties one shard — its state last — while
// the others keep everything; a writer still holding the old offset meets a conflict (its
// aggregator then reads the partition again from the start), and while the reset is under way
// the shard answers TRYAGAIN, which writers wait out.
func TestResetShardRebuildsOneShardExactly(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 5})
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: 1})
			b.at(1, PartitionOffsets{Expect: NoOffset, Next: 1})
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			shards, _, err := v.Shards(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var hotels0 Shard
			for _, sh := range shards {
				if sh.Role == HotelShards && sh.Partition == 0 {
					hotels0 = sh
				}
			}
			if n, err := v.ResetShard(ctx, hotels0); err != nil || n < 4 {
				t.Fatalf("reset deleted %d keys (%v), want the shard's state, sources, counts and prices", n, err)
			}
			if offs, _ := v.Offsets(ctx, HotelShards, []int32{0, 1}); offs[0] != NoOffset || offs[1] != 1 {
				t.Errorf("offsets after the reset %v, want shard 0 empty and shard 1 untouched", offs)
			}
			if total, _, _ := v.Counts(ctx, Users, 0, 10); total != 1 {
				t.Errorf("the user shards lost their counts: %d users", total)
			}
			if total, _, _ := v.Counts(ctx, Hotels, 0, 10); total != 0 {
				t.Errorf("%d hotels after the reset of the only hotel shard that had them", total)
			}
			// A writer that had not noticed: a conflict, nothing written.
			again := NewBatch()
			again.Count(0, Hotels, "h1")
			again.Offsets[0] = PartitionOffsets{Expect: 1, Next: 2}
			var conflict *OffsetConflictError
			if err := v.Apply(ctx, HotelShards, again); !errors.As(err, &conflict) || conflict.Stored[0] != NoOffset {
				t.Errorf("apply after the reset: %v, want a conflict at NoOffset", err)
			}
			// A reset under way holds writers off.
			if err := v.client.Do(ctx, v.client.B().Hset().Key(hotels0.Key(stateKey)).FieldValue().FieldValue("rebuilding", "1").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			again = NewBatch()
			again.Count(0, Hotels, "h1")
			again.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: 1}
			if err := v.Apply(ctx, HotelShards, again); !TemporarilyUnavailable(err) {
				t.Errorf("apply while the shard is being rebuilt: %v, want an error to wait out", err)
			}
		})
	}
}

// TestOnRedisCluster runs the view on a real 3-master Redis Cluster: the slots the view computes
// are the cluster's, 3 partitions per topic put 2 shards on each master, and batches, pages and a
// shard's reset work across the masters.
func TestOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	ctx := context.Background()
	for _, key := range []string{"foo", "bar{}", "{}bar", "searchflow:{s1}:users", "a{b}c{d}"} {
		slot, err := c.Do(ctx, c.B().ClusterKeyslot().Key(key).Build()).AsInt64()
		if err != nil || uint16(slot) != Slot(key) {
			t.Errorf("CLUSTER KEYSLOT %q = %d (%v), Slot says %d", key, slot, err, Slot(key))
		}
	}
	v := New(c)
	layout := Layout{UsersTopic: "t", Users: 3, HotelsTopic: "t-hotels", Hotels: 3}
	if err := v.Claim(ctx, layout); err != nil {
		t.Fatal(err)
	}
	shards, _, err := v.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perMaster := map[int]int{}
	for _, sh := range shards {
		perMaster[cl.SlotOwner(t, int(sh.Slot))]++
	}
	if len(perMaster) != 3 || perMaster[0] != 2 || perMaster[1] != 2 || perMaster[2] != 2 {
		t.Errorf("shards per master %v, want 2 on each of 3", perMaster)
	}

	users, hotels := NewBatch(), NewBatch()
	for i := range 300 {
		p := int32(i % 3)
		users.Count(p, Users, fmt.Sprintf("u%d", i%30))
		hotels.Count(p, Hotels, fmt.Sprintf("h%d", i%3)) // hotel hN only ever in partition N
		hotels.Count(p, Advertisers, fmt.Sprintf("a%d", i%7))
		hotels.OfferPrice(p, fmt.Sprintf("h%d", i%3), fmt.Sprintf("a%d", i%7), int64(1000-i))
	}
	for p := range int32(3) {
		users.Offsets[p] = PartitionOffsets{Expect: NoOffset, Next: 100}
		hotels.Offsets[p] = PartitionOffsets{Expect: NoOffset, Next: 100}
	}
	if err := v.Apply(ctx, UserShards, users); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, HotelShards, hotels); err != nil {
		t.Fatal(err)
	}
	reader := New(c) // another process: it reads the stored layout
	total, page, err := reader.Counts(ctx, Users, 0, 5)
	if err != nil || total != 30 || len(page) != 5 || page[0].Count != 10 || page[0].ID != "u0" {
		t.Errorf("users %d %v (%v)", total, page, err)
	}
	total, advs, err := reader.Counts(ctx, Advertisers, 0, 10)
	if err != nil || total != 7 || advs[0].ID != "a0" || advs[0].Count != 43 {
		t.Errorf("advertisers %d %v (%v)", total, advs, err)
	}
	total, prices, err := reader.MinPrices(ctx, 0, 10)
	if err != nil || total != 3 || len(prices) != 3 || prices[0].HotelID != "h0" || prices[0].Prices["a0"] != 1000-294 {
		t.Errorf("min prices %d %v (%v)", total, prices, err)
	}
	for _, sh := range shards {
		if sh.Role == UserShards && sh.Partition == 1 {
			if _, err := v.ResetShard(ctx, sh); err != nil {
				t.Fatal(err)
			}
		}
	}
	if total, _, err := reader.Counts(ctx, Users, 0, 5); err != nil || total != 20 {
		t.Errorf("after the reset of one user shard: %d users (%v), want 20", total, err)
	}
}
