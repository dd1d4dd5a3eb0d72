package main

// `searchflow healthcheck` lets the image probe itself: distroless has no shell, curl or wget, so
// Docker's HEALTHCHECK runs the binary that is already there.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/searchflow/searchflow/config"
)

// healthcheckTimeout bounds one probe. It is shorter than the HEALTHCHECK --timeout in the
// Dockerfile and docker-compose.yml, so a hung API is reported by this command, with a reason,
// rather than killed by Docker without one.
const healthcheckTimeout = 3 * time.Second

// healthcheck GETs /healthz (with -ready, /readyz) on the address HTTP_ADDR listens on (ADMIN_ADDR
// for a process without the api stage). It
// returns exitOK on 200 and exitFailed otherwise, with one line on stderr saying why. Docker
// reserves exit status 2, so a bad flag or an invalid configuration is exitFailed too.
func healthcheck(args []string, getenv func(string) string, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintln(stderr, "searchflow healthcheck: "+strings.Join(strings.Fields(msg), " "))
		return exitFailed
	}
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error comes back from Parse and is printed on one line below
	ready := fs.Bool("ready", false, "check /readyz (stages running, Kafka and Redis answering) instead of /healthz")
	if err := fs.Parse(args); err != nil {
		return fail("%v (usage: searchflow healthcheck [-ready])", err)
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q (usage: searchflow healthcheck [-ready])", fs.Arg(0))
	}

	getenv, _ = config.WithLegacyNames(getenv) // the daemon warns about them
	cfg, err := config.Load(getenv)
	if err != nil {
		return fail("invalid configuration: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	// The api stage serves the probes on HTTP_ADDR; a process without it, on ADMIN_ADDR.
	listen, name := cfg.HTTPAddr, "HTTP_ADDR"
	if !cfg.Enabled(config.StageAPI) {
		if cfg.AdminAddr == "" {
			return fail("STAGES=%s has no %s stage and ADMIN_ADDR is empty, so nothing serves /healthz: set ADMIN_ADDR",
				strings.Join(cfg.Stages, ","), config.StageAPI)
		}
		listen, name = cfg.AdminAddr, "ADMIN_ADDR"
	}
	addr, err := probeAddr(name, listen)
	if err != nil {
		return fail("%v", err)
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	if err := probe("http://"+addr+path, healthcheckTimeout); err != nil {
		return fail("%v", err)
	}
	return exitOK
}

// probeAddr turns a listen address into one to dial: a wildcard host becomes the loopback address
// of its family (":5000" and "0.0.0.0:5000" -> 127.0.0.1:5000, "[::]:5000" -> [::1]:5000); a
// concrete host is kept.
func probeAddr(name, listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", name, listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("%s %q has port 0: the daemon's port is picked at start and cannot be known here", name, listen)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// probe GETs url and returns nil on 200; otherwise the status and the start of the body (/readyz
// lists its problems there).
func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No proxy: the check is of this process's own listener, whatever HTTP_PROXY says.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err // names the method, the URL and the cause
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
}
