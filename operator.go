package main

// `searchflow verify` and `searchflow rebuild` work on a pipeline's view from outside (ops).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/ops"
)

// verifyCommand runs `searchflow verify` (ops.Verify): exitOK when the view equals its topics
// folded again, exitFailed when it differs, exitConfig when it cannot tell.
func verifyCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("searchflow verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	maxDiffs := fs.Int("max-diffs", 20, "print at most this many differences (all are counted)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if code, ok := commandFlags(fs, args, stderr); !ok {
		return code
	}
	if *maxDiffs < 0 || *timeout <= 0 {
		fmt.Fprintf(stderr, "searchflow verify: -max-diffs must be 0 or more and -timeout positive\n%s", usage)
		return exitConfig
	}
	cfg, ok := commandConfig("verify", getenv, stderr)
	if !ok {
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	equal, err := ops.Verify(ctx, cfg, stdout, *maxDiffs)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "searchflow verify: %v\n", err)
		return exitConfig
	case !equal:
		return exitFailed
	}
	return exitOK
}

// rebuildCommand runs `searchflow rebuild` (ops.Rebuild): exitOK when the shards are reset,
// exitConfig when the request or the settings are wrong (nothing was done), exitFailed otherwise.
func rebuildCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("searchflow rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("all", false, "reset every shard, then delete the layout (and any layout-1 keys)")
	slot := fs.Int("slot", -1, "reset only the shard in this Redis Cluster hash slot")
	if code, ok := commandFlags(fs, args, stderr); !ok {
		return code
	}
	cfg, ok := commandConfig("rebuild", getenv, stderr)
	if !ok {
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch err := ops.Rebuild(ctx, cfg, stdout, *all, *slot); {
	case ops.IsUsage(err):
		fmt.Fprintf(stderr, "searchflow rebuild: %v\n%s", err, usage)
		return exitConfig
	case err != nil:
		fmt.Fprintf(stderr, "searchflow rebuild: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// commandFlags parses an operator command's flags; ok is false when the command must exit with
// code (exitOK after -h, exitConfig after a bad flag or an extra argument).
func commandFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	case err != nil:
		return exitConfig, false // the flag package printed the error and the flags
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n%s", fs.Name(), fs.Arg(0), usage)
		return exitConfig, false
	}
	return exitOK, true
}

// commandConfig loads the configuration for an operator command, saying on stderr what is wrong.
func commandConfig(command string, getenv func(string) string, stderr io.Writer) (config.Config, bool) {
	getenv, legacy := config.WithLegacyNames(getenv)
	for _, w := range legacy {
		fmt.Fprintf(stderr, "searchflow %s: warning: %s\n", command, w)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "searchflow %s: invalid configuration:\n%v\n", command, err)
		return cfg, false
	}
	return cfg, true
}
