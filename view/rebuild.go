package view

import (
	"context"
	"fmt"

	"github.com/redis/rueidis"
)

// Shard names one shard of the view: a partition of one of the two topics, and its slot.
type Shard struct {
	Role      Role
	Partition int32
	Slot      uint16
	prefix    string
}

func (s Shard) String() string {
	return fmt.Sprintf("%s/%d (slot %d)", s.Role, s.Partition, s.Slot)
}

// Shards returns every shard of the stored layout, user shards first; none while Redis holds no
// view.
func (v *View) Shards(ctx context.Context) ([]Shard, Layout, error) {
	s, ok, err := v.currentLayout(ctx)
	if err != nil || !ok {
		return nil, Layout{}, err
	}
	var out []Shard
	for _, r := range []Role{UserShards, HotelShards} {
		for p, prefix := range s.prefix[r] {
			out = append(out, Shard{Role: r, Partition: int32(p), Slot: Slot(prefix), prefix: prefix})
		}
	}
	return out, s.Layout, nil
}

// ResetShard empties one shard so that the aggregator owning its partition rebuilds it from
// Kafka, exactly once even while that aggregator keeps writing:
//
//  1. it marks the shard as being rebuilt: from then on the apply script refuses the shard's
//     batches with a TRYAGAIN error, which the aggregator waits out;
//  2. it deletes every other key of the shard (SCAN of its hash tag on every node);
//  3. it deletes the shard's state last, which ends the rebuild mark and the stored offset at
//     once: the aggregator's next apply finds no offset, and it reads the partition again from
//     the start of the topic.
//
// A reset that stops half-way leaves the shard marked; running it again finishes it. It returns
// the number of keys deleted.
func (v *View) ResetShard(ctx context.Context, sh Shard) (int, error) {
	state := sh.prefix + stateKey
	deleted, err := v.markAndEmpty(ctx, sh)
	if err != nil {
		return deleted, err
	}
	if err := v.client.Do(ctx, v.client.B().Del().Key(state).Build()).Error(); err != nil {
		return deleted, fmt.Errorf("view: end the rebuild of shard %v: %w", sh, err)
	}
	return deleted + 1, nil
}

// markAndEmpty marks a shard as being rebuilt (its state's "rebuilding"; the apply script refuses
// its batches from then on) and deletes every other key of it. It returns the keys deleted.
func (v *View) markAndEmpty(ctx context.Context, sh Shard) (int, error) {
	state := sh.prefix + stateKey
	if err := v.client.Do(ctx, v.client.B().Hset().Key(state).FieldValue().FieldValue("rebuilding", "1").Build()).Error(); err != nil {
		return 0, fmt.Errorf("view: mark shard %v as being rebuilt: %w", sh, err)
	}
	deleted := 0
	for _, node := range v.client.Nodes() {
		n, err := deleteMatching(ctx, node, sh.prefix, state, func(ctx context.Context, keys []string) (int64, error) {
			return v.client.Do(ctx, v.client.B().Del().Key(keys...).Build()).AsInt64()
		})
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("view: empty shard %v: %w", sh, err)
		}
	}
	return deleted, nil
}

// deleteMatching deletes, with del, the keys under prefix that node lists, but keep. (del goes
// through the cluster client: a replica lists keys but cannot delete them.)
func deleteMatching(ctx context.Context, node rueidis.Client, prefix, keep string, del func(context.Context, []string) (int64, error)) (int, error) {
	deleted := 0
	var cursor uint64
	for {
		entry, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(escapeGlob(prefix)+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			return deleted, err
		}
		var keys []string
		for _, k := range entry.Elements {
			if k != keep {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			n, err := del(ctx, keys)
			if err != nil {
				return deleted, err
			}
			deleted += int(n)
		}
		if cursor = entry.Cursor; cursor == 0 {
			return deleted, nil
		}
	}
}

// escapeGlob escapes the characters SCAN's MATCH pattern treats specially.
func escapeGlob(s string) string {
	out := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// Key returns the name of the shard's key name (e.g. "users", "minprice:h1"): for operator tools
// and tests that must reach one key.
func (s Shard) Key(name string) string { return s.prefix + name }
