package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/internal/certtest"
)

const topic = "events"

// startKafka runs a one-broker kfake cluster with the topic, closed in t.Cleanup.
func startKafka(t *testing.T, opts ...kfake.Opt) string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, topic)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

func newKafka(t *testing.T, sasl config.SASL, tlsCfg config.TLS) *Kafka {
	t.Helper()
	k, err := NewKafka(sasl, tlsCfg)
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	return k
}

func kafkaClient(t *testing.T, k *Kafka, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(append(k.Opts(), kgo.SeedBrokers(addr)), opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// roundTrip produces a record through k's options and consumes it back.
func roundTrip(t *testing.T, k *Kafka, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	value := []byte("hello " + t.Name())
	if err := kafkaClient(t, k, addr).ProduceSync(ctx, &kgo.Record{Topic: topic, Value: value}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", k.Explain(err))
	}
	consumer := kafkaClient(t, k, addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for {
		fs := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume: no record before the deadline: %v", k.LastConnectError())
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("consume: %v", k.Explain(err)) })
		for _, r := range fs.Records() {
			if string(r.Value) == string(value) {
				return
			}
		}
	}
}

// quickRetries shortens franz-go's backoff between retries of a failed connection (about 1.8 s
// in all by default) to keep the failure tests fast; what the error says does not depend on it.
func quickRetries() kgo.Opt {
	return kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond })
}

// metadataErr asks for metadata as the pipeline's admin client does at start and returns the
// explained error; the deadline bounds it.
func metadataErr(t *testing.T, k *Kafka, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := kadm.NewClient(kafkaClient(t, k, addr, quickRetries())).Metadata(ctx)
	if err == nil {
		t.Fatal("metadata succeeded, want an error")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("metadata only timed out: %v", k.Explain(err))
	}
	return k.Explain(err)
}

// produceErr produces with a short deadline: a produce retries a failed login until then and
// reports only "context deadline exceeded", which Explain must still explain.
func produceErr(t *testing.T, k *Kafka, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := kafkaClient(t, k, addr, quickRetries()).ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
	if err == nil {
		t.Fatal("produce succeeded, want an error")
	}
	return k.Explain(err)
}

func wantErr(t *testing.T, err error, substrings ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", substrings)
	}
	for _, s := range substrings {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestKafkaSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		broker := func(t *testing.T) string {
			return startKafka(t, kfake.EnableSASL(), kfake.Superuser(mech, "searchflow", "right-Pa55"))
		}
		t.Run(mech+"/right password", func(t *testing.T) {
			t.Parallel()
			roundTrip(t, newKafka(t, config.SASL{Mechanism: mech, Username: "searchflow", Password: "right-Pa55"}, config.TLS{}), broker(t))
		})
		t.Run(mech+"/wrong password", func(t *testing.T) {
			t.Parallel()
			addr := broker(t)
			k := newKafka(t, config.SASL{Mechanism: mech, Username: "searchflow", Password: "wrong-Pa55"}, config.TLS{})
			wantErr(t, metadataErr(t, k, addr), "kafka:", "SASL login", mech, `"searchflow"`, "KAFKA_SASL_PASSWORD")
			wantErr(t, produceErr(t, k, addr), "kafka:", "SASL login", "connecting to "+addr, "context deadline exceeded")
			wantErr(t, k.LastConnectError(), "SASL login", addr)
		})
		t.Run(mech+"/unknown user", func(t *testing.T) {
			t.Parallel()
			k := newKafka(t, config.SASL{Mechanism: mech, Username: "nobody", Password: "right-Pa55"}, config.TLS{})
			wantErr(t, metadataErr(t, k, broker(t)), "SASL login", `"nobody"`)
		})
	}
}

func TestKafkaWithoutSASLAgainstASASLBroker(t *testing.T) {
	addr := startKafka(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "searchflow", "pw-123456"))
	k := newKafka(t, config.SASL{}, config.TLS{})
	wantErr(t, metadataErr(t, k, addr), "probably requires SASL", "KAFKA_SASL_MECHANISM")
}

func TestKafkaTLS(t *testing.T) {
	p := certtest.New(t)
	serverOnly := p.ServerConfig(tls.NoClientCert)
	mutual := p.ServerConfig(tls.RequireAndVerifyClientCert)
	withCA := config.TLS{Enabled: true, CAFile: p.CAFile}
	withCert := config.TLS{Enabled: true, CAFile: p.CAFile, CertFile: p.ClientCertFile, KeyFile: p.ClientKeyFile}
	sasl := config.SASL{Mechanism: "SCRAM-SHA-512", Username: "searchflow", Password: "pw-123456"}
	for _, tc := range []struct {
		name   string
		server []kfake.Opt
		sasl   config.SASL
		tls    config.TLS
		want   []string // nil: works
	}{
		{name: "right CA", server: []kfake.Opt{kfake.TLS(serverOnly)}, tls: withCA},
		{name: "right CA and server name", server: []kfake.Opt{kfake.TLS(serverOnly)},
			tls: config.TLS{Enabled: true, CAFile: p.CAFile, ServerName: "localhost"}},
		{name: "wrong CA", server: []kfake.Opt{kfake.TLS(serverOnly)},
			tls:  config.TLS{Enabled: true, CAFile: p.WrongCAFile},
			want: []string{"TLS verification failed", "not signed by a trusted CA", "KAFKA_TLS_CA_FILE", "x509"}},
		{name: "system roots", server: []kfake.Opt{kfake.TLS(serverOnly)},
			tls:  config.TLS{Enabled: true},
			want: []string{"not signed by a trusted CA"}},
		{name: "wrong server name", server: []kfake.Opt{kfake.TLS(serverOnly)},
			tls:  config.TLS{Enabled: true, CAFile: p.CAFile, ServerName: "kafka.example"},
			want: []string{`not valid for "kafka.example"`, "KAFKA_TLS_SERVER_NAME"}},
		{name: "mutual TLS with client certificate", server: []kfake.Opt{kfake.TLS(mutual)}, tls: withCert},
		{name: "mutual TLS without client certificate", server: []kfake.Opt{kfake.TLS(mutual)}, tls: withCA,
			want: []string{"refused the TLS handshake", "KAFKA_TLS_CERT_FILE"}},
		{name: "mutual TLS with a certificate from another CA", server: []kfake.Opt{kfake.TLS(mutual)},
			tls:  config.TLS{Enabled: true, CAFile: p.CAFile, CertFile: p.WrongClientCertFile, KeyFile: p.WrongClientKeyFile},
			want: []string{"refused the TLS handshake"}},
		{name: "plaintext client", server: []kfake.Opt{kfake.TLS(serverOnly)}, tls: config.TLS{},
			want: []string{"probably requires TLS", "KAFKA_TLS=true"}},
		{name: "SASL over mutual TLS", server: []kfake.Opt{kfake.TLS(mutual), kfake.EnableSASL(),
			kfake.Superuser(sasl.Mechanism, sasl.Username, sasl.Password)}, sasl: sasl, tls: withCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := startKafka(t, tc.server...)
			k := newKafka(t, tc.sasl, tc.tls)
			if tc.want == nil {
				roundTrip(t, k, addr)
				if err := k.LastConnectError(); err != nil {
					t.Errorf("LastConnectError after a working round trip: %v", err)
				}
				return
			}
			wantErr(t, metadataErr(t, k, addr), append([]string{"kafka:"}, tc.want...)...)
		})
	}
}

func TestNewKafkaNamesTheBadSetting(t *testing.T) {
	p := certtest.New(t)
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sasl config.SASL
		tls  config.TLS
		want string
	}{
		{"CA file without a certificate", config.SASL{}, config.TLS{Enabled: true, CAFile: notPEM},
			"KAFKA_TLS_CA_FILE " + notPEM + ": no certificate found"},
		{"missing CA file", config.SASL{}, config.TLS{Enabled: true, CAFile: notPEM + ".gone"}, "KAFKA_TLS_CA_FILE: open " + notPEM + ".gone"},
		{"key of another certificate", config.SASL{}, config.TLS{Enabled: true, CertFile: p.ClientCertFile, KeyFile: p.ServerKeyFile},
			"KAFKA_TLS_CERT_FILE " + p.ClientCertFile + " and KAFKA_TLS_KEY_FILE " + p.ServerKeyFile},
		{"unknown mechanism", config.SASL{Mechanism: "GSSAPI"}, config.TLS{}, `KAFKA_SASL_MECHANISM "GSSAPI" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewKafka(tc.sasl, tc.tls)
			wantErr(t, err, tc.want)
		})
	}
}

func TestKafkaExplainLeavesOtherErrorsAlone(t *testing.T) {
	k := newKafka(t, config.SASL{}, config.TLS{})
	for _, err := range []error{nil, context.Canceled, io.EOF, errors.New("something else")} {
		if got := k.Explain(err); got != err {
			t.Errorf("Explain(%v) = %v, want it unchanged", err, got)
		}
	}
	once := newKafka(t, config.SASL{Mechanism: "PLAIN", Username: "u", Password: "p-123456"}, config.TLS{}).Explain(io.EOF)
	if !errors.Is(once, io.EOF) {
		t.Errorf("explained error %v does not wrap io.EOF", once)
	}
	// The pipeline wraps errors with its operation before it explains them.
	wrapped := fmt.Errorf("pipeline: create topic raw: %w", errors.New("unable to dial: dial tcp 127.0.0.1:1: connect: connection refused"))
	wantErr(t, k.Explain(wrapped), "kafka: cannot reach the broker", "KAFKA_BROKERS", "pipeline: create topic raw")
	if twice := k.Explain(once); twice != once {
		t.Errorf("Explain of an explained error changed it to %v", twice)
	}
}
