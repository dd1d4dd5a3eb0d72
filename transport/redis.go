package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/config"
)

// Redis is how searchflow's client reaches an external Redis: the client option for its address,
// ACL user, password, database and TLS settings, and the explanation of a failure.
type Redis struct {
	username, password string
	tls                bool
	option             rueidis.ClientOption
}

// NewRedis checks tls (reading the CA and client certificate files) and returns the transport for
// the Redis server, or the seed nodes of a Redis Cluster, at addrs. An empty username is Redis's
// default user.
func NewRedis(addrs []string, username, password string, db int, tls config.TLS) (*Redis, error) {
	r := &Redis{username: username, password: password, tls: tls.Enabled, option: rueidis.ClientOption{
		InitAddress: append([]string(nil), addrs...),
		Username:    username,
		Password:    password,
		SelectDB:    db,
	}}
	if tls.Enabled {
		c, err := tlsConfig("REDIS_TLS", tls)
		if err != nil {
			return nil, err
		}
		// Without ServerName, the dialer checks the certificate against the host of addr.
		r.option.TLSConfig = c
	}
	return r, nil
}

// Option returns the client option; the caller adds its own settings (DisableCache and the like).
// Each call returns a fresh TLS config, as rueidis may keep the one it was given.
func (r *Redis) Option() rueidis.ClientOption {
	opt := r.option
	opt.InitAddress = append([]string(nil), r.option.InitAddress...)
	if r.option.TLSConfig != nil {
		opt.TLSConfig = r.option.TLSConfig.Clone()
	}
	return opt
}

// Explain returns err with the likely cause in front, naming the settings to check, e.g.
// "redis: authentication failed for user "app" (check REDIS_USERNAME and REDIS_PASSWORD):
// WRONGPASS ...". It returns err unchanged when it is nil, a cancellation, or has no
// recognizable cause (masked if it quotes the password): the message never contains the password.
func (r *Redis) Explain(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || alreadyExplained(err) {
		return err
	}
	cause := r.cause(err)
	if cause == "" {
		return masked(err, r.password)
	}
	return &explained{msg: "redis: " + cause + ": " + redact(err.Error(), r.password), errs: []error{err}}
}

func (r *Redis) cause(err error) string {
	user := r.username
	if user == "" {
		user = "default"
	}
	// errors.As, not rueidis.IsRedisErr: that is a plain type assertion, blind to a wrapped reply.
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		switch code, _, _ := strings.Cut(re.Error(), " "); code {
		case "WRONGPASS":
			return fmt.Sprintf("authentication failed for user %q (check REDIS_USERNAME and REDIS_PASSWORD)", user)
		case "NOAUTH":
			return "the server requires authentication (set REDIS_PASSWORD, and REDIS_USERNAME for an ACL user)"
		case "NOPERM":
			return fmt.Sprintf("user %q lacks a permission searchflow needs (check the user's ACL rules)", user)
		}
		if strings.Contains(re.Error(), "SELECT is not allowed in cluster mode") {
			return "REDIS_DB must be 0: the server is a Redis Cluster, which has only database 0"
		}
		return ""
	}
	if c := tlsCause("REDIS_TLS", err); c != "" {
		return c
	}
	var netErr net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout()
	hungUp := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (check REDIS_ADDR and that the server is up)"
	// A hang-up or a timeout can also be a server restarting or overloaded; the messages say so.
	case !r.tls && hungUp:
		// A TLS-only port drops a plaintext client at its first command.
		return "the server closed the connection: it restarted, or it serves TLS only (then set REDIS_TLS=true)"
	case r.tls && hungUp:
		// Redis checks the client certificate after the handshake and then drops the connection.
		return "the server closed the TLS connection: it restarted, or it wants a client certificate signed by a CA it trusts (check REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)"
	case r.tls && timeout:
		// A plaintext port never answers a TLS ClientHello: the handshake waits for the dial timeout.
		return "no answer in time: the server is unreachable or overloaded, or it does not speak TLS on this port (check REDIS_ADDR and REDIS_TLS)"
	case timeout:
		return "no answer in time: the server is unreachable or overloaded (check REDIS_ADDR)"
	}
	return ""
}
