package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/internal/certtest"
)

const rightSecret, wrongSecret = "Right-Secret-4711", "Wrong-Secret-0815"

// noPassword fails the test if err is nil or its message holds either password.
func noPassword(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error to check")
	}
	if m := err.Error(); strings.Contains(m, wrongSecret) || strings.Contains(m, rightSecret) {
		t.Errorf("message shows a password: %s", m)
	}
}

// TestExplainNeverShowsThePassword checks every message a wrong credential produces, from real
// brokers and servers, for the password that was tried and the right one; and feeds Explain
// library errors that do quote the password (none does today), which must come out masked.
func TestExplainNeverShowsThePassword(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run("kafka "+mech, func(t *testing.T) {
			t.Parallel()
			addr := startKafka(t, kfake.EnableSASL(), kfake.Superuser(mech, "searchflow", rightSecret))
			k := newKafka(t, config.SASL{Mechanism: mech, Username: "searchflow", Password: wrongSecret}, config.TLS{})
			noPassword(t, metadataErr(t, k, addr))
			noPassword(t, produceErr(t, k, addr))
			noPassword(t, k.LastConnectError())
		})
	}
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		p := certtest.New(t)
		srv := redistestServer(t, p, rightSecret)
		for _, tc := range []struct {
			user, password string
			tls            config.TLS
		}{
			{"searchflow", wrongSecret, config.TLS{Enabled: true, CAFile: p.CAFile}},
			{"", wrongSecret, config.TLS{Enabled: true, CAFile: p.CAFile}},
			{"searchflow", wrongSecret, config.TLS{}},
			{"searchflow", rightSecret, config.TLS{Enabled: true, CAFile: p.WrongCAFile}},
		} {
			_, err, _ := redisConnect(t, newRedis(t, srv.Addr, tc.user, tc.password, tc.tls))
			noPassword(t, err)
		}
	})
	t.Run("library quotes the password", func(t *testing.T) {
		k := newKafka(t, config.SASL{Mechanism: "PLAIN", Username: "searchflow", Password: wrongSecret}, config.TLS{})
		r := newRedis(t, "127.0.0.1:6379", "searchflow", wrongSecret, config.TLS{Enabled: true})
		var errs []error
		errs = append(errs, k.Explain(fmt.Errorf("login with %q failed: %w", wrongSecret, io.EOF)))
		connectHook{k}.OnBrokerConnect(kgo.BrokerMetadata{Host: "127.0.0.1", Port: 9092}, 0, nil,
			fmt.Errorf("password %s refused: %w", wrongSecret, io.EOF))
		errs = append(errs,
			k.Explain(fmt.Errorf("timed out after trying %s: %w", wrongSecret, context.DeadlineExceeded)),
			k.LastConnectError(),
			k.Explain(fmt.Errorf("no cause to be seen in %s", wrongSecret)),
			r.Explain(fmt.Errorf("AUTH searchflow %s: %w", wrongSecret, x509.UnknownAuthorityError{})),
			r.Explain(fmt.Errorf("no cause to be seen in %s", wrongSecret)),
		)
		for _, err := range errs {
			noPassword(t, err)
			if !strings.Contains(err.Error(), "***") {
				t.Errorf("message did not mask the quoted password: %s", err)
			}
		}
	})
}

// TestTLSCause covers the TLS failures no test server produces on its own.
func TestTLSCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{x509.CertificateInvalidError{Reason: x509.Expired}, "expired"},
		{errors.New("remote error: tls: bad certificate"), "KAFKA_TLS_CERT_FILE"},
		{io.EOF, ""},
	} {
		got := tlsCause("KAFKA_TLS", tc.err)
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("tlsCause(%v) = %q, want it to say %q", tc.err, got, tc.want)
		}
	}
}
