package pipeline

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/rueidis"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/internal/redistest"
)

// TestRedisClusterMode: REDIS_CLUSTER decides how the daemon talks to Redis. The embedded store
// (miniredis, which answers CLUSTER SLOTS) is always one server; auto finds a real cluster; off
// talks to one node of it as one server; on refuses a server that is not a cluster; and REDIS_DB
// other than 0 is refused on a cluster, by config validation with REDIS_CLUSTER=on and at start
// when auto found one.
func TestRedisClusterMode(t *testing.T) {
	t.Parallel()
	cluster := redistest.StartCluster(t, 3)
	single := redistest.Start(t)
	for _, tt := range []struct {
		name     string
		env      map[string]string
		wantMode rueidis.ClientMode
		wantErr  string // at start; "" for none
	}{
		{"embedded", map[string]string{}, rueidis.ClientModeStandalone, ""},
		{"auto on a cluster", map[string]string{"REDIS_ADDR": strings.Join(cluster.Addrs(), ",")}, rueidis.ClientModeCluster, ""},
		{"auto on one server", map[string]string{"REDIS_ADDR": single.Addr}, rueidis.ClientModeStandalone, ""},
		{"off on a cluster node", map[string]string{"REDIS_ADDR": cluster.Addrs()[0], "REDIS_CLUSTER": "off"}, rueidis.ClientModeStandalone, ""},
		{"on, one server", map[string]string{"REDIS_ADDR": single.Addr, "REDIS_CLUSTER": "on"}, "", "REDIS_CLUSTER is on but"},
		{"auto found a cluster, REDIS_DB 2", map[string]string{"REDIS_ADDR": cluster.Addrs()[1], "REDIS_DB": "2"}, "", "REDIS_DB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Load(func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			p := &pipeline{cfg: cfg, log: zaptest.NewLogger(t), connecting: map[string]string{}}
			defer p.closeAll()
			err = p.connectRedis(context.Background())
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("start: %v, want an error naming %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case p.redis.Mode() != tt.wantMode:
				t.Errorf("client mode %s, want %s", p.redis.Mode(), tt.wantMode)
			}
		})
	}
	_, err := config.Load(func(k string) string {
		return map[string]string{"REDIS_ADDR": "r:6379", "REDIS_CLUSTER": "on", "REDIS_DB": "3"}[k]
	})
	if err == nil || !strings.Contains(err.Error(), "REDIS_DB") {
		t.Errorf("config with REDIS_CLUSTER=on and REDIS_DB=3: %v, want an error naming REDIS_DB", err)
	}
}
