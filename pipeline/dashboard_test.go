package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser finds Chromium. Without one the test is skipped — unless SEARCHFLOW_REQUIRE_BROWSER is
// set, as .ci/run does after installing it, so CI can never skip it silently.
func browser(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SEARCHFLOW_REQUIRE_BROWSER") != "" {
		t.Fatal("no Chromium on PATH, and SEARCHFLOW_REQUIRE_BROWSER is set")
	}
	t.Skip("no Chromium on PATH (apt-get install chromium); .ci/run installs it and requires this test")
	return ""
}

// dashboardEnv runs the generator fast enough for the numbers to grow between two looks.
func dashboardEnv() map[string]string {
	return map[string]string{"GENERATOR_RATE": "300", "GENERATOR_USERS": "50", "GENERATOR_HOTELS": "20"}
}

// TestDashboardInBrowser opens /dashboard in a real headless Chromium while the generator runs:
// the numbers must appear and grow without a reload, the tables fill, and the console stays free
// of errors. It saves a screenshot (DASHBOARD_SCREENSHOT, default in the test's temp dir).
func TestDashboardInBrowser(t *testing.T) {
	exe := browser(t)
	h := start(t, dashboardEnv())
	shot := os.Getenv("DASHBOARD_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
	}
	_, closeBrowser := watchDashboard(t, exe, h, "/dashboard", shot)
	closeBrowser()
	h.stop()
}

// TestDashboardInBrowserWithToken is TestDashboardInBrowser on a daemon with API tokens: the API
// refuses requests without one, and the browser opens /dashboard?token=<token> once, lands on
// /dashboard without the token in its address, and then gets its page and stream with the cookie.
func TestDashboardInBrowserWithToken(t *testing.T) {
	exe := browser(t)
	const token = "browser-test-token-0123456789abcdef"
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# the browser's\n"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := dashboardEnv()
	env["API_TOKENS_FILE"] = file
	h := start(t, env)

	for _, path := range []string{"/users", "/stream", "/dashboard", "/dashboard?token=not-the-token-0123456789"} {
		resp, body := getBody(t, h.base+path, nil)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "Bearer" ||
			!strings.Contains(body, `"status":401`) {
			t.Errorf("GET %s without the token: %d %q %s, want the JSON 401", path, resp.StatusCode,
				resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	if resp, body := getBody(t, h.base+"/users", map[string]string{"Authorization": "Bearer " + token}); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /users with the token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := getBody(t, h.base+"/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz without the token: %d, want 200", resp.StatusCode)
	}

	ctx, closeBrowser := watchDashboard(t, exe, h, "/dashboard?token="+token, filepath.Join(t.TempDir(), "dashboard.png"))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if loc != h.base+"/dashboard" {
		t.Errorf("the browser is at %s, want %s/dashboard (no token in the address)", loc, h.base)
	}
	// HttpOnly: the page's scripts cannot read the cookie.
	cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cookies, "searchflow_auth") {
		t.Errorf("the page's scripts can read the cookie: %q", cookies)
	}
	closeBrowser()
	h.stop()
}

// watchDashboard opens path in headless Chromium and checks that the dashboard's numbers appear
// and grow live, its tables fill and the console stays free of errors; it saves a screenshot to
// shot. The browser stays open for more checks on the returned context until closeBrowser (or
// the end of the test).
func watchDashboard(t *testing.T, exe string, h *harness, path, shot string) (ctx context.Context, closeBrowser func()) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(bctx, 90*time.Second)
	t.Cleanup(cancelTimeout)

	var mu sync.Mutex
	var problems []string
	listenErr := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console error: %v", e.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, fmt.Sprintf("exception: %s %v", e.ExceptionDetails.Text, e.ExceptionDetails.Exception))
		}
	})
	if listenErr != nil {
		t.Fatalf("listen to the page: %v", listenErr)
	}

	number := func(sel string) (int64, error) {
		txt, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(txt), ",", ""), 10, 64)
	}
	waitAbove := func(sel string, min int64) int64 {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if n, err := number(sel); err == nil && n > min {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never went above %d", sel, min)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(h.base+path), chromedp.WaitVisible("#total-applied")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	first := waitAbove("#total-applied", 0)
	later := waitAbove("#total-applied", first) // grows live, no reload
	status, err := chromedp.Run(ctx, chromedp.Text("#status"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#top-users tr").length + document.querySelectorAll("#cheapest tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	if status != "live" || rows < 2 {
		t.Errorf("status %q, %d table rows", status, rows)
	}
	checkTrendingPanel(t, ctx)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("events in the view went %d -> %d live; screenshot %s (%d bytes)", first, later, shot, len(png))
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page reported problems: %v", problems)
	}
	return ctx, cancel
}

// checkTrendingPanel: the "trending in the last hour" panel names its window and fills with the
// hotels the window counts.
func checkTrendingPanel(t *testing.T, ctx context.Context) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		title, err1 := chromedp.Run(ctx, chromedp.Text("#trending-title"))
		rows, err2 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#trending-hotels tr").length`))
		if err1 == nil && err2 == nil && strings.EqualFold(title, "Trending hotels, last 1h") && rows > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trending panel: title %q (%v), %d rows (%v)", title, err1, rows, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
