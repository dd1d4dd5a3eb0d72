package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/stages/aggregator"
	"github.com/searchflow/searchflow/view"
)

// The topics of these tests.
const (
	usersTopic  = "processed"
	hotelsTopic = "processed_by_hotel"
	deadTopic   = "dead"
	partitions  = 3
)

// pipelineEnv is a kfake broker with the view's topics, a redis-server holding a claimed view,
// and the configuration an operator would run verify and rebuild with.
type pipelineEnv struct {
	addr   string
	client rueidis.Client
	view   *view.View
	cfg    config.Config
}

func newPipelineEnv(t *testing.T) *pipelineEnv {
	t.Helper()
	srv := redistest.Start(t)
	return newPipelineEnvOn(t, srv.Client(t), srv.Addr)
}

// newPipelineEnvOn is newPipelineEnv on the Redis (or Redis Cluster) c reaches at redisAddr.
func newPipelineEnvOn(t *testing.T, c rueidis.Client, redisAddr string) *pipelineEnv {
	t.Helper()
	_, addr := kafkatest.Start(t, partitions, usersTopic, hotelsTopic, deadTopic)
	e := &pipelineEnv{addr: addr, client: c}
	e.view = view.New(e.client)
	layout := view.Layout{UsersTopic: usersTopic, Users: partitions, HotelsTopic: hotelsTopic, Hotels: partitions}
	if err := e.view.Claim(context.Background(), layout); err != nil {
		t.Fatal(err)
	}
	e.cfg = loadConfig(t, map[string]string{"KAFKA_BROKERS": addr, "REDIS_ADDR": redisAddr,
		"PROCESSED_TOPIC": usersTopic, "HOTEL_TOPIC": hotelsTopic, "DEAD_LETTER_TOPIC": deadTopic})
	return e
}

func loadConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startAggregators runs the two aggregators on the view until the test ends.
func (e *pipelineEnv) startAggregators(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, role := range []view.Role{view.UserShards, view.HotelShards} {
		cfg := aggregator.Config{Role: role, Topic: usersTopic, Group: "g-aggregator", DeadLetterTopic: deadTopic, BatchMaxRecords: 50}
		if role == view.HotelShards {
			cfg.Topic, cfg.Group = hotelsTopic, "g-aggregator-hotels"
		}
		a := aggregator.New(cfg, []kgo.Opt{kgo.SeedBrokers(e.addr)}, e.view, zaptest.NewLogger(t).Named(aggregator.StageName(role)))
		go func() { done <- a.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("aggregator: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("an aggregator did not stop within 30 s")
				return
			}
		}
	})
}

// searches returns processed events from..to, deterministic in i.
func searches(from, to int) []event.Processed {
	var out []event.Processed
	for i := from; i < to; i++ {
		out = append(out, event.Processed{
			UserID: fmt.Sprintf("u%d", i%37), HotelID: fmt.Sprintf("h%d", i%11), SearchTimestamp: "1",
			AdvertiserMinPrices: map[string]int64{"a": int64(1000 - i%500), fmt.Sprintf("adv%d", i%4): int64(50 + i%13)},
		})
	}
	return out
}

// records returns evs as the transformer writes them: each to both topics, stamped with the raw
// positions rawPartition/firstRawOffset onwards.
func records(t testing.TB, evs []event.Processed, rawPartition int32, firstRawOffset int64) []*kgo.Record {
	t.Helper()
	out, err := encode(evs, rawPartition, firstRawOffset)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// encode is records for a goroutine that cannot fail the test itself.
func encode(evs []event.Processed, rawPartition int32, firstRawOffset int64) ([]*kgo.Record, error) {
	var out []*kgo.Record
	for i, p := range evs {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, rawRecords(b, p.UserID, p.HotelID, rawPartition, firstRawOffset+int64(i))...)
	}
	return out, nil
}

// rawRecords returns value as a record of each topic, from raw position sp/so.
func rawRecords(value []byte, user, hotel string, sp int32, so int64) []*kgo.Record {
	headers := []kgo.RecordHeader{
		{Key: event.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(sp)))},
		{Key: event.HeaderSourceOffset, Value: []byte(strconv.FormatInt(so, 10))},
	}
	return []*kgo.Record{
		{Topic: usersTopic, Key: []byte(user), Value: value, Headers: headers},
		{Topic: hotelsTopic, Key: []byte(hotel), Value: value, Headers: headers},
	}
}

// waitApplied waits until every shard of the view holds its partition to the end.
func (e *pipelineEnv) waitApplied(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left, err := e.behind(ctx, kadm.NewClient(cl))
		if err == nil && left == "" {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the aggregators did not apply everything within a minute: %s (%v)", left, err)
		}
	}
}

// behind names a shard whose offset is short of its partition's end, "" when none is.
func (e *pipelineEnv) behind(ctx context.Context, adm *kadm.Client) (string, error) {
	ends, err := adm.ListEndOffsets(ctx, usersTopic, hotelsTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return "", err
	}
	shards, layout, err := e.view.Shards(ctx)
	if err != nil {
		return "", err
	}
	for _, sh := range shards {
		d, err := e.view.ReadShard(ctx, sh)
		if err != nil {
			return "", err
		}
		end, _ := ends.Lookup(layout.Topic(sh.Role), sh.Partition)
		if max(d.Next, 0) != end.Offset {
			return fmt.Sprintf("shard %v at %d of %d", sh, d.Next, end.Offset), nil
		}
	}
	return "", nil
}

// verify runs Verify and returns its result and output.
func verify(t *testing.T, cfg config.Config, maxDiffs int) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	equal, err := Verify(ctx, cfg, &out, maxDiffs)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	return equal, out.String()
}

// shardHolding returns the shard of role whose dump counts id of kind.
func (e *pipelineEnv) shardHolding(t *testing.T, kind view.Kind, id string) view.Shard {
	t.Helper()
	ctx := context.Background()
	shards, _, err := e.view.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		d, err := e.view.ReadShard(ctx, sh)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Counts[kind][id]; ok {
			return sh
		}
	}
	t.Fatalf("no shard counts %s %q", kind, id)
	return view.Shard{}
}
