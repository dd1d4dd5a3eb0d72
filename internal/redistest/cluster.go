package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Cluster is a Redis Cluster of masters without replicas, one redis-server process per master on
// 127.0.0.1, made by `redis-cli --cluster create`. It is not safe for concurrent use.
//
// Every node of StartCluster appends each write to its AOF and fsyncs it before it replies (appendonly yes,
// appendfsync always), so a master killed with SIGKILL comes back from Restart with every write
// it acknowledged. Its nodes.conf (its node ID, its slots, the epochs) lives outside the data
// directory: RestartEmpty deletes the data and keeps nodes.conf, so the master comes back empty
// and still owning its slots, as a master without persistence comes back from a crash.
//
// cluster-node-timeout is 1000 ms, so the survivors mark a killed master failed within about
// two seconds; cluster-require-full-coverage stays yes, so from then on every node answers every
// keyed command with CLUSTERDOWN until the master is back. A restarted master itself reports
// cluster_state:fail for its first 2 s (redis-server's fixed writable delay), so Restart and
// RestartEmpty take about 2 s whether or not the others had noticed the death.
type Cluster struct {
	server  string // redis-server's path
	nodes   []*clusterNode
	durable bool // appendfsync always (StartCluster); RunCluster's nodes keep nothing
}

type clusterNode struct {
	port   int
	dir    string // the AOF directory; RestartEmpty removes it
	conf   string // nodes.conf, kept across every restart
	proc   *os.Process
	exited chan error // gets the process's exit
}

func (n *clusterNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// Cluster timings: the node timeout (milliseconds) that paces failure detection, and how long a
// node may take to start, redis-cli to create the cluster, and the cluster to settle into a
// state; each of those takes about 2 s.
const (
	clusterNodeTimeout   = "1000"
	nodeStartTimeout     = 10 * time.Second
	clusterCreateTimeout = 30 * time.Second
	clusterSettle        = 20 * time.Second
	pollInterval         = 20 * time.Millisecond
)

// StartCluster starts masters redis-server processes in cluster mode on free loopback ports,
// joins them into one cluster with every slot assigned, and waits until every node reports
// cluster_state:ok. The processes are killed and their files removed in t.Cleanup. masters must
// be at least 3, as redis-cli requires.
//
// Without redis-server or redis-cli on PATH the test is skipped, unless
// SEARCHFLOW_REQUIRE_REDIS_CLUSTER is set: then it fails, so CI cannot skip it silently.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	server, cli := clusterTools(t)
	c := &Cluster{server: server, durable: true}
	t.Cleanup(c.killAll) // runs before t.TempDir's own cleanup removes the files
	if err := c.create(cli, masters, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return c
}

// RunCluster is StartCluster outside a test (the benchmark): masters nodes under dir that keep
// nothing on disk (no AOF, no snapshots), so that they measure Redis, not the disk. Stop them
// with Stop.
func RunCluster(masters int, dir string) (*Cluster, error) {
	server, errServer := exec.LookPath("redis-server")
	cli, errCLI := exec.LookPath("redis-cli")
	if err := errors.Join(errServer, errCLI); err != nil {
		return nil, fmt.Errorf("redistest: %w (apt-get install redis-server redis-tools)", err)
	}
	c := &Cluster{server: server}
	if err := c.create(cli, masters, dir); err != nil {
		c.killAll()
		return nil, err
	}
	return c, nil
}

// Stop kills every master (RunCluster's; StartCluster's are killed at the test's end).
func (c *Cluster) Stop() { c.killAll() }

// create starts the masters under dir, joins them into one cluster and waits until it is ok.
func (c *Cluster) create(cli string, masters int, dir string) error {
	if masters < 3 {
		return fmt.Errorf("redistest: a cluster needs at least 3 masters, got %d", masters)
	}
	for i := range masters {
		n := &clusterNode{
			dir:  filepath.Join(dir, strconv.Itoa(i)),
			conf: filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
		}
		if err := os.Mkdir(n.dir, 0o755); err != nil {
			return fmt.Errorf("redistest: %w", err)
		}
		if err := c.startOnFreePort(n); err != nil {
			return fmt.Errorf("redistest: cluster node %d: %w", i, err)
		}
		c.nodes = append(c.nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCreateTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redistest: redis-cli %s: %v; it said: %s", strings.Join(args, " "), err, out)
	}
	return c.waitOK()
}

// clusterTools finds redis-server and redis-cli, or skips or fails the test as StartCluster says.
func clusterTools(t testing.TB) (server, cli string) {
	t.Helper()
	server, errServer := exec.LookPath("redis-server")
	cli, errCLI := exec.LookPath("redis-cli")
	if err := errors.Join(errServer, errCLI); err != nil {
		if os.Getenv("SEARCHFLOW_REQUIRE_REDIS_CLUSTER") != "" {
			t.Fatalf("redistest: %v, and SEARCHFLOW_REQUIRE_REDIS_CLUSTER is set", err)
		}
		t.Skipf("redistest: %v (apt-get install redis-server redis-tools); set SEARCHFLOW_REQUIRE_REDIS_CLUSTER to fail instead", err)
	}
	return server, cli
}

// startOnFreePort starts n on a port where it can bind both its client port and its cluster bus
// port (client port + 10000). pickPort's ports (below 20000) keep both below the ephemeral range.
func (c *Cluster) startOnFreePort(n *clusterNode) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = c.start(n, pickPort()); !errors.Is(err, errPortTaken) {
			return err
		}
	}
	return err
}

// start runs n's redis-server on port and waits until it answers PING. A server that could not
// bind its client or its bus port returns errPortTaken. On a first start it leaves no nodes.conf
// behind (the server writes one before it binds the bus port), so that the next port is tried
// by a fresh node.
func (c *Cluster) start(n *clusterNode, port int) error {
	persist := []string{"--appendonly", "no"}
	if c.durable {
		persist = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	cmd := exec.Command(c.server, append(append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--dir", n.dir}, persist...),
		"--cluster-enabled", "yes", "--cluster-config-file", n.conf,
		"--cluster-node-timeout", clusterNodeTimeout, "--loglevel", "notice")...)
	out := &headBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// As in Server.start: only once the server says it is ready has it bound its ports, and
	// before that another process holding the port could answer the PING.
	deadline := time.Now().Add(nodeStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			if said, taken := lineWith(out.String(), "Address already in use"); taken {
				if n.port == 0 { // a first start; a restart keeps the cluster's view of itself
					_ = os.Remove(n.conf)
				}
				return fmt.Errorf("redis-server on port %d: %w: %s", port, errPortTaken, said)
			}
			return fmt.Errorf("redis-server on port %d exited: %v; it said: %s", port, err, out.String())
		default:
		}
		if strings.Contains(out.String(), "Ready to accept connections") {
			if _, err := query(addr, "PING"); err == nil {
				n.port, n.proc, n.exited = port, cmd.Process, exited
				return nil
			}
		}
		time.Sleep(pollInterval)
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("redis-server on port %d was not ready within %v; it said: %s", port, nodeStartTimeout, out.String())
}

// lineWith returns the first line of text that contains substr.
func lineWith(text, substr string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			return strings.TrimSpace(line), true
		}
	}
	return "", false
}

// Addrs returns the masters' host:port, in index order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr()
	}
	return addrs
}

// ClientOption is how Client connects: every master as an initial address, which makes rueidis
// a cluster client.
func (c *Cluster) ClientOption() rueidis.ClientOption {
	return rueidis.ClientOption{InitAddress: c.Addrs(), DisableCache: true}
}

// Client returns a rueidis cluster client, closed in t.Cleanup.
func (c *Cluster) Client(t testing.TB) rueidis.Client {
	t.Helper()
	return connect(t, c.ClientOption())
}

// NodeClient returns a client of master i alone, closed in t.Cleanup: it neither follows MOVED
// nor retries CLUSTERDOWN, so a test sees what that node answers.
func (c *Cluster) NodeClient(t testing.TB, i int) rueidis.Client {
	t.Helper()
	return connect(t, rueidis.ClientOption{
		InitAddress: []string{c.nodes[i].addr()}, ForceSingleClient: true, DisableCache: true, DisableRetry: true,
	})
}

func connect(t testing.TB, opt rueidis.ClientOption) rueidis.Client {
	t.Helper()
	client, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("redistest: connect %v: %v", opt.InitAddress, err)
	}
	t.Cleanup(client.Close)
	return client
}

// SlotOwner returns the index of the master that serves hash slot slot, by CLUSTER SLOTS as
// the first master that answers sees it.
func (c *Cluster) SlotOwner(t testing.TB, slot int) int {
	t.Helper()
	var errs []error
	for _, n := range c.nodes {
		if n.proc == nil {
			continue
		}
		reply, err := query(n.addr(), "CLUSTER", "SLOTS")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		port, err := slotOwnerPort(reply, slot)
		if err != nil {
			t.Fatalf("redistest: CLUSTER SLOTS from %s: %v", n.addr(), err)
		}
		for i, m := range c.nodes {
			if m.port == port {
				return i
			}
		}
		t.Fatalf("redistest: slot %d is served on port %d, none of the cluster's %v", slot, port, c.Addrs())
	}
	t.Fatalf("redistest: no master answered CLUSTER SLOTS: %v", errors.Join(errs...))
	return -1
}

// slotOwnerPort finds slot in a CLUSTER SLOTS reply: ranges of [first, last, master, replicas...],
// each node as [ip, port, id, ...].
func slotOwnerPort(reply any, slot int) (int, error) {
	ranges, ok := reply.([]any)
	if !ok {
		return 0, fmt.Errorf("reply %v is not an array", reply)
	}
	for _, r := range ranges {
		rg, ok := r.([]any)
		if !ok || len(rg) < 3 {
			return 0, fmt.Errorf("slot range %v is not [first, last, master, ...]", r)
		}
		first, _ := rg[0].(int64)
		last, _ := rg[1].(int64)
		master, _ := rg[2].([]any)
		if int64(slot) < first || int64(slot) > last {
			continue
		}
		if len(master) < 2 {
			return 0, fmt.Errorf("master %v is not [ip, port, ...]", rg[2])
		}
		port, _ := master[1].(int64)
		return int(port), nil
	}
	return 0, fmt.Errorf("slot %d is in no range", slot)
}

// Kill kills master i with SIGKILL and waits for it to exit; it is safe to call twice. Writes
// it acknowledged are on disk (see Cluster); the survivors learn of its death only after the
// node timeout (WaitDown).
func (c *Cluster) Kill(i int) {
	n := c.nodes[i]
	if n.proc == nil {
		return
	}
	_ = n.proc.Kill()
	<-n.exited
	n.proc = nil
}

// Restart kills master i if it runs, starts it again on its port with its nodes.conf and its
// data, and waits until every node reports the cluster ok (WaitOK).
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Kill(i)
	c.restart(t, i)
}

// RestartEmpty kills master i if it runs, deletes its data and starts it again on its port with
// its nodes.conf: it comes back with no keys and still serving its slots (nodes.conf says they
// are its own, and no replica took them over), and RestartEmpty waits until every node reports
// the cluster ok (WaitOK).
func (c *Cluster) RestartEmpty(t testing.TB, i int) {
	t.Helper()
	c.Kill(i)
	n := c.nodes[i]
	if err := os.RemoveAll(n.dir); err != nil {
		t.Fatalf("redistest: delete master %d's data: %v", i, err)
	}
	if err := os.Mkdir(n.dir, 0o755); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	c.restart(t, i)
}

func (c *Cluster) restart(t testing.TB, i int) {
	t.Helper()
	n := c.nodes[i]
	// As in Server.Restart: another process may hold the port for a moment.
	deadline := time.Now().Add(nodeStartTimeout)
	for {
		err := c.start(n, n.port)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			t.Fatalf("redistest: restart master %d on %s: %v", i, n.addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.WaitOK(t)
}

// WaitOK waits until every master runs and reports cluster_state:ok with all 16384 slots
// assigned and none of them on a node it suspects or knows failed.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	if err := c.waitOK(); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) waitOK() error {
	return c.waitState("ok", func(info map[string]string) bool {
		return info["cluster_state"] == "ok" && info["cluster_slots_assigned"] == "16384" &&
			info["cluster_slots_ok"] == "16384"
	}, false)
}

// WaitDown waits until every running master reports cluster_state:fail, as it does once it
// knows that a master was lost (cluster-require-full-coverage is yes): from then on it answers
// keyed commands with "CLUSTERDOWN The cluster is down".
func (c *Cluster) WaitDown(t testing.TB) {
	t.Helper()
	err := c.waitState("fail", func(info map[string]string) bool {
		return info["cluster_state"] == "fail"
	}, true)
	if err != nil {
		t.Fatal(err)
	}
}

// waitState polls CLUSTER INFO on every master (on the running ones only if runningOnly) until
// each satisfies done, or returns after clusterSettle what each last said.
func (c *Cluster) waitState(want string, done func(map[string]string) bool, runningOnly bool) error {
	deadline := time.Now().Add(clusterSettle)
	for {
		var last []string
		for i, n := range c.nodes {
			if n.proc == nil && runningOnly {
				continue
			}
			if n.proc == nil {
				last = append(last, fmt.Sprintf("master %d is not running", i))
				continue
			}
			info, err := clusterInfo(n.addr())
			switch {
			case err != nil:
				last = append(last, fmt.Sprintf("master %d (%s): %v", i, n.addr(), err))
			case !done(info):
				last = append(last, fmt.Sprintf("master %d (%s): state %s, slots assigned %s, ok %s, pfail %s, fail %s",
					i, n.addr(), info["cluster_state"], info["cluster_slots_assigned"], info["cluster_slots_ok"],
					info["cluster_slots_pfail"], info["cluster_slots_fail"]))
			}
		}
		if len(last) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: cluster not %s within %v: %s", want, clusterSettle, strings.Join(last, "; "))
		}
		time.Sleep(pollInterval)
	}
}

// clusterInfo returns a node's CLUSTER INFO fields.
func clusterInfo(addr string) (map[string]string, error) {
	reply, err := query(addr, "CLUSTER", "INFO")
	if err != nil {
		return nil, err
	}
	text, ok := reply.(string)
	if !ok {
		return nil, fmt.Errorf("CLUSTER INFO replied %v", reply)
	}
	info := make(map[string]string)
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			info[k] = v
		}
	}
	return info, nil
}

// killAll kills every master.
func (c *Cluster) killAll() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// query sends one command on a connection of its own and returns the reply: a string, an int64,
// nil, or a []any of those. An error reply is returned as an error. The probes use it rather
// than a rueidis client, which would retry and redirect behind their back.
func query(addr string, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(conn))
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch kind, rest := line[0], line[1:]; kind {
	case '+':
		return rest, nil
	case '-':
		return nil, errors.New(rest)
	case ':':
		return strconv.ParseInt(rest, 10, 64)
	case '$':
		size, err := strconv.Atoi(rest)
		if err != nil || size < 0 {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:size]), nil
	case '*':
		size, err := strconv.Atoi(rest)
		if err != nil || size < 0 {
			return nil, err
		}
		items := make([]any, size)
		for i := range items {
			if items[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return items, nil
	}
	return nil, fmt.Errorf("unexpected reply line %q", line)
}
