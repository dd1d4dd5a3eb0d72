// Package redistest starts real redis-server processes for tests (and the benchmark), each on a
// port of its own with nothing persisted, plaintext and open by default, or with TLS and ACL
// users.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/certtest"
)

// Server is one redis-server process.
type Server struct {
	Addr   string
	set    settings
	proc   *os.Process
	exited chan error
}

// Option changes how the server is started.
type Option func(*settings)

type settings struct {
	pki               *certtest.PKI
	requireClientCert bool
	users             []user
	defaultUserOff    bool
}

type user struct {
	name, password string
	rules          []string
}

// WithTLS serves TLS only, with p's server certificate, on Addr; the plaintext port is closed.
// Clients must present a certificate signed by p's CA when requireClientCert, and may present
// one otherwise (a certificate from another CA is refused either way). Client and the readiness
// probe connect with p's CA and client certificate.
func WithTLS(p *certtest.PKI, requireClientCert bool) Option {
	return func(s *settings) { s.pki, s.requireClientCert = p, requireClientCert }
}

// WithUser adds an ACL user with one password and ACL rules, e.g. "~{searchflow}:*", "+@all".
// Client and the readiness probe authenticate as the first user added.
func WithUser(name, password string, rules ...string) Option {
	return func(s *settings) { s.users = append(s.users, user{name, password, rules}) }
}

// WithoutDefaultUser disables the default user, so that every client must authenticate as a user
// added with WithUser.
func WithoutDefaultUser() Option {
	return func(s *settings) { s.defaultUserOff = true }
}

// Start runs redis-server on a free loopback port and stops it in t.Cleanup. redis-server must be
// on PATH (.ci/run installs it); a missing server fails the test rather than skipping it.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := Run(opts...)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Run starts redis-server on a free loopback port; the caller stops it. For tools that are not
// tests (the benchmark).
func Run(opts ...Option) (*Server, error) {
	var set settings
	for _, o := range opts {
		o(&set)
	}
	if set.defaultUserOff && len(set.users) == 0 {
		return nil, errors.New("WithoutDefaultUser needs a user added with WithUser: no client could connect")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH (apt-get install redis-server): %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		port := pickPort()
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), set: set}
		lastErr = s.start(bin, port)
		if lastErr == nil {
			return s, nil
		}
		if !errors.Is(lastErr, errPortTaken) {
			break // another port would fail the same way
		}
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// pickPort picks a port for a redis-server, which cannot be handed a listener and has no port-0
// mode. It lies below Linux's ephemeral range (32768 and up), where the kernel picks ports for
// port-0 listeners and outgoing connections; another process may hold it all the same, and then
// the server exits saying so and Run tries another.
func pickPort() int { return 10000 + rand.IntN(10000) }

// errPortTaken is a server's exit because another process held its port.
var errPortTaken = errors.New("the port is taken")

// Restart stops the server and starts an empty one on the same port with the same options, as a
// Redis without persistence comes back from a crash.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(port)
	bin, _ := exec.LookPath("redis-server")
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.start(bin, n)
		if err == nil {
			return
		}
		var bad *badSetup
		if errors.As(err, &bad) || time.Now().After(deadline) {
			t.Fatalf("redistest: restart on %s: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server; it is safe to call twice.
func (s *Server) Stop() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.exited
	s.proc = nil
}

// ClientOption is how Client connects: the address, with TLS the CA and client certificate, and
// with users the first user's name and password. Tests start from it to try wrong settings.
func (s *Server) ClientOption() rueidis.ClientOption {
	opt := rueidis.ClientOption{InitAddress: []string{s.Addr}, DisableCache: true}
	if s.set.pki != nil {
		opt.TLSConfig = s.set.pki.ClientConfig()
	}
	if len(s.set.users) > 0 {
		opt.Username, opt.Password = s.set.users[0].name, s.set.users[0].password
	}
	return opt
}

// Client returns a rueidis client for the server, closed in t.Cleanup.
func (s *Server) Client(t testing.TB) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(s.ClientOption())
	if err != nil {
		t.Fatalf("redistest: connect %s: %v", s.Addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// args are the redis-server flags for port. Each ACL rule is its own argument: redis-server reads
// `--user "name on >pw ..."` as one user name with spaces in it and exits.
func (s *Server) args(port int) []string {
	// At notice level the server says "Ready to accept connections", which start waits for.
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--loglevel", "notice"}
	if p := s.set.pki; p != nil {
		auth := "optional"
		if s.set.requireClientCert {
			auth = "yes"
		}
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", p.ServerCertFile, "--tls-key-file", p.ServerKeyFile,
			"--tls-ca-cert-file", p.CAFile, "--tls-auth-clients", auth)
	} else {
		args = append(args, "--port", strconv.Itoa(port))
	}
	for _, u := range s.set.users {
		args = append(append(args, "--user", u.name, "on", ">"+u.password), u.rules...)
	}
	if s.set.defaultUserOff {
		args = append(args, "--user", "default", "off")
	}
	return args
}

func (s *Server) start(bin string, port int) error {
	cmd := exec.Command(bin, s.args(port)...)
	// redis-server reports a bad flag or certificate on stdout, then exits: keep the start of it
	// for the error, and to see it say that it is ready.
	out := &headBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error) error {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; redis-server said: %s", err, out.String())
	}
	// Only once the server says it is ready has it bound the port: before that, another process
	// holding the port could answer the PING.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			if strings.Contains(out.String(), "Address already in use") {
				return fmt.Errorf("redis-server on port %d: %w", port, errPortTaken)
			}
			return fmt.Errorf("redis-server on port %d exited: %v; it said: %s", port, err, out.String())
		default:
		}
		if !strings.Contains(out.String(), "Ready to accept connections") {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		err := s.ping()
		if err == nil {
			s.proc, s.exited = cmd.Process, exited
			return nil
		}
		var bad *badSetup
		if errors.As(err, &bad) {
			return &badSetup{fail(err)}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fail(fmt.Errorf("redis-server on port %d was not ready within 10s", port))
}

// ping checks that the server answers: it connects as a client does (TLS, AUTH) and sends PING.
// A refused connection means "not yet"; a failed handshake or a refused AUTH will not get better
// and is returned as *badSetup, so a broken setup fails at once instead of at the deadline.
func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if p := s.set.pki; p != nil {
		c := p.ClientConfig()
		c.ServerName = "127.0.0.1"
		tc := tls.Client(conn, c)
		if err := tc.HandshakeContext(ctx); err != nil {
			return &badSetup{fmt.Errorf("TLS handshake with %s: %w", s.Addr, err)}
		}
		// In TLS 1.3 the server's verdict on the client certificate arrives after the handshake,
		// with the first reply; the PING below reads it.
		conn = tc
	}
	r := bufio.NewReader(conn)
	if len(s.set.users) > 0 {
		u := s.set.users[0]
		if err := command(conn, r, "+OK", "AUTH", u.name, u.password); err != nil {
			return &badSetup{fmt.Errorf("AUTH as %s: %w", u.name, err)}
		}
	}
	return command(conn, r, "+PONG", "PING")
}

// command sends args as a RESP array and checks that the reply line is want.
func command(conn net.Conn, r *bufio.Reader, want string, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimRight(line, "\r\n"); line != want {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// badSetup is a start failure that waiting or another port will not cure.
type badSetup struct{ err error }

func (e *badSetup) Error() string { return e.err.Error() }
func (e *badSetup) Unwrap() error { return e.err }

// headBuffer keeps the first max bytes written to it; the process writes, the caller reads.
type headBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.TrimSpace(h.buf.String())
}
