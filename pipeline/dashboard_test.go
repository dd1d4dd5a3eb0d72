package pipeline

import (
	"context"
	"fmt"
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

// TestDashboardInBrowser opens /dashboard in a real headless Chromium while the generator runs:
// the numbers must appear and grow without a reload, the tables fill, and the console stays free
// of errors. It saves a screenshot (DASHBOARD_SCREENSHOT, default in the test's temp dir).
func TestDashboardInBrowser(t *testing.T) {
	exe := browser(t)
	h := start(t, map[string]string{"GENERATOR_RATE": "300", "GENERATOR_USERS": "50", "GENERATOR_HOTELS": "20"})

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

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

	if err := chromedp.Do(ctx, chromedp.Navigate(h.base+"/dashboard"), chromedp.WaitVisible("#total-applied")); err != nil {
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
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := os.Getenv("DASHBOARD_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
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
	cancel()
	h.stop()
}
