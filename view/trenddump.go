package view

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/trends"
)

// A shard's trends in a dump (ReadShard) and a snapshot: each window's sums, its open buckets
// and, in hotel shards, their minimum prices, read by the same script as the rest of the shard so
// that they are of the same instant as its offset and stream time.
//
// The script must declare the bucket keys it reads, and which buckets exist depends on the
// stream time: ReadShard reads the stream time first and declares each window's buckets from the
// first open one to one past the stream time's (room for a batch landing in between). When the
// stored stream time needs another range, the script answers "stale" with it, and ReadShard
// declares again.

// WindowDump is one window of a shard.
type WindowDump struct {
	Seconds int64                                  `json:"seconds"`
	Sums    map[Kind]map[string]int64              `json:"sums,omitempty"`
	Buckets map[int64]map[Kind]map[string]int64    `json:"buckets,omitempty"`
	Mins    map[int64]map[string]map[string]string `json:"mins,omitempty"` // bucket -> hotel -> advertiser -> price
}

// trendDumpWindow is what ReadShard declared of one window, to decode the reply in order.
type trendDumpWindow struct {
	w           trends.Window
	first, last int64
	kinds       []Kind
	mins        bool
}

// trendDumpKeys appends the trend keys of sh to keys and returns the script's trend argument.
func trendDumpKeys(spec TrendSpec, sh Shard, stream trends.StreamTime, keys []string) ([]string, string, []trendDumpWindow) {
	if len(spec.Windows) == 0 {
		return keys, "", nil
	}
	var out []trendDumpWindow
	var arg jsonList
	for _, w := range spec.Windows {
		d := trendDumpWindow{w: w, first: 0, last: -1, kinds: sh.Role.kinds(), mins: sh.Role == HotelShards}
		if stream.Set {
			d.first, d.last = firstOpen(w, stream.T), w.BucketOf(stream.T)+1
		}
		mins := int64(0)
		if d.mins {
			mins = 1
		}
		arg.ints(w.Seconds(), w.BucketSeconds(), d.first, d.last, int64(len(keys)+1), int64(len(d.kinds)), mins)
		for _, k := range d.kinds {
			keys = append(keys, sh.Key(trendSumKey(w, k)))
		}
		for b := d.first; b <= d.last; b++ {
			for _, k := range d.kinds {
				keys = append(keys, sh.Key(trendBucketKey(w, k, b)))
			}
			if d.mins {
				keys = append(keys, sh.Key(trendMinKey(w, b)))
			}
		}
		out = append(out, d)
	}
	return keys, arg.take(), out
}

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }

// storedStream reads sh's stream time.
func (v *View) storedStream(ctx context.Context, sh Shard) (trends.StreamTime, error) {
	t, err := v.client.Do(ctx, v.client.B().Hget().Key(sh.Key(stateKey)).Field(streamField).Build()).AsInt64()
	switch {
	case rueidis.IsRedisNil(err):
		return trends.StreamTime{}, nil
	case err != nil:
		return trends.StreamTime{}, fmt.Errorf("view: read the stream time of shard %v: %w", sh, err)
	}
	return trends.StreamTime{T: t, Set: true}, nil
}

// decodeTrends reads the trend part of the script's reply, in the order trendDumpKeys declared.
func (d *ShardDump) decodeTrends(declared []trendDumpWindow, reply []rueidis.RedisMessage) error {
	next := func() ([]string, error) {
		if len(reply) == 0 {
			return nil, fmt.Errorf("view: read shard %v: the reply ends before its trends", d.Shard)
		}
		l, err := reply[0].AsStrSlice()
		reply = reply[1:]
		return l, err
	}
	for _, dw := range declared {
		wd := WindowDump{Seconds: dw.w.Seconds(), Sums: map[Kind]map[string]int64{}, Buckets: map[int64]map[Kind]map[string]int64{},
			Mins: map[int64]map[string]map[string]string{}}
		for _, k := range dw.kinds {
			l, err := next()
			if err != nil {
				return err
			}
			if wd.Sums[k], err = scores(d.Shard, d.Shard.Key(trendSumKey(dw.w, k)), l, true); err != nil {
				return err
			}
		}
		for b := dw.first; b <= dw.last; b++ {
			if err := d.decodeBucket(&wd, dw, b, next); err != nil {
				return err
			}
		}
		d.Trends = append(d.Trends, wd)
	}
	return nil
}

// decodeBucket reads one bucket's count sets and minimum hash; empty ones are left out.
func (d *ShardDump) decodeBucket(wd *WindowDump, dw trendDumpWindow, b int64, next func() ([]string, error)) error {
	for _, k := range dw.kinds {
		l, err := next()
		if err != nil {
			return err
		}
		counts, err := scores(d.Shard, d.Shard.Key(trendBucketKey(dw.w, k, b)), l, false)
		if err != nil {
			return err
		}
		if len(counts) > 0 {
			if wd.Buckets[b] == nil {
				wd.Buckets[b] = map[Kind]map[string]int64{}
			}
			wd.Buckets[b][k] = counts
		}
	}
	if !dw.mins {
		return nil
	}
	l, err := next()
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(l); i += 2 {
		var prices map[string]string
		if err := json.Unmarshal([]byte(l[i+1]), &prices); err != nil {
			return &DamagedError{Shard: d.Shard, Key: d.Shard.Key(trendMinKey(dw.w, b)), Problem: fmt.Sprintf("holds %q for hotel %q", l[i+1], l[i])}
		}
		if wd.Mins[b] == nil {
			wd.Mins[b] = map[string]map[string]string{}
		}
		wd.Mins[b][l[i]] = prices
	}
	return nil
}

// restoreTrends writes a shard's windows back (a snapshot's), the stream time excepted.
func (v *View) restoreTrends(ctx context.Context, sh Shard, windows []WindowDump) error {
	for _, wd := range windows {
		w, err := trends.NewWindow(secondsDuration(wd.Seconds))
		if err != nil {
			return fmt.Errorf("view: restore the trends of shard %v: %w", sh, err)
		}
		for k, counts := range wd.Sums {
			if err := v.zadd(ctx, sh.Key(trendSumKey(w, k)), counts, -1); err != nil {
				return err
			}
		}
		for b, byKind := range wd.Buckets {
			for k, counts := range byKind {
				if err := v.hset(ctx, sh.Key(trendBucketKey(w, k, b)), counts); err != nil {
					return err
				}
			}
		}
		for b, byHotel := range wd.Mins {
			cmd := v.client.B().Hset().Key(sh.Key(trendMinKey(w, b))).FieldValue()
			for hotel, prices := range byHotel {
				j, err := json.Marshal(prices)
				if err != nil {
					return fmt.Errorf("view: restore the trends of shard %v: %w", sh, err)
				}
				cmd = cmd.FieldValue(hotel, string(j))
			}
			if err := v.client.Do(ctx, cmd.Build()).Error(); err != nil {
				return err
			}
		}
	}
	return nil
}

// streamArg is a stream time as the state hash stores it; "" for none.
func streamArg(s trends.StreamTime) string {
	if !s.Set {
		return ""
	}
	return strconv.FormatInt(s.T, 10)
}
