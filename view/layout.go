package view

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The view's layout: which shards exist and where their keys live.
//
// Every Kafka partition the aggregator folds owns one shard of the view, and a shard's keys all
// carry the shard's hash tag, so they live in one Redis Cluster slot that no other partition's
// consumer writes. The users of the processed topic's partition p are counted in user shard p;
// the hotels, advertisers and minimum prices of the hotel topic's partition p in hotel shard p.
//
// A shard's tag is chosen for the slot it should land in: the user and hotel shards of n
// partitions take 2n points spread evenly over the 16384 slots, so a cluster whose masters split
// the slots into equal ranges (as `redis-cli --cluster create` does) gets an equal share of the
// shards on each master.

// Role says which topic a shard folds, and so what it counts.
type Role uint8

const (
	// UserShards fold the processed topic, keyed by user: the per-user counts.
	UserShards Role = iota
	// HotelShards fold the hotel topic, keyed by hotel: the per-hotel counts, the advertisers'
	// partial counts and the minimum prices.
	HotelShards
)

func (r Role) String() string {
	if r == HotelShards {
		return "hotels"
	}
	return "users"
}

// layoutVersion is the version of the key layout this code reads and writes. Version 1 kept the
// whole view in one slot under the "{searchflow}:" prefix.
const layoutVersion = 2

// Layout is what a view is built from: the two topics and their partition counts. It is stored
// in the view (see Claim) so that readers find the shards and a writer with other topics or
// another partition count is refused rather than misreading the view.
type Layout struct {
	UsersTopic  string
	Users       int // partitions of UsersTopic: user shards
	HotelsTopic string
	Hotels      int // partitions of HotelsTopic: hotel shards
	// Trends is the TrendSpec the view keeps trends for (TrendSpec.String; "" for none). A view
	// keeps its windows from its first batch: another spec needs a rebuild.
	Trends string
}

// Shards returns the number of shards of role.
func (l Layout) Shards(r Role) int {
	if r == HotelShards {
		return l.Hotels
	}
	return l.Users
}

// Topic returns the topic role folds.
func (l Layout) Topic(r Role) string {
	if r == HotelShards {
		return l.HotelsTopic
	}
	return l.UsersTopic
}

func (l Layout) String() string {
	trends := "no trends"
	if l.Trends != "" {
		trends = "trends " + l.Trends
	}
	return fmt.Sprintf("layout %d: %d user shards of %s, %d hotel shards of %s, %s", layoutVersion, l.Users, l.UsersTopic, l.Hotels, l.HotelsTopic, trends)
}

// The layout key holds the Layout as a hash. It has no hash tag of its own.
const (
	keyPrefix = "searchflow:"
	layoutKey = keyPrefix + "layout"
	// cheapestField, in the layout, says the view has kept the cheapest-per-search minimums
	// since it was claimed: a view claimed before they existed lacks it.
	cheapestField = "cheapest"
	// trendsField, in the layout, is the TrendSpec the view keeps (empty or absent: none).
	trendsField = "trends"
	// legacyOffsetsPrefix is where layout 1 kept its offsets, per topic.
	legacyOffsetsPrefix = "{searchflow}:offsets:"
)

// LayoutError reports that Redis holds a view built another way than this process would build
// it: another layout version, other topics, another partition count. Nothing was written.
type LayoutError struct {
	Found, Want string
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("view: redis holds a view in %s, this process builds %s; "+
		"rebuild it with `searchflow rebuild --all` (README, Operator commands), or point REDIS_ADDR at an empty database", e.Found, e.Want)
}

// Claim makes l the view's layout: stored when Redis holds none, checked against the stored one
// otherwise. Writers (the aggregator) claim before their first batch; a *LayoutError means the
// stored view was built differently and must be rebuilt. A view of layout 1 (one slot, before
// the sharded layout) is refused with the same error.
func (v *View) Claim(ctx context.Context, l Layout) error {
	if l.Users < 1 || l.Hotels < 1 || l.UsersTopic == "" || l.HotelsTopic == "" {
		return fmt.Errorf("view: claim %v: both topics need a name and at least one partition", l)
	}
	if _, err := parseTrendSpec(l.Trends); err != nil {
		return fmt.Errorf("view: claim %v: %w", l, err)
	}
	stored, err := v.readLayout(ctx)
	if err != nil {
		return err
	}
	if stored == nil {
		legacy, err := v.legacy(ctx, l.UsersTopic)
		if err != nil {
			return err
		}
		if legacy {
			return &LayoutError{Found: "layout 1 (every key under {searchflow}:, one slot)", Want: l.String()}
		}
		cmd := v.client.B().Hset().Key(layoutKey).FieldValue().
			FieldValue("version", strconv.Itoa(layoutVersion)).
			FieldValue("users_topic", l.UsersTopic).FieldValue("users", strconv.Itoa(l.Users)).
			FieldValue("hotels_topic", l.HotelsTopic).FieldValue("hotels", strconv.Itoa(l.Hotels)).
			FieldValue(cheapestField, "1").FieldValue(trendsField, l.Trends).Build()
		if err := v.client.Do(ctx, cmd).Error(); err != nil {
			return fmt.Errorf("view: store the layout: %w", err)
		}
		stored = &l
	}
	if *stored != l {
		return &LayoutError{Found: stored.String(), Want: l.String()}
	}
	v.setLayout(l)
	return nil
}

// legacy reports whether Redis holds a layout-1 view of topic. An ACL that does not let this
// user see the old keys means it cannot have written them either.
func (v *View) legacy(ctx context.Context, topic string) (bool, error) {
	n, err := v.client.Do(ctx, v.client.B().Exists().Key(legacyOffsetsPrefix+topic).Build()).AsInt64()
	var reply *rueidis.RedisError
	if errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "NOPERM") {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("view: look for a layout-1 view: %w", err)
	}
	return n > 0, nil
}

// readLayout returns the stored layout, nil when Redis holds none.
func (v *View) readLayout(ctx context.Context) (*Layout, error) {
	m, err := v.client.Do(ctx, v.client.B().Hgetall().Key(layoutKey).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("view: read the layout: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	users, err1 := strconv.Atoi(m["users"])
	hotels, err2 := strconv.Atoi(m["hotels"])
	if m["version"] != strconv.Itoa(layoutVersion) || err1 != nil || err2 != nil {
		return nil, &LayoutError{Found: fmt.Sprintf("layout %q (%v)", m["version"], m), Want: fmt.Sprintf("layout %d", layoutVersion)}
	}
	if _, err := parseTrendSpec(m[trendsField]); err != nil {
		return nil, &LayoutError{Found: fmt.Sprintf("layout %d with %v", layoutVersion, err), Want: fmt.Sprintf("layout %d", layoutVersion)}
	}
	return &Layout{UsersTopic: m["users_topic"], Users: users, HotelsTopic: m["hotels_topic"], Hotels: hotels, Trends: m[trendsField]}, nil
}

// layoutRefresh is how long a reader trusts the layout it read: a rebuilt view with another
// partition count shows within it.
const layoutRefresh = 2 * time.Second

// currentLayout returns the layout readers use: the claimed one in a writer, else the stored one,
// read again after layoutRefresh. ok is false while Redis holds no view yet.
func (v *View) currentLayout(ctx context.Context) (l *shards, ok bool, err error) {
	v.mu.Lock()
	cached, at, claimed := v.shards, v.layoutAt, v.claimed
	v.mu.Unlock()
	if cached != nil && (claimed || time.Since(at) < layoutRefresh) {
		return cached, true, nil
	}
	stored, err := v.readLayout(ctx)
	if err != nil {
		if cached != nil {
			return cached, true, nil // a reader keeps serving what it knew while Redis is away
		}
		return nil, false, err
	}
	if stored == nil {
		return nil, false, nil
	}
	s := v.shardsOf(*stored)
	v.mu.Lock()
	v.shards, v.layoutAt = s, time.Now()
	v.mu.Unlock()
	return s, true, nil
}

func (v *View) setLayout(l Layout) {
	s := v.shardsOf(l)
	v.mu.Lock()
	v.shards, v.layoutAt, v.claimed = s, time.Now(), true
	v.mu.Unlock()
}

// shards is a layout with its shards' key prefixes.
type shards struct {
	Layout
	spec   TrendSpec   // Layout.Trends, parsed
	prefix [2][]string // role -> partition -> key prefix "searchflow:{tag}:"
}

func (v *View) shardsOf(l Layout) *shards {
	spec, _ := parseTrendSpec(l.Trends) // readLayout and Claim refuse a spec that does not parse
	s := &shards{Layout: l, spec: spec}
	n := l.Users + l.Hotels
	for r, count := range []int{l.Users, l.Hotels} {
		s.prefix[r] = make([]string, count)
		for p := range count {
			// With as many hotel as user shards, user shard p takes point 2p of the n = 2 × count
			// points and hotel shard p point 2p+1. With counts that differ, each role is spread
			// over the whole slot range on its own.
			var point, of int
			if l.Users == l.Hotels {
				point, of = 2*p+r, n
			} else {
				point, of = p, count
			}
			s.prefix[r][p] = keyPrefix + "{" + v.tags.forSlot(spreadSlot(point, of)) + "}:"
		}
	}
	return s
}

// of returns the key prefix of role's shard for partition p, or false when the layout has no
// such shard (the topic has grown partitions since the view was built).
func (s *shards) of(r Role, p int32) (string, bool) {
	list := s.prefix[r]
	if p < 0 || int(p) >= len(list) {
		return "", false
	}
	return list[p], true
}

// spreadSlot is the slot at the middle of the i-th of n equal slot ranges.
func spreadSlot(i, n int) uint16 {
	return uint16((2*i + 1) * slots / (2 * n))
}

// slots is the number of Redis Cluster hash slots.
const slots = 16384

// tagTable holds, for every slot, a short hash tag that maps to it.
type tagTable struct {
	tags [slots]string
}

// newTagTable finds a tag "s<k>" for every slot, k counting up: about 170,000 CRC16s, a few ms.
func newTagTable() *tagTable {
	t := &tagTable{}
	left := slots
	for k := 0; left > 0; k++ {
		tag := "s" + strconv.Itoa(k)
		if s := Slot(tag); t.tags[s] == "" {
			t.tags[s] = tag
			left--
		}
	}
	return t
}

func (t *tagTable) forSlot(slot uint16) string { return t.tags[slot] }

// Slot returns the Redis Cluster hash slot of a key (its hash tag's, when it has one).
func Slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % slots
}

// crc16 is CRC-16/XMODEM, the hash of Redis Cluster's key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// Reclaim stores the claimed layout again if Redis lost it (a writer calls it when it finds
// the view emptied): readers in other processes find the shards again.
func (v *View) Reclaim(ctx context.Context) error {
	v.mu.Lock()
	s, claimed := v.shards, v.claimed
	v.mu.Unlock()
	if !claimed {
		return errors.New("view: reclaim before Claim")
	}
	return v.Claim(ctx, s.Layout)
}
