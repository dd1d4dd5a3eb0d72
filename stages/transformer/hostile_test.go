package transformer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/eventref"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/stages/deadletter"
)

func validRaw(user string, i int) []byte {
	return []byte(fmt.Sprintf(`{"user_id":%q,"hotel_id":%d,"search_timestamp":1620000000,"hotel_advertisers":{"a":[{"eurocents":%d}]}}`, user, i%7, 100+i))
}

// runStage runs a transformer until the test ends and returns it.
func runStage(t *testing.T, cfg Config, opts ...kgo.Opt) *Transformer {
	t.Helper()
	tr, _ := runStoppable(t, cfg, opts...)
	return tr
}

// runStoppable runs a transformer and returns it with a stop that drains it (also run when the
// test ends).
func runStoppable(t *testing.T, cfg Config, opts ...kgo.Opt) (*Transformer, func()) {
	t.Helper()
	if cfg.RawTopic == "" {
		cfg.RawTopic, cfg.ProcessedTopic, cfg.HotelTopic, cfg.DeadLetterTopic, cfg.Group = "raw", "processed", "hotels", "dlq", "g"
	}
	if cfg.BatchMaxRecords == 0 {
		cfg.BatchMaxRecords = 100
	}
	tr := New(cfg, opts, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("transformer did not drain")
		}
	}
	t.Cleanup(stop)
	return tr, stop
}

// countUsers counts processed records per key.
func countUsers(recs []*kgo.Record) map[string]int {
	out := map[string]int{}
	for _, r := range recs {
		out[string(r.Key)]++
	}
	return out
}

// TestProcessedTooLargeIsDeadLettered is issue 9's repro: a valid raw record under 1 MiB whose
// processed form is over the producer's limit (600 advertisers with 256-byte names of control
// characters, which JSON writes as 6-byte escapes, twice in a processed event). It used to abort
// every transaction of the stage forever; now it is dead-lettered and everything else flows.
func TestProcessedTooLargeIsDeadLettered(t *testing.T) {
	_, addr := kafkatest.Start(t, 3, "raw", "processed", "hotels", "dlq")
	var b strings.Builder
	b.WriteString(`{"user_id":"big","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{`)
	for i := 0; i < 600; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%s%03d":[{"eurocents":%d}]`, strings.Repeat(`\u0001`, 253), i, 100+i)
	}
	b.WriteString("}}")
	big := []byte(b.String())
	if len(big) >= event.MaxRawBytes {
		t.Fatalf("the raw record must be under the raw limit, is %d bytes", len(big))
	}
	if _, err := eventref.Transform(big); err != nil {
		t.Fatalf("the raw record must be valid: %v", err)
	}
	var recs []*kgo.Record
	for i := 0; i < 60; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte("k"), Value: validRaw(fmt.Sprintf("u%d", i), i)})
		if i == 30 {
			recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte("big"), Value: big})
		}
	}
	kafkatest.Produce(t, addr, recs...)
	tr := runStage(t, Config{BatchMaxRecords: 16}, kgo.SeedBrokers(addr))

	processed := kafkatest.ReadAll(t, addr, "processed", 60)
	dead := kafkatest.ReadAll(t, addr, "dlq", 1)
	if got := kafkatest.Header(dead[0], event.HeaderReason); got != string(event.ReasonProcessedTooLarge) {
		t.Errorf("reason %q, want %s (error %q)", got, event.ReasonProcessedTooLarge, kafkatest.Header(dead[0], event.HeaderError))
	}
	if !bytes.Equal(dead[0].Value, big[:deadletter.MaxValueBytes]) || kafkatest.Header(dead[0], deadletter.HeaderValueTruncated) == "" {
		t.Errorf("the dead letter must keep the original value, cut to %d bytes", deadletter.MaxValueBytes)
	}
	for u, n := range countUsers(processed) {
		if n != 1 {
			t.Errorf("user %s processed %d times", u, n)
		}
	}
	if c := tr.Counters().Map(); c["aborted_batches"] != 0 {
		t.Errorf("the preflight check must dead-letter it without an abort: %v", c)
	}
}

// TestBrokerRefusalIsolatesTheRecord: the processed topic takes records of at most 700 bytes (a
// broker limit the transformer cannot know in advance). Records whose processed form is larger
// are refused by the broker with MESSAGE_TOO_LARGE; the stage narrows the failing transactions
// down to those records, dead-letters them as processed_too_large, and processes every other
// record exactly once.
func TestBrokerRefusalIsolatesTheRecord(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "raw", "hotels", "dlq")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	limit := "700"
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 2, 1, map[string]*string{"max.message.bytes": &limit}, "processed"); err != nil {
		t.Fatal(err)
	}
	fat := func(i int) []byte { // two advertisers with 240-byte names that do not compress: about 1 KB processed
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		name := func() string {
			b := make([]byte, 240)
			for j := range b {
				b[j] = byte('a' + rng.IntN(26))
			}
			return string(b)
		}
		return []byte(fmt.Sprintf(`{"user_id":"fat%d","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"%s":[{"eurocents":5}],"%s":[{"eurocents":6}]}}`,
			i, name(), name()))
	}
	var recs []*kgo.Record
	const n = 40
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte(fmt.Sprint(i)), Value: validRaw(fmt.Sprintf("u%d", i), i)})
		if i%10 == 5 {
			recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte(fmt.Sprint(i)), Value: fat(i)})
		}
	}
	kafkatest.Produce(t, addr, recs...)
	tr := runStage(t, Config{BatchMaxRecords: 20}, kgo.SeedBrokers(addr))

	processed := kafkatest.ReadAll(t, addr, "processed", n)
	dead := kafkatest.ReadAll(t, addr, "dlq", 4)
	for _, r := range dead {
		if got := kafkatest.Header(r, event.HeaderReason); got != string(event.ReasonProcessedTooLarge) || !bytes.HasPrefix(r.Value, []byte(`{"user_id":"fat`)) {
			t.Errorf("dead letter %.40q with reason %q (%s)", r.Value, got, kafkatest.Header(r, event.HeaderError))
		}
	}
	users := countUsers(processed)
	for i := 0; i < n; i++ {
		if users[fmt.Sprintf("u%d", i)] != 1 {
			t.Errorf("u%d processed %d times", i, users[fmt.Sprintf("u%d", i)])
		}
	}
	waitFor(t, "the counts to settle", func() bool {
		c := tr.Counters().Map()
		return c["produced"] == n && c["dead_lettered"] == 4
	})
	// Narrowing down is temporary: with more records flowing, transactions grow back to full size.
	recs = recs[:0]
	for i := n; i < n+100; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Value: validRaw(fmt.Sprintf("u%d", i), i)})
	}
	kafkatest.Produce(t, addr, recs...)
	waitFor(t, "the poll size to grow back", func() bool { return tr.Counters().Map()["produced"] == n+100 && tr.iso.pollSize() == 20 })
}

// failProcessed makes the broker answer POLICY_VIOLATION — an error nobody foresaw — to every
// produce of a processed record for which fail says so (matched on the uncompressed bytes of the
// produce request: run the stage without compression).
func failProcessed(cluster *kfake.Cluster, fail func(records []byte) bool) {
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		hit := false
		for _, tp := range pr.Topics {
			for _, p := range tp.Partitions {
				// Produce v13 names topics by ID: tell a processed record by its min_offer field.
				hit = hit || bytes.Contains(p.Records, []byte(`"min_offer"`)) && fail(p.Records)
			}
		}
		if !hit {
			return nil, nil, false
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, tp := range pr.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = tp.Topic, tp.TopicID
			for _, p := range tp.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = kerr.PolicyViolation.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

// TestUnforeseenFailureBecomesPoison: the broker answers every produce that carries one record
// with an error nobody foresaw (POLICY_VIOLATION). The stage retries, narrows the batch down,
// retries the record alone a bounded number of times and dead-letters it as poison; the records
// around it are processed exactly once.
func TestUnforeseenFailureBecomesPoison(t *testing.T) {
	cluster, addr := kafkatest.Start(t, 2, "raw", "processed", "hotels", "dlq")
	failProcessed(cluster, func(b []byte) bool { return bytes.Contains(b, []byte("poison-user")) })
	var recs []*kgo.Record
	const n = 30
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte(fmt.Sprint(i)), Value: validRaw(fmt.Sprintf("u%d", i), i)})
		if i == 12 {
			recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte("p"), Value: validRaw("poison-user", i)})
		}
	}
	kafkatest.Produce(t, addr, recs...)
	// Uncompressed, so that the broker's control function can see the marker in the records.
	runStage(t, Config{BatchMaxRecords: 8}, kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(kgo.NoCompression()))

	dead := kafkatest.ReadAll(t, addr, "dlq", 1)
	if got := kafkatest.Header(dead[0], event.HeaderReason); got != string(event.ReasonPoison) ||
		!strings.Contains(kafkatest.Header(dead[0], event.HeaderError), "POLICY_VIOLATION") {
		t.Errorf("reason %q error %q, want poison naming the broker's error", got, kafkatest.Header(dead[0], event.HeaderError))
	}
	users := countUsers(kafkatest.ReadAll(t, addr, "processed", n))
	for i := 0; i < n; i++ {
		if users[fmt.Sprintf("u%d", i)] != 1 {
			t.Errorf("u%d processed %d times", i, users[fmt.Sprintf("u%d", i)])
		}
	}
	if users["poison-user"] != 0 {
		t.Error("the poison record was also processed")
	}
}

// TestPoisonIsolatedUnderLoad: while another partition receives records all the time, its
// commits must not end the narrowing down around the poison record of the first partition.
func TestPoisonIsolatedUnderLoad(t *testing.T) {
	cluster, addr := kafkatest.Start(t, 2, "raw", "processed", "hotels", "dlq")
	failProcessed(cluster, func(b []byte) bool { return bytes.Contains(b, []byte("poison-user")) })
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	first := []*kgo.Record{{Topic: "raw", Partition: 0, Value: validRaw("p0-before", 0)},
		{Topic: "raw", Partition: 0, Value: validRaw("poison-user", 1)}, {Topic: "raw", Partition: 0, Value: validRaw("p0-after", 2)}}
	if err := cl.ProduceSync(ctx, first...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	loaded := make(chan int)
	go func() { // partition 1: a record every few milliseconds until the poison is dealt with
		n := 0
		defer func() { loaded <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "raw", Partition: 1, Value: validRaw(fmt.Sprintf("p1-%d", n), n)}).FirstErr(); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			n++
		}
	}()
	runStage(t, Config{BatchMaxRecords: 64}, kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(kgo.NoCompression()))
	dead := kafkatest.ReadAll(t, addr, "dlq", 1)
	close(stop)
	n := <-loaded
	if got := kafkatest.Header(dead[0], event.HeaderReason); got != string(event.ReasonPoison) {
		t.Errorf("reason %q, want poison", got)
	}
	users := countUsers(kafkatest.ReadAll(t, addr, "processed", n+2))
	for _, u := range []string{"p0-before", "p0-after", "p1-0", fmt.Sprintf("p1-%d", n-1)} {
		if users[u] != 1 {
			t.Errorf("%s processed %d times", u, users[u])
		}
	}
	t.Logf("isolated the poison record while %d records flowed through the other partition", n)
}

// TestSystemicFailureDeadLettersNothing: when every processed record fails the same unforeseen
// way, no record is at fault and none may be dead-lettered as poison: the stage keeps trying,
// reports the aborts, and processes everything once the broker takes records again.
func TestSystemicFailureDeadLettersNothing(t *testing.T) {
	cluster, addr := kafkatest.Start(t, 2, "raw", "processed", "hotels", "dlq")
	var broken atomic.Bool
	broken.Store(true)
	failProcessed(cluster, func([]byte) bool { return broken.Load() })
	var recs []*kgo.Record
	for i := 0; i < 30; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Value: validRaw(fmt.Sprintf("u%d", i), i)})
	}
	kafkatest.Produce(t, addr, recs...)
	tr := runStage(t, Config{BatchMaxRecords: 8}, kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(kgo.NoCompression()))
	waitFor(t, "narrowing down to single records that fail alone, and the aborts on /readyz", func() bool {
		return tr.iso.pollSize() == 1 && tr.Counters().Map()["aborted_batches"] >= 12 && strings.Contains(tr.Problem(), "aborted in a row")
	})
	if n := tr.Counters().Map()["dead_lettered"]; n != 0 {
		t.Fatalf("%d records dead-lettered for a failure that is not theirs", n)
	}
	broken.Store(false)
	for u, k := range countUsers(kafkatest.ReadAll(t, addr, "processed", 30)) {
		if k != 1 {
			t.Errorf("%s processed %d times", u, k)
		}
	}
	waitFor(t, "the counts", func() bool { return tr.Counters().Map()["produced"] == 30 })
	if n := tr.Counters().Map()["dead_lettered"]; n != 0 {
		t.Errorf("%d records dead-lettered", n)
	}
}

// TestDeadLetterTooLargeStopsOnlyItsPartition: the dead-letter topic takes records of at most
// 4 KiB. An invalid 100 KiB record in partition 0 cannot be dead-lettered even alone, so partition
// 0 stops there; an invalid small record in partition 1 — which shared a produce batch and a
// failed transaction with it at first — is dead-lettered, and partition 1 flows on.
func TestDeadLetterTooLargeStopsOnlyItsPartition(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "raw", "processed", "hotels")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	limit := "4096"
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &limit}, "dlq"); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 100<<10) // does not compress
	for i := range big {
		big[i] = byte('a' + rng.IntN(26))
	}
	recs := []*kgo.Record{{Topic: "raw", Partition: 0, Value: big}, {Topic: "raw", Partition: 1, Value: []byte("not json")}}
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Partition: 1, Value: validRaw(fmt.Sprintf("p1-%d", i), i)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tr := runStage(t, Config{BatchMaxRecords: 16}, kgo.SeedBrokers(addr))
	dead := kafkatest.ReadAll(t, addr, "dlq", 1)
	if string(dead[0].Value) != "not json" {
		t.Errorf("dead letter %.20q, want partition 1's", dead[0].Value)
	}
	if users := countUsers(kafkatest.ReadAll(t, addr, "processed", 10)); len(users) != 10 {
		t.Errorf("partition 1 processed %d distinct users, want 10", len(users))
	}
	waitFor(t, "only partition 0 named as stopped", func() bool {
		p := tr.Problem()
		return strings.Contains(p, "raw/0 stopped at offset 0") && !strings.Contains(p, "raw/1")
	})
}

// aclCluster starts a SASL/PLAIN kfake cluster with ACLs: "admin" is a superuser, "svc" may do
// everything on every resource except what deny forbids.
func aclCluster(t *testing.T, deny ...kfake.ACL) (*kfake.Cluster, string) {
	t.Helper()
	all := func(rt kmsg.ACLResourceType) kfake.ACL {
		return kfake.ACL{Resource: rt, Name: "*", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}
	}
	acls := append([]kfake.ACL{all(kmsg.ACLResourceTypeTopic), all(kmsg.ACLResourceTypeGroup),
		all(kmsg.ACLResourceTypeTransactionalId),
		{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
	}, deny...)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin"), kfake.User("PLAIN", "svc", "svc-password", acls...),
		kfake.SeedTopics(2, "raw", "processed", "hotels", "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func as(user, pass, addr string) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())}
}

// readAs reads topic from the start as the admin until done is satisfied or the deadline passes.
func readAs(t *testing.T, addr, topic string, within time.Duration, done func([]*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(as("admin", "admin", addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []*kgo.Record
	for !done(out) && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	return out
}

func denyWrite(topic string) kfake.ACL {
	return kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: kmsg.ACLResourcePatternTypeLiteral,
		Operation: kmsg.ACLOperationWrite, Allow: false}
}

// deleteDeny lifts a denyWrite as the admin, as an operator fixing the ACL would.
func deleteDeny(t *testing.T, addr, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(as("admin", "admin", addr)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	b := kadm.NewACLs().Topics(topic).Deny("User:svc").DenyHosts("*").Operations(kadm.OpWrite).ResourcePatternType(kadm.ACLPatternLiteral)
	res, err := kadm.NewClient(cl).DeleteACLs(context.Background(), b)
	if err == nil {
		for _, r := range res {
			err = errors.Join(err, r.Err)
		}
	}
	if err != nil {
		t.Fatalf("delete the deny ACL: %v", err)
	}
}

// TestDeadLetterDeniedStopsOnlyItsPartition: the stage's user may not write the dead-letter
// topic. An invalid record in raw partition 0 cannot be dead-lettered, so partition 0 stops
// there — nothing after it is processed, nothing is skipped — while partition 1 flows, and
// /readyz's problem names the partition. Once the operator lifts the denial, the partition
// resumes by itself and every record comes out once.
func TestDeadLetterDeniedStopsOnlyItsPartition(t *testing.T) {
	_, addr := aclCluster(t, denyWrite("dlq"))
	admin, err := kgo.NewClient(append(as("admin", "admin", addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var recs []*kgo.Record
	for i := 0; i < 20; i++ {
		for p := int32(0); p < 2; p++ {
			recs = append(recs, &kgo.Record{Topic: "raw", Partition: p, Value: validRaw(fmt.Sprintf("p%d-%d", p, i), i)})
		}
		if i == 10 {
			recs = append(recs, &kgo.Record{Topic: "raw", Partition: 0, Value: []byte("not json")})
		}
	}
	if err := admin.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tr := runStage(t, Config{BatchMaxRecords: 10}, as("svc", "svc-password", addr)...)

	// Partition 1 flows; partition 0 stops at the invalid record, its offset 11 (the records before
	// it that shared its aborted transaction wait with it: a transaction commits all or nothing).
	readAs(t, addr, "processed", 30*time.Second, func(r []*kgo.Record) bool { return len(r) >= 20 })
	waitFor(t, "/readyz's problem to name the stopped partition", func() bool {
		return strings.Contains(tr.Problem(), "raw/0 stopped at offset 11")
	})
	users := countUsers(readAs(t, addr, "processed", 2*time.Second, func([]*kgo.Record) bool { return false }))
	for i := 0; i < 20; i++ {
		if users[fmt.Sprintf("p1-%d", i)] != 1 {
			t.Errorf("partition 1 record %d processed %d times", i, users[fmt.Sprintf("p1-%d", i)])
		}
		if n := users[fmt.Sprintf("p0-%d", i)]; n > 1 || i > 10 && n != 0 {
			t.Errorf("partition 0 record %d processed %d times while stopped at offset 11", i, n)
		}
	}

	deleteDeny(t, addr, "dlq")
	dead := readAs(t, addr, "dlq", 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= 1 })
	if len(dead) != 1 || kafkatest.Header(dead[0], event.HeaderReason) != string(event.ReasonNotJSON) || kafkatest.Header(dead[0], event.HeaderSourceOffset) != "11" {
		t.Fatalf("dead letters after the fix: %d", len(dead))
	}
	processed := readAs(t, addr, "processed", 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= 40 })
	for u, n := range countUsers(processed) {
		if n != 1 {
			t.Errorf("%s processed %d times", u, n)
		}
	}
	waitFor(t, "the problem to clear", func() bool { return tr.Problem() == "" })
}

// TestProcessedTopicDeniedDeadLettersNothing: when the processed topic itself is denied, every
// record fails alike: an outage of sorts, not a bad record. Nothing is dead-lettered, /readyz
// reports the aborts, and once the denial is lifted every record is processed once.
func TestProcessedTopicDeniedDeadLettersNothing(t *testing.T) {
	_, addr := aclCluster(t, denyWrite("processed"))
	admin, err := kgo.NewClient(as("admin", "admin", addr)...)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var recs []*kgo.Record
	for i := 0; i < 20; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Value: validRaw(fmt.Sprintf("u%d", i), i)})
	}
	if err := admin.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tr := runStage(t, Config{BatchMaxRecords: 10}, as("svc", "svc-password", addr)...)
	waitFor(t, "/readyz's problem to report the aborts", func() bool {
		return strings.Contains(tr.Problem(), "aborted in a row") && strings.Contains(tr.Problem(), "TOPIC_AUTHORIZATION_FAILED")
	})
	deleteDeny(t, addr, "processed")
	processed := readAs(t, addr, "processed", 60*time.Second, func(r []*kgo.Record) bool { return len(r) >= 20 })
	for u, n := range countUsers(processed) {
		if n != 1 {
			t.Errorf("%s processed %d times", u, n)
		}
	}
	if dead := readAs(t, addr, "dlq", 2*time.Second, func([]*kgo.Record) bool { return false }); len(dead) != 0 {
		t.Errorf("%d innocent records dead-lettered", len(dead))
	}
	waitFor(t, "the problem to clear", func() bool { return tr.Problem() == "" })
}

// waitFor polls cond every 20 ms for up to 60 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
