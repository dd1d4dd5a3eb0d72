package main

// The scaled-out deployment files are checked like docker-compose.yml in deploy_test.go: against
// config.Vars(), against each other and, for the monitoring files, against the metrics the daemon
// really exports. No Docker engine, Kubernetes or Prometheus server is needed: compose-go loads
// docker-compose.cluster.yml, the manifests under deploy/k8s are decoded strictly into the
// k8s.io/api types, the PromQL of the dashboard and the alerts is read by Prometheus's own parser,
// and promtool checks and unit-tests the alert rules.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
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
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/pipeline"
)

const (
	clusterComposeFile = "docker-compose.cluster.yml"
	k8sDir             = "deploy/k8s"
	dashboardFile      = "deploy/grafana/searchflow.json"
	alertsFile         = "deploy/prometheus/alerts.yml"
	alertsTestFile     = "deploy/prometheus/alerts_test.yml"
	clusterReplicas    = 3
	// readyzOwnTimeout is how long /readyz lets its own check run (httpapi and the admin server):
	// a probe that gives up sooner fails on a slow answer that would have been 200.
	readyzOwnTimeout = 2 * time.Second
)

// checkConfigEnv reports variables of env that config does not read, and runs config.Load on env.
func checkConfigEnv(t *testing.T, what string, env map[string]string) config.Config {
	t.Helper()
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v.Name] = true
	}
	for _, name := range sortedKeys(env) {
		if !known[name] {
			t.Errorf("%s sets %s, which is not in config.Vars(): a typo, or a variable the daemon ignores", what, name)
		}
	}
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatalf("%s's environment does not load:\n%v", what, err)
	}
	return cfg
}

// shutdownTimeout is SHUTDOWN_TIMEOUT as env sets it, or its default.
func shutdownTimeout(t *testing.T, env map[string]string) time.Duration {
	t.Helper()
	v := env["SHUTDOWN_TIMEOUT"]
	if v == "" {
		v = varDefault(t, "SHUTDOWN_TIMEOUT")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT %q: %v", v, err)
	}
	return d
}

// probePorts are the ports where a daemon configured by cfg serves /healthz and /readyz: HTTP_ADDR
// when it runs the api stage, ADMIN_ADDR when set.
func probePorts(t *testing.T, cfg config.Config) []string {
	t.Helper()
	var out []string
	if cfg.Enabled(config.StageAPI) {
		out = append(out, port(t, "HTTP_ADDR", cfg.HTTPAddr))
	}
	if cfg.AdminAddr != "" {
		out = append(out, port(t, "ADMIN_ADDR", cfg.AdminAddr))
	}
	return out
}

func loadComposeFile(t *testing.T, file string) *types.Project {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, file)}},
		Environment: types.Mapping{}, // independent of the shell the tests run in
	}
	p, err := loader.LoadWithContext(t.Context(), details)
	if err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	return p
}

// flagValue returns the argument after flag in argv, or def.
func flagValue(argv []string, flag, def string) string {
	if i := slices.Index(argv, flag); i >= 0 && i+1 < len(argv) {
		return argv[i+1]
	}
	return def
}

// TestComposeCluster checks docker-compose.cluster.yml: three searchflow replicas and one
// generator on a three-broker KRaft quorum and a three-master Redis Cluster, each pointed at all
// of them.
func TestComposeCluster(t *testing.T) {
	p := loadComposeFile(t, clusterComposeFile)
	var apps, brokers, redisNodes, inits []string
	for _, name := range sortedKeys(p.Services) {
		s := p.Services[name]
		argv := append(slices.Clone(s.Entrypoint), s.Command...)
		switch {
		case s.Build != nil:
			apps = append(apps, name)
		case strings.HasPrefix(s.Image, "apache/kafka:") || strings.HasPrefix(s.Image, "bitnami/kafka:"):
			brokers = append(brokers, name)
		case strings.HasPrefix(s.Image, "redis:") && flagValue(argv, "--cluster-enabled", "") == "yes":
			redisNodes = append(redisNodes, name)
		case strings.HasPrefix(s.Image, "redis:") && strings.Contains(strings.Join(argv, " "), "--cluster create"):
			inits = append(inits, name)
		default:
			t.Errorf("service %s (image %s) is neither searchflow, a Kafka broker, a Redis Cluster node nor the cluster's init job", name, s.Image)
		}
	}
	if len(brokers) != clusterReplicas || len(redisNodes) != clusterReplicas || len(inits) != 1 {
		t.Fatalf("%s has brokers %v, Redis Cluster nodes %v and init jobs %v; want %d, %d and 1",
			clusterComposeFile, brokers, redisNodes, inits, clusterReplicas, clusterReplicas)
	}
	envs := map[string]map[string]string{}
	cfgs := map[string]config.Config{}
	for _, name := range apps {
		envs[name] = environment(p.Services[name])
		cfgs[name] = checkConfigEnv(t, "service "+name, envs[name])
	}

	t.Run("replicas and one generator", func(t *testing.T) {
		var replicas, generators []string
		ids := map[string]string{}
		for _, name := range apps {
			stages := cfgs[name].Stages
			if slices.Contains(stages, config.StageGenerator) {
				generators = append(generators, name)
			}
			if len(stages) == 3 && slices.Contains(stages, config.StageTransformer) && slices.Contains(stages, config.StageAggregator) &&
				slices.Contains(stages, config.StageAPI) {
				replicas = append(replicas, name)
			}
			id := envs[name]["INSTANCE_ID"]
			switch {
			case id == "":
				t.Errorf("service %s has no INSTANCE_ID", name)
			case ids[id] != "":
				t.Errorf("services %s and %s share INSTANCE_ID %q: each process needs its own", ids[id], name, id)
			}
			ids[id] = name
		}
		if len(replicas) != clusterReplicas {
			t.Errorf("services %v run STAGES=transformer,aggregator,api; want %d of them", replicas, clusterReplicas)
		}
		if len(generators) != 1 {
			t.Errorf("services %v run the generator; want exactly one, or every event is produced again by each", generators)
		}
	})

	t.Run("kafka brokers form the controller quorum", func(t *testing.T) {
		checkKafkaQuorum(t, p, brokers)
	})

	t.Run("KAFKA_BROKERS lists every broker", func(t *testing.T) {
		for _, name := range apps {
			var reached []string
			for _, addr := range cfgs[name].KafkaBrokers {
				if b := composeBroker(t, p, brokers, addr); b != "" {
					reached = append(reached, b)
				}
			}
			if slices.Sort(reached); !slices.Equal(slices.Compact(reached), brokers) {
				t.Errorf("service %s has KAFKA_BROKERS=%q, which reaches brokers %v; want all of %v, so any one may be down at start",
					name, envs[name]["KAFKA_BROKERS"], reached, brokers)
			}
		}
	})

	t.Run("redis cluster nodes and init job", func(t *testing.T) {
		checkRedisCluster(t, p, redisNodes, inits[0])
	})

	t.Run("REDIS_ADDR lists every master", func(t *testing.T) {
		var want []string
		for _, name := range redisNodes {
			want = append(want, net.JoinHostPort(name, flagValue(p.Services[name].Command, "--port", redisPort)))
		}
		for _, name := range apps {
			if !cfgs[name].Enabled(config.StageAggregator) && !cfgs[name].Enabled(config.StageAPI) {
				continue // never reads Redis
			}
			got := strings.Split(envs[name]["REDIS_ADDR"], ",")
			if slices.Sort(got); !slices.Equal(got, want) {
				t.Errorf("service %s has REDIS_ADDR=%q; want the %d masters %v", name, envs[name]["REDIS_ADDR"], len(want), want)
			}
			if envs[name]["REDIS_CLUSTER"] != "on" {
				t.Errorf("service %s has REDIS_CLUSTER=%q; want \"on\": a plain client fails on the first MOVED", name, envs[name]["REDIS_CLUSTER"])
			}
		}
	})

	t.Run("searchflow probes, ports and stop", func(t *testing.T) {
		published := map[string]string{}
		for _, name := range sortedKeys(p.Services) {
			for _, pc := range p.Services[name].Ports {
				if ip := net.ParseIP(pc.HostIP); ip == nil || !ip.IsLoopback() {
					t.Errorf("service %s publishes container port %d on host address %q; want 127.0.0.1: nothing here authenticates", name, pc.Target, pc.HostIP)
				}
				if other := published[pc.Published]; other != "" {
					t.Errorf("services %s and %s both publish host port %s", other, name, pc.Published)
				}
				published[pc.Published] = name
			}
		}
		for _, name := range apps {
			s, cfg := p.Services[name], cfgs[name]
			ports := probePorts(t, cfg)
			if len(ports) == 0 {
				t.Errorf("service %s runs no api stage and sets no ADMIN_ADDR: nothing answers its healthcheck", name)
			}
			if cfg.Enabled(config.StageAPI) && !slices.Contains(targetPorts(s), ports[0]) {
				t.Errorf("service %s publishes container ports %v; want %s, HTTP_ADDR's", name, targetPorts(s), ports[0])
			}
			hc := s.HealthCheck
			if hc == nil || hc.Disable || !slices.Equal(hc.Test[:min(3, len(hc.Test))], []string{"CMD", "/searchflow", "healthcheck"}) {
				t.Errorf("service %s's healthcheck is not [CMD /searchflow healthcheck] (exec form: distroless has no shell)", name)
			} else if hc.Timeout != nil {
				checkProbeTimeout(t, "service "+name+"'s healthcheck timeout", time.Duration(*hc.Timeout).String())
			}
			grace := 10 * time.Second // Docker's default
			if s.StopGracePeriod != nil {
				grace = time.Duration(*s.StopGracePeriod)
			}
			if d := shutdownTimeout(t, envs[name]); grace <= d {
				t.Errorf("service %s has stop_grace_period %s, not longer than SHUTDOWN_TIMEOUT %s", name, grace, d)
			}
			if s.Restart != types.RestartPolicyUnlessStopped {
				t.Errorf("service %s has restart %q; want %q", name, s.Restart, types.RestartPolicyUnlessStopped)
			}
			// The Redis nodes are no cluster before the init job succeeded.
			deps := map[string]string{inits[0]: types.ServiceConditionCompletedSuccessfully}
			for _, b := range brokers {
				deps[b] = types.ServiceConditionHealthy
			}
			for _, dep := range sortedKeys(deps) {
				if d, ok := s.DependsOn[dep]; !ok || d.Condition != deps[dep] {
					t.Errorf("service %s depends on %s with %+v; want condition %q", name, dep, d, deps[dep])
				}
			}
		}
	})
}

// checkKafkaQuorum checks that the brokers are one KRaft cluster whose controller quorum is all of
// them, and that internal and created topics are replicated to survive one broker away.
func checkKafkaQuorum(t *testing.T, p *types.Project, brokers []string) {
	t.Helper()
	var voters, clusterID string
	nodeIDs := map[string]string{} // node id -> service
	for _, name := range brokers {
		env := environment(p.Services[name])
		if roles := strings.Split(env["KAFKA_PROCESS_ROLES"], ","); !slices.Contains(roles, "broker") || !slices.Contains(roles, "controller") {
			t.Errorf("broker %s has KAFKA_PROCESS_ROLES=%q; want broker,controller", name, env["KAFKA_PROCESS_ROLES"])
		}
		if b, err := base64.RawURLEncoding.DecodeString(env["CLUSTER_ID"]); err != nil || len(b) != 16 {
			t.Errorf("broker %s has CLUSTER_ID=%q; want a base64url UUID (22 characters)", name, env["CLUSTER_ID"])
		}
		if clusterID != "" && env["CLUSTER_ID"] != clusterID || voters != "" && env["KAFKA_CONTROLLER_QUORUM_VOTERS"] != voters {
			t.Errorf("broker %s has another CLUSTER_ID or KAFKA_CONTROLLER_QUORUM_VOTERS than %s: they would not form one cluster", name, brokers[0])
		}
		clusterID, voters = env["CLUSTER_ID"], env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
		if other := nodeIDs[env["KAFKA_NODE_ID"]]; other != "" {
			t.Errorf("brokers %s and %s share KAFKA_NODE_ID %s", other, name, env["KAFKA_NODE_ID"])
		}
		nodeIDs[env["KAFKA_NODE_ID"]] = name

		rf, _ := strconv.Atoi(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
		for _, v := range []string{"KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"} {
			if env[v] != strconv.Itoa(len(brokers)) {
				t.Errorf("broker %s has %s=%q; want %d, a replica on every broker", name, v, env[v], len(brokers))
			}
		}
		for _, v := range []string{"KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"} {
			if isr, err := strconv.Atoi(env[v]); err != nil || isr < 2 || isr >= rf {
				t.Errorf("broker %s has %s=%q; want 2..%d: writes kept on two brokers, and taken with one away", name, v, env[v], rf-1)
			}
		}

		listeners := parseListeners(t, "KAFKA_LISTENERS", env["KAFKA_LISTENERS"])
		advertised := parseListeners(t, "KAFKA_ADVERTISED_LISTENERS", env["KAFKA_ADVERTISED_LISTENERS"])
		for _, pc := range p.Services[name].Ports {
			l := listenerOnPort(listeners, strconv.Itoa(int(pc.Target)))
			if want := net.JoinHostPort("localhost", pc.Published); l == "" || advertised[l] != want {
				t.Errorf("broker %s publishes %s:%d, whose listener %q advertises %q; want %q", name, pc.Published, pc.Target, l, advertised[l], want)
			}
		}
	}
	var voterIDs []string
	for _, v := range strings.Split(voters, ",") {
		id, addr, _ := strings.Cut(v, "@")
		host, vport, err := net.SplitHostPort(addr)
		svc := nodeIDs[id]
		if err != nil || svc == "" || host != svc && host != p.Services[svc].Hostname {
			t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS entry %q is not <node id>@<that broker>:<port>", v)
			continue
		}
		env := environment(p.Services[svc])
		l := listenerOnPort(parseListeners(t, "KAFKA_LISTENERS", env["KAFKA_LISTENERS"]), vport)
		if !slices.Contains(strings.Split(env["KAFKA_CONTROLLER_LISTENER_NAMES"], ","), l) {
			t.Errorf("voter %q: port %s of %s is listener %q, not a controller listener (%s)", v, vport, svc, l, env["KAFKA_CONTROLLER_LISTENER_NAMES"])
		}
		voterIDs = append(voterIDs, id)
	}
	if slices.Sort(voterIDs); !slices.Equal(voterIDs, slices.Sorted(maps.Keys(nodeIDs))) {
		t.Errorf("the controller quorum is nodes %v; want every broker %v", voterIDs, slices.Sorted(maps.Keys(nodeIDs)))
	}
}

// composeBroker returns the broker service that addr, as a seed broker of another container,
// reaches: its host is the service, its port a client listener advertising exactly addr.
func composeBroker(t *testing.T, p *types.Project, brokers []string, addr string) string {
	t.Helper()
	host, bport, err := net.SplitHostPort(addr)
	if err != nil || !slices.Contains(brokers, host) {
		t.Errorf("seed broker %q is not <broker service>:<port> (brokers %v)", addr, brokers)
		return ""
	}
	env := environment(p.Services[host])
	l := listenerOnPort(parseListeners(t, "KAFKA_LISTENERS", env["KAFKA_LISTENERS"]), bport)
	advertised := parseListeners(t, "KAFKA_ADVERTISED_LISTENERS", env["KAFKA_ADVERTISED_LISTENERS"])
	if l == "" || slices.Contains(strings.Split(env["KAFKA_CONTROLLER_LISTENER_NAMES"], ","), l) || advertised[l] != addr {
		t.Errorf("seed broker %q: listener %q on port %s advertises %q; want a client listener advertising %q", addr, l, bport, advertised[l], addr)
		return ""
	}
	return host
}

// checkRedisCluster checks the Redis Cluster nodes and the one-shot job that joins them.
func checkRedisCluster(t *testing.T, p *types.Project, nodes []string, initJob string) {
	t.Helper()
	var addrs []string
	for _, name := range nodes {
		s := p.Services[name]
		argv := append(slices.Clone(s.Entrypoint), s.Command...)
		if flagValue(argv, "--appendonly", "no") != "yes" {
			t.Errorf("node %s runs %q; want --appendonly yes, or its slots' data is lost with the container", name, argv)
		}
		if h := flagValue(argv, "--cluster-announce-hostname", name); h != name {
			t.Errorf("node %s announces hostname %q, which the other containers cannot resolve", name, h)
		}
		if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 {
			t.Errorf("node %s has no healthcheck, so %s cannot wait for it", name, initJob)
		}
		if d, ok := p.Services[initJob].DependsOn[name]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("service %s does not wait for node %s to be healthy", initJob, name)
		}
		addrs = append(addrs, net.JoinHostPort(name, flagValue(argv, "--port", redisPort)))
	}
	s := p.Services[initJob]
	script := strings.Join(append(slices.Clone(s.Entrypoint), s.Command...), " ")
	_, create, _ := strings.Cut(script, "--cluster create")
	create, _, _ = strings.Cut(create, "\n")
	fields := strings.Fields(create)
	var created []string
	for _, f := range fields {
		if strings.HasPrefix(f, "-") {
			break
		}
		created = append(created, f)
	}
	if slices.Sort(created); !slices.Equal(created, addrs) {
		t.Errorf("%s creates the cluster of %v; want every node %v", initJob, created, addrs)
	}
	if flagValue(fields, "--cluster-replicas", "") != "0" || !slices.Contains(fields, "--cluster-yes") {
		t.Errorf("%s runs --cluster create%s; want --cluster-replicas 0 (three masters) and --cluster-yes (no prompt)", initJob, create)
	}
	if s.Restart != "" && s.Restart != types.RestartPolicyNo {
		t.Errorf("%s has restart %q; want none: it runs once", initJob, s.Restart)
	}
}

// k8sManifests are the objects under deploy/k8s, decoded strictly.
type k8sManifests struct {
	statefulSets []appsv1.StatefulSet
	services     []corev1.Service
	configMaps   map[string]corev1.ConfigMap
	pdbs         []policyv1.PodDisruptionBudget
}

var yamlDocSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func loadK8s(t *testing.T) k8sManifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", k8sDir, err)
	}
	m := k8sManifests{configMaps: map[string]corev1.ConfigMap{}}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range yamlDocSeparator.Split(string(data), -1) {
			var fields map[string]any
			if err := yaml.Unmarshal([]byte(doc), &fields); err != nil {
				t.Fatalf("%s document %d: %v", file, i+1, err)
			}
			if len(fields) == 0 {
				continue // comments only
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s document %d: %v", file, i+1, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 StatefulSet":
				obj = &appsv1.StatefulSet{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "policy/v1 PodDisruptionBudget":
				obj = &policyv1.PodDisruptionBudget{}
			default:
				t.Fatalf("%s document %d is a %s %s, which this test does not check", file, i+1, tm.APIVersion, tm.Kind)
			}
			// Strict: an unknown or misspelt field is an error, as `kubectl apply` would report it.
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", file, i+1, tm.Kind, err)
			}
			switch o := obj.(type) {
			case *appsv1.StatefulSet:
				m.statefulSets = append(m.statefulSets, *o)
			case *corev1.Service:
				m.services = append(m.services, *o)
			case *corev1.ConfigMap:
				m.configMaps[o.Name] = *o
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, *o)
			}
		}
	}
	return m
}

// containerPort resolves a probe's or a Service's target port (a number or a port name) to the
// container's port number, "" when the container has no such port.
func containerPort(c corev1.Container, name string, number int32) string {
	for _, p := range c.Ports {
		if name != "" && p.Name == name || name == "" && p.ContainerPort == number {
			return strconv.Itoa(int(p.ContainerPort))
		}
	}
	return ""
}

// TestK8sManifests checks deploy/k8s: the StatefulSet, its Services, ConfigMap and
// PodDisruptionBudget agree with each other and with what the daemon reads and serves.
func TestK8sManifests(t *testing.T) {
	m := loadK8s(t)
	if len(m.statefulSets) != 1 {
		t.Fatalf("%s has %d StatefulSets; want 1", k8sDir, len(m.statefulSets))
	}
	sts := m.statefulSets[0]
	pod := sts.Spec.Template
	podLabels := k8slabels.Set(pod.Labels)
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("StatefulSet %s has %d containers; want 1", sts.Name, len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	selects := func(what string, sel *metav1.LabelSelector) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Errorf("%s: selector: %v", what, err)
			return false
		}
		return !s.Empty() && s.Matches(podLabels)
	}

	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Errorf("container %s takes env from %+v; want ConfigMaps only (secrets as *_PASSWORD_FILE files)", c.Name, from)
			continue
		}
		cm, ok := m.configMaps[from.ConfigMapRef.Name]
		if !ok {
			t.Fatalf("container %s takes env from ConfigMap %q, which %s does not define", c.Name, from.ConfigMapRef.Name, k8sDir)
		}
		maps.Copy(env, cm.Data)
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.Name == "INSTANCE_ID" {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("INSTANCE_ID is %+v; want the pod's name (fieldRef metadata.name), stable across restarts in a StatefulSet", e)
			}
			env[e.Name] = sts.Name + "-0"
		}
	}
	if _, ok := env["INSTANCE_ID"]; !ok {
		t.Errorf("container %s sets no INSTANCE_ID", c.Name)
	}
	cfg := checkConfigEnv(t, "StatefulSet "+sts.Name, env)

	t.Run("stable identity", func(t *testing.T) {
		if !selects("StatefulSet "+sts.Name, sts.Spec.Selector) {
			t.Errorf("StatefulSet %s's selector %v does not select its own pods %v", sts.Name, sts.Spec.Selector, pod.Labels)
		}
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != clusterReplicas {
			t.Errorf("StatefulSet %s has replicas %v; want %d", sts.Name, sts.Spec.Replicas, clusterReplicas)
		}
		i := slices.IndexFunc(m.services, func(s corev1.Service) bool { return s.Name == sts.Spec.ServiceName })
		if i < 0 || m.services[i].Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet %s's serviceName %q is not a headless Service here: its pods get no stable DNS names", sts.Name, sts.Spec.ServiceName)
		}
	})

	t.Run("probes", func(t *testing.T) {
		ports := probePorts(t, cfg)
		for _, tt := range []struct {
			kind, path string
			probe      *corev1.Probe
		}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
			if tt.probe == nil || tt.probe.HTTPGet == nil {
				t.Errorf("container %s has no HTTP %s probe", c.Name, tt.kind)
				continue
			}
			get := tt.probe.HTTPGet
			if get.Path != tt.path {
				t.Errorf("the %s probe gets %s; want %s", tt.kind, get.Path, tt.path)
			}
			if p := containerPort(c, get.Port.StrVal, get.Port.IntVal); !slices.Contains(ports, p) {
				t.Errorf("the %s probe targets port %s (container port %q); the daemon serves %s on %v (HTTP_ADDR with the api stage, ADMIN_ADDR when set)",
					tt.kind, get.Port.String(), p, tt.path, ports)
			}
			if d := time.Duration(tt.probe.TimeoutSeconds) * time.Second; d <= readyzOwnTimeout {
				t.Errorf("the %s probe's timeoutSeconds is %d; want more than /readyz's own %s", tt.kind, tt.probe.TimeoutSeconds, readyzOwnTimeout)
			}
		}
	})

	t.Run("prometheus scrapes /metrics", func(t *testing.T) {
		metricsPort := port(t, "HTTP_ADDR", cfg.HTTPAddr)
		if cfg.AdminAddr != "" {
			metricsPort = port(t, "ADMIN_ADDR", cfg.AdminAddr) // /metrics moves there
		}
		n, _ := strconv.Atoi(pod.Annotations["prometheus.io/port"])
		if pod.Annotations["prometheus.io/scrape"] != "true" || containerPort(c, "", int32(n)) != metricsPort ||
			pod.Annotations["prometheus.io/path"] != "/metrics" {
			t.Errorf("the pods' prometheus.io annotations are %v; want scrape \"true\", path /metrics and port %s, where the daemon serves /metrics as a container port",
				pod.Annotations, metricsPort)
		}
	})

	t.Run("services select the pods", func(t *testing.T) {
		api := false
		for _, s := range m.services {
			if len(s.Spec.Selector) == 0 || !k8slabels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
				t.Errorf("Service %s selects %v, not the pods %v", s.Name, s.Spec.Selector, pod.Labels)
			}
			for _, sp := range s.Spec.Ports {
				target := containerPort(c, sp.TargetPort.StrVal, sp.TargetPort.IntVal)
				if sp.TargetPort.StrVal == "" && sp.TargetPort.IntVal == 0 {
					target = containerPort(c, "", sp.Port) // targetPort defaults to port
				}
				if target == "" {
					t.Errorf("Service %s port %d targets %s, which container %s does not expose", s.Name, sp.Port, sp.TargetPort.String(), c.Name)
				}
				if s.Spec.ClusterIP != corev1.ClusterIPNone && cfg.Enabled(config.StageAPI) && target == port(t, "HTTP_ADDR", cfg.HTTPAddr) &&
					strconv.Itoa(int(sp.Port)) == port(t, "HTTP_ADDR default", varDefault(t, "HTTP_ADDR")) {
					api = true
				}
			}
		}
		if !api {
			t.Errorf("no Service balances port %s over the pods' API (HTTP_ADDR)", port(t, "HTTP_ADDR default", varDefault(t, "HTTP_ADDR")))
		}
	})

	t.Run("disruption budget", func(t *testing.T) {
		if len(m.pdbs) != 1 {
			t.Fatalf("%s has %d PodDisruptionBudgets; want 1", k8sDir, len(m.pdbs))
		}
		pdb := m.pdbs[0]
		if !selects("PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector) {
			t.Errorf("PodDisruptionBudget %s selects %v, not the pods %v", pdb.Name, pdb.Spec.Selector, pod.Labels)
		}
		// One pod at a time may go: a drain proceeds, and the others keep every partition served.
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			if pdb.Spec.MaxUnavailable.String() != "1" {
				t.Errorf("PodDisruptionBudget %s has maxUnavailable %s; want 1", pdb.Name, pdb.Spec.MaxUnavailable.String())
			}
		case pdb.Spec.MinAvailable != nil:
			if pdb.Spec.MinAvailable.String() != strconv.Itoa(clusterReplicas-1) {
				t.Errorf("PodDisruptionBudget %s has minAvailable %s; want %d", pdb.Name, pdb.Spec.MinAvailable.String(), clusterReplicas-1)
			}
		default:
			t.Errorf("PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", pdb.Name)
		}
	})

	t.Run("resources, stop and security", func(t *testing.T) {
		req, lim := c.Resources.Requests, c.Resources.Limits
		if req.Cpu().IsZero() || req.Memory().IsZero() {
			t.Errorf("container %s requests %v; want cpu and memory", c.Name, req)
		}
		if lim.Memory().IsZero() || lim.Memory().Cmp(*req.Memory()) < 0 {
			t.Errorf("container %s limits memory to %v with a request of %v; want a limit at or above the request", c.Name, lim.Memory(), req.Memory())
		}
		grace := int64(30) // Kubernetes' default
		if pod.Spec.TerminationGracePeriodSeconds != nil {
			grace = *pod.Spec.TerminationGracePeriodSeconds
		}
		if d := shutdownTimeout(t, env); time.Duration(grace)*time.Second <= d {
			t.Errorf("terminationGracePeriodSeconds %d is not longer than SHUTDOWN_TIMEOUT %s: the kubelet kills the drain", grace, d)
		}
		psc, sc := pod.Spec.SecurityContext, c.SecurityContext
		nonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot || sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
		if !nonRoot || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: want runAsNonRoot, readOnlyRootFilesystem and no privilege escalation (the image is a static binary)", c.Name)
		}
	})
}

// promQLRef is one metric a PromQL expression selects, with the label matchers it selects by.
type promQLRef struct {
	where, name string
	matchers    []*labels.Matcher
}

// grafanaVar is a dashboard variable in a query: $name, ${name} or ${name:format}.
var grafanaVar = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// promQLRefs parses expr (Grafana's variables replaced by values PromQL accepts) and returns the
// metrics it selects.
func promQLRefs(t *testing.T, where, expr string) []promQLRef {
	t.Helper()
	expr = grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.Contains(v, "__rate_interval") || strings.Contains(v, "__interval") || strings.Contains(v, "__range") {
			return "5m"
		}
		return ".*" // a label value of a =~ matcher
	})
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var out []promQLRef
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		ref := promQLRef{where: where, name: vs.Name}
		for _, m := range vs.LabelMatchers {
			switch {
			case m.Name != model.MetricNameLabel:
				ref.matchers = append(ref.matchers, m)
			case m.Type == labels.MatchEqual:
				ref.name = m.Value
			default:
				t.Errorf("%s: %q selects metric names by %s; name them, so they can be checked", where, expr, m)
			}
		}
		out = append(out, ref)
		return nil
	})
	if len(out) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	return out
}

// labelValues matches Grafana's label_values(<selector>, <label>) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// dashboardRefs returns the metrics the dashboard's panels and variables select.
func dashboardRefs(t *testing.T) []promQLRef {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"` // a collapsed row's
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name, Type string
				Definition string          `json:"definition"`
				Query      json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("%s has no uid or title", dashboardFile)
	}
	var refs []promQLRef
	hasDatasourceVar := false
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource":
			hasDatasourceVar = v.Name == "datasource"
		case "query":
			q := labelValues.FindStringSubmatch(v.Definition)
			if q == nil {
				t.Errorf("%s: variable %s queries %q; want label_values(<metric>, <label>)", dashboardFile, v.Name, v.Definition)
				continue
			}
			refs = append(refs, promQLRefs(t, dashboardFile+" variable "+v.Name, q[1])...)
		}
	}
	if !hasDatasourceVar {
		t.Errorf("%s has no datasource variable named datasource: panels would be tied to one Prometheus", dashboardFile)
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d is used twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" || p.Type == "text" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q does not use the datasource variable", dashboardFile, p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				refs = append(refs, promQLRefs(t, fmt.Sprintf("%s panel %q %s", dashboardFile, p.Title, tg.RefID), tg.Expr)...)
			}
		}
	}
	walk(dash.Panels)
	return refs
}

// alertRules is deploy/prometheus/alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readAlertRules(t *testing.T) alertRules {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return rules
}

func alertRefs(t *testing.T) []promQLRef {
	t.Helper()
	var refs []promQLRef
	for _, g := range readAlertRules(t).Groups {
		for _, r := range g.Rules {
			refs = append(refs, promQLRefs(t, alertsFile+" alert "+r.Alert, r.Expr)...)
		}
	}
	return refs
}

// targetLabels are attached by Prometheus to every series it scrapes, not exported by the daemon.
var targetLabels = []string{"instance", "job"}

// literalAlternatives matches a regexp label matcher that only lists values, e.g. "a|b".
var literalAlternatives = regexp.MustCompile(`^[\w.:/-]+(\|[\w.:/-]+)*$`)

// exportedSeries maps each series name a scrape exposes (a histogram's _bucket, _sum and _count,
// not its family name) to the label sets it carries.
type exportedSeries map[string][]map[string]string

func seriesOf(families map[string]*dto.MetricFamily) exportedSeries {
	out := exportedSeries{}
	for name, f := range families {
		var names []string
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names = []string{name + "_bucket", name + "_sum", name + "_count"}
		case dto.MetricType_SUMMARY:
			names = []string{name, name + "_sum", name + "_count"}
		default:
			names = []string{name}
		}
		for _, m := range f.GetMetric() {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			for _, n := range names {
				out[n] = append(out[n], ls)
			}
		}
	}
	return out
}

// missing returns what of ref the scrape lacks: the metric, or for each label value ref's matchers
// name literally, a series of the metric that carries it (with ref's other equality matchers).
func (s exportedSeries) missing(ref promQLRef) []string {
	series, ok := s[ref.name]
	if !ok {
		return []string{ref.name}
	}
	var out []string
	for _, m := range ref.matchers {
		if slices.Contains(targetLabels, m.Name) {
			continue
		}
		var values []string
		switch {
		case m.Type == labels.MatchEqual:
			values = []string{m.Value}
		case m.Type == labels.MatchRegexp && literalAlternatives.MatchString(m.Value):
			values = strings.Split(m.Value, "|")
		default:
			continue
		}
		for _, v := range values {
			found := slices.ContainsFunc(series, func(ls map[string]string) bool {
				if ls[m.Name] != v {
					return false
				}
				for _, other := range ref.matchers {
					if other != m && other.Type == labels.MatchEqual && !slices.Contains(targetLabels, other.Name) && ls[other.Name] != other.Value {
						return false
					}
				}
				return true
			})
			if !found {
				out = append(out, fmt.Sprintf("%s{%s=%q}", ref.name, m.Name, v))
			}
		}
	}
	return out
}

// replayWithDeadLetter is two searches in the original TSV format: three valid events and a hotel
// whose only offer is 0 eurocents, which the transformer dead-letters (non_positive_eurocents).
const replayWithDeadLetter = "u1\t1620224528\t{6036:{\"advertisers\":{\"Amoma\":[{\"eurocents\":17558,\"breakfast\":false}]}},6035:{\"advertisers\":{\"Mercure\":[{\"eurocents\":13328,\"breakfast\":true}]}}}\n" +
	"u2\t1620224529\t{7046:{\"advertisers\":{\"Destinia\":[{\"eurocents\":0,\"breakfast\":false}]}},6036:{\"advertisers\":{\"expedia\":[{\"eurocents\":11471,\"breakfast\":null}]}}}\n"

// scrapeDaemon runs the pipeline in process on embedded defaults, replaying replayWithDeadLetter,
// and scrapes its /metrics until ready says the scrape holds what the test needs, or 25s pass.
// It scrapes ADMIN_ADDR, as Prometheus does in deploy/k8s (with ADMIN_ADDR set, /metrics is served
// there only), and like Prometheus it accepts gzip (Go's transport asks for it).
func scrapeDaemon(t *testing.T, ready func(exportedSeries) []string) exportedSeries {
	t.Helper()
	replay := filepath.Join(t.TempDir(), "replay.tsv")
	if err := os.WriteFile(replay, []byte(replayWithDeadLetter), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": "", "DATA_DIR": t.TempDir(), "EMBEDDED_KAFKA_ADDR": "127.0.0.1:0",
		"HTTP_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0", "GENERATOR_REPLAY_FILE": replay, "GENERATOR_RATE": "0", "TOPIC_PARTITIONS": "2",
	}
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- pipeline.RunWith(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
			pipeline.Options{OnListening: func(api, admin string) { listening <- [2]string{api, admin} }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the daemon's drain: %v", err)
			}
		case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
			t.Errorf("the daemon did not stop within SHUTDOWN_TIMEOUT")
		}
	})

	deadline := time.After(25 * time.Second)
	var addrs [2]string // the API's, the admin server's
	select {
	case addrs = <-listening:
	case err := <-done:
		t.Fatalf("the daemon stopped before it listened: %v", err)
	case <-deadline:
		t.Fatal("the daemon did not listen within 25s")
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lacking []string
	for {
		// The API's own request metrics appear once it served a request.
		if resp, err := http.Get("http://" + addrs[0] + "/users?limit=1"); err == nil {
			resp.Body.Close()
		}
		series, err := scrape(ctx, "http://"+addrs[1]+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if lacking = ready(series); len(lacking) == 0 {
			return series
		}
		select {
		case <-tick.C:
		case err := <-done:
			t.Fatalf("the daemon stopped: %v", err)
		case <-deadline:
			t.Fatalf("after 25s the daemon's /metrics still lacks %v", lacking)
		}
	}
}

func scrape(ctx context.Context, url string) (exportedSeries, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return seriesOf(families), nil
}

// TestGrafanaDashboardAndAlertsUseExportedMetrics parses every PromQL expression of the Grafana
// dashboard and the alert rules, runs the daemon until events flowed and one was dead-lettered,
// and checks that every metric they select, and every label value they select it by, is in its
// /metrics. It also checks that each file covers what it is for.
func TestGrafanaDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	dash, alerts := dashboardRefs(t), alertRefs(t)
	// want: a metric name, or a name and one event it must select ("name event").
	covers := func(file string, refs []promQLRef, want ...string) {
		for _, w := range want {
			name, event, _ := strings.Cut(w, " ")
			if !slices.ContainsFunc(refs, func(r promQLRef) bool {
				return r.name == name && (event == "" || slices.ContainsFunc(r.matchers, func(m *labels.Matcher) bool {
					return m.Name == "event" && m.Matches(event)
				}))
			}) {
				t.Errorf("%s does not select %s", file, w)
			}
		}
	}
	covers(dashboardFile, dash, "searchflow_ready", "searchflow_stage_events_total applied", "searchflow_consumer_lag", "searchflow_dead_letters_total",
		"searchflow_end_to_end_latency_seconds_bucket", "searchflow_stage_events_total redis_errors", "searchflow_stage_events_total apply_refused")
	covers(alertsFile, alerts, "searchflow_ready", "searchflow_consumer_lag", "searchflow_dead_letters_total",
		"searchflow_stage_events_total redis_errors", "searchflow_stage_events_total apply_refused")
	if t.Failed() {
		t.FailNow() // a query that does not parse would only be reported again below
	}

	refs := append(dash, alerts...)
	lacking := func(s exportedSeries) []string {
		var out []string
		for _, r := range refs {
			out = append(out, s.missing(r)...)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	series := scrapeDaemon(t, lacking)
	// Guard the guard: the scrape is real, and a name the daemon does not export is caught.
	if _, ok := series["searchflow_end_to_end_latency_seconds"]; ok {
		t.Errorf("a histogram's family name counts as a series name; only its _bucket, _sum and _count are")
	}
	if got := series.missing(promQLRefs(t, "made-up", `rate(searchflow_stage_event_total[5m])`)[0]); len(got) == 0 {
		t.Errorf("a misspelt metric name is not reported missing")
	}
}

// TestAlertRulesPromtool checks deploy/prometheus/alerts.yml with promtool, runs its unit tests,
// and checks that each alert has a test in which it fires.
func TestAlertRulesPromtool(t *testing.T) {
	data, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatalf("%s: %v", alertsTestFile, err)
	}
	if !slices.Contains(tests.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("%s tests rule files %v; want %s", alertsTestFile, tests.RuleFiles, filepath.Base(alertsFile))
	}
	fires := map[string]bool{}
	for _, tt := range tests.Tests {
		for _, a := range tt.AlertRuleTest {
			fires[a.Alertname] = fires[a.Alertname] || len(a.ExpAlerts) > 0
		}
	}
	for _, g := range readAlertRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !fires[r.Alert] {
				t.Errorf("alert %s has no test in %s in which it fires", r.Alert, alertsTestFile)
			}
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SEARCHFLOW_REQUIRE_PROMTOOL") == "" {
			t.Skipf("promtool not found (apt-get install prometheus); .ci/run sets SEARCHFLOW_REQUIRE_PROMTOOL=1 so CI never skips: %v", err)
		}
		t.Fatalf("SEARCHFLOW_REQUIRE_PROMTOOL is set and promtool is not found: %v", err)
	}
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTestFile}} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		cancel()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		case err != nil:
			t.Fatalf("promtool %s: %v", strings.Join(args, " "), err)
		case !strings.Contains(string(out), "SUCCESS"):
			t.Errorf("promtool %s says no SUCCESS:\n%s", strings.Join(args, " "), out)
		}
	}
}
