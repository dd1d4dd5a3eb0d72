package pipeline

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/internal/certtest"
	"github.com/searchflow/searchflow/internal/redistest"
)

// logBuffer collects everything the daemon logs, to search it for secrets.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// capturedLogger logs at debug level to buf and to the test's log.
func capturedLogger(t *testing.T, buf *logBuffer) *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zapcore.DebugLevel)
	return zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// securedServices starts a kfake broker speaking TLS and SASL SCRAM-SHA-512, and a redis-server
// speaking only TLS with an ACL user and the default user off, as managed services do.
func securedServices(t *testing.T, kafkaPassword, redisPassword string) (pki *certtest.PKI, kafka string, redis *redistest.Server) {
	t.Helper()
	pki = certtest.New(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "searchflow", kafkaPassword), kfake.TLS(pki.ServerConfig(tls.NoClientCert)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	redis = redistest.Start(t, redistest.WithTLS(pki, false),
		redistest.WithUser("searchflow", redisPassword, "~searchflow:*", "+@all"), redistest.WithoutDefaultUser())
	return pki, c.ListenAddrs()[0], redis
}

// TestSecuredKafkaAndRedis runs the daemon against Kafka over TLS with SASL SCRAM-SHA-512 and a
// Redis that speaks only TLS with an ACL user, both passwords read from files (the Docker and
// Kubernetes secrets convention): the counts must be exact, and no log line may show a secret.
func TestSecuredKafkaAndRedis(t *testing.T) {
	t.Parallel()
	const kafkaPassword, redisPassword = "k4fka-s3cret-pw", "r3dis-s3cret-pw"
	pki, kafka, redis := securedServices(t, kafkaPassword, redisPassword)
	logs := &logBuffer{}
	const n, seed, users, hotels = 500, 5, 50, 10
	h := startLogged(t, map[string]string{
		"KAFKA_BROKERS": kafka, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "searchflow",
		"KAFKA_SASL_PASSWORD_FILE": writeFile(t, "kafka-password", kafkaPassword+"\n"),
		"KAFKA_TLS":                "true", "KAFKA_TLS_CA_FILE": pki.CAFile,
		"REDIS_ADDR": redis.Addr, "REDIS_USERNAME": "searchflow",
		"REDIS_PASSWORD_FILE": writeFile(t, "redis-password", redisPassword+"\n"),
		"REDIS_TLS":           "true", "REDIS_TLS_CA_FILE": pki.CAFile,
		"GENERATOR_MAX_EVENTS": strconv.Itoa(n), "GENERATOR_SEED": strconv.Itoa(seed),
		"GENERATOR_USERS": strconv.Itoa(users), "GENERATOR_HOTELS": strconv.Itoa(hotels),
	}, capturedLogger(t, logs))
	synthTruth(n, seed, users, hotels).WaitEqual(t, h.base, 90*time.Second)
	h.waitReady()
	h.stop()
	for _, secret := range []string{kafkaPassword, redisPassword} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs show the secret %q", secret)
		}
	}
	if !strings.Contains(logs.String(), `"KAFKA_SASL_PASSWORD":"***"`) || !strings.Contains(logs.String(), `"REDIS_PASSWORD":"***"`) {
		t.Error("the start-up log must show the passwords masked")
	}
}

// listening runs the daemon and returns the API's base URL and ADMIN_ADDR's listen address ("" without
// it) as soon as they listen, before Kafka and Redis are reached.
func listening(t *testing.T, env map[string]string, log *zap.Logger) (base, admin string, stop func() error) {
	t.Helper()
	cfg := testConfig(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cfg, log, Options{OnListening: func(api, admin string) { addrs <- [2]string{api, admin} }})
	}()
	select {
	case a := <-addrs:
		base, admin = "http://"+a[0], a[1]
	case err := <-done:
		cancel()
		t.Fatalf("the daemon exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("the daemon did not listen within 30s")
	}
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("the daemon did not stop within 30s")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return base, admin, stop
}

// TestWrongCredentialsAreReported: with a wrong password or certificate the daemon neither exits
// nor hangs in silence. /healthz answers at once, /readyz names the service and the likely cause,
// the log says it once per retry, and no secret shows anywhere.
func TestWrongCredentialsAreReported(t *testing.T) {
	const kafkaPassword, redisPassword = "right-kafka-pw", "right-redis-pw"
	const wrong = "wr0ng-passw0rd"
	pki, kafka, redis := securedServices(t, kafkaPassword, redisPassword)
	good := func() map[string]string {
		return map[string]string{
			"KAFKA_BROKERS": kafka, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "searchflow",
			"KAFKA_SASL_PASSWORD": kafkaPassword, "KAFKA_TLS": "true", "KAFKA_TLS_CA_FILE": pki.CAFile,
			"REDIS_ADDR": redis.Addr, "REDIS_USERNAME": "searchflow", "REDIS_PASSWORD": redisPassword,
			"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": pki.CAFile, "STAGES": "aggregator,api",
		}
	}
	for _, tc := range []struct {
		name, variable, value string
		service               string   // the /readyz problem's key
		says                  []string // words the problem must hold, any case
	}{
		{"wrong kafka password", "KAFKA_SASL_PASSWORD", wrong, "kafka", []string{"sasl", "KAFKA_SASL_PASSWORD"}},
		{"wrong kafka CA", "KAFKA_TLS_CA_FILE", pki.WrongCAFile, "kafka", []string{"certificate", "KAFKA_TLS_CA_FILE"}},
		{"wrong redis password", "REDIS_PASSWORD", wrong, "redis", []string{"authentication", "REDIS_PASSWORD"}},
		{"wrong redis CA", "REDIS_TLS_CA_FILE", pki.WrongCAFile, "redis", []string{"certificate", "REDIS_TLS_CA_FILE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := good()
			env[tc.variable] = tc.value
			logs := &logBuffer{}
			base, _, stop := listening(t, env, capturedLogger(t, logs))
			if code, _ := getStatus(t, base+"/healthz"); code != http.StatusOK {
				t.Errorf("/healthz = %d while connecting, want 200", code)
			}
			problems := waitReadyz(t, base, "name "+tc.service+" and the cause", func(code int, problems map[string]string) bool {
				return code == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(problems[tc.service]), strings.ToLower(tc.says[0]))
			})
			for _, word := range tc.says {
				if !strings.Contains(strings.ToLower(problems[tc.service]), strings.ToLower(word)) {
					t.Errorf("/readyz says %q for %s; it should mention %q", problems[tc.service], tc.service, word)
				}
			}
			if code, _ := getStatus(t, base+"/users"); code != http.StatusServiceUnavailable {
				t.Errorf("/users = %d before Redis is reached, want 503", code)
			}
			waitLog(t, logs, `"service":"`+tc.service+`"`)
			if err := stop(); err != nil {
				t.Errorf("stopping while connecting: %v", err)
			}
			for _, secret := range []string{kafkaPassword, redisPassword, wrong} {
				if strings.Contains(logs.String(), secret) || strings.Contains(stringify(problems), secret) {
					t.Errorf("a secret shows in the logs or on /readyz: %q", secret)
				}
			}
		})
	}
}

func stringify(m map[string]string) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// waitLog waits until the captured log holds s.
func waitLog(t *testing.T, logs *logBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never held %s", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStalledPartitionIsReported: the stage's Kafka user may not write the dead-letter topic, so
// an invalid raw record stops its partition. /readyz must name the stopped partition (the
// transformer's own problem) and, once it has not moved for STALL_TIMEOUT with records left, the
// stall — while a caught-up partition, whose lag is only its commit marker, is never taken for
// one.
func TestStalledPartitionIsReported(t *testing.T) {
	all := func(rt kmsg.ACLResourceType, name string) kfake.ACL {
		return kfake.ACL{Resource: rt, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-pw"),
		kfake.User("PLAIN", "svc", "svc-pw", all(kmsg.ACLResourceTypeTopic, "*"), all(kmsg.ACLResourceTypeGroup, "*"),
			all(kmsg.ACLResourceTypeTransactionalId, "*"), all(kmsg.ACLResourceTypeCluster, "kafka-cluster"),
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "dead_letter_events", Pattern: kmsg.ACLResourcePatternTypeLiteral,
				Operation: kmsg.ACLOperationWrite, Allow: false}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	kafka := c.ListenAddrs()[0]
	srv := redistest.Start(t)
	h := start(t, map[string]string{"KAFKA_BROKERS": kafka, "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "svc",
		"KAFKA_SASL_PASSWORD": "svc-pw", "REDIS_ADDR": srv.Addr, "STAGES": "transformer,aggregator,api",
		"STALL_TIMEOUT": "2s", "TOPIC_PARTITIONS": "2"})

	admin, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.SASL(plain.Auth{User: "admin", Pass: "admin-pw"}.AsMechanism()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	valid := `{"user_id":"u%d","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":5}]}}`
	var recs []*kgo.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw_events", Partition: 1, Value: []byte(strings.Replace(valid, "%d", strconv.Itoa(i), 1))})
	}
	recs = append(recs, &kgo.Record{Topic: "raw_events", Partition: 0, Value: []byte("not json")},
		&kgo.Record{Topic: "raw_events", Partition: 0, Value: []byte(strings.Replace(valid, "%d", "after", 1))})
	if err := admin.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	problems := waitReadyz(t, h.base, "report the stall", func(code int, problems map[string]string) bool {
		return code == http.StatusServiceUnavailable && problems["searchflow-transformer raw_events/0"] != ""
	})
	if !strings.Contains(problems["transformer"], "raw_events/0 stopped at offset 0") {
		t.Errorf("the transformer's problem %q should name the stopped partition", problems["transformer"])
	}
	for where := range problems {
		if strings.Contains(where, "/1") || strings.Contains(where, "aggregator raw") || strings.Contains(where, "processed_events") {
			t.Errorf("a partition with nothing left is reported: %s: %s", where, problems[where])
		}
	}
	t.Logf("/readyz problems: %v", problems)
}

// TestKafkaUserWithoutCreate: managed Kafka seldom lets an application create topics, and Kafka
// checks CREATE before it checks whether a topic exists. With the topics created by an operator,
// a user that may only read and write them must run the pipeline.
func TestKafkaUserWithoutCreate(t *testing.T) {
	t.Parallel()
	allow := func(rt kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: rt, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-pw"),
		kfake.User("PLAIN", "app", "app-pw",
			allow(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationRead), allow(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationWrite),
			allow(kmsg.ACLResourceTypeGroup, "*", kmsg.ACLOperationAll), allow(kmsg.ACLResourceTypeTransactionalId, "*", kmsg.ACLOperationAll),
			allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite)),
		kfake.SeedTopics(3, "raw_events", "processed_events", "processed_events_by_hotel", "dead_letter_events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const n, seed, users, hotels = 300, 3, 40, 8
	h := start(t, map[string]string{"KAFKA_BROKERS": c.ListenAddrs()[0], "KAFKA_SASL_MECHANISM": "PLAIN",
		"KAFKA_SASL_USERNAME": "app", "KAFKA_SASL_PASSWORD": "app-pw", "REDIS_ADDR": redistest.Start(t).Addr,
		"GENERATOR_MAX_EVENTS": strconv.Itoa(n), "GENERATOR_SEED": strconv.Itoa(seed),
		"GENERATOR_USERS": strconv.Itoa(users), "GENERATOR_HOTELS": strconv.Itoa(hotels)})
	synthTruth(n, seed, users, hotels).WaitEqual(t, h.base, 60*time.Second)
	h.stop()
}
