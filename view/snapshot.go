package view

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"github.com/searchflow/searchflow/trends"
)

// A snapshot is the whole view written to a file, for a view held by a store that keeps nothing
// when it stops (the embedded one): loaded into the empty store at start, it gives the aggregators
// the offsets to resume from, so the topics need not be kept from their first offset.
//
// Each shard is read at one instant (ReadShard), with its own offset and raw watermarks: a shard
// restored from a snapshot is exactly the view of its partition up to that offset, whatever the
// other shards hold. The snapshot as a whole need not be of one instant.

// snapshotFormat is the version of the file's format.
const snapshotFormat = 1

// Snapshot is the view as one file holds it.
type Snapshot struct {
	Format int `json:"format"`
	// LayoutVersion is the key layout the shards were read from; a snapshot of another layout
	// is refused.
	LayoutVersion int    `json:"layout_version"`
	Layout        Layout `json:"layout"`
	// Cheapest is set when the view had kept the cheapest-per-search minimums since it was
	// claimed; a view restored without it does not answer them.
	Cheapest bool         `json:"cheapest"`
	Taken    time.Time    `json:"taken"`
	Shards   []ShardState `json:"shards"`
}

// ShardState is one shard in a snapshot.
type ShardState struct {
	Role      Role                        `json:"role"`
	Partition int32                       `json:"partition"`
	Next      int64                       `json:"next"`
	Sources   map[int32]int64             `json:"sources,omitempty"`
	Counts    map[Kind]map[string]int64   `json:"counts,omitempty"`
	MinPrices map[string]map[string]int64 `json:"min_prices,omitempty"`
	Cheapest  map[string]map[string]int64 `json:"cheapest,omitempty"`
	// Stream is the partition's stream time, Trends the shard's windows (when the view keeps
	// trends): restored with the offset, so that lateness and windows go on exactly.
	Stream *int64       `json:"stream,omitempty"`
	Trends []WindowDump `json:"trends,omitempty"`
}

// Next returns, per partition of role's topic, the first offset the snapshot does not hold
// (NoOffset: nothing of it).
func (s *Snapshot) Next(role Role) map[int32]int64 {
	out := map[int32]int64{}
	for _, sh := range s.Shards {
		if sh.Role == role {
			out[sh.Partition] = sh.Next
		}
	}
	return out
}

// Events is the number of events the snapshot's user shards count.
func (s *Snapshot) Events() int64 {
	var n int64
	for _, sh := range s.Shards {
		for _, c := range sh.Counts[Users] {
			n += c
		}
	}
	return n
}

// TakeSnapshot reads every shard of the stored layout. It fails on a shard being rebuilt, whose
// contents are partly deleted, and on a damaged one. With no stored layout it returns nil.
func (v *View) TakeSnapshot(ctx context.Context) (*Snapshot, error) {
	shards, layout, err := v.Shards(ctx)
	if err != nil {
		return nil, fmt.Errorf("view: snapshot: %w", err)
	}
	if len(shards) == 0 {
		return nil, nil
	}
	cheapest, err := v.KeepsCheapest(ctx)
	if err != nil {
		return nil, fmt.Errorf("view: snapshot: %w", err)
	}
	s := &Snapshot{Format: snapshotFormat, LayoutVersion: layoutVersion, Layout: layout, Cheapest: cheapest, Taken: time.Now().UTC()}
	for _, sh := range shards {
		d, err := v.ReadShard(ctx, sh)
		if err != nil {
			return nil, fmt.Errorf("view: snapshot: %w", err)
		}
		if d.Rebuilding {
			return nil, fmt.Errorf("view: snapshot: shard %v is being rebuilt", sh)
		}
		st := ShardState{Role: sh.Role, Partition: sh.Partition, Next: d.Next,
			Sources: d.Sources, Counts: d.Counts, MinPrices: d.MinPrices, Cheapest: d.Cheapest, Trends: d.Trends}
		if d.Stream.Set {
			st.Stream = &d.Stream.T
		}
		s.Shards = append(s.Shards, st)
	}
	return s, nil
}

// restoreChunk is the score/member pairs per ZADD when a snapshot is loaded.
const restoreChunk = 1000

// RestoreSnapshot loads s into a store that holds no view yet: it claims s's layout, then
// writes each shard, its offset last. A store that already holds a layout is refused.
func (v *View) RestoreSnapshot(ctx context.Context, s *Snapshot) error {
	if s.Format != snapshotFormat || s.LayoutVersion != layoutVersion {
		return fmt.Errorf("view: snapshot of format %d and layout %d; this version reads format %d, layout %d",
			s.Format, s.LayoutVersion, snapshotFormat, layoutVersion)
	}
	stored, err := v.readLayout(ctx)
	if err != nil {
		return err
	}
	if stored != nil {
		return fmt.Errorf("view: restore a snapshot: the store already holds a view (%v)", *stored)
	}
	if err := v.Claim(ctx, s.Layout); err != nil {
		return fmt.Errorf("view: restore a snapshot: %w", err)
	}
	if !s.Cheapest {
		if err := v.client.Do(ctx, v.client.B().Hdel().Key(layoutKey).Field(cheapestField).Build()).Error(); err != nil {
			return fmt.Errorf("view: restore a snapshot: %w", err)
		}
	}
	shards, _, err := v.Shards(ctx)
	if err != nil {
		return fmt.Errorf("view: restore a snapshot: %w", err)
	}
	byPos := map[[2]int32]Shard{}
	for _, sh := range shards {
		byPos[[2]int32{int32(sh.Role), sh.Partition}] = sh
	}
	for _, st := range s.Shards {
		sh, ok := byPos[[2]int32{int32(st.Role), st.Partition}]
		if !ok {
			return fmt.Errorf("view: restore a snapshot: shard %s/%d is not in its layout %v", st.Role, st.Partition, s.Layout)
		}
		if err := v.restoreShard(ctx, sh, st); err != nil {
			return fmt.Errorf("view: restore shard %v: %w", sh, err)
		}
	}
	return nil
}

// restoreShard writes one shard's keys, the offset last.
func (v *View) restoreShard(ctx context.Context, sh Shard, st ShardState) error {
	if err := v.restoreContents(ctx, sh, st); err != nil {
		return err
	}
	if st.Next == NoOffset {
		return nil
	}
	cmd := v.client.B().Hset().Key(sh.Key(stateKey)).FieldValue().FieldValue("next", strconv.FormatInt(st.Next, 10))
	if st.Stream != nil {
		cmd = cmd.FieldValue(streamField, strconv.FormatInt(*st.Stream, 10))
	}
	return v.client.Do(ctx, cmd.Build()).Error()
}

// stream is the shard's stream time.
func (st ShardState) stream() trends.StreamTime {
	if st.Stream == nil {
		return trends.StreamTime{}
	}
	return trends.StreamTime{T: *st.Stream, Set: true}
}

// ResetShardTo is ResetShard ending with the shard as st holds it (a snapshot's state of it)
// instead of empty: marked as being rebuilt, emptied, filled with st's contents and raw
// watermarks, and then, in one step, unmarked with st's offset. The aggregator owning the
// partition finds the offset moved under it and reads the partition again from st's offset —
// what a view whose topics were trimmed below its snapshot can be rebuilt from. It returns the
// number of keys deleted.
func (v *View) ResetShardTo(ctx context.Context, sh Shard, st ShardState) (int, error) {
	state := sh.prefix + stateKey
	deleted, err := v.markAndEmpty(ctx, sh)
	if err != nil {
		return deleted, err
	}
	if err := v.restoreContents(ctx, sh, st); err != nil {
		return deleted, fmt.Errorf("view: fill shard %v from its snapshot: %w", sh, err)
	}
	next := ""
	if st.Next != NoOffset {
		next = strconv.FormatInt(st.Next, 10)
	}
	if err := rueidis.NewLuaScript(endResetLua).Exec(ctx, v.client, []string{state}, []string{next, streamArg(st.stream())}).Error(); err != nil {
		return deleted, fmt.Errorf("view: end the rebuild of shard %v: %w", sh, err)
	}
	return deleted, nil
}

// endResetLua replaces a shard's state (its rebuild mark among it) with the offset ARGV[1] and
// the stream time ARGV[2] (none when empty), in one step.
const endResetLua = `
redis.call('DEL', KEYS[1])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'next', ARGV[1]) end
if ARGV[1] ~= '' and ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'stream', ARGV[2]) end
return 1
`

// restoreContents writes one shard's counts, minimum prices, price index and raw watermarks.
func (v *View) restoreContents(ctx context.Context, sh Shard, st ShardState) error {
	do := func(cmd rueidis.Completed) error { return v.client.Do(ctx, cmd).Error() }
	for kind, counts := range st.Counts {
		if err := v.zadd(ctx, sh.Key(string(kind)), counts, -1); err != nil {
			return err
		}
	}
	index := map[string]int64{}
	for s, byHotel := range []map[string]map[string]int64{st.MinPrices, st.Cheapest} {
		for hotel, prices := range byHotel {
			if err := v.zadd(ctx, sh.Key(PriceScope(s).keyPrefix()+hotel), prices, 1); err != nil {
				return err
			}
			index[hotel] = 0
		}
	}
	if err := v.zadd(ctx, sh.Key(minPriceHotelsKey), index, 1); err != nil {
		return err
	}
	if err := v.restoreTrends(ctx, sh, st.Trends); err != nil {
		return err
	}
	if len(st.Sources) > 0 {
		cmd := v.client.B().Hset().Key(sh.Key(sourcesKey)).FieldValue()
		for p, o := range st.Sources {
			cmd = cmd.FieldValue(strconv.Itoa(int(p)), strconv.FormatInt(o, 10))
		}
		if err := do(cmd.Build()); err != nil {
			return err
		}
	}
	return nil
}

// zadd writes members with score sign × value, restoreChunk at a time.
func (v *View) zadd(ctx context.Context, key string, members map[string]int64, sign float64) error {
	return v.inChunks(ctx, members, func(chunk []memberValue) rueidis.Completed {
		cmd := v.client.B().Zadd().Key(key).ScoreMember()
		for _, mv := range chunk {
			cmd = cmd.ScoreMember(sign*float64(mv.value), mv.member)
		}
		return cmd.Build()
	})
}

// hset writes members as the fields of a hash, their values as integers, restoreChunk at a time.
func (v *View) hset(ctx context.Context, key string, members map[string]int64) error {
	return v.inChunks(ctx, members, func(chunk []memberValue) rueidis.Completed {
		cmd := v.client.B().Hset().Key(key).FieldValue()
		for _, mv := range chunk {
			cmd = cmd.FieldValue(mv.member, strconv.FormatInt(mv.value, 10))
		}
		return cmd.Build()
	})
}

// memberValue is one member of a restored key and its value.
type memberValue struct {
	member string
	value  int64
}

// inChunks sends members restoreChunk at a time, each chunk as the command build makes of it.
func (v *View) inChunks(ctx context.Context, members map[string]int64, build func([]memberValue) rueidis.Completed) error {
	chunk := make([]memberValue, 0, min(len(members), restoreChunk))
	send := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := v.client.Do(ctx, build(chunk)).Error()
		chunk = chunk[:0]
		return err
	}
	for m, val := range members {
		if chunk = append(chunk, memberValue{m, val}); len(chunk) == restoreChunk {
			if err := send(); err != nil {
				return err
			}
		}
	}
	return send()
}

// WriteSnapshot writes s to path so that a crash at any moment leaves either the previous file
// or the new one whole: a temporary file beside it, synced, renamed over it, and the directory
// synced.
func WriteSnapshot(path string, s *Snapshot) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("view: encode the snapshot: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("view: write the snapshot: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("view: write the snapshot %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("view: sync the snapshot %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("view: write the snapshot %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("view: replace the snapshot %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("view: sync the directory of the snapshot: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("view: sync the directory of the snapshot %s: %w", dir, err)
	}
	return nil
}

// ReadSnapshot reads the snapshot at path; nil when there is none.
func ReadSnapshot(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("view: read the snapshot: %w", err)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("view: the snapshot %s cannot be read: %w", path, err)
	}
	return &s, nil
}
