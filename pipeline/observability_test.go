package pipeline

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/internal/redistest"
)

func getBody(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableCompression: true}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestObservability replays the fixture (one record dead-lettered) and checks /metrics, /stats,
// /stream, /dashboard and the HTTP hardening on the real daemon.
func TestObservability(t *testing.T) {
	file := filepath.Join(t.TempDir(), "replay.txt")
	if err := os.WriteFile(file, []byte(replayFixture), 0o600); err != nil {
		t.Fatal(err)
	}
	h := start(t, map[string]string{"GENERATOR_REPLAY_FILE": file})
	// Wait for the four valid events and the lag poll.
	want := []string{
		`searchflow_stage_events_total{event="applied",stage="aggregator"} 4`,
		`searchflow_stage_events_total{event="produced",stage="transformer"} 4`,
		`searchflow_dead_letters_total{reason="non_positive_eurocents"} 1`,
		`searchflow_end_to_end_latency_seconds_count 4`,
		`searchflow_batch_records_bucket{stage="aggregator"`,
		`searchflow_batch_duration_seconds_count{stage="transformer"}`,
		`searchflow_consumer_lag{group="searchflow-aggregator",partition="0",topic="processed_events"}`,
		`searchflow_http_requests_total{route="/metrics",status="200"}`,
		`searchflow_kafka_`,
		`searchflow_ready `,
		`go_goroutines`,
	}
	deadline := time.Now().Add(60 * time.Second)
	var missing []string
	for {
		_, body := getBody(t, h.base+"/metrics", nil)
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A scraper asks for gzip, as Prometheus does: the body must be compressed once.
	mresp, err := http.Get(h.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scraped, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !mresp.Uncompressed || !strings.HasPrefix(string(scraped), "# HELP ") {
		t.Errorf("/metrics asked for gzip: uncompressed by the client %v, body starts %q", mresp.Uncompressed, scraped[:min(len(scraped), 20)])
	}

	var stats httpapi.Stats
	resp, body := getBody(t, h.base+"/stats", nil)
	if err := json.Unmarshal([]byte(body), &stats); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/stats: %d %v %s", resp.StatusCode, err, body)
	}
	// The real document matches the schema the API publishes.
	doc, err := openapi3.NewLoader().LoadFromFile("../httpapi/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	_ = json.Unmarshal([]byte(body), &generic)
	if err := doc.Components.Schemas["Stats"].Value.VisitJSON(generic); err != nil {
		t.Errorf("/stats does not match the OpenAPI Stats schema: %v", err)
	}
	if stats.Mode["kafka"] != "embedded" || stats.Mode["redis"] != "embedded" || stats.DeadLettered != 1 ||
		stats.Stages["aggregator"].Totals["applied"] != 4 || !stats.Stages["aggregator"].Running ||
		stats.Stages["transformer"].Rates["60s"] == nil || stats.UptimeSeconds <= 0 {
		t.Errorf("/stats = %s", body)
	}

	// One event of the live stream.
	sresp, err := http.Get(h.base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	if ct := sresp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("/stream content type %q", ct)
	}
	sc := bufio.NewScanner(sresp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var event struct {
		Stats httpapi.Stats `json:"stats"`
		Top   map[string][]struct {
			ID    string
			Count int64
		} `json:"top"`
		Cheapest []struct {
			Hotel, Advertiser string
			Price             int64
		} `json:"cheapest"`
	}
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if err := json.Unmarshal([]byte(data), &event); err != nil {
				t.Fatalf("stream event: %v", err)
			}
			break
		}
	}
	sresp.Body.Close()
	if len(event.Top["users"]) != 2 || event.Top["users"][0].ID != "u1" || event.Top["users"][0].Count != 3 ||
		len(event.Cheapest) != 2 || event.Cheapest[0].Hotel != "6035" || event.Cheapest[0].Price != 8359 {
		t.Errorf("stream event %+v", event)
	}

	resp, body = getBody(t, h.base+"/dashboard", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `new EventSource("/stream")`) {
		t.Errorf("/dashboard: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// Hardening: gzip for large bodies, CORS, request ids.
	resp, _ = getBody(t, h.base+"/openapi.json", map[string]string{"Accept-Encoding": "gzip", "Origin": "http://example.com"})
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("/openapi.json not gzipped: %v", resp.Header)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("no CORS header: %v", resp.Header)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("no request id: %v", resp.Header)
	}
	h.stop()
}

// TestAdminAddr moves /metrics and pprof to ADMIN_ADDR.
func TestAdminAddr(t *testing.T) {
	h := start(t, map[string]string{"ADMIN_ADDR": "127.0.0.1:0", "GENERATOR_MAX_EVENTS": "10", "CORS_ORIGINS": "https://dash.example"})
	admin := h.admin
	if resp, _ := getBody(t, "http://"+admin+"/metrics", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("admin /metrics: %d", resp.StatusCode)
	}
	if resp, body := getBody(t, "http://"+admin+"/debug/pprof/", nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("admin pprof: %d", resp.StatusCode)
	}
	if resp, _ := getBody(t, h.base+"/metrics", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the public address with ADMIN_ADDR set: %d, want 404", resp.StatusCode)
	}
	resp, _ := getBody(t, h.base+"/users", map[string]string{"Origin": "https://evil.example"})
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("CORS allowed an unlisted origin: %q", got)
	}
	resp, _ = getBody(t, h.base+"/users", map[string]string{"Origin": "https://dash.example"})
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://dash.example" {
		t.Errorf("CORS header for a listed origin: %q", got)
	}
	h.stop()
}

// TestAdminAddrWithTokensAndProbes: with API_TOKENS_FILE set, /metrics and pprof on ADMIN_ADDR
// need a token like the API, while /healthz and /readyz stay open on both servers; a worker
// without the api stage is probed on ADMIN_ADDR.
func TestAdminAddrWithTokensAndProbes(t *testing.T) {
	const token = "0123456789abcdef-admin-token"
	srv := redistest.Start(t)
	tokens := writeFile(t, "tokens", token+"\n")
	base, admin, _ := listening(t, map[string]string{"ADMIN_ADDR": "127.0.0.1:0", "API_TOKENS_FILE": tokens, "REDIS_ADDR": srv.Addr,
		"STAGES": "transformer,aggregator"}, zaptest.NewLogger(t))
	if base != "http://" {
		t.Errorf("a worker without the api stage listens on %s", base)
	}
	bearer := map[string]string{"Authorization": "Bearer " + token}
	for path, want := range map[string]int{"/metrics": http.StatusUnauthorized, "/debug/pprof/": http.StatusUnauthorized, "/healthz": http.StatusOK} {
		if resp, _ := getBody(t, "http://"+admin+path, nil); resp.StatusCode != want {
			t.Errorf("admin %s without a token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if resp, _ := getBody(t, "http://"+admin+"/metrics", bearer); resp.StatusCode != http.StatusOK {
		t.Errorf("admin /metrics with the token: %d", resp.StatusCode)
	}
	waitReadyz(t, "http://"+admin, "be ready on ADMIN_ADDR", func(code int, _ map[string]string) bool { return code == http.StatusOK })
}
