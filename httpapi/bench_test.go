package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"
)

// benchBatch is how many ids one Apply writes while filling a benchmark's view.
const benchBatch = 10000

func BenchmarkUsersHandler(b *testing.B) {
	const users = 100000
	f := newFixture(b, nil, zap.NewNop())
	for start := 0; start < users; start += benchBatch {
		var events []event
		for i := start; i < start+benchBatch; i++ {
			for range i%5 + 1 {
				events = append(events, event{user: fmt.Sprintf("user-%06d", i), hotel: "h"})
			}
		}
		f.apply(b, events)
	}
	benchGet(b, f, "/users?limit=100")
}

func BenchmarkMinPricesHandler(b *testing.B) {
	const hotels, advertisers = 10000, 8
	f := newFixture(b, nil, zap.NewNop())
	for start := 0; start < hotels; start += benchBatch / advertisers {
		var events []event
		for i := start; i < start+benchBatch/advertisers && i < hotels; i++ {
			prices := make(map[string]int64, advertisers)
			for a := range advertisers {
				prices[fmt.Sprintf("adv-%02d", a)] = int64(1000 + (i*7+a*13)%5000)
			}
			events = append(events, event{user: "u", hotel: fmt.Sprintf("hotel-%05d", i), prices: prices})
		}
		f.apply(b, events)
	}
	benchGet(b, f, "/hotel_min_offer_per_advertiser?limit=100")
}

// benchGet measures the handler and the Redis round trips, not the HTTP transport.
func benchGet(b *testing.B, f *fixture, target string) {
	b.Helper()
	h := f.srv.Handler()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s = %d %s", target, rec.Code, rec.Body)
		}
	}
}
