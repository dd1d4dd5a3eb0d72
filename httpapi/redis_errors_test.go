package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/searchflow/searchflow/internal/porttest"
	"github.com/searchflow/searchflow/internal/redistest"
)

// redisDo runs one command on c and returns its error, reply or not.
func redisDo(c rueidis.Client, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Arbitrary(args...).Build()).Error()
}

func mustRedis(t *testing.T, c rueidis.Client, args ...string) {
	t.Helper()
	if err := redisDo(c, args...); err != nil {
		t.Fatalf("redis %q: %v", args, err)
	}
}

// waitForReply polls rs with a read until Redis answers it with the error reply code.
func waitForReply(t *testing.T, c rueidis.Client, code string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := redisDo(c, "ZCARD", "any")
		if reply, ok := rueidis.IsRedisErr(err); ok && strings.HasPrefix(reply.Error(), code+" ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis never answered %s; last answer %v", code, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) (host, port string) {
	t.Helper()
	host, port, _ = net.SplitHostPort(porttest.Refusing(t))
	return host, port
}

// makeBusy runs a script that never ends on rs, from a connection of its own, with the
// threshold past which Redis answers BUSY lowered; the script is killed when the test ends.
func makeBusy(t *testing.T, rs *redistest.Server) {
	t.Helper()
	admin := rs.Client(t)
	// lua-time-limit is busy-reply-threshold under its older name, known to every Redis version.
	mustRedis(t, admin, "CONFIG", "SET", "lua-time-limit", "10")
	conn, err := net.Dial("tcp", rs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	script := "while true do end"
	if _, err := fmt.Fprintf(conn, "*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n", len(script), script); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := redisDo(admin, "SCRIPT", "KILL")
			if err == nil || strings.HasPrefix(err.Error(), "NOTBUSY") {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("SCRIPT KILL: %v", err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The EVAL's answer is the error of the killed script.
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = conn.Read(make([]byte, 512))
		conn.Close()
	})
	waitForReply(t, admin, "BUSY")
}

// makeMasterDown makes rs a replica of a master that is not there, with stale reads refused:
// every read answers MASTERDOWN until the test ends.
func makeMasterDown(t *testing.T, rs *redistest.Server) {
	t.Helper()
	admin := rs.Client(t)
	host, port := closedPort(t)
	mustRedis(t, admin, "CONFIG", "SET", "replica-serve-stale-data", "no")
	mustRedis(t, admin, "REPLICAOF", host, port)
	t.Cleanup(func() { _ = redisDo(admin, "REPLICAOF", "NO", "ONE") })
	waitForReply(t, admin, "MASTERDOWN")
}

// TestRedisTemporarilyUnableAnswers503 checks that the reads of every metrics endpoint answer
// 503 at once, with the cause logged, while Redis says it cannot serve for now: BUSY while a long
// script runs, MASTERDOWN on a replica cut off from its master.
func TestRedisTemporarilyUnableAnswers503(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		code  string
		cause func(*testing.T, *redistest.Server)
	}{
		{"BUSY", makeBusy},
		{"MASTERDOWN", makeMasterDown},
	} {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.DebugLevel)
			f := newFixture(t, nil, zap.New(core))
			load(t, f, fixedBatches)
			tt.cause(t, f.redis)
			paths := []string{"/users", "/hotels", "/advertisers", "/hotel_min_offer_per_advertiser"}
			for _, path := range paths {
				start := time.Now()
				r := get(t, f, path)
				if r.code != http.StatusServiceUnavailable {
					t.Fatalf("GET %s while Redis answers %s: status %d, want 503 (body %s)", path, tt.code, r.code, r.body)
				}
				// Not the read timeout running out: the reply itself turns into the 503.
				if took := time.Since(start); took >= readTimeout {
					t.Errorf("GET %s took %v, as long as the read timeout", path, took)
				}
				if msg, status := errorBody(t, r); msg != storeUnavailable || status != http.StatusServiceUnavailable {
					t.Errorf("GET %s: body %s, want the 503 JSON error", path, r.body)
				}
				if strings.Contains(string(r.body), tt.code) {
					t.Errorf("GET %s: the body %s shows the Redis reply", path, r.body)
				}
			}
			failures := logs.FilterMessage("request failed").FilterLevelExact(zapcore.WarnLevel).All()
			if len(failures) != len(paths) {
				t.Fatalf("%d failures logged, want %d: %v", len(failures), len(paths), logs.All())
			}
			for _, e := range failures {
				if cause, _ := e.ContextMap()["error"].(string); !strings.Contains(cause, tt.code) {
					t.Errorf("logged cause %q does not name the reply %s", cause, tt.code)
				}
			}
		})
	}
}

// TestRedisOtherReplyAnswers500 turns every key of the view into a string: reads then get
// WRONGTYPE, which no wait cures, and must answer 500 with the cause logged as an error.
func TestRedisOtherReplyAnswers500(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFixture(t, nil, zap.New(core))
	load(t, f, fixedBatches)
	admin := f.redis.Client(t)
	ctx := context.Background()
	keys, err := admin.Do(ctx, admin.B().Keys().Pattern("*").Build()).AsStrSlice()
	if err != nil || len(keys) == 0 {
		t.Fatalf("KEYS *: %v %v", keys, err)
	}
	for _, k := range keys {
		mustRedis(t, admin, "DEL", k)
		mustRedis(t, admin, "SET", k, "not what the view wrote")
	}
	paths := []string{"/users", "/hotels", "/advertisers", "/hotel_min_offer_per_advertiser"}
	for _, path := range paths {
		r := get(t, f, path)
		if r.code != http.StatusInternalServerError {
			t.Fatalf("GET %s on a damaged view: status %d, want 500 (body %s)", path, r.code, r.body)
		}
		if msg, status := errorBody(t, r); msg != "internal error" || status != http.StatusInternalServerError {
			t.Errorf("GET %s: body %s, want the 500 JSON error", path, r.body)
		}
	}
	failures := logs.FilterMessage("request failed").FilterLevelExact(zapcore.ErrorLevel).All()
	if len(failures) != len(paths) {
		t.Fatalf("%d failures logged as errors, want %d: %v", len(failures), len(paths), logs.All())
	}
	for _, e := range failures {
		if cause, _ := e.ContextMap()["error"].(string); !strings.Contains(cause, "WRONGTYPE") {
			t.Errorf("logged cause %q does not name WRONGTYPE", cause)
		}
	}
}

// TestTemporarilyUnable sorts real error replies of redis-server. LOADING, TRYAGAIN and
// CLUSTERDOWN cannot be provoked on a lone server and are left to the code's list.
func TestTemporarilyUnable(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	c := rs.Client(t)
	host, port := closedPort(t)
	// Each provokes the reply with the last command and undoes what it changed.
	tests := []struct {
		code    string
		provoke func(t *testing.T) error
		want    bool
	}{
		{"WRONGTYPE", func(t *testing.T) error {
			mustRedis(t, c, "SET", "s", "x")
			return redisDo(c, "ZCARD", "s")
		}, false},
		{"BUSYKEY", func(t *testing.T) error {
			mustRedis(t, c, "SET", "k", "x")
			dump, err := c.Do(context.Background(), c.B().Dump().Key("k").Build()).ToString()
			if err != nil {
				t.Fatal(err)
			}
			return redisDo(c, "RESTORE", "k", "0", dump)
		}, false},
		{"BUSYGROUP", func(t *testing.T) error {
			mustRedis(t, c, "XGROUP", "CREATE", "st", "g", "$", "MKSTREAM")
			return redisDo(c, "XGROUP", "CREATE", "st", "g", "$")
		}, false},
		{"NOREPLICAS", func(t *testing.T) error {
			mustRedis(t, c, "CONFIG", "SET", "min-replicas-to-write", "1")
			defer mustRedis(t, c, "CONFIG", "SET", "min-replicas-to-write", "0")
			return redisDo(c, "SET", "a", "b")
		}, true},
		{"OOM", func(t *testing.T) error {
			mustRedis(t, c, "CONFIG", "SET", "maxmemory", "1")
			defer mustRedis(t, c, "CONFIG", "SET", "maxmemory", "0")
			return redisDo(c, "SET", "a", "b")
		}, true},
		{"READONLY", func(t *testing.T) error {
			mustRedis(t, c, "REPLICAOF", host, port)
			defer mustRedis(t, c, "REPLICAOF", "NO", "ONE")
			return redisDo(c, "SET", "a", "b")
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			err := tt.provoke(t)
			var reply *rueidis.RedisError
			if !errors.As(err, &reply) || !strings.HasPrefix(reply.Error(), tt.code+" ") {
				t.Fatalf("the command answered %v, want a %s reply", err, tt.code)
			}
			if got := temporarilyUnable(reply); got != tt.want {
				t.Errorf("temporarilyUnable(%q) = %v, want %v", reply.Error(), got, tt.want)
			}
			// As the handlers see it: wrapped by the view and by the handler.
			wrapped := fmt.Errorf("read users: %w", fmt.Errorf("view: count users: %w", err))
			want, got := http.StatusInternalServerError, http.StatusInternalServerError
			if tt.want {
				want = http.StatusServiceUnavailable
			}
			var he *echo.HTTPError
			if errors.As(readError(context.Background(), wrapped), &he) {
				got = he.Code
			}
			if got != want {
				t.Errorf("readError(%q) answers %d, want %d", wrapped, got, want)
			}
		})
	}
}
