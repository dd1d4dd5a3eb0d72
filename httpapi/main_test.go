package httpapi

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/internal/viewtest"
	"github.com/searchflow/searchflow/view"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is an API over a view in its own redis-server.
type fixture struct {
	redis  *redistest.Server
	view   *view.View
	loader *viewtest.Loader // writes the view as the aggregators do
	srv    *Server
	http   *httptest.Server
}

func alwaysReady(context.Context) map[string]string { return nil }

// fixturePartitions is the partition count of each topic of a fixture's view: users and hotels
// spread over several shards, so every page is a merge.
const fixturePartitions = 4

// newFixture starts redis-server and serves the API over it; ready nil means always ready.
func newFixture(t testing.TB, ready Readiness, log *zap.Logger, opts ...Option) *fixture {
	t.Helper()
	rs := redistest.Start(t)
	v := view.New(rs.Client(t))
	if ready == nil {
		ready = alwaysReady
	}
	if log == nil {
		log = zaptest.NewLogger(t)
	}
	srv := New(v, ready, log, opts...)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &fixture{redis: rs, view: v, loader: viewtest.Claim(t, v, fixturePartitions), srv: srv, http: hs}
}

// event is one search as the aggregators fold it.
type event struct {
	user, hotel string
	prices      map[string]int64 // advertiser -> lowest eurocents in the event
}

// apply applies events as the aggregators would.
func (f *fixture) apply(t testing.TB, events []event) {
	t.Helper()
	list := make([]viewtest.Event, len(events))
	for i, e := range events {
		list[i] = viewtest.Event{User: e.user, Hotel: e.hotel, Prices: e.prices}
	}
	f.loader.Apply(t, list)
}

// fixedBatches is the dataset of the golden files and of the order tests, applied as two batches
// so that counts and minimum prices also accumulate across batches. Expected, by hand:
//
//	users:       u3 4, u1 3, u2 1, u4 1, `user "ü"` 1
//	hotels:      h1 4, h2 3, h10 1, h3 1, h4 1   (ids compare as strings: h10 < h3)
//	advertisers: a1 5, a2 4, a3 2, a4 1
//	min prices:  h1 {a1 450, a2 650, a3 1000}, h10 {a4 1}, h2 {a1 400, a2 300, a3 800}, h3 {a1 999}
//	             (h4 has no offer, so it has no entry)
var fixedBatches = [][]event{
	{
		{"u1", "h2", map[string]int64{"a1": 500, "a2": 300}},
		{"u3", "h1", map[string]int64{"a1": 450}},
		{"u1", "h1", map[string]int64{"a3": 1000, "a2": 700}},
		{"u2", "h3", map[string]int64{"a1": 999}},
	},
	{
		{"u3", "h2", map[string]int64{"a1": 400, "a3": 800}},
		{"u4", "h1", map[string]int64{"a2": 650}},
		{"u1", "h10", map[string]int64{"a4": 1}},
		{"u3", "h2", map[string]int64{"a2": 350}},
		{`user "ü"`, "h4", nil},
		{"u3", "h1", map[string]int64{"a1": 460}},
	},
}

// load applies each batch of events as the aggregators would, one batch after the other.
func load(t testing.TB, f *fixture, batches [][]event) {
	t.Helper()
	for _, events := range batches {
		f.apply(t, events)
	}
}

// response is what a test looks at in an answer.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func get(t testing.TB, f *fixture, path string) response {
	t.Helper()
	return do(t, f, http.MethodGet, path)
}

func do(t testing.TB, f *fixture, method, path string) response {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: body}
}

// entry is one id and its number, in the order the body lists them.
type entry struct {
	id string
	n  int64
}

// decodeCounts reads {"count": N, "data": {id: n, ...}} keeping the order of data, which a Go map
// would lose. It fails the test on anything else, including unknown or repeated fields.
func decodeCounts(t testing.TB, body []byte) (int64, []entry) {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(string(body)))
	d.UseNumber()
	expectDelim(t, d, '{')
	var count int64 = -1
	var data []entry
	seen := map[string]bool{}
	for d.More() {
		key := stringToken(t, d)
		if seen[key] {
			t.Fatalf("field %q twice in %s", key, body)
		}
		seen[key] = true
		switch key {
		case "count":
			count = numberToken(t, d)
		case "data":
			data = decodeObject(t, d)
		default:
			t.Fatalf("unexpected field %q in %s", key, body)
		}
	}
	expectDelim(t, d, '}')
	expectEOF(t, d)
	if !seen["count"] || !seen["data"] {
		t.Fatalf("body %s lacks count or data", body)
	}
	return count, data
}

// hotelPrices is one hotel of /hotel_min_offer_per_advertiser, advertisers in body order.
type hotelPrices struct {
	hotel  string
	prices []entry
}

// decodeMinPrices reads {hotel: {advertiser: price, ...}, ...} keeping the order of both levels.
func decodeMinPrices(t testing.TB, body []byte) []hotelPrices {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(string(body)))
	d.UseNumber()
	expectDelim(t, d, '{')
	var out []hotelPrices
	for d.More() {
		hotel := stringToken(t, d)
		out = append(out, hotelPrices{hotel: hotel, prices: decodeObject(t, d)})
	}
	expectDelim(t, d, '}')
	expectEOF(t, d)
	return out
}

// decodeObject reads a flat object of integers, in order; a nil result means {}.
func decodeObject(t testing.TB, d *json.Decoder) []entry {
	t.Helper()
	expectDelim(t, d, '{')
	var out []entry
	for d.More() {
		id := stringToken(t, d)
		out = append(out, entry{id, numberToken(t, d)})
	}
	expectDelim(t, d, '}')
	return out
}

func expectDelim(t testing.TB, d *json.Decoder, want json.Delim) {
	t.Helper()
	tok, err := d.Token()
	if err != nil || tok != want {
		t.Fatalf("want %q, got %v (err %v)", want, tok, err)
	}
}

func stringToken(t testing.TB, d *json.Decoder) string {
	t.Helper()
	tok, err := d.Token()
	s, ok := tok.(string)
	if err != nil || !ok {
		t.Fatalf("want a string, got %v (err %v)", tok, err)
	}
	return s
}

func numberToken(t testing.TB, d *json.Decoder) int64 {
	t.Helper()
	tok, err := d.Token()
	num, ok := tok.(json.Number)
	if err != nil || !ok {
		t.Fatalf("want a number, got %v (err %v)", tok, err)
	}
	n, err := num.Int64()
	if err != nil {
		t.Fatalf("want an integer, got %v", num)
	}
	return n
}

func expectEOF(t testing.TB, d *json.Decoder) {
	t.Helper()
	if tok, err := d.Token(); err != io.EOF {
		t.Fatalf("trailing data after the object: %v (err %v)", tok, err)
	}
}

// errorBody decodes the JSON error every failure answers with.
func errorBody(t testing.TB, r response) (msg string, status int) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error  *string `json:"error"`
		Status int     `json:"status"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	if body.Error == nil || *body.Error == "" {
		t.Fatalf("error body %s has no error message", r.body)
	}
	return *body.Error, body.Status
}

// golden compares got with testdata/name, or rewrites the file under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./httpapi/ -run %s -update to create it)", err, t.Name())
	}
	if string(got) != string(want) {
		t.Errorf("body differs from %s (rerun with -update if the change is intended)\ngot:  %s\nwant: %s", path, got, want)
	}
}

func (e entry) String() string { return fmt.Sprintf("%s:%d", e.id, e.n) }
