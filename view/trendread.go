package view

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/trends"
)

// The API's side of the trends: a window's counts and minimum prices merged across shards, at
// "now", the highest stream time of any partition of either topic.
//
// A shard's sum holds its buckets from the first one open at its own stream time. A query at a
// later now starts at a later bucket when the shard lags across a bucket boundary; then the
// buckets in between are taken off the sum as it is read. Each shard is read by a script that
// checks, atomically, that its stream time still opens the bucket the caller derived: otherwise
// the query reads again.

//go:embed trend_top.lua
var trendTopLua string

//go:embed trend_mins.lua
var trendMinsLua string

// ErrNoTrends: the view keeps no trends of the asked window (it was built without them or with
// other windows, see Layout.Trends).
var ErrNoTrends = errors.New("view: the view keeps no trends of this window")

// errMoved: a shard's stream time moved past a bucket boundary while it was read.
var errMoved = errors.New("view: the stream time moved while the trends were read")

// trendReadTries bounds the reads of a query whose shards keep crossing bucket boundaries under
// it, which happens once per bucket, not per batch: a second read almost always settles it.
const trendReadTries = 5

// TrendPage is a page of a window's counts.
type TrendPage struct {
	// Now is the query's "now", the highest stream time of every partition; unset while no
	// partition has one (the view holds no event yet).
	Now     trends.StreamTime
	Total   int64 // distinct ids with events in the window
	Entries []Entry
}

// TrendSpec returns the trends the stored view keeps.
func (v *View) TrendSpec(ctx context.Context) (TrendSpec, error) {
	s, ok, err := v.currentLayout(ctx)
	if err != nil || !ok {
		return TrendSpec{}, err
	}
	return s.spec, nil
}

// TrendCounts returns the page [offset, offset+limit) of kind's counts in the window of the given
// size, count descending, ties by id ascending, as Counts does for all time.
func (v *View) TrendCounts(ctx context.Context, kind Kind, size time.Duration, offset, limit int) (TrendPage, error) {
	r, err := v.trendCounts(ctx, kind, size, offset, limit)
	return r.page, err
}

// trendRead is a page of counts with what it was read at: the layout, the window, each
// partition's stream time, and the shard of each entry.
type trendRead struct {
	page    TrendPage
	s       *shards
	w       trends.Window
	streams [2][]trends.StreamTime
	shards  []int
}

// trendCounts is TrendCounts with what the page was read at.
func (v *View) trendCounts(ctx context.Context, kind Kind, size time.Duration, offset, limit int) (trendRead, error) {
	s, ok, err := v.currentLayout(ctx)
	if err != nil || !ok {
		return trendRead{}, err
	}
	w, _, found := s.spec.Window(size)
	if !found {
		return trendRead{}, ErrNoTrends
	}
	want := offset + limit
	if kind == Advertisers {
		want = -1
	}
	for range trendReadTries {
		now, streams, err := v.streamTimes(ctx, s)
		if err != nil || !now.Set {
			return trendRead{page: TrendPage{Now: now}}, err
		}
		total, lists, err := v.readSums(ctx, s, kind, w, now.T, streams[kind.role()], want)
		if errors.Is(err, errMoved) {
			continue
		}
		if err != nil {
			return trendRead{}, err
		}
		page, entryShards := pageOf(kind, lists, total, offset, limit)
		page.Now = now
		return trendRead{page: page, s: s, w: w, streams: streams, shards: entryShards}, nil
	}
	return trendRead{}, fmt.Errorf("view: read %s trends: %w %d times", kind, errMoved, trendReadTries)
}

// streamTimes reads every partition's stream time, per role, and their highest: now.
func (v *View) streamTimes(ctx context.Context, s *shards) (trends.StreamTime, [2][]trends.StreamTime, error) {
	var cmds rueidis.Commands
	for r := range s.prefix {
		for _, prefix := range s.prefix[r] {
			cmds = append(cmds, v.client.B().Hget().Key(prefix+stateKey).Field(streamField).Build())
		}
	}
	var now trends.StreamTime
	var out [2][]trends.StreamTime
	res := v.client.DoMulti(ctx, cmds...)
	for r := range s.prefix {
		out[r] = make([]trends.StreamTime, len(s.prefix[r]))
		for p := range s.prefix[r] {
			t, err := res[0].AsInt64()
			res = res[1:]
			switch {
			case rueidis.IsRedisNil(err):
				continue
			case err != nil:
				return now, out, fmt.Errorf("view: read the stream time of %s shard %d: %w", Role(r), p, err)
			}
			out[r][p] = trends.StreamTime{T: t, Set: true}
			if !now.Set || t > now.T {
				now = trends.StreamTime{T: t, Set: true}
			}
		}
	}
	return now, out, nil
}

// readSums reads each shard's part of kind's window at now (trend_top.lua): the number of ids
// and each shard's list, sorted as a sorted set sorts (score = -count, then id).
func (v *View) readSums(ctx context.Context, s *shards, kind Kind, w trends.Window, now int64, streams []trends.StreamTime, want int) (int64, [][]rueidis.ZScore, error) {
	first := firstOpen(w, now)
	var execs []rueidis.LuaExec
	for p, prefix := range s.prefix[kind.role()] {
		st := streams[p]
		keys := []string{prefix + stateKey, prefix + trendSumKey(w, kind)}
		args := []string{strconv.FormatInt(w.Seconds(), 10), strconv.FormatInt(w.BucketSeconds(), 10), "", strconv.Itoa(want)}
		if st.Set {
			open := firstOpen(w, st.T)
			args[2] = strconv.FormatInt(open, 10)
			for k := open; k < first && k <= w.BucketOf(st.T); k++ {
				keys = append(keys, prefix+trendBucketKey(w, kind, k))
			}
		}
		execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
	}
	var total int64
	lists := make([][]rueidis.ZScore, 0, len(execs))
	for i, res := range v.trendTop.run(ctx, v.client, execs) {
		n, list, err := decodeTop(res)
		if err != nil {
			return 0, nil, fmt.Errorf("view: read %s trends of shard %d: %w", kind, i, err)
		}
		v.membersRead.Add(int64(len(list)))
		total += n
		lists = append(lists, list)
	}
	return total, lists, nil
}

// decodeTop reads trend_top.lua's reply, the list sorted.
func decodeTop(res rueidis.RedisResult) (int64, []rueidis.ZScore, error) {
	vals, err := res.ToArray()
	if err != nil {
		return 0, nil, err
	}
	if len(vals) == 1 {
		return 0, nil, errMoved
	}
	if len(vals) < 2 || len(vals)%2 != 0 {
		return 0, nil, fmt.Errorf("unexpected reply of %d values", len(vals))
	}
	total, err := vals[1].AsInt64()
	if err != nil {
		return 0, nil, err
	}
	list := make([]rueidis.ZScore, 0, len(vals)/2-1)
	for i := 2; i+1 < len(vals); i += 2 {
		id, err1 := vals[i].ToString()
		score, err2 := vals[i+1].AsInt64()
		if err := errors.Join(err1, err2); err != nil {
			return 0, nil, err
		}
		list = append(list, rueidis.ZScore{Member: id, Score: float64(score)})
	}
	slices.SortFunc(list, func(a, b rueidis.ZScore) int {
		return cmp.Or(cmp.Compare(a.Score, b.Score), cmp.Compare(a.Member, b.Member))
	})
	return total, list, nil
}

// pageOf makes the page [offset, offset+limit) of the shards' lists: merged for users and hotels
// (each id lives in one shard), summed for advertisers (each shard counts its part). It returns
// the shard of each entry (-1 for advertisers).
func pageOf(kind Kind, lists [][]rueidis.ZScore, total int64, offset, limit int) (TrendPage, []int) {
	if kind == Advertisers {
		total, entries := sumPage(lists, offset, limit)
		return TrendPage{Total: total, Entries: entries}, nil
	}
	merged := mergeTop(lists, offset+limit)
	merged = merged[min(offset, len(merged)):]
	page := TrendPage{Total: total, Entries: make([]Entry, len(merged))}
	shards := make([]int, len(merged))
	for i, m := range merged {
		page.Entries[i] = Entry{ID: m.Member, Count: int64(-m.Score)}
		shards[i] = m.shard
	}
	return page, shards
}

// TrendPrices is a page of a window's hotels, most searched first, with each advertiser's lowest
// price in the window.
type TrendPrices struct {
	Now    trends.StreamTime
	Total  int64 // hotels with events in the window
	Hotels []HotelPrices
}

// TrendMinPrices returns the page [offset, offset+limit) of the window's hotels, in the order of
// TrendCounts(Hotels), with each advertiser's lowest price over the window's buckets (a minimum
// per bucket, combined here: a minimum cannot be taken back out of a running one).
func (v *View) TrendMinPrices(ctx context.Context, size time.Duration, offset, limit int) (TrendPrices, error) {
	for range trendReadTries {
		r, err := v.trendCounts(ctx, Hotels, size, offset, limit)
		if err != nil || len(r.page.Entries) == 0 {
			return TrendPrices{Now: r.page.Now, Total: r.page.Total}, err
		}
		hotels, err := v.readMins(ctx, r)
		if errors.Is(err, errMoved) {
			continue
		}
		if err != nil {
			return TrendPrices{}, err
		}
		return TrendPrices{Now: r.page.Now, Total: r.page.Total, Hotels: hotels}, nil
	}
	return TrendPrices{}, fmt.Errorf("view: read trend prices: %w %d times", errMoved, trendReadTries)
}

// readMins reads the minimums of the hotels of a page of counts, one script per shard over the
// window's buckets at the page's now that the shard held when the page was read
// (trend_mins.lua): a shard whose stream time has opened another bucket since is read again.
func (v *View) readMins(ctx context.Context, r trendRead) ([]HotelPrices, error) {
	s, w, page, streams := r.s, r.w, r.page, r.streams
	byShard := map[int][]int{} // shard -> indexes of page.Entries
	for i, sh := range r.shards {
		byShard[sh] = append(byShard[sh], i)
	}
	out := make([]HotelPrices, len(page.Entries))
	for i, e := range page.Entries {
		out[i] = HotelPrices{HotelID: e.ID, Prices: map[string]int64{}}
	}
	var execs []rueidis.LuaExec
	var order []int
	for sh, idx := range byShard {
		st := streams[HotelShards][sh]
		if !st.Set {
			return nil, errMoved // it had events a moment ago: a rebuild emptied it
		}
		prefix, open := s.prefix[HotelShards][sh], firstOpen(w, st.T)
		keys := []string{prefix + stateKey}
		for k := max(open, firstOpen(w, page.Now.T)); k <= w.BucketOf(st.T); k++ {
			keys = append(keys, prefix+trendMinKey(w, k))
		}
		args := []string{strconv.FormatInt(w.Seconds(), 10), strconv.FormatInt(w.BucketSeconds(), 10), strconv.FormatInt(open, 10)}
		for _, i := range idx {
			args = append(args, page.Entries[i].ID)
		}
		execs, order = append(execs, rueidis.LuaExec{Keys: keys, Args: args}), append(order, sh)
	}
	for i, res := range v.trendMins.run(ctx, v.client, execs) {
		if err := mergeMins(res, byShard[order[i]], out); err != nil {
			return nil, fmt.Errorf("view: read trend prices of hotel shard %d: %w", order[i], err)
		}
	}
	return out, nil
}

// mergeMins folds trend_mins.lua's reply into the hotels at idx of out.
func mergeMins(res rueidis.RedisResult, idx []int, out []HotelPrices) error {
	buckets, err := res.ToArray()
	if err != nil {
		return err
	}
	if len(buckets) == 1 {
		if s, err := buckets[0].ToString(); err == nil && s == "moved" {
			return errMoved
		}
	}
	for _, b := range buckets {
		vals, err := b.ToArray()
		if err != nil || len(vals) != len(idx) {
			return fmt.Errorf("unexpected reply: %v", err)
		}
		for j, val := range vals {
			text, err := val.ToString()
			if rueidis.IsRedisNil(err) {
				continue
			}
			var prices map[string]string
			if err == nil {
				err = json.Unmarshal([]byte(text), &prices)
			}
			if err != nil {
				return fmt.Errorf("hotel %s: %w", out[idx[j]].HotelID, err)
			}
			if err := lowerPrices(out[idx[j]].Prices, prices); err != nil {
				return fmt.Errorf("hotel %s: %w", out[idx[j]].HotelID, err)
			}
		}
	}
	return nil
}

// lowerPrices keeps in low the lower of each advertiser's price there and in bucket.
func lowerPrices(low map[string]int64, bucket map[string]string) error {
	for adv, text := range bucket {
		p, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return fmt.Errorf("advertiser %q: price %q", adv, text)
		}
		if held, ok := low[adv]; !ok || p < held {
			low[adv] = p
		}
	}
	return nil
}
