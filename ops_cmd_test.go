package main

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/porttest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/view"
)

// command runs an operator command's function with env and returns its exit code and output.
func command(fn func([]string, func(string) string, io.Writer, io.Writer) int, env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := fn(args, func(k string) string { return env[k] }, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestOperatorCommandsExitCodes: verify exits 0 on an equal view, 1 on a difference, 2 when it
// cannot run; rebuild exits 0 when done, 2 for a request it cannot carry out, 1 when Redis
// fails it.
func TestOperatorCommandsExitCodes(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "p", "p-hotels", "dead")
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	v := view.New(c)
	if err := v.Claim(ctx, view.Layout{UsersTopic: "p", Users: 2, HotelsTopic: "p-hotels", Hotels: 2}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KAFKA_BROKERS": addr, "REDIS_ADDR": srv.Addr, "PROCESSED_TOPIC": "p", "HOTEL_TOPIC": "p-hotels", "DEAD_LETTER_TOPIC": "dead"}
	if code, out, errs := command(verifyCommand, env); code != exitOK || !strings.Contains(out, "0 differences") {
		t.Errorf("verify of an empty view: exit %d\n%s%s", code, out, errs)
	}
	shards, _, err := v.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, c.B().Zincrby().Key(shards[0].Key("users")).Increment(-1).Member("u").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := command(verifyCommand, env, "-max-diffs", "5"); code != exitFailed || !strings.Contains(out, `user "u": view 1, kafka absent`) {
		t.Errorf("verify of a changed view: exit %d\n%s%s", code, out, errs)
	}
	slot := strconv.Itoa(int(shards[0].Slot))
	if code, out, errs := command(rebuildCommand, env, "--slot", slot); code != exitOK || !strings.Contains(out, "reset shard users/0") {
		t.Errorf("rebuild --slot %s: exit %d\n%s%s", slot, code, out, errs)
	}
	if code, out, errs := command(verifyCommand, env); code != exitOK {
		t.Errorf("verify after the rebuild: exit %d\n%s%s", code, out, errs)
	}

	noRedis := map[string]string{"KAFKA_BROKERS": addr}
	refused := map[string]string{"REDIS_ADDR": porttest.Refusing(t)}
	for _, tt := range []struct {
		name string
		fn   func([]string, func(string) string, io.Writer, io.Writer) int
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"verify bad flag", verifyCommand, env, []string{"-max-diffs", "many"}, exitConfig, "invalid value"},
		{"verify extra argument", verifyCommand, env, []string{"now"}, exitConfig, `unexpected argument "now"`},
		{"verify embedded store", verifyCommand, noRedis, nil, exitConfig, "REDIS_ADDR is empty"},
		{"verify bad config", verifyCommand, map[string]string{"TOPIC_PARTITIONS": "zero"}, nil, exitConfig, "TOPIC_PARTITIONS"},
		{"rebuild no mode", rebuildCommand, env, nil, exitConfig, "give --all"},
		{"rebuild no such shard", rebuildCommand, env, []string{"--slot", "5"}, exitConfig, "no shard of the view is in slot 5"},
		{"rebuild redis away", rebuildCommand, refused, []string{"--all"}, exitFailed, "connection refused"},
		{"rebuild all", rebuildCommand, env, []string{"--all"}, exitOK, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := command(tt.fn, tt.env, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, want %d; stderr lacks %q:\n%s%s", code, tt.code, tt.want, out, errs)
			}
		})
	}
	if n, err := c.Do(ctx, c.B().Exists().Key("searchflow:layout").Build()).AsInt64(); err != nil || n != 0 {
		t.Errorf("the layout is still there after rebuild --all (%v)", err)
	}
}
