package view

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/searchflow/searchflow/internal/redistest"
)

// TestSnapshotRestoresEveryShard: a view written to a file and loaded into an empty store reads
// back shard by shard exactly as it was — offsets, raw watermarks, counts, price index and
// minimum prices — and an aggregator's next batch applies on top of it (its expected offset is
// the snapshot's). On redis-server and on miniredis, the embedded store that needs it.
func TestSnapshotRestoresEveryShard(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := claimed(t, c)
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 500, "b": 700})
			add(b, "u1", "h2", map[string]int64{"a": 300})
			add(b, "u2", "h1", map[string]int64{"a": 400})
			b.at(1, PartitionOffsets{Expect: NoOffset, Next: 12})
			b.sources[1] = map[int32]int64{0: 40, 3: 7}
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			before := dumpAll(t, v)

			s, err := v.TakeSnapshot(ctx)
			if err != nil || s == nil {
				t.Fatalf("snapshot: %v, %v", s, err)
			}
			if n := s.Next(UserShards); n[1] != 12 || n[0] != NoOffset {
				t.Errorf("snapshot's user offsets %v, want partition 1 at 12 and 0 at none", n)
			}
			if s.Events() != 3 {
				t.Errorf("snapshot counts %d events, want 3", s.Events())
			}
			path := filepath.Join(t.TempDir(), "view.snapshot")
			if err := WriteSnapshot(path, s); err != nil {
				t.Fatal(err)
			}
			read, err := ReadSnapshot(path)
			if err != nil {
				t.Fatal(err)
			}

			if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
				t.Fatal(err)
			}
			fresh := New(c)
			if err := fresh.RestoreSnapshot(ctx, read); err != nil {
				t.Fatal(err)
			}
			if after := dumpAll(t, fresh); !reflect.DeepEqual(after, before) {
				t.Errorf("restored view differs:\n got %+v\nwant %+v", after, before)
			}
			if err := fresh.RestoreSnapshot(ctx, read); err == nil || !strings.Contains(err.Error(), "already holds a view") {
				t.Errorf("a second restore: %v, want a refusal", err)
			}

			b = newTestBatch()
			add(b, "u2", "h1", map[string]int64{"a": 100})
			b.at(1, PartitionOffsets{Expect: 12, Next: 13})
			if err := b.apply(ctx, fresh); err != nil {
				t.Fatalf("the next batch on the restored view: %v", err)
			}
			users, err := fresh.ReadShard(ctx, shardOf(t, fresh, UserShards, 1))
			if err != nil || users.Next != 13 || users.Counts[Users]["u2"] != 2 {
				t.Errorf("after the next batch: %+v (%v)", users, err)
			}
		})
	}
}

// dumpAll reads every shard of v.
func dumpAll(t *testing.T, v *View) []ShardDump {
	t.Helper()
	shards, _, err := v.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []ShardDump
	for _, sh := range shards {
		d, err := v.ReadShard(context.Background(), sh)
		if err != nil {
			t.Fatal(err)
		}
		d.Shard.prefix = "" // the same shard, whichever View read it
		out = append(out, d)
	}
	return out
}

// TestSnapshotFile: no file reads as no snapshot; a damaged file is an error naming it; a
// failed write leaves the previous snapshot whole.
func TestSnapshotFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "view.snapshot")
	if s, err := ReadSnapshot(path); s != nil || err != nil {
		t.Fatalf("no file: %v, %v", s, err)
	}
	first := &Snapshot{Format: snapshotFormat, LayoutVersion: layoutVersion, Layout: Layout{UsersTopic: "p", Users: 1, HotelsTopic: "h", Hotels: 1},
		Shards: []ShardState{{Role: UserShards, Partition: 0, Next: 5, Counts: map[Kind]map[string]int64{Users: {"u": 5}}}}}
	if err := WriteSnapshot(path, first); err != nil {
		t.Fatal(err)
	}
	if err := WriteSnapshot(filepath.Join(dir, "missing", "view.snapshot"), first); err == nil {
		t.Error("a write into a missing directory succeeded")
	}
	got, err := ReadSnapshot(path)
	if err != nil || got.Events() != 5 || got.Next(UserShards)[0] != 5 {
		t.Errorf("read back %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries after the writes, want the snapshot alone", len(entries))
	}
	if err := os.WriteFile(path, []byte(`{"format":1,"shards":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a damaged snapshot: %v, want an error naming %s", err, path)
	}
}

// TestResetShardToSnapshot: a shard reset to a snapshot's state of it holds exactly that state —
// what came after is gone, the rebuild mark is cleared, the offset is the snapshot's — on both
// stores; a state with no offset leaves the shard empty, for its aggregator to read from the
// start.
func TestResetShardToSnapshot(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := claimed(t, c)
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 500})
			b.at(2, PartitionOffsets{Expect: NoOffset, Next: 5})
			b.sources[2] = map[int32]int64{1: 10}
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			s, err := v.TakeSnapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := dumpAll(t, v)
			b = newTestBatch()
			add(b, "u2", "h2", map[string]int64{"b": 100})
			b.at(2, PartitionOffsets{Expect: 5, Next: 9})
			b.sources[2] = map[int32]int64{1: 14}
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			for _, st := range s.Shards {
				if _, err := v.ResetShardTo(ctx, shardOf(t, v, st.Role, st.Partition), st); err != nil {
					t.Fatal(err)
				}
			}
			if got := dumpAll(t, v); !reflect.DeepEqual(got, want) {
				t.Errorf("after the reset:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestSnapshotLock: the snapshot lock has one holder at a time (the keeper's round or a rebuild
// from the snapshot), a release frees it for the next, a release by a former holder whose lock
// expired does not free another's, and a waiter gets it once it is free. On both stores.
func TestSnapshotLock(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := New(c)
			release, ok, err := v.LockSnapshots(ctx, time.Minute)
			if err != nil || !ok {
				t.Fatalf("first lock: %v, %v", ok, err)
			}
			if _, ok, err := v.LockSnapshots(ctx, time.Minute); err != nil || ok {
				t.Fatalf("a second holder: %v, %v", ok, err)
			}
			if err := release(ctx); err != nil {
				t.Fatal(err)
			}
			next, err := v.WaitLockSnapshots(ctx, time.Minute, 10*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if err := release(ctx); err != nil { // the first holder's token: not the lock now
				t.Fatal(err)
			}
			if _, ok, _ := v.LockSnapshots(ctx, time.Minute); ok {
				t.Error("a stale release freed the next holder's lock")
			}
			if err := next(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := v.LockSnapshots(ctx, time.Minute); !ok {
				t.Error("the lock is not free after its holder released it")
			}
		})
	}
}

// TestRestoreWritesInChunks: keys of more members than one command carries (restoreChunk) are
// written whole, as sorted sets and as hashes.
func TestRestoreWritesInChunks(t *testing.T) {
	c := redistest.Start(t).Client(t)
	v := New(c)
	ctx := context.Background()
	members := map[string]int64{}
	for i := range 2*restoreChunk + 7 {
		members[fmt.Sprintf("m%d", i)] = int64(i + 1)
	}
	if err := v.zadd(ctx, "z", members, -1); err != nil {
		t.Fatal(err)
	}
	if err := v.hset(ctx, "h", members); err != nil {
		t.Fatal(err)
	}
	z, err1 := c.Do(ctx, c.B().Zrange().Key("z").Min("0").Max("-1").Withscores().Build()).AsZScores()
	h, err2 := c.Do(ctx, c.B().Hgetall().Key("h").Build()).AsIntMap()
	if err1 != nil || err2 != nil || len(z) != len(members) || len(h) != len(members) {
		t.Fatalf("%d and %d members written (%v, %v), want %d", len(z), len(h), err1, err2, len(members))
	}
	for _, s := range z {
		if int64(-s.Score) != members[s.Member] || h[s.Member] != members[s.Member] {
			t.Fatalf("%s: score %v, field %d, want %d", s.Member, s.Score, h[s.Member], members[s.Member])
		}
	}
}
