package ops

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/porttest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/view"
)

// fillView claims a layout of n partitions per topic in c and applies a batch to every shard.
func fillView(t *testing.T, c rueidis.Client, n int) {
	t.Helper()
	ctx := context.Background()
	v := view.New(c)
	if err := v.Claim(ctx, view.Layout{UsersTopic: usersTopic, Users: n, HotelsTopic: hotelsTopic, Hotels: n}); err != nil {
		t.Fatal(err)
	}
	users, hotels := view.NewBatch(), view.NewBatch()
	for p := range int32(n) {
		users.Count(p, view.Users, "u")
		hotels.Count(p, view.Hotels, "h")
		hotels.Count(p, view.Advertisers, "a")
		hotels.OfferPrice(p, "h", "a", 100)
		users.Offsets[p] = view.PartitionOffsets{Expect: view.NoOffset, Next: 1}
		hotels.Offsets[p] = view.PartitionOffsets{Expect: view.NoOffset, Next: 1}
	}
	if err := v.Apply(ctx, view.UserShards, users); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, view.HotelShards, hotels); err != nil {
		t.Fatal(err)
	}
}

// keysUnder lists the keys matching pattern on every node of c.
func keysUnder(t *testing.T, c rueidis.Client, pattern string) []string {
	t.Helper()
	var out []string
	for _, node := range c.Nodes() {
		keys, err := node.Do(context.Background(), node.B().Keys().Pattern(pattern).Build()).AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, keys...)
	}
	return out
}

// TestRebuildAllLetsAnotherLayoutClaim: `rebuild --all` resets every shard and deletes the
// layout, and the keys of a layout-1 view: afterwards a process with another partition count
// claims the view, on one redis-server and on a 3-master Redis Cluster.
func TestRebuildAllLetsAnotherLayoutClaim(t *testing.T) {
	for _, tt := range []struct {
		name  string
		start func(t *testing.T) (rueidis.Client, string)
	}{
		{"redis-server", func(t *testing.T) (rueidis.Client, string) {
			srv := redistest.Start(t)
			return srv.Client(t), srv.Addr
		}},
		{"cluster", func(t *testing.T) (rueidis.Client, string) {
			cl := redistest.StartCluster(t, 3)
			return cl.Client(t), strings.Join(cl.Addrs(), ",")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, addr := tt.start(t)
			ctx := context.Background()
			fillView(t, c, 3)
			if err := c.Do(ctx, c.B().Hset().Key("{searchflow}:offsets:"+usersTopic).FieldValue().FieldValue("0", "12").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := Rebuild(ctx, loadConfig(t, map[string]string{"REDIS_ADDR": addr}), &out, true, -1); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(out.String(), "reset shard "); n != 6 || !strings.Contains(out.String(), "deleted the layout and layout-1 keys (2 key(s))") {
				t.Errorf("rebuild --all said:\n%s", out.String())
			}
			if left := append(keysUnder(t, c, "searchflow:*"), keysUnder(t, c, "{searchflow}:*")...); len(left) > 0 {
				t.Errorf("keys left after rebuild --all: %v", left)
			}
			if err := view.New(c).Claim(ctx, view.Layout{UsersTopic: usersTopic, Users: 6, HotelsTopic: hotelsTopic, Hotels: 6}); err != nil {
				t.Errorf("claim of another partition count after rebuild --all: %v", err)
			}
		})
	}
}

// TestRebuildAllOfALayoutOneView: a Redis that holds only a layout-1 view (its offsets under
// {searchflow}:) refuses every claim until `rebuild --all` deletes it.
func TestRebuildAllOfALayoutOneView(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	for _, key := range []string{"{searchflow}:offsets:" + usersTopic, "{searchflow}:users"} {
		if err := c.Do(ctx, c.B().Hset().Key(key).FieldValue().FieldValue("0", "12").Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	layout := view.Layout{UsersTopic: usersTopic, Users: 3, HotelsTopic: hotelsTopic, Hotels: 3}
	var wrong *view.LayoutError
	if err := view.New(c).Claim(ctx, layout); !errors.As(err, &wrong) {
		t.Fatalf("claim over a layout-1 view: %v, want a LayoutError", err)
	}
	var out bytes.Buffer
	if err := Rebuild(ctx, loadConfig(t, map[string]string{"REDIS_ADDR": srv.Addr}), &out, true, -1); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "reset 0 shards, then deleted the layout and layout-1 keys (2 key(s))") {
		t.Errorf("rebuild --all said:\n%s", out.String())
	}
	if err := view.New(c).Claim(ctx, layout); err != nil {
		t.Errorf("claim after rebuild --all: %v", err)
	}
}

// TestRebuildRefusesWhatItCannotDo: a request that cannot be carried out is a *UsageError and
// touches nothing; a Redis that does not answer is a failure, not a usage error.
func TestRebuildRefusesWhatItCannotDo(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	fillView(t, c, 3)
	cfg := loadConfig(t, map[string]string{"REDIS_ADDR": srv.Addr})
	for _, tt := range []struct {
		name string
		cfg  map[string]string
		all  bool
		slot int
		want string
	}{
		{"no redis", map[string]string{}, true, -1, "REDIS_ADDR is empty"},
		{"both", nil, true, 5, "not both"},
		{"neither", nil, false, -1, "give --all"},
		{"no such slot", nil, false, 16384, "not a Redis Cluster hash slot"},
		{"no shard there", nil, false, 5, "no shard of the view is in slot 5; the shards are: users/0 (slot "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.cfg != nil {
				c = loadConfig(t, tt.cfg)
			}
			var out bytes.Buffer
			err := Rebuild(context.Background(), c, &out, tt.all, tt.slot)
			if !IsUsage(err) || !strings.Contains(err.Error(), tt.want) || out.Len() > 0 {
				t.Errorf("err %v, output %q; want a usage error saying %q", err, out.String(), tt.want)
			}
		})
	}
	// The layout; per user shard its state and users; per hotel shard its state, hotels,
	// advertisers, price index and one hotel's prices.
	if n := len(keysUnder(t, c, "searchflow:*")); n != 1+3*2+3*5 {
		t.Errorf("%d keys after refused rebuilds, want all 22 of the view", n)
	}
	err := Rebuild(context.Background(), loadConfig(t, map[string]string{"REDIS_ADDR": porttest.Refusing(t)}), &bytes.Buffer{}, true, -1)
	if err == nil || IsUsage(err) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("rebuild with nothing at REDIS_ADDR: %v, want a failure that says why", err)
	}
}

// TestVerifyRefusesWhatItCannotDo: without REDIS_ADDR, or with a Redis that holds no view,
// verify cannot run.
func TestVerifyRefusesWhatItCannotDo(t *testing.T) {
	srv := redistest.Start(t)
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "REDIS_ADDR is empty"},
		{map[string]string{"REDIS_ADDR": srv.Addr}, "redis holds no view"},
	} {
		var out bytes.Buffer
		equal, err := Verify(context.Background(), loadConfig(t, tt.env), &out, 10)
		if equal || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("verify with %v: equal %v, err %v; want an error saying %q", tt.env, equal, err, tt.want)
		}
	}
}
