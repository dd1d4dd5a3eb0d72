package redistest

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/certtest"
)

func do(t *testing.T, c rueidis.Client, cmd rueidis.Completed) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, cmd).Error()
}

func TestPlaintextServerRestarts(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	if err := do(t, c, c.B().Set().Key("k").Value("v").Build()); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	// The restarted server is empty; a fresh client sees it.
	c = s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, c.B().Get().Key("k").Build()).Error(); !rueidis.IsRedisNil(err) {
		t.Errorf("GET after restart: %v, want nil reply", err)
	}
}

func TestTLSServerWithACLUser(t *testing.T) {
	p := certtest.New(t)
	s := Start(t, WithTLS(p, true), WithUser("searchflow", "pw-123456", "~{searchflow}:*", "+@all"), WithoutDefaultUser())
	c := s.Client(t)
	if err := do(t, c, c.B().Set().Key("{searchflow}:k").Value("v").Build()); err != nil {
		t.Fatalf("SET as searchflow over TLS: %v", err)
	}
	if err := do(t, c, c.B().Set().Key("other").Value("v").Build()); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("SET outside the user's keys: %v, want NOPERM", err)
	}

	// The plaintext port is closed, and the TLS port wants a client certificate.
	opt := s.ClientOption()
	opt.TLSConfig = nil
	if c, err := rueidis.NewClient(opt); err == nil {
		c.Close()
		t.Error("a plaintext client connected")
	}
	opt = s.ClientOption()
	opt.TLSConfig.Certificates = nil
	if c, err := rueidis.NewClient(opt); err == nil {
		c.Close()
		t.Error("a client without certificate connected")
	}

	// Restart keeps TLS and the user.
	s.Restart(t)
	c = s.Client(t)
	if err := do(t, c, c.B().Ping().Build()); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}

// TestBadSetupFailsFast checks that a server that cannot start is reported with redis-server's
// own words, at once rather than at the 10 s readiness deadline.
func TestBadSetupFailsFast(t *testing.T) {
	p := certtest.New(t)
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"bad ACL rule", []Option{WithUser("searchflow", "pw", "no-such-rule")}, "redis-server"},
		{"user name with a space", []Option{WithUser("search flow", "pw", "+@all")}, "Spaces not allowed"},
		{"no user left", []Option{WithoutDefaultUser()}, "WithoutDefaultUser needs a user"},
		{"probe cannot log in", []Option{WithUser("searchflow", "pw", "off")}, "AUTH as searchflow"},
		{"server certificate from another CA than the client trusts", []Option{WithTLS(&certtest.PKI{
			CAFile: p.CAFile, ServerCertFile: p.WrongClientCertFile, ServerKeyFile: p.WrongClientKeyFile,
			ClientCert: p.ClientCert, CAPool: p.CAPool,
		}, false)}, "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := Run(tc.opts...)
			if err == nil {
				s.Stop()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v to fail", took)
			}
		})
	}
}

// TestTakenPortIsNotTakenForReady: another process holds the port and answers like a Redis. The
// server that cannot bind must be reported as a taken port, for Run to try another, and the
// impostor must never be asked anything.
func TestTakenPortIsNotTakenForReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var asked atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			asked.Add(1)
			_, _ = conn.Write([]byte("+PONG\r\n"))
			_ = conn.Close()
		}
	}()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String()}
	err = s.start(bin, ln.Addr().(*net.TCPAddr).Port)
	if !errors.Is(err, errPortTaken) {
		s.Stop()
		t.Fatalf("start on a taken port: %v, want errPortTaken", err)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the process holding the port was asked %d times", n)
	}
}
