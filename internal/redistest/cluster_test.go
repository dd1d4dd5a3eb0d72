package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/porttest"
)

// slotOf asks the cluster for key's hash slot.
func slotOf(t *testing.T, c rueidis.Client, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slot, err := c.Do(ctx, c.B().ClusterKeyslot().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	return int(slot)
}

// keyOn returns a key, with a hash tag of its own, that master i serves.
func keyOn(t *testing.T, cl *Cluster, c rueidis.Client, i int) string {
	t.Helper()
	for n := range 1000 {
		key := fmt.Sprintf("{tag%d}:k", n)
		if cl.SlotOwner(t, slotOf(t, c, key)) == i {
			return key
		}
	}
	t.Fatalf("no key of 1000 is on master %d", i)
	return ""
}

func get(t *testing.T, c rueidis.Client, key string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
}

func set(t *testing.T, c rueidis.Client, key, value string) error {
	t.Helper()
	return do(t, c, c.B().Set().Key(key).Value(value).Build())
}

// TestClusterServesKeysWhereSlotOwnerSays writes keys with different hash tags through the
// cluster client, reads them back, and checks each on the master SlotOwner names: that master
// has it, another one redirects there.
func TestClusterServesKeysWhereSlotOwnerSays(t *testing.T) {
	t.Parallel()
	cl := StartCluster(t, 3)
	c := cl.Client(t)
	nodes := []rueidis.Client{cl.NodeClient(t, 0), cl.NodeClient(t, 1), cl.NodeClient(t, 2)}
	keysOn := make([]int, 3)
	for n := range 30 {
		key, value := fmt.Sprintf("{user%d}:hotels", n), strconv.Itoa(n)
		if err := set(t, c, key, value); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if got, err := get(t, c, key); err != nil || got != value {
			t.Fatalf("GET %s through the cluster client: %q, %v; want %q", key, got, err, value)
		}
		owner := cl.SlotOwner(t, slotOf(t, c, key))
		keysOn[owner]++
		if got, err := get(t, nodes[owner], key); err != nil || got != value {
			t.Errorf("GET %s on master %d, its slot owner: %q, %v; want %q", key, owner, got, err, value)
		}
		other := (owner + 1) % 3
		_, err := get(t, nodes[other], key)
		var redisErr *rueidis.RedisError
		if !errors.As(err, &redisErr) {
			t.Fatalf("GET %s on master %d: %v, want MOVED", key, other, err)
		}
		if addr, moved := redisErr.IsMoved(); !moved || addr != cl.Addrs()[owner] {
			t.Errorf("GET %s on master %d: %v, want MOVED to %s", key, other, err, cl.Addrs()[owner])
		}
	}
	for i, n := range keysOn {
		if n == 0 {
			t.Errorf("master %d got none of the 30 keys: %v", i, keysOn)
		}
	}
}

// TestClusterKilledMasterIsDownThenRestartsWithItsData kills a master with SIGKILL: the cluster
// goes down and says so, and Restart brings the master back with the key it acknowledged.
func TestClusterKilledMasterIsDownThenRestartsWithItsData(t *testing.T) {
	t.Parallel()
	cl := StartCluster(t, 3)
	c := cl.Client(t)
	lost, kept := keyOn(t, cl, c, 1), keyOn(t, cl, c, 0)
	for _, k := range []string{lost, kept} {
		if err := set(t, c, k, "before"); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}

	cl.Kill(1)
	cl.WaitDown(t)
	// A survivor answers for the dead master's slots, and for its own, that the cluster is down.
	survivor := cl.NodeClient(t, 0)
	for _, k := range []string{lost, kept} {
		_, err := get(t, survivor, k)
		if err == nil || !strings.HasPrefix(err.Error(), "CLUSTERDOWN") {
			t.Errorf("GET %s on a surviving master: %v, want CLUSTERDOWN", k, err)
		}
	}
	// The cluster client sends a key of a surviving master there and gets CLUSTERDOWN; it sends
	// a key of the dead master to the dead master's address, and gets no reply at all: EOF on
	// the connection it had, then connection refused. (SET, not GET: rueidis retries a
	// read-only command on either error until its context ends.)
	if err := set(t, c, kept, "during"); err == nil || !strings.HasPrefix(err.Error(), "CLUSTERDOWN The cluster is down") {
		t.Errorf("SET %s through the cluster client: %v, want CLUSTERDOWN The cluster is down", kept, err)
	}
	for range 2 {
		var redisErr *rueidis.RedisError
		if err := set(t, c, lost, "during"); err == nil || errors.As(err, &redisErr) {
			t.Errorf("SET %s through the cluster client: %v, want a connection error", lost, err)
		}
	}
	if err := set(t, c, lost, "during"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("SET %s through the cluster client, again: %v, want connection refused", lost, err)
	}

	cl.Restart(t, 1)
	for _, k := range []string{lost, kept} {
		if got, err := get(t, c, k); err != nil || got != "before" {
			t.Errorf("GET %s after the restart, through the client from before: %q, %v; want \"before\"", k, got, err)
		}
	}
	if err := set(t, c, lost, "after"); err != nil {
		t.Errorf("SET %s after the restart: %v", lost, err)
	}
}

// TestClusterRestartEmptyKeepsSlotsLosesData: a master restarted without its data serves its
// slots again, with none of its keys, and the other masters keep theirs.
func TestClusterRestartEmptyKeepsSlotsLosesData(t *testing.T) {
	t.Parallel()
	cl := StartCluster(t, 3)
	c := cl.Client(t)
	lost, kept := keyOn(t, cl, c, 2), keyOn(t, cl, c, 0)
	for _, k := range []string{lost, kept} {
		if err := set(t, c, k, "before"); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	slot := slotOf(t, c, lost)

	cl.RestartEmpty(t, 2)
	if owner := cl.SlotOwner(t, slot); owner != 2 {
		t.Errorf("slot %d is served by master %d after RestartEmpty(2), want 2", slot, owner)
	}
	for i, addr := range cl.Addrs() {
		if info, err := clusterInfo(addr); err != nil || info["cluster_state"] != "ok" {
			t.Errorf("master %d after RestartEmpty: cluster_state %q, %v; want ok", i, info["cluster_state"], err)
		}
	}
	emptied := cl.NodeClient(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := emptied.Do(ctx, emptied.B().Dbsize().Build()).AsInt64(); err != nil || n != 0 {
		t.Errorf("DBSIZE of the emptied master: %d, %v; want 0", n, err)
	}
	if _, err := get(t, c, lost); !rueidis.IsRedisNil(err) {
		t.Errorf("GET %s after RestartEmpty: %v, want nil reply", lost, err)
	}
	if got, err := get(t, c, kept); err != nil || got != "before" {
		t.Errorf("GET %s on a master left alone: %q, %v; want \"before\"", kept, got, err)
	}
	if err := set(t, c, lost, "after"); err != nil {
		t.Errorf("SET %s after RestartEmpty: %v", lost, err)
	}
}

// TestClusterNodeBusPortTaken: a node whose cluster bus port (client port + 10000) is held
// reports a taken port, for StartCluster to try another, and leaves no nodes.conf behind that
// would pin the next try to this port.
func TestClusterNodeBusPortTaken(t *testing.T) {
	server, _ := clusterTools(t)
	_, busPort, _ := net.SplitHostPort(porttest.Refusing(t))
	bus, _ := strconv.Atoi(busPort)
	dir := t.TempDir()
	n := &clusterNode{dir: dir, conf: filepath.Join(dir, "nodes-0.conf")}
	cl := &Cluster{server: server}
	err := cl.start(n, bus-10000)
	if err == nil {
		cl.nodes = []*clusterNode{n}
		cl.killAll()
		t.Fatal("started with its bus port held")
	}
	if !errors.Is(err, errPortTaken) || !strings.Contains(err.Error(), busPort) {
		t.Errorf("start with bus port %s held: %v, want errPortTaken naming it", busPort, err)
	}
	if _, statErr := os.Stat(n.conf); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("nodes.conf after the failed start: %v, want it removed", statErr)
	}
}
