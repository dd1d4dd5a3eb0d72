package view

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/trends"
)

// shardOf returns the shard of role for partition p in v's stored layout.
func shardOf(t testing.TB, v *View, r Role, p int32) Shard {
	t.Helper()
	shards, _, err := v.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		if sh.Role == r && sh.Partition == p {
			return sh
		}
	}
	t.Fatalf("no shard %v/%d in %v", r, p, shards)
	return Shard{}
}

// TestReadShardReturnsWhatWasApplied: a dump holds the shard's offset, source marks, counts,
// price index and minimum prices exactly as the batches left them (on redis-server and on
// miniredis, which has EVAL_RO too); an empty shard reads as NoOffset and nothing.
func TestReadShardReturnsWhatWasApplied(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 500, "b": 700})
			add(b, "u1", "h2", map[string]int64{"a": 300})
			add(b, "u2", "h1", map[string]int64{"a": 400})
			b.at(1, PartitionOffsets{Expect: NoOffset, Next: 12})
			b.sources[1] = map[int32]int64{0: 40, 3: 7}
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			users, err := v.ReadShard(ctx, shardOf(t, v, UserShards, 1))
			if err != nil {
				t.Fatal(err)
			}
			if users.Next != 12 || users.Rebuilding || !reflect.DeepEqual(users.Sources, map[int32]int64{0: 40, 3: 7}) ||
				!reflect.DeepEqual(users.Counts, map[Kind]map[string]int64{Users: {"u1": 2, "u2": 1}}) ||
				len(users.PricedHotels) != 0 || len(users.MinPrices) != 0 {
				t.Errorf("user shard dump %+v", users)
			}
			hotels, err := v.ReadShard(ctx, shardOf(t, v, HotelShards, 1))
			if err != nil {
				t.Fatal(err)
			}
			wantCounts := map[Kind]map[string]int64{Hotels: {"h1": 2, "h2": 1}, Advertisers: {"a": 3, "b": 1}}
			wantPrices := map[string]map[string]int64{"h1": {"a": 400, "b": 700}, "h2": {"a": 300}}
			if hotels.Next != 12 || !reflect.DeepEqual(hotels.Counts, wantCounts) ||
				!reflect.DeepEqual(hotels.PricedHotels, []string{"h1", "h2"}) || !reflect.DeepEqual(hotels.MinPrices, wantPrices) {
				t.Errorf("hotel shard dump %+v", hotels)
			}
			empty, err := v.ReadShard(ctx, shardOf(t, v, HotelShards, 2))
			if err != nil || empty.Next != NoOffset || len(empty.Sources) != 0 || len(empty.Counts[Hotels]) != 0 || len(empty.MinPrices) != 0 {
				t.Errorf("empty shard dump %+v (%v)", empty, err)
			}
		})
	}
}

// TestReadShardIsOneInstant: while a writer applies one batch after another, each adding a new
// hotel (so the price index keeps growing under the reader), every dump is of one instant: at
// offset n it holds exactly the n hotels of the first n batches, each with its price, and the
// users of those batches.
func TestReadShardIsOneInstant(t *testing.T) {
	const batches = 200
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			wg.Add(1)
			var writeErr error
			go func() {
				defer wg.Done()
				writeErr = writeOneHotelPerBatch(ctx, v, batches)
			}()
			hotels, users := shardOf(t, v, HotelShards, 0), shardOf(t, v, UserShards, 0)
			dumps, last := 0, int64(0)
			for last < batches && ctx.Err() == nil {
				for _, sh := range []Shard{hotels, users} {
					d, err := v.ReadShard(ctx, sh)
					if err != nil {
						t.Fatal(err)
					}
					checkInstant(t, d)
					last = max(last, d.Next)
					dumps++
				}
			}
			cancel()
			wg.Wait()
			if writeErr != nil && !errors.Is(writeErr, context.Canceled) {
				t.Fatal(writeErr)
			}
			t.Logf("%d dumps while the writer applied %d batches", dumps, last)
		})
	}
}

// writeOneHotelPerBatch applies n batches to partition 0: batch i counts user u<i%7>, hotel
// h<i> and advertiser a with price 1000+i.
func writeOneHotelPerBatch(ctx context.Context, v *View, n int) error {
	for i := range int64(n) {
		b := newTestBatch()
		add(b, fmt.Sprintf("u%d", i%7), fmt.Sprintf("h%03d", i), map[string]int64{"a": 1000 + i})
		expect := i
		if i == 0 {
			expect = NoOffset
		}
		b.at(0, PartitionOffsets{Expect: expect, Next: i + 1})
		if err := b.apply(ctx, v); err != nil {
			return err
		}
	}
	return nil
}

// checkInstant checks that a dump of writeOneHotelPerBatch's shards is of one instant.
func checkInstant(t *testing.T, d ShardDump) {
	t.Helper()
	n := max(d.Next, 0)
	if d.Shard.Role == UserShards {
		var total int64
		for _, c := range d.Counts[Users] {
			total += c
		}
		if total != n {
			t.Fatalf("user dump at offset %d counts %d events", d.Next, total)
		}
		return
	}
	if int64(len(d.Counts[Hotels])) != n || int64(len(d.PricedHotels)) != n || int64(len(d.MinPrices)) != n || d.Counts[Advertisers]["a"] != n {
		t.Fatalf("hotel dump at offset %d: %d hotels, %d indexed, %d priced, advertiser a %d",
			d.Next, len(d.Counts[Hotels]), len(d.PricedHotels), len(d.MinPrices), d.Counts[Advertisers]["a"])
	}
	for i := range n {
		if p := d.MinPrices[fmt.Sprintf("h%03d", i)]["a"]; p != 1000+i {
			t.Fatalf("hotel dump at offset %d: h%03d has price %d", d.Next, i, p)
		}
	}
}

// TestDumpScriptReadsHotelsIndexedSinceTheCall: a hotel indexed after its caller read the index
// (so not declared) is read by its key's name: the dump is whole, and a growing index cannot keep
// ReadShard from settling. TestReadShardAndDeleteLayoutOnRedisCluster does it on a cluster.
func TestDumpScriptReadsHotelsIndexedSinceTheCall(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 5})
			add(b, "u1", "h2", map[string]int64{"a": 6})
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: 2})
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			d := dumpDeclaring(t, v, shardOf(t, v, HotelShards, 0), []string{"h1"})
			want := map[string]map[string]int64{"h1": {"a": 5}, "h2": {"a": 6}}
			if !reflect.DeepEqual(d.PricedHotels, []string{"h1", "h2"}) || !reflect.DeepEqual(d.MinPrices, want) || !reflect.DeepEqual(d.Cheapest, want) {
				t.Errorf("dump with h2 undeclared: index %v, prices %v, cheapest %v; want both hotels %v", d.PricedHotels, d.MinPrices, d.Cheapest, want)
			}
		})
	}
}

// dumpDeclaring runs the dump script on hotel shard sh (a view without trends) declaring only
// the hotels of declared, and decodes its reply.
func dumpDeclaring(t *testing.T, v *View, sh Shard, declared []string) ShardDump {
	t.Helper()
	keys := []string{sh.Key(stateKey), sh.Key(sourcesKey), sh.Key("hotels"), sh.Key("advertisers"), sh.Key(minPriceHotelsKey)}
	for _, prefix := range []string{minPriceKeyPrefix, cheapestKeyPrefix} {
		for _, h := range declared {
			keys = append(keys, sh.Key(prefix+h))
		}
	}
	args := append([]string{"2", "1", "", sh.Key(minPriceKeyPrefix), sh.Key(cheapestKeyPrefix)}, declared...)
	reply, err := rueidis.NewLuaScriptReadOnly(dumpLua).Exec(context.Background(), v.client, keys, args).ToArray()
	if err != nil || len(reply) < 4 {
		t.Fatalf("dump of %v: %v (%d parts)", sh, err, len(reply))
	}
	index, err := reply[3].AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeDump(sh, HotelShards.kinds(), index, reply)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReadShardReportsDamage: a key of another type, or a score the view could not have written,
// is a *DamagedError naming the key, not a dump that silently differs.
func TestReadShardReportsDamage(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := claimed(t, c)
			users, hotels := shardOf(t, v, UserShards, 0), shardOf(t, v, HotelShards, 0)
			for _, tt := range []struct {
				shard Shard
				key   string
				cmd   rueidis.Completed
			}{
				{users, users.Key("users"), c.B().Set().Key(users.Key("users")).Value("x").Build()},
				{users, users.Key("users"), c.B().Zadd().Key(users.Key("users")).ScoreMember().ScoreMember(-1.5, "u").Build()},
				{users, users.Key(stateKey), c.B().Hset().Key(users.Key(stateKey)).FieldValue().FieldValue("next", "x").Build()},
				{hotels, hotels.Key(minPriceHotelsKey), c.B().Set().Key(hotels.Key(minPriceHotelsKey)).Value("x").Build()},
				{hotels, hotels.Key(minPriceKeyPrefix + "h"), c.B().Hset().Key(hotels.Key(minPriceKeyPrefix+"h")).FieldValue().FieldValue("a", "1").Build()},
			} {
				if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
					t.Fatal(err)
				}
				v := claimed(t, c)
				if tt.key == hotels.Key(minPriceKeyPrefix+"h") {
					// the hotel is indexed, its price key holds a hash
					if err := c.Do(ctx, c.B().Zadd().Key(hotels.Key(minPriceHotelsKey)).ScoreMember().ScoreMember(0, "h").Build()).Error(); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.Do(ctx, tt.cmd).Error(); err != nil {
					t.Fatal(err)
				}
				_, err := v.ReadShard(ctx, tt.shard)
				var damaged *DamagedError
				if !errors.As(err, &damaged) || damaged.Key != tt.key {
					t.Errorf("%v: err %v, want a DamagedError naming %s", tt.cmd.Commands(), err, tt.key)
				}
			}
		})
	}
}

// TestReadShardOfALargeShard reads a shard of 100,000 users and one of 20,000 hotels with a
// price each: no list is spread over a call's arguments, and one reply holds them all.
func TestReadShardOfALargeShard(t *testing.T) {
	const users, hotels = 100_000, 20_000
	ctx := context.Background()
	v := claimed(t, redistest.Start(t).Client(t))
	ub, hb := NewBatch(), NewBatch()
	for i := range users {
		ub.Count(0, Users, fmt.Sprintf("user-%06d", i))
	}
	for i := range hotels {
		h := fmt.Sprintf("hotel-%05d", i)
		hb.Count(0, Hotels, h)
		hb.Count(0, Advertisers, "a")
		hb.OfferPrice(0, h, "a", int64(1+i))
	}
	ub.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: users}
	hb.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: hotels}
	if err := v.Apply(ctx, UserShards, ub); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, HotelShards, hb); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	u, err := v.ReadShard(ctx, shardOf(t, v, UserShards, 0))
	if err != nil || u.Next != users || len(u.Counts[Users]) != users || u.Counts[Users]["user-099999"] != 1 {
		t.Fatalf("user dump: next %d, %d users (%v)", u.Next, len(u.Counts[Users]), err)
	}
	h, err := v.ReadShard(ctx, shardOf(t, v, HotelShards, 0))
	if err != nil || h.Next != hotels || len(h.MinPrices) != hotels || h.MinPrices["hotel-19999"]["a"] != hotels || h.Counts[Advertisers]["a"] != hotels {
		t.Fatalf("hotel dump: next %d, %d hotels priced (%v)", h.Next, len(h.MinPrices), err)
	}
	t.Logf("read %d users and %d hotels with prices in %v", users, hotels, time.Since(start))
}

// TestDeleteLayoutLetsAnotherLayoutClaim: with the shards reset and the layout deleted (the
// layout-1 keys too), a writer with another partition count claims the view; other keys stay.
func TestDeleteLayoutLetsAnotherLayoutClaim(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := claimed(t, c)
			for _, kv := range [][2]string{{legacyOffsetsPrefix + "t", "x"}, {legacyPrefix + "users", "y"}, {"other", "z"}} {
				if err := c.Do(ctx, c.B().Set().Key(kv[0]).Value(kv[1]).Build()).Error(); err != nil {
					t.Fatal(err)
				}
			}
			other := testLayout
			other.Users = 6
			var wrong *LayoutError
			if err := New(c).Claim(ctx, other); !errors.As(err, &wrong) {
				t.Fatalf("claim of another layout before the delete: %v, want a LayoutError", err)
			}
			n, err := New(c).DeleteLayout(ctx)
			if err != nil || n != 3 {
				t.Fatalf("DeleteLayout deleted %d keys (%v), want the layout and 2 layout-1 keys", n, err)
			}
			if err := New(c).Claim(ctx, other); err != nil {
				t.Fatalf("claim after the delete: %v", err)
			}
			if got, err := c.Do(ctx, c.B().Get().Key("other").Build()).ToString(); err != nil || got != "z" {
				t.Errorf("a key outside the view: %q (%v)", got, err)
			}
			_ = v
		})
	}
}

// TestReadShardAndDeleteLayoutOnRedisCluster: on a real 3-master cluster every shard is read by
// one script on its master, and the layout-1 keys are found on whichever node holds them.
func TestReadShardAndDeleteLayoutOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	ctx := context.Background()
	v := New(c)
	ws, err := trends.ParseWindows("1h")
	if err != nil {
		t.Fatal(err)
	}
	layout := Layout{UsersTopic: "t", Users: 3, HotelsTopic: "t-hotels", Hotels: 3, Trends: TrendSpec{Windows: ws, Lateness: 5 * time.Minute}.String()}
	if err := v.Claim(ctx, layout); err != nil {
		t.Fatal(err)
	}
	users, hotels := NewBatch(), NewBatch()
	const t0 = 1_700_000_000
	for p := range int32(3) { // every event of the test at t0: one bucket, read by name
		for _, b := range []*Batch{users, hotels} {
			b.TrendShare(p, 1, 0, ws[0].BucketOf(t0))
			b.StreamTimes(p, 1, trends.StreamTime{}, trends.StreamTime{T: t0, Set: true})
		}
	}
	for i := range 300 {
		p := int32(i % 3)
		users.Count(p, Users, fmt.Sprintf("u%d", i%30))
		hotels.Count(p, Hotels, fmt.Sprintf("h%d", i%9))
		hotels.Count(p, Advertisers, fmt.Sprintf("a%d", i%7))
		hotels.OfferPrice(p, fmt.Sprintf("h%d", i%9), fmt.Sprintf("a%d", i%7), int64(1000-i))
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
	shards, _, err := v.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	masters := map[int]bool{}
	for _, sh := range shards {
		d, err := New(c).ReadShard(ctx, sh)
		if err != nil {
			t.Fatalf("shard %v: %v", sh, err)
		}
		masters[cl.SlotOwner(t, int(sh.Slot))] = true
		if len(d.Trends) != 1 || len(d.Trends[0].Buckets) != 1 || len(d.Trends[0].Buckets[ws[0].BucketOf(t0)]) == 0 {
			t.Errorf("shard %v: trends %+v, want the one bucket of t0", sh, d.Trends)
		}
		if sh.Role == UserShards && (d.Next != 100 || len(d.Counts[Users]) != 10) {
			t.Errorf("shard %v: next %d, %d users", sh, d.Next, len(d.Counts[Users]))
		}
		// Partition p holds events i ≡ p (mod 3), so hotels h<p>, h<p+3>, h<p+6>.
		if sh.Role == HotelShards && (d.Next != 100 || len(d.Counts[Hotels]) != 3 || len(d.MinPrices) != 3 || len(d.PricedHotels) != 3) {
			t.Errorf("shard %v: next %d, %d hotels, %d priced", sh, d.Next, len(d.Counts[Hotels]), len(d.MinPrices))
		}
		// Hotels indexed since the caller read the index are read by name, on the shard's master.
		if sh.Role != HotelShards {
			continue
		}
		if undeclared := dumpDeclaring(t, New(c), sh, nil); !reflect.DeepEqual(undeclared.MinPrices, d.MinPrices) {
			t.Errorf("shard %v with no hotel declared: prices %v, want %v", sh, undeclared.MinPrices, d.MinPrices)
		}
	}
	if len(masters) != 3 {
		t.Errorf("the shards read lived on %d masters, want 3", len(masters))
	}
	for i := range 20 { // layout-1 keys: one slot, on one of the masters
		if err := c.Do(ctx, c.B().Set().Key(fmt.Sprintf("%sk%d", legacyPrefix, i)).Value("x").Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := New(c).DeleteLayout(ctx); err != nil || n != 21 {
		t.Fatalf("DeleteLayout deleted %d keys (%v), want the layout and 20 layout-1 keys", n, err)
	}
	if err := New(c).Claim(ctx, Layout{UsersTopic: "t", Users: 6, HotelsTopic: "t-hotels", Hotels: 6}); err != nil {
		t.Errorf("claim after the delete: %v", err)
	}
}
