package main

// The deployment files are checked against the code they deploy: docker-compose.yml and the
// Dockerfile may only set variables that config reads, and must publish the ports the daemon
// listens on. No Docker engine is needed; compose-go loads and validates the compose file the way
// `docker compose` does.

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/searchflow/searchflow/config"
)

const (
	composeFile    = "docker-compose.yml"
	dockerfile     = "Dockerfile"
	dockerignore   = ".dockerignore"
	appService     = "searchflow"
	kafkaService   = "kafka"
	redisService   = "redis"
	kafkaUIService = "kafka-ui"
	kafkaUIPort    = "9000"
	redisPort      = "6379" // redis-server's default; the compose file does not change it
)

// TestComposeFile checks docker-compose.yml against config.Vars() and against itself: the daemon
// is pointed at services and ports that exist, and listens where its port is published.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	app := service(t, p, appService)
	appEnv := environment(app)
	kafka := service(t, p, kafkaService)
	kafkaEnv := environment(kafka)

	t.Run("only variables config reads", func(t *testing.T) {
		known := map[string]bool{}
		for _, v := range config.Vars() {
			known[v.Name] = true
		}
		for _, name := range sortedKeys(appEnv) {
			if !known[name] {
				t.Errorf("service %s sets %s, which is not in config.Vars(): a typo, or a variable the daemon ignores", appService, name)
			}
		}
	})

	t.Run("config.Load accepts the environment", func(t *testing.T) {
		if _, err := config.Load(func(name string) string { return appEnv[name] }); err != nil {
			t.Errorf("service %s's environment does not load:\n%v", appService, err)
		}
	})

	t.Run("HTTP port is the container port", func(t *testing.T) {
		defaultPort := port(t, "HTTP_ADDR default", varDefault(t, "HTTP_ADDR"))
		targets := targetPorts(app)
		if !slices.Contains(targets, defaultPort) {
			t.Errorf("service %s publishes container ports %v; want %s, the port of HTTP_ADDR's default %q",
				appService, targets, defaultPort, varDefault(t, "HTTP_ADDR"))
		}
		if addr, ok := appEnv["HTTP_ADDR"]; ok {
			if got := port(t, "HTTP_ADDR", addr); !slices.Contains(targets, got) {
				t.Errorf("service %s sets HTTP_ADDR=%s but publishes container ports %v", appService, addr, targets)
			}
		}
	})

	t.Run("KAFKA_BROKERS reach the kafka service", func(t *testing.T) {
		brokers := appEnv["KAFKA_BROKERS"]
		if brokers == "" {
			t.Fatalf("service %s has no KAFKA_BROKERS: it would start the embedded broker instead of service %s", appService, kafkaService)
		}
		for _, b := range strings.Split(brokers, ",") {
			checkInternalBroker(t, "KAFKA_BROKERS", strings.TrimSpace(b), kafkaEnv)
		}
	})

	t.Run("REDIS_ADDR reaches the redis service", func(t *testing.T) {
		want := net.JoinHostPort(redisService, redisPort)
		if got := appEnv["REDIS_ADDR"]; got != want {
			t.Errorf("service %s has REDIS_ADDR=%q; want %q", appService, got, want)
		}
		redis := service(t, p, redisService)
		if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--appendonly yes") {
			t.Errorf("service %s runs %q; want --appendonly yes, or aggregates are lost with the container", redisService, cmd)
		}
	})

	t.Run("starts after healthy dependencies", func(t *testing.T) {
		for _, dep := range []string{kafkaService, redisService} {
			d, ok := app.DependsOn[dep]
			switch {
			case !ok:
				t.Errorf("service %s does not depend on %s", appService, dep)
			case d.Condition != types.ServiceConditionHealthy:
				t.Errorf("service %s depends on %s with condition %q; want %q", appService, dep, d.Condition, types.ServiceConditionHealthy)
			}
			if hc := service(t, p, dep).HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 {
				t.Errorf("service %s has no healthcheck, so %s's condition %q can never be met", dep, appService, types.ServiceConditionHealthy)
			}
		}
		if app.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("service %s has restart %q; want %q", appService, app.Restart, types.RestartPolicyUnlessStopped)
		}
	})

	t.Run("stop grace period outlasts SHUTDOWN_TIMEOUT", func(t *testing.T) {
		timeout := appEnv["SHUTDOWN_TIMEOUT"]
		if timeout == "" {
			timeout = varDefault(t, "SHUTDOWN_TIMEOUT")
		}
		d, err := time.ParseDuration(timeout)
		if err != nil {
			t.Fatalf("SHUTDOWN_TIMEOUT %q: %v", timeout, err)
		}
		grace := 10 * time.Second // Docker's default
		if app.StopGracePeriod != nil {
			grace = time.Duration(*app.StopGracePeriod)
		}
		if grace <= d {
			t.Errorf("service %s has stop_grace_period %s, not longer than SHUTDOWN_TIMEOUT %s: Docker kills the drain before its watchdog reports", appService, grace, d)
		}
	})

	t.Run("kafka runs KRaft without ZooKeeper", func(t *testing.T) {
		for name, s := range p.Services {
			if strings.Contains(strings.ToLower(name+" "+s.Image), "zookeeper") {
				t.Errorf("service %s (image %s) is ZooKeeper; Kafka runs in KRaft mode", name, s.Image)
			}
		}
		roles := strings.Split(kafkaEnv["KAFKA_PROCESS_ROLES"], ",")
		if !slices.Contains(roles, "controller") || !slices.Contains(roles, "broker") {
			t.Errorf("service %s has KAFKA_PROCESS_ROLES=%q; want broker and controller", kafkaService, kafkaEnv["KAFKA_PROCESS_ROLES"])
		}
		if id := kafkaEnv["CLUSTER_ID"]; id != "" {
			if b, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(b) != 16 {
				t.Errorf("service %s has CLUSTER_ID=%q; kafka-storage format wants a base64url UUID (22 characters)", kafkaService, id)
			}
		}
		// One broker: internal topics with more replicas than brokers cannot be created, and without
		// the transaction state log no transaction can begin.
		for _, name := range []string{
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
		} {
			if got := kafkaEnv[name]; got != "1" {
				t.Errorf("service %s has %s=%q; want \"1\" on a single broker", kafkaService, name, got)
			}
		}
	})

	t.Run("kafka's host port is an advertised listener", func(t *testing.T) {
		if len(kafka.Ports) == 0 {
			t.Fatalf("service %s publishes no port for clients on the host", kafkaService)
		}
		listeners := parseListeners(t, "KAFKA_LISTENERS", kafkaEnv["KAFKA_LISTENERS"])
		advertised := parseListeners(t, "KAFKA_ADVERTISED_LISTENERS", kafkaEnv["KAFKA_ADVERTISED_LISTENERS"])
		for _, pc := range kafka.Ports {
			target := strconv.Itoa(int(pc.Target))
			name := listenerOnPort(listeners, target)
			if name == "" {
				t.Errorf("service %s publishes container port %s, where no listener in KAFKA_LISTENERS listens", kafkaService, target)
				continue
			}
			if want := net.JoinHostPort("localhost", pc.Published); advertised[name] != want {
				t.Errorf("service %s: listener %s on published port %s advertises %q; want %q, or host clients are sent to an address they cannot reach",
					kafkaService, name, pc.Published, advertised[name], want)
			}
		}
	})

	t.Run("published ports bind loopback only", func(t *testing.T) {
		for _, name := range sortedKeys(p.Services) {
			s := p.Services[name]
			if s.NetworkMode == "host" {
				t.Errorf("service %s has network_mode host: every port it listens on is open on the host's interfaces", name)
			}
			for _, pc := range s.Ports {
				if ip := net.ParseIP(pc.HostIP); ip == nil || !ip.IsLoopback() {
					t.Errorf("service %s publishes container port %d on host address %q; want \"127.0.0.1:%s:%d\": nothing here authenticates, so opening a port is a deliberate edit",
						name, pc.Target, pc.HostIP, pc.Published, pc.Target)
				}
			}
		}
	})

	t.Run("every service has a healthcheck", func(t *testing.T) {
		for _, name := range sortedKeys(p.Services) {
			if hc := p.Services[name].HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 {
				t.Errorf("service %s has no healthcheck: `docker compose ps` cannot tell a hung container from a working one", name)
			}
		}
	})

	t.Run("searchflow's healthcheck runs the healthcheck subcommand", func(t *testing.T) {
		hc := app.HealthCheck
		if hc == nil || hc.Disable {
			t.Fatalf("service %s has no healthcheck", appService)
		}
		want := []string{"CMD", "/searchflow", "healthcheck"}
		if !slices.Equal(hc.Test, want) && !slices.Equal(hc.Test, append(want, "-ready")) {
			t.Errorf("service %s's healthcheck test is %q; want %q (exec form: distroless has no shell)", appService, hc.Test, want)
		}
		timeout := "30s" // Docker's default
		if hc.Timeout != nil {
			timeout = time.Duration(*hc.Timeout).String()
		}
		checkProbeTimeout(t, "service "+appService+"'s healthcheck timeout", timeout)
	})

	t.Run("kafka UI on host port "+kafkaUIPort, func(t *testing.T) {
		ui := service(t, p, kafkaUIService)
		var published []string
		for _, pc := range ui.Ports {
			published = append(published, pc.Published+":"+strconv.Itoa(int(pc.Target)))
		}
		if !slices.ContainsFunc(ui.Ports, func(pc types.ServicePortConfig) bool { return pc.Published == kafkaUIPort }) {
			t.Errorf("service %s publishes %v (host:container); want host port %s", kafkaUIService, published, kafkaUIPort)
		}
		uiEnv := environment(ui)
		checkInternalBroker(t, "KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS", uiEnv["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"], kafkaEnv)
	})
}

// checkInternalBroker reports whether addr, as another container's seed broker, reaches the kafka
// service: its host is the service, its port a client listener that advertises exactly addr (the
// client reconnects to the advertised address after the first metadata request).
func checkInternalBroker(t *testing.T, name, addr string, kafkaEnv map[string]string) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %q is not host:port: %v", name, addr, err)
		return
	}
	if host != kafkaService {
		t.Errorf("%s: %q names host %q; want service %q", name, addr, host, kafkaService)
	}
	listeners := parseListeners(t, "KAFKA_LISTENERS", kafkaEnv["KAFKA_LISTENERS"])
	listener := listenerOnPort(listeners, p)
	if listener == "" {
		t.Errorf("%s: %q: service %s listens on no port %s (KAFKA_LISTENERS=%q)", name, addr, kafkaService, p, kafkaEnv["KAFKA_LISTENERS"])
		return
	}
	if slices.Contains(strings.Split(kafkaEnv["KAFKA_CONTROLLER_LISTENER_NAMES"], ","), listener) {
		t.Errorf("%s: %q is the controller listener %s, which serves no clients", name, addr, listener)
		return
	}
	advertised := parseListeners(t, "KAFKA_ADVERTISED_LISTENERS", kafkaEnv["KAFKA_ADVERTISED_LISTENERS"])
	if advertised[listener] != addr {
		t.Errorf("%s: %q: listener %s advertises %q; want %q", name, addr, listener, advertised[listener], addr)
	}
}

// parseListeners turns "NAME://host:port,..." into NAME -> host:port.
func parseListeners(t *testing.T, name, value string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(value, ",") {
		listener, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
		if !ok {
			t.Fatalf("%s: %q is not NAME://host:port", name, l)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			t.Fatalf("%s: %q: %v", name, l, err)
		}
		out[listener] = addr
	}
	return out
}

func listenerOnPort(listeners map[string]string, port string) string {
	for name, addr := range listeners {
		if _, p, _ := net.SplitHostPort(addr); p == port {
			return name
		}
	}
	return ""
}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, composeFile)}},
		// An empty environment: the result must not depend on the shell the tests run in.
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(t.Context(), details, func(o *loader.Options) {
		o.SetProjectName(appService, true)
	})
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("%s has no service %q (has %v)", composeFile, name, sortedKeys(p.Services))
	}
	return s
}

func environment(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		env[k] = ""
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

func targetPorts(s types.ServiceConfig) []string {
	var out []string
	for _, pc := range s.Ports {
		out = append(out, strconv.Itoa(int(pc.Target)))
	}
	return out
}

func varDefault(t *testing.T, name string) string {
	t.Helper()
	for _, v := range config.Vars() {
		if v.Name == name {
			return v.Default
		}
	}
	t.Fatalf("config.Vars() has no %s", name)
	return ""
}

func port(t *testing.T, what, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is the instructions from one FROM to the next.
type stage struct {
	base         string
	instructions []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instructions {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// env returns the stage's ENV settings, in both `ENV K=V ...` and `ENV K V` forms.
func (s stage) env() map[string]string {
	out := map[string]string{}
	for _, in := range s.all("ENV") {
		fields := strings.Fields(in.args)
		if len(fields) > 0 && !strings.Contains(fields[0], "=") {
			out[fields[0]] = strings.TrimSpace(strings.TrimPrefix(in.args, fields[0]))
			continue
		}
		for _, f := range fields {
			k, v, _ := strings.Cut(f, "=")
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

func parseDockerfile(t *testing.T, r io.Reader) []stage {
	t.Helper()
	var stages []stage
	var pending strings.Builder
	start := 0
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if strings.HasPrefix(line, "#") { // a comment inside a continued instruction
			continue
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(body + " ")
			continue
		}
		pending.WriteString(line)
		cmd, args, _ := strings.Cut(pending.String(), " ")
		pending.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") { // --platform=...
				fields = fields[1:]
			}
			if len(fields) == 0 {
				t.Fatalf("%s:%d: FROM without an image", dockerfile, start)
			}
			stages = append(stages, stage{base: fields[0]})
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", dockerfile, start, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// TestDockerfile checks the image recipe: a static binary built in one stage, copied alone into a
// distroless (or scratch) stage that runs as non-root and exposes the ports config listens on.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := parseDockerfile(t, f)
	if len(stages) < 2 {
		t.Fatalf("%s has %d stage(s); want a build stage and a runtime stage", dockerfile, len(stages))
	}
	final := stages[len(stages)-1]
	builders := stages[:len(stages)-1]
	finalEnv := final.env()

	embeddedAddr := finalEnv["EMBEDDED_KAFKA_ADDR"]
	if embeddedAddr == "" {
		embeddedAddr = varDefault(t, "EMBEDDED_KAFKA_ADDR")
	}
	var exposed []string
	for _, in := range final.all("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
		}
	}
	user := ""
	for _, in := range final.all("USER") {
		user = in.args
	}

	tests := []struct {
		name string
		ok   bool
		why  string
	}{
		{
			name: "final stage is distroless or scratch",
			ok:   strings.Contains(final.base, "distroless") || final.base == "scratch",
			why:  "final stage is FROM " + final.base + "; want a distroless or scratch base: a static binary needs nothing else",
		},
		{
			name: "runs as non-root",
			ok: user != "" && !slices.Contains([]string{"root", "0", "root:root", "0:0"}, user) ||
				user == "" && strings.HasSuffix(final.base, ":nonroot"),
			why: "final stage runs as user " + strconv.Quote(user) + " on " + final.base + "; want a USER other than root, or a :nonroot base",
		},
		{
			name: "binary is static",
			ok: slices.ContainsFunc(builders, func(s stage) bool {
				return slices.ContainsFunc(s.all("RUN"), func(in instruction) bool {
					return strings.Contains(in.args, "CGO_ENABLED=0") && strings.Contains(in.args, "go build")
				}) || s.env()["CGO_ENABLED"] == "0"
			}),
			why: "no build stage sets CGO_ENABLED=0 for go build: the binary would need libc, which distroless/static lacks",
		},
		{
			name: "modules are downloaded in their own layer",
			ok: slices.ContainsFunc(builders, func(s stage) bool {
				return slices.ContainsFunc(s.all("RUN"), func(in instruction) bool {
					return strings.Contains(in.args, "go mod download") && !strings.Contains(in.args, "go build")
				})
			}),
			why: "no build stage runs go mod download before go build: every source change downloads all modules again",
		},
		{
			name: "final stage has no RUN",
			ok:   len(final.all("RUN")) == 0,
			why:  "the final stage has RUN instructions; distroless has no shell, and the image should hold the binary only",
		},
		{
			// The embedded broker has no authentication: an image that published it would hand
			// every topic to whoever reaches the host. Opening it is a `docker run` decision.
			name: "exposes only HTTP_ADDR's port",
			ok:   slices.Equal(exposed, []string{port(t, "HTTP_ADDR default", varDefault(t, "HTTP_ADDR"))}),
			why:  "EXPOSE " + strings.Join(exposed, " ") + "; want only the port of HTTP_ADDR's default " + strconv.Quote(varDefault(t, "HTTP_ADDR")),
		},
		{
			name: "embedded broker stays on loopback",
			ok:   isLoopback(embeddedAddr),
			why:  "EMBEDDED_KAFKA_ADDR is " + strconv.Quote(embeddedAddr) + " in the image; want a loopback address (the default), so the unauthenticated broker is opened only on purpose",
		},
		{
			name: "DATA_DIR is a volume",
			ok: finalEnv["DATA_DIR"] != "" && slices.ContainsFunc(final.all("VOLUME"), func(in instruction) bool {
				return strings.Contains(in.args, `"`+finalEnv["DATA_DIR"]+`"`) || slices.Contains(strings.Fields(in.args), finalEnv["DATA_DIR"])
			}),
			why: "the final stage should set DATA_DIR and declare it a VOLUME, so the embedded broker's log outlives the container (DATA_DIR=" + strconv.Quote(finalEnv["DATA_DIR"]) + ")",
		},
		{
			name: "ENTRYPOINT in exec form",
			ok: slices.ContainsFunc(final.all("ENTRYPOINT"), func(in instruction) bool {
				var argv []string
				return json.Unmarshal([]byte(in.args), &argv) == nil && len(argv) > 0
			}),
			why: "the final stage needs ENTRYPOINT [\"/binary\"]: the exec form makes the daemon PID 1, so SIGTERM reaches it and it drains",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Error(tt.why)
			}
		})
	}

	t.Run("HEALTHCHECK runs the healthcheck subcommand", func(t *testing.T) {
		hcs := final.all("HEALTHCHECK")
		if len(hcs) != 1 {
			t.Fatalf("the final stage has %d HEALTHCHECK instructions; want one", len(hcs))
		}
		opts, argv, err := parseHealthcheck(hcs[0].args)
		if err != nil {
			t.Fatalf("%s:%d: HEALTHCHECK %s: %v", dockerfile, hcs[0].line, hcs[0].args, err)
		}
		entry := entrypoint(t, final)
		if want := []string{entry[0], "healthcheck"}; !slices.Equal(argv, want) && !slices.Equal(argv, append(want, "-ready")) {
			t.Errorf("HEALTHCHECK runs %q; want %q, the ENTRYPOINT's binary with its healthcheck subcommand", argv, want)
		}
		for _, name := range []string{"interval", "timeout", "start-period"} {
			if _, err := time.ParseDuration(opts[name]); err != nil {
				t.Errorf("HEALTHCHECK --%s=%q: want a duration", name, opts[name])
			}
		}
		if n, err := strconv.Atoi(opts["retries"]); err != nil || n < 1 {
			t.Errorf("HEALTHCHECK --retries=%q: want a positive integer", opts["retries"])
		}
		checkProbeTimeout(t, "HEALTHCHECK --timeout", opts["timeout"])
	})

	t.Run("ENV names config variables", func(t *testing.T) {
		for _, name := range sortedKeys(finalEnv) {
			if !slices.ContainsFunc(config.Vars(), func(v config.Var) bool { return v.Name == name }) {
				t.Errorf("final stage sets ENV %s, which is not in config.Vars()", name)
			}
		}
	})
}

// parseHealthcheck splits the arguments of a HEALTHCHECK instruction into its --name=value options
// and the argv of its CMD, which must be in exec (JSON) form: distroless has no shell to run the
// shell form.
func parseHealthcheck(args string) (map[string]string, []string, error) {
	opts := map[string]string{}
	known := []string{"interval", "timeout", "start-period", "start-interval", "retries"}
	for strings.HasPrefix(args, "--") {
		opt, rest, _ := strings.Cut(args, " ")
		name, value, ok := strings.Cut(strings.TrimPrefix(opt, "--"), "=")
		if !ok || !slices.Contains(known, name) {
			return nil, nil, fmt.Errorf("option %q: want --name=value with a name from %v", opt, known)
		}
		opts[name] = value
		args = strings.TrimSpace(rest)
	}
	form, cmd, _ := strings.Cut(args, " ")
	if strings.ToUpper(form) != "CMD" {
		return nil, nil, fmt.Errorf("want CMD [...] after the options, got %q", args)
	}
	var argv []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(cmd)), &argv); err != nil || len(argv) == 0 {
		return nil, nil, fmt.Errorf("CMD %s is not in exec form [\"/binary\", \"arg\"]: distroless has no /bin/sh for the shell form", cmd)
	}
	return opts, argv, nil
}

// entrypoint returns the argv of the final stage's last ENTRYPOINT.
func entrypoint(t *testing.T, s stage) []string {
	t.Helper()
	eps := s.all("ENTRYPOINT")
	var argv []string
	if len(eps) == 0 || json.Unmarshal([]byte(eps[len(eps)-1].args), &argv) != nil || len(argv) == 0 {
		t.Fatalf("the final stage has no ENTRYPOINT in exec form")
	}
	return argv
}

// checkProbeTimeout reports a Docker healthcheck timeout that would kill the healthcheck
// subcommand before its own request times out: Docker would then record no reason.
func checkProbeTimeout(t *testing.T, what, value string) {
	t.Helper()
	d, err := time.ParseDuration(value)
	if err != nil {
		t.Errorf("%s %q: %v", what, value, err)
		return
	}
	if d <= healthcheckTimeout {
		t.Errorf("%s is %s; want more than the subcommand's own %s, so it fails with a reason instead of being killed", what, d, healthcheckTimeout)
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TestDockerfileContextKeepsSources checks that .dockerignore leaves in the build context every
// file `go build .` reads: the module files and each non-test Go file and embedded file of the
// packages the binary is made of.
func TestDockerfileContextKeepsSources(t *testing.T) {
	patterns := readDockerignore(t)
	needed := append([]string{"go.mod", "go.sum"}, buildInputs(t)...)
	for _, path := range needed {
		if excludedBy := ignoredBy(patterns, path); excludedBy != "" {
			t.Errorf("%s excludes %s (pattern %q), which go build needs", dockerignore, path, excludedBy)
		}
	}
}

type ignorePattern struct {
	text   string
	negate bool
	re     *regexp.Regexp
}

// readDockerignore compiles the patterns the way Docker reads them: relative to the context root,
// `*` and `?` within one path element, `**` across any number, `!` re-including.
func readDockerignore(t *testing.T) []ignorePattern {
	t.Helper()
	data, err := os.ReadFile(dockerignore)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []ignorePattern
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := ignorePattern{text: line}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			p.negate, line = true, rest
		}
		line = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(line)), "/")
		if strings.ContainsAny(line, `[\`) {
			t.Fatalf("%s: pattern %q uses a character class or escape, which this test cannot match", dockerignore, p.text)
		}
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case line[i] == '*':
				re.WriteString("[^/]*")
			case line[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(line[i : i+1]))
			}
		}
		re.WriteString("$")
		p.re = regexp.MustCompile(re.String())
		out = append(out, p)
	}
	return out
}

// ignoredBy returns the pattern that leaves path out of the context, or "". A pattern that matches
// a parent directory leaves out everything under it; the last matching pattern wins.
func ignoredBy(patterns []ignorePattern, path string) string {
	excludedBy := ""
	for _, p := range patterns {
		matched := false
		for prefix := path; prefix != "." && prefix != "/" && !matched; prefix = filepath.ToSlash(filepath.Dir(prefix)) {
			matched = p.re.MatchString(prefix)
		}
		switch {
		case matched && p.negate:
			excludedBy = ""
		case matched:
			excludedBy = p.text
		}
	}
	return excludedBy
}

// buildInputs lists, relative to the module root, the files of this module that `go build .` reads.
func buildInputs(t *testing.T) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	const tmpl = `{{if and .Module .Module.Main}}{{$d := .Dir}}` +
		`{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-e", "-deps", "-f", tmpl, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var files []string
	for _, abs := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, abs)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	if len(files) == 0 {
		t.Fatal("go list found no source files of the binary")
	}
	return files
}
