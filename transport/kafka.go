package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/searchflow/searchflow/config"
)

// Kafka is how searchflow's clients reach a Kafka cluster: the options for its SASL and TLS
// settings, and the outcome of the latest broker connection. That outcome is what explains a
// failure: franz-go retries a refused login and a failed handshake, so a produce or a poll reports
// only "context deadline exceeded", and kfake answers a wrong password by closing the connection
// ("EOF").
type Kafka struct {
	sasl config.SASL
	tls  bool
	opts []kgo.Opt

	mu   sync.Mutex
	last connectResult
}

type connectResult struct {
	addr string
	err  error
}

// NewKafka checks sasl and tls (reading the CA and client certificate files) and returns the
// transport for them. Zero settings give a plaintext client without login: the embedded broker.
func NewKafka(sasl config.SASL, tls config.TLS) (*Kafka, error) {
	k := &Kafka{sasl: sasl, tls: tls.Enabled}
	switch sasl.Mechanism {
	case "":
	case "PLAIN":
		k.opts = append(k.opts, kgo.SASL(plain.Auth{User: sasl.Username, Pass: sasl.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		k.opts = append(k.opts, kgo.SASL(scram.Auth{User: sasl.Username, Pass: sasl.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		k.opts = append(k.opts, kgo.SASL(scram.Auth{User: sasl.Username, Pass: sasl.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("KAFKA_SASL_MECHANISM %q is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", sasl.Mechanism)
	}
	if tls.Enabled {
		c, err := tlsConfig("KAFKA_TLS", tls)
		if err != nil {
			return nil, err
		}
		// franz-go clones the config per connection and fills ServerName from the broker's host
		// when it is empty, so each broker is checked under its own name.
		k.opts = append(k.opts, kgo.DialTLSConfig(c))
	}
	k.opts = append(k.opts, kgo.WithHooks(connectHook{k}))
	return k, nil
}

// Opts returns the options to add to every client of the cluster (with kgo.SeedBrokers and the
// client's own options).
func (k *Kafka) Opts() []kgo.Opt {
	return append([]kgo.Opt(nil), k.opts...)
}

// LastConnectError is the explained failure of the latest broker connection of any client made
// with Opts, or nil when that connection succeeded or none was tried: for /readyz and the log.
func (k *Kafka) LastConnectError() error {
	k.mu.Lock()
	last := k.last
	k.mu.Unlock()
	if last.err == nil {
		return nil
	}
	return &explained{msg: k.connectFailure(last, k.cause(last.err, true)), errs: []error{last.err}}
}

// connectFailure says how the connection last went: "kafka: <cause>: connecting to <addr>: <err>".
func (k *Kafka) connectFailure(last connectResult, cause string) string {
	msg := "kafka: "
	if cause != "" {
		msg += cause + ": "
	}
	return msg + "connecting to " + last.addr + ": " + redact(last.err.Error(), k.sasl.Password)
}

// Explain returns err with the likely cause in front, naming the settings to check, e.g.
// "kafka: SASL authentication failed (SCRAM-SHA-256 as user "app"; check KAFKA_SASL_USERNAME,
// KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM): EOF". When err itself says nothing (a deadline,
// an EOF), the latest failed connection gives the cause. It returns err unchanged when it is nil,
// a cancellation, or has no recognizable cause (masked if it quotes the password): the message
// never contains the password.
func (k *Kafka) Explain(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || alreadyExplained(err) {
		return err
	}
	k.mu.Lock()
	last := k.last
	k.mu.Unlock()
	return k.explain(err, last)
}

func (k *Kafka) explain(err error, last connectResult) error {
	if cause := k.cause(err, false); cause != "" {
		return &explained{msg: "kafka: " + cause + ": " + redact(err.Error(), k.sasl.Password), errs: []error{err}}
	}
	if last.err != nil && vague(err) {
		if cause := k.cause(last.err, true); cause != "" {
			msg := k.connectFailure(last, cause)
			if err.Error() != last.err.Error() {
				msg += " (" + redact(err.Error(), k.sasl.Password) + ")"
			}
			return &explained{msg: msg, errs: []error{err, last.err}}
		}
	}
	return masked(err, k.sasl.Password)
}

// cause names the likely reason for a failed request, or for a failed connection when
// atConnect, or "" if it sees none.
func (k *Kafka) cause(err error, atConnect bool) string {
	saslHint := "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
	var firstRead *kgo.ErrFirstReadEOF
	var netErr net.Error
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Sprintf("SASL authentication failed (%s as user %q; %s)", k.sasl.Mechanism, k.sasl.Username, saslHint)
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Sprintf("the broker does not accept SASL mechanism %s (check KAFKA_SASL_MECHANISM)", k.sasl.Mechanism)
	case errors.Is(err, kerr.IllegalSaslState):
		return fmt.Sprintf("the broker refused the SASL exchange (%s)", saslHint)
	case tlsCause("KAFKA_TLS", err) != "":
		return tlsCause("KAFKA_TLS", err)
	case errors.As(err, &firstRead):
		// franz-go's own guess, from when in the connection the broker hung up.
		msg := firstRead.Error()
		switch {
		case strings.Contains(msg, "SASL") && k.sasl.Mechanism == "":
			return "the broker closed the connection at the first request: it probably requires SASL (set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD)"
		case strings.Contains(msg, "requires TLS") && !k.tls:
			return "the broker closed the connection at the first request: it probably requires TLS (set KAFKA_TLS=true)"
		case strings.Contains(msg, "using TLS") && k.tls:
			return "the broker closed the connection at the TLS handshake: it probably does not speak TLS on this port (set KAFKA_TLS=false or use its TLS port)"
		}
		return "the broker closed the connection at once"
	case atConnect && k.sasl.Mechanism != "" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		// A real broker answers a wrong password with SASL_AUTHENTICATION_FAILED; some (kfake
		// among them) just hang up, and franz-go reports that as a bare EOF. A hang-up while
		// connecting that is not franz-go's ErrFirstReadEOF (ApiVersions) came during the login;
		// one on a request may be a broker restarting, so it is left to the connection's outcome.
		return fmt.Sprintf("the broker closed the connection during SASL login: the credentials are probably wrong (%s as user %q; %s)", k.sasl.Mechanism, k.sasl.Username, saslHint)
	case isDial(err) && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout()):
		if k.tls {
			return "connecting timed out: the broker is unreachable, or it does not answer TLS on this port (check KAFKA_BROKERS and KAFKA_TLS)"
		}
		return "connecting timed out: the broker is unreachable (check KAFKA_BROKERS)"
	case isDial(err):
		return "cannot reach the broker (check KAFKA_BROKERS and that the broker is up)"
	}
	return ""
}

// isDial reports whether err comes from opening a connection; franz-go wraps those as "unable to
// dial: ...", a context deadline during a TLS handshake included (and the caller may wrap more).
func isDial(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || strings.Contains(err.Error(), "unable to dial")
}

// vague reports whether err says too little to explain itself: a deadline, a hang-up or a
// network error, which the latest failed connection usually explains.
func vague(err error) bool {
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &netErr)
}

// connectHook records the outcome of every broker connection of the clients made with Opts.
type connectHook struct{ k *Kafka }

// OnBrokerConnect implements kgo.HookBrokerConnect; the error covers the dial, the TLS handshake,
// the ApiVersions request and the SASL login.
func (h connectHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) ||
		strings.Contains(err.Error(), "operation was canceled")) {
		return // the client gave up on this dial; it says nothing about the broker
	}
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	h.k.last = connectResult{addr: net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err: err}
}
