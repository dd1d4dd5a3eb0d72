package view

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"
)

// Entry is one counted id.
type Entry struct {
	ID    string
	Count int64
}

// Counts returns the number of distinct ids of kind and the page [offset, offset+limit) of them,
// count descending, ties by id ascending.
func (v *View) Counts(ctx context.Context, kind Kind, offset, limit int) (int64, []Entry, error) {
	resps := v.client.DoMultiCache(ctx,
		rueidis.CT(v.client.B().Zcard().Key(kind.key()).Cache(), cacheTTL),
		rueidis.CT(v.client.B().Zrange().Key(kind.key()).Min(strconv.Itoa(offset)).Max(strconv.Itoa(offset+limit-1)).Withscores().Cache(), cacheTTL),
	)
	total, err := resps[0].AsInt64()
	if err != nil {
		return 0, nil, fmt.Errorf("view: count %s: %w", kind, err)
	}
	scores, err := resps[1].AsZScores()
	if err != nil {
		return 0, nil, fmt.Errorf("view: read %s: %w", kind, err)
	}
	entries := make([]Entry, len(scores))
	for i, s := range scores {
		entries[i] = Entry{ID: s.Member, Count: int64(-s.Score)}
	}
	return total, entries, nil
}

// HotelPrices is each advertiser's lowest price for one hotel.
type HotelPrices struct {
	HotelID string
	Prices  map[string]int64
}

// MinPrices returns the number of hotels with prices and the page [offset, offset+limit) of them
// in hotel id order.
func (v *View) MinPrices(ctx context.Context, offset, limit int) (int64, []HotelPrices, error) {
	resps := v.client.DoMultiCache(ctx,
		rueidis.CT(v.client.B().Zcard().Key(minPriceHotels).Cache(), cacheTTL),
		rueidis.CT(v.client.B().Zrange().Key(minPriceHotels).Min(strconv.Itoa(offset)).Max(strconv.Itoa(offset+limit-1)).Cache(), cacheTTL),
	)
	total, err := resps[0].AsInt64()
	if err != nil {
		return 0, nil, fmt.Errorf("view: count hotels with prices: %w", err)
	}
	hotels, err := resps[1].AsStrSlice()
	if err != nil {
		return 0, nil, fmt.Errorf("view: read hotels with prices: %w", err)
	}
	if len(hotels) == 0 {
		return total, nil, nil
	}
	cmds := make([]rueidis.CacheableTTL, len(hotels))
	for i, h := range hotels {
		cmds[i] = rueidis.CT(v.client.B().Zrange().Key(minPricePrefix+h).Min("0").Max("-1").Withscores().Cache(), cacheTTL)
	}
	out := make([]HotelPrices, len(hotels))
	for i, r := range v.client.DoMultiCache(ctx, cmds...) {
		scores, err := r.AsZScores()
		if err != nil {
			return 0, nil, fmt.Errorf("view: read prices of hotel %s: %w", hotels[i], err)
		}
		m := make(map[string]int64, len(scores))
		for _, s := range scores {
			m[s.Member] = int64(s.Score)
		}
		out[i] = HotelPrices{HotelID: hotels[i], Prices: m}
	}
	return total, out, nil
}
