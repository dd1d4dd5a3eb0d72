package view

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/rueidis"
)

// The API's side of the view: pages merged across shards. A page [offset, offset+limit) of users
// or hotels reads at most offset+limit members of each shard and merges them (k-way), so its cost
// does not grow with the number of users or hotels. Advertisers are counted in part by every hotel
// shard: a page sums the parts of every advertiser, a cost bounded by the number of distinct
// advertisers times the shards (README, Scaling out).

// Entry is one counted id.
type Entry struct {
	ID    string
	Count int64
}

// Counts returns the number of distinct ids of kind and the page [offset, offset+limit) of them,
// count descending, ties by id ascending. A view that holds nothing yet has no ids.
func (v *View) Counts(ctx context.Context, kind Kind, offset, limit int) (int64, []Entry, error) {
	s, ok, err := v.currentLayout(ctx)
	if err != nil || !ok {
		return 0, nil, err
	}
	prefixes := s.prefix[kind.role()]
	if kind == Advertisers {
		return v.advertisers(ctx, prefixes, offset, limit)
	}
	cmds := make([]rueidis.CacheableTTL, 0, 2*len(prefixes))
	for _, prefix := range prefixes {
		key := prefix + string(kind)
		cmds = append(cmds,
			rueidis.CT(v.client.B().Zcard().Key(key).Cache(), cacheTTL),
			rueidis.CT(v.client.B().Zrange().Key(key).Min("0").Max(strconv.Itoa(offset+limit-1)).Withscores().Cache(), cacheTTL))
	}
	total, lists, err := v.readShards(ctx, string(kind), cmds, true)
	if err != nil {
		return 0, nil, err
	}
	merged := mergeTop(lists, offset+limit)
	entries := make([]Entry, 0, max(0, len(merged)-offset))
	for _, m := range merged[min(offset, len(merged)):] {
		entries = append(entries, Entry{ID: m.Member, Count: int64(-m.Score)})
	}
	return total, entries, nil
}

// readShards runs a ZCARD and a ZRANGE per shard (cmds, in pairs; the ZRANGEs WITHSCORES when
// scored) and returns the sum of the cardinalities and each shard's members.
func (v *View) readShards(ctx context.Context, what string, cmds []rueidis.CacheableTTL, scored bool) (int64, [][]rueidis.ZScore, error) {
	resps := v.client.DoMultiCache(ctx, cmds...)
	var total int64
	lists := make([][]rueidis.ZScore, 0, len(resps)/2)
	for i := 0; i+1 < len(resps); i += 2 {
		n, err := resps[i].AsInt64()
		if err != nil {
			return 0, nil, fmt.Errorf("view: count %s: %w", what, err)
		}
		var list []rueidis.ZScore
		if !scored {
			var ids []string
			ids, err = resps[i+1].AsStrSlice()
			for _, id := range ids {
				list = append(list, rueidis.ZScore{Member: id})
			}
		} else {
			list, err = resps[i+1].AsZScores()
		}
		if err != nil {
			return 0, nil, fmt.Errorf("view: read %s: %w", what, err)
		}
		v.membersRead.Add(int64(len(list)))
		total += n
		lists = append(lists, list)
	}
	return total, lists, nil
}

// advertisers sums every hotel shard's part of each advertiser's count.
func (v *View) advertisers(ctx context.Context, prefixes []string, offset, limit int) (int64, []Entry, error) {
	cmds := make([]rueidis.CacheableTTL, len(prefixes))
	for i, prefix := range prefixes {
		cmds[i] = rueidis.CT(v.client.B().Zrange().Key(prefix+string(Advertisers)).Min("0").Max("-1").Withscores().Cache(), cacheTTL)
	}
	lists := make([][]rueidis.ZScore, 0, len(prefixes))
	for _, r := range v.client.DoMultiCache(ctx, cmds...) {
		scores, err := r.AsZScores()
		if err != nil {
			return 0, nil, fmt.Errorf("view: read advertisers: %w", err)
		}
		v.membersRead.Add(int64(len(scores)))
		lists = append(lists, scores)
	}
	total, page := sumPage(lists, offset, limit)
	return total, page, nil
}

// sumPage sums each id's parts over the shards' lists (score = -count) and returns the number of
// distinct ids and the page [offset, offset+limit) of them, count descending, ties by id.
func sumPage(lists [][]rueidis.ZScore, offset, limit int) (int64, []Entry) {
	sums := map[string]int64{}
	for _, l := range lists {
		for _, z := range l {
			sums[z.Member] += int64(-z.Score)
		}
	}
	all := make([]Entry, 0, len(sums))
	for id, n := range sums {
		all = append(all, Entry{ID: id, Count: n})
	}
	slices.SortFunc(all, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.ID, b.ID))
	})
	page := all[min(offset, len(all)):]
	return int64(len(all)), page[:min(limit, len(page))]
}

// HotelPrices is each advertiser's lowest price for one hotel.
type HotelPrices struct {
	HotelID string
	Prices  map[string]int64
}

// MinPrices returns the number of hotels with prices and the page [offset, offset+limit) of them
// in hotel id order, each advertiser's lowest price over every offer (EveryOffer).
func (v *View) MinPrices(ctx context.Context, offset, limit int) (int64, []HotelPrices, error) {
	return v.ScopedMinPrices(ctx, EveryOffer, offset, limit)
}

// ErrScopeUnavailable: the view has not kept the cheapest-per-search minimums since its first
// batch (a version before them claimed it), so it cannot answer them exactly until it is rebuilt.
var ErrScopeUnavailable = errors.New("view: this view was built before it kept each search's cheapest offer " +
	"(scope=cheapest_per_search); rebuild it to have them (searchflow rebuild --all)")

// ScopedMinPrices is MinPrices over the offers scope takes.
func (v *View) ScopedMinPrices(ctx context.Context, scope PriceScope, offset, limit int) (int64, []HotelPrices, error) {
	s, ok, err := v.currentLayout(ctx)
	if err != nil || !ok {
		return 0, nil, err
	}
	if scope == CheapestPerSearch {
		kept, err := v.KeepsCheapest(ctx)
		if err != nil {
			return 0, nil, err
		}
		if !kept {
			return 0, nil, ErrScopeUnavailable
		}
	}
	prefixes := s.prefix[HotelShards]
	cmds := make([]rueidis.CacheableTTL, 0, 2*len(prefixes))
	for _, prefix := range prefixes {
		key := prefix + minPriceHotelsKey
		cmds = append(cmds,
			rueidis.CT(v.client.B().Zcard().Key(key).Cache(), cacheTTL),
			rueidis.CT(v.client.B().Zrange().Key(key).Min("0").Max(strconv.Itoa(offset+limit-1)).Cache(), cacheTTL))
	}
	total, lists, err := v.readShards(ctx, "hotels with prices", cmds, false)
	if err != nil {
		return 0, nil, err
	}
	merged := mergeTop(lists, offset+limit)
	merged = merged[min(offset, len(merged)):]
	if len(merged) == 0 {
		return total, nil, nil
	}
	prices := make([]rueidis.CacheableTTL, len(merged))
	for i, m := range merged {
		key := prefixes[m.shard] + scope.keyPrefix() + m.Member
		prices[i] = rueidis.CT(v.client.B().Zrange().Key(key).Min("0").Max("-1").Withscores().Cache(), cacheTTL)
	}
	out := make([]HotelPrices, len(merged))
	for i, r := range v.client.DoMultiCache(ctx, prices...) {
		scores, err := r.AsZScores()
		if err != nil {
			return 0, nil, fmt.Errorf("view: read prices of hotel %s: %w", merged[i].Member, err)
		}
		v.membersRead.Add(int64(len(scores)))
		m := make(map[string]int64, len(scores))
		for _, s := range scores {
			m[s.Member] = int64(s.Score)
		}
		out[i] = HotelPrices{HotelID: merged[i].Member, Prices: m}
	}
	return total, out, nil
}

// KeepsCheapest reports whether the view has kept the cheapest-per-search minimums since it was
// claimed (the layout's "cheapest" field).
func (v *View) KeepsCheapest(ctx context.Context) (bool, error) {
	n, err := v.client.DoCache(ctx, v.client.B().Hexists().Key(layoutKey).Field(cheapestField).Cache(), cacheTTL).AsInt64()
	if err != nil {
		return false, fmt.Errorf("view: read the layout: %w", err)
	}
	return n == 1, nil
}

// merged is a member taken from one shard's list.
type merged struct {
	rueidis.ZScore
	shard int
}

// mergeTop merges lists, each sorted as Redis sorts a sorted set (score, then member bytes), and
// returns the first n of the merge with the shard each came from.
func mergeTop(lists [][]rueidis.ZScore, n int) []merged {
	h := make(cursors, 0, len(lists))
	total := 0
	for i, l := range lists {
		if len(l) > 0 {
			h = append(h, cursor{list: l, shard: i})
			total += len(l)
		}
	}
	heap.Init(&h)
	out := make([]merged, 0, min(n, total))
	for len(out) < n && len(h) > 0 {
		c := &h[0]
		out = append(out, merged{ZScore: c.list[c.at], shard: c.shard})
		if c.at++; c.at == len(c.list) {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return out
}

// cursor is a position in one shard's list.
type cursor struct {
	list  []rueidis.ZScore
	at    int
	shard int
}

// cursors is a min-heap of the shards' current members.
type cursors []cursor

func (h cursors) Len() int { return len(h) }
func (h cursors) Less(i, j int) bool {
	a, b := h[i].list[h[i].at], h[j].list[h[j].at]
	return a.Score < b.Score || (a.Score == b.Score && a.Member < b.Member)
}
func (h cursors) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursors) Push(x any)   { *h = append(*h, x.(cursor)) }
func (h *cursors) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
