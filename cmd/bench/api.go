package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/view"
)

// APIResult is one endpoint's numbers under load.
type APIResult struct {
	Path       string  `json:"path"`
	Tool       string  `json:"tool"`
	ReqPerSec  float64 `json:"req_per_sec"`
	LatencyP50 float64 `json:"latency_p50_ms"`
	LatencyP99 float64 `json:"latency_p99_ms"`
}

// APIResults is what bench-api-results.json holds.
type APIResults struct {
	Users       int         `json:"users"`
	Connections int         `json:"connections"`
	Seconds     int         `json:"seconds"`
	Endpoints   []APIResult `json:"endpoints"`
	GoVersion   string      `json:"go_version"`
	CPUs        int         `json:"cpus"`
	Date        string      `json:"date"`
}

// runAPI is `make bench-api`: see the package comment.
func runAPI(out string) error {
	users, err := envInt("BENCH_API_USERS", 1_000_000)
	if err != nil {
		return err
	}
	secs, err := envInt("BENCH_API_SECONDS", 10)
	if err != nil {
		return err
	}
	conns, err := envInt("BENCH_API_CONNECTIONS", 64)
	if err != nil {
		return err
	}
	ctx := context.Background()

	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		srv, err := redistest.Run()
		if err != nil {
			return err
		}
		defer srv.Stop()
		addr = srv.Addr
	}
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := rc.Do(ctx, rc.B().Flushall().Build()).Error(); err != nil {
		return err
	}
	v := view.New(rc)
	if err := v.Claim(ctx, view.Layout{UsersTopic: "bench", Users: apiShards, HotelsTopic: "bench_by_hotel", Hotels: apiShards}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench-api: loading %d users...\n", users)
	if err := load(ctx, v, users); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	api := httpapi.New(v, nil, zap.NewNop())
	go func() { _ = api.Serve(ln) }()
	defer api.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()

	res := APIResults{Users: users, Connections: conns, Seconds: secs, GoVersion: runtime.Version(),
		CPUs: runtime.NumCPU(), Date: time.Now().UTC().Format(time.RFC3339)}
	for _, path := range []string{"/advertisers", "/users?limit=100"} {
		fmt.Fprintf(os.Stderr, "bench-api: %s for %d s with %d connections...\n", path, secs, conns)
		var r APIResult
		if _, err := exec.LookPath("wrk"); err == nil {
			r, err = withWrk(base+path, conns, secs)
			if err != nil {
				return err
			}
		} else {
			r = withGo(base+path, conns, secs)
		}
		r.Path = path
		res.Endpoints = append(res.Endpoints, r)
	}

	fmt.Printf("searchflow API benchmark  %s  %s  %d CPUs  %d users  %d connections\n\n", res.Date, res.GoVersion, res.CPUs, users, conns)
	fmt.Printf("%-22s %-5s %12s %10s %10s\n", "endpoint", "tool", "req/s", "p50 ms", "p99 ms")
	for _, r := range res.Endpoints {
		fmt.Printf("%-22s %-5s %12.0f %10.2f %10.2f\n", r.Path, r.Tool, r.ReqPerSec, r.LatencyP50, r.LatencyP99)
	}
	js, _ := json.MarshalIndent(res, "", "  ")
	return os.WriteFile(out, append(js, '\n'), 0o644)
}

// apiShards is the partition count of the view the API benchmark reads: the default
// TOPIC_PARTITIONS.
const apiShards = 6

// load writes users distinct users (with varied counts), 12 advertisers and 1,000 hotels through
// the same atomic apply the aggregators use, each user and hotel in the shard of its partition.
func load(ctx context.Context, v *view.View, users int) error {
	advs := []string{"Amoma", "Mercure", "booking.com", "Tui.com", "Destinia", "expedia", "hotels.com", "agoda",
		"ebookers", "HRS", "lastminute.com", "Hotelopia"}
	const chunk = 50_000
	for from := 0; from < users; from += chunk {
		ub, hb := view.NewBatch(), view.NewBatch()
		for i := from; i < min(from+chunk, users); i++ {
			hotel := strconv.Itoa(1000 + i%1000)
			up, hp := int32(i%apiShards), int32((i%1000)%apiShards)
			ub.Count(up, view.Users, fmt.Sprintf("user-%08d", i))
			hb.Count(hp, view.Hotels, hotel)
			adv := advs[i%len(advs)]
			hb.Count(hp, view.Advertisers, adv)
			hb.OfferPrice(hp, hotel, adv, int64(3000+i%40000))
		}
		// Every partition moves on by one chunk per batch (its offsets need not be real ones).
		o := view.PartitionOffsets{Expect: int64(from), Next: int64(from + chunk)}
		if from == 0 {
			o.Expect = view.NoOffset
		}
		for _, b := range []*view.Batch{ub, hb} {
			for p := range apiShards {
				b.Offsets[int32(p)] = o
			}
		}
		if err := v.Apply(ctx, view.UserShards, ub); err != nil {
			return err
		}
		if err := v.Apply(ctx, view.HotelShards, hb); err != nil {
			return err
		}
	}
	return nil
}

var (
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
)

func withWrk(url string, conns, secs int) (APIResult, error) {
	out, err := exec.Command("wrk", "-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", secs), "--latency", url).CombinedOutput()
	if err != nil {
		return APIResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	r := APIResult{Tool: "wrk"}
	if m := wrkRate.FindSubmatch(out); m != nil {
		r.ReqPerSec, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range wrkLatency.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		switch string(m[3]) {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if string(m[1]) == "50" {
			r.LatencyP50 = v
		} else {
			r.LatencyP99 = v
		}
	}
	if r.ReqPerSec == 0 {
		return r, fmt.Errorf("could not read wrk's output:\n%s", out)
	}
	return r, nil
}

// withGo is the fallback load generator: conns goroutines with keep-alive connections.
func withGo(url string, conns, secs int) APIResult {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	client := &http.Client{Transport: tr}
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	pct := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	return APIResult{Tool: "go", ReqPerSec: float64(len(lat)) / float64(secs), LatencyP50: pct(0.5), LatencyP99: pct(0.99)}
}
