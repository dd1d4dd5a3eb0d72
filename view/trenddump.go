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
// Which buckets exist depends on the stream time, which the aggregator moves while the dump is
// taken: the script declares the sums and reads the buckets open at the stream time it finds,
// by their names (they carry the shard's hash tag, so they are in the script's slot), and answers
// that range with them.

// WindowDump is one window of a shard.
type WindowDump struct {
	Seconds int64                                  `json:"seconds"`
	Sums    map[Kind]map[string]int64              `json:"sums,omitempty"`
	Buckets map[int64]map[Kind]map[string]int64    `json:"buckets,omitempty"`
	Mins    map[int64]map[string]map[string]string `json:"mins,omitempty"` // bucket -> hotel -> advertiser -> price
}

// trendDumpWindow is what ReadShard declared of one window, to decode the reply in order.
type trendDumpWindow struct {
	w     trends.Window
	kinds []Kind
	mins  bool
}

// trendDumpKeys appends the trend sums of sh to keys and returns the script's trend argument:
// per window {window seconds, bucket seconds, the index of its first sum key, kinds, 1 with
// minimum prices, the name of its minimum hashes before the bucket}.
func trendDumpKeys(spec TrendSpec, sh Shard, keys []string) ([]string, string, []trendDumpWindow) {
	if len(spec.Windows) == 0 {
		return keys, "", nil
	}
	var out []trendDumpWindow
	var arg jsonList
	for _, w := range spec.Windows {
		d := trendDumpWindow{w: w, kinds: sh.Role.kinds(), mins: sh.Role == HotelShards}
		mins := int64(0)
		if d.mins {
			mins = 1
		}
		arg.open()
		arg.int(w.Seconds())
		arg.int(w.BucketSeconds())
		arg.int(int64(len(keys) + 1))
		arg.int(int64(len(d.kinds)))
		arg.int(mins)
		arg.str(sh.Key(trendMinPrefix(w)))
		arg.close()
		for _, k := range d.kinds {
			keys = append(keys, sh.Key(trendSumKey(w, k)))
		}
		out = append(out, d)
	}
	return keys, arg.take(), out
}

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }

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
		if len(reply) == 0 {
			return fmt.Errorf("view: read shard %v: the reply ends before its trends", d.Shard)
		}
		span, err := reply[0].AsIntSlice() // the buckets open at the stream time the script found
		reply = reply[1:]
		if err != nil || len(span) != 2 {
			return fmt.Errorf("view: read shard %v: the buckets of window %s: %v", d.Shard, dw.w.Name(), err)
		}
		for _, k := range dw.kinds {
			l, err := next()
			if err != nil {
				return err
			}
			if wd.Sums[k], err = scores(d.Shard, d.Shard.Key(trendSumKey(dw.w, k)), l, true); err != nil {
				return err
			}
		}
		for b := span[0]; b <= span[1]; b++ {
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
