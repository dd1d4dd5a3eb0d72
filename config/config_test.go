package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	if !reflect.DeepEqual(c.Stages, AllStages()) {
		t.Errorf("Stages = %v", c.Stages)
	}
	if !c.EmbeddedKafka() || !c.EmbeddedRedis() {
		t.Errorf("no brokers and no redis must select the embedded services")
	}
	checks := map[string][2]any{
		"EmbeddedKafkaAddr": {c.EmbeddedKafkaAddr, "127.0.0.1:9092"},
		"DataDir":           {c.DataDir, "./data"},
		"RawTopic":          {c.RawTopic, "raw_events"},
		"ProcessedTopic":    {c.ProcessedTopic, "processed_events"},
		"DeadLetterTopic":   {c.DeadLetterTopic, "dead_letter_events"},
		"TopicPartitions":   {c.TopicPartitions, 6},
		"HTTPAddr":          {c.HTTPAddr, ":5000"},
		"ShutdownTimeout":   {c.ShutdownTimeout, 30 * time.Second},
		"LogFormat":         {c.LogFormat, "json"},
	}
	for name, got := range checks {
		if got[0] != got[1] {
			t.Errorf("%s = %v, want %v", name, got[0], got[1])
		}
	}
}

func TestLoadValues(t *testing.T) {
	dir := t.TempDir()
	replay := filepath.Join(dir, "replay.txt")
	if err := os.WriteFile(replay, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{
		"STAGES":                " api , Aggregator,api",
		"KAFKA_BROKERS":         "k1:9092, k2:9093",
		"REDIS_ADDR":            "redis:6379",
		"REDIS_PASSWORD":        "hunter2",
		"REDIS_DB":              "3",
		"GENERATOR_RATE":        "0",
		"GENERATOR_MAX_EVENTS":  "500",
		"GENERATOR_SEED":        "-7",
		"GENERATOR_REPLAY_FILE": replay,
		"SHUTDOWN_TIMEOUT":      "5s",
		"LOG_LEVEL":             "DEBUG",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Stages, []string{"api", "aggregator"}) {
		t.Errorf("Stages = %v", c.Stages)
	}
	if c.Enabled(StageGenerator) || !c.Enabled(StageAPI) {
		t.Errorf("Enabled disagrees with Stages %v", c.Stages)
	}
	if !reflect.DeepEqual(c.KafkaBrokers, []string{"k1:9092", "k2:9093"}) || c.EmbeddedKafka() || c.EmbeddedRedis() {
		t.Errorf("brokers = %v redis = %q", c.KafkaBrokers, c.RedisAddrs)
	}
	if c.RedisDB != 3 || c.GeneratorRate != 0 || c.GeneratorMaxEvents != 500 || c.GeneratorSeed != -7 ||
		c.ShutdownTimeout != 5*time.Second || c.LogLevel != "debug" || c.GeneratorReplayFile != replay {
		t.Errorf("parsed %+v", c)
	}
	if got := c.Masked()["REDIS_PASSWORD"]; got != "***" {
		t.Errorf("password not masked: %v", got)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"STAGES":                     "generator,mixer",
		"KAFKA_BROKERS":              "nohostport",
		"EMBEDDED_KAFKA_ADDR":        "localhost",
		"REDIS_ADDR":                 "redis",
		"REDIS_DB":                   "16",
		"RAW_TOPIC":                  "bad topic",
		"TOPIC_PARTITIONS":           "0",
		"HTTP_ADDR":                  "5000",
		"GENERATOR_RATE":             "-1",
		"GENERATOR_MAX_EVENTS":       "many",
		"GENERATOR_SEED":             "x",
		"GENERATOR_USERS":            "0",
		"GENERATOR_HOTELS":           "1.5",
		"GENERATOR_REPLAY_FILE":      "/does/not/exist",
		"BATCH_MAX_RECORDS":          "0",
		"SHUTDOWN_TIMEOUT":           "30",
		"STATS_INTERVAL":             "-1s",
		"LOG_LEVEL":                  "loud",
		"LOG_FORMAT":                 "xml",
		"ADMIN_ADDR":                 "admin",
		"CORS_ORIGINS":               "example.com",
		"EMBEDDED_RETENTION":         "500ms",
		"EMBEDDED_RETENTION_MB":      "0",
		"EMBEDDED_SNAPSHOT_INTERVAL": "2h",
		"ALLOWED_LATENESS":           "-1m",
		"TREND_WINDOWS":              "1h,10s",
		"GENERATOR_DISORDER":         "48h",
		"GENERATOR_LATE_FRACTION":    "1.5",
		"GENERATOR_SKEW":             "NaN",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(map[string]string{name: value}))
			if err == nil {
				t.Fatalf("%s=%q accepted", name, value)
			}
			if !strings.HasPrefix(err.Error(), name+": ") || !strings.Contains(err.Error(), "accepts ") {
				t.Errorf("error %q does not name %s and what it accepts", err, name)
			}
		})
	}
	// Every bad variable is reported at once.
	all := map[string]string{}
	for k, v := range cases {
		all[k] = v
	}
	_, err := Load(env(all))
	for name := range cases {
		if !strings.Contains(err.Error(), name+": ") {
			t.Errorf("joined error misses %s: %v", name, err)
		}
	}
}

func TestTrendSettings(t *testing.T) {
	c, err := Load(env(map[string]string{"ALLOWED_LATENESS": "0", "TREND_WINDOWS": "24h, 1h ,7m"}))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, w := range c.TrendWindows {
		names = append(names, w.Name())
	}
	if c.AllowedLateness != 0 || strings.Join(names, ",") != "7m,1h,24h" {
		t.Errorf("lateness %s, windows %v: want 0 and 7m,1h,24h (sorted by size)", c.AllowedLateness, names)
	}
	if got := c.Masked()["TREND_WINDOWS"]; got != "7m,1h,24h" {
		t.Errorf("Masked TREND_WINDOWS = %v", got)
	}
	_, err = Load(env(map[string]string{"TREND_WINDOWS": "1h,60m"}))
	if err == nil || !strings.Contains(err.Error(), "same window as element 1") {
		t.Errorf("1h,60m: err = %v, want the duplicate named", err)
	}
}

func TestLoadRejectsSharedTopics(t *testing.T) {
	_, err := Load(env(map[string]string{"PROCESSED_TOPIC": "raw_events"}))
	if err == nil || !strings.Contains(err.Error(), "PROCESSED_TOPIC") {
		t.Fatalf("err = %v", err)
	}
}

func TestVarsAreAllRead(t *testing.T) {
	// Every documented variable must change what Load reads: set each to a marker and make sure
	// Load asked for it.
	asked := map[string]bool{}
	_, _ = Load(func(k string) string { asked[k] = true; return "" })
	for _, v := range Vars() {
		if !asked[v.Name] {
			t.Errorf("%s is documented but never read", v.Name)
		}
	}
	if len(asked) != len(Vars()) {
		t.Errorf("Load reads %d variables, Vars lists %d", len(asked), len(Vars()))
	}
}

func TestSecretsKeptAsGivenAndReadFromFiles(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(" s3cret with spaces \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{
		"KAFKA_BROKERS": "k:9092", "KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_USERNAME": "svc",
		"KAFKA_SASL_PASSWORD": "  padded  ", "REDIS_ADDR": "r:6379", "REDIS_USERNAME": "searchflow",
		"REDIS_PASSWORD_FILE": pwFile,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.KafkaSASL.Password != "  padded  " {
		t.Errorf("KAFKA_SASL_PASSWORD trimmed to %q", c.KafkaSASL.Password)
	}
	if c.KafkaSASL.Mechanism != "SCRAM-SHA-512" {
		t.Errorf("mechanism = %q", c.KafkaSASL.Mechanism)
	}
	if c.RedisPassword != " s3cret with spaces " {
		t.Errorf("REDIS_PASSWORD_FILE read as %q: only the trailing newline may go", c.RedisPassword)
	}
	m := c.Masked()
	for _, k := range []string{"KAFKA_SASL_PASSWORD", "REDIS_PASSWORD"} {
		if m[k] != "***" {
			t.Errorf("%s not masked: %v", k, m[k])
		}
	}
	for k, v := range m {
		if s, ok := v.(string); ok && (strings.Contains(s, "padded") || strings.Contains(s, "s3cret")) {
			t.Errorf("Masked()[%s] shows a secret: %q", k, s)
		}
	}
}

func TestSecurityErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	pem := filepath.Join(dir, "ca.pem")
	empty := filepath.Join(dir, "empty")
	short := filepath.Join(dir, "short")
	for f, body := range map[string]string{pem: "x", empty: "# no tokens\n\n", short: "abc\n"} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ext := map[string]string{"KAFKA_BROKERS": "k:9092", "REDIS_ADDR": "r:6379"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range ext {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		env  map[string]string
		want string // the variable the error must name
	}{
		{"unknown mechanism", with("KAFKA_SASL_MECHANISM", "GSSAPI", "KAFKA_SASL_USERNAME", "u", "KAFKA_SASL_PASSWORD", "p"), "KAFKA_SASL_MECHANISM"},
		{"mechanism without user", with("KAFKA_SASL_MECHANISM", "PLAIN", "KAFKA_SASL_PASSWORD", "p"), "KAFKA_SASL_USERNAME"},
		{"mechanism without password", with("KAFKA_SASL_MECHANISM", "PLAIN", "KAFKA_SASL_USERNAME", "u"), "KAFKA_SASL_PASSWORD"},
		{"password twice", with("REDIS_PASSWORD", "a", "REDIS_PASSWORD_FILE", pem), "REDIS_PASSWORD_FILE"},
		{"missing password file", with("KAFKA_SASL_PASSWORD_FILE", "/does/not/exist"), "KAFKA_SASL_PASSWORD_FILE"},
		{"bad bool", with("KAFKA_TLS", "maybe"), "KAFKA_TLS"},
		{"ca without tls", with("REDIS_TLS_CA_FILE", pem), "REDIS_TLS_CA_FILE"},
		{"cert without key", with("KAFKA_TLS", "true", "KAFKA_TLS_CERT_FILE", pem), "KAFKA_TLS_CERT_FILE"},
		{"unreadable ca", with("KAFKA_TLS", "true", "KAFKA_TLS_CA_FILE", "/does/not/exist"), "KAFKA_TLS_CA_FILE"},
		{"sasl on embedded broker", map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_MECHANISM"},
		{"tls on embedded store", map[string]string{"REDIS_TLS": "true"}, "REDIS_TLS"},
		{"password on embedded store", map[string]string{"REDIS_PASSWORD": "p"}, "REDIS_ADDR"},
		{"token file without tokens", with("API_TOKENS_FILE", empty), "API_TOKENS_FILE"},
		{"short token", with("API_TOKENS_FILE", short), "API_TOKENS_FILE"},
		{"stream cap", with("STREAM_MAX_CLIENTS", "0"), "STREAM_MAX_CLIENTS"},
		{"advertiser limit", with("MAX_ADVERTISERS_PER_EVENT", "0"), "MAX_ADVERTISERS_PER_EVENT"},
		{"offer limit", with("MAX_OFFERS_PER_ADVERTISER", "x"), "MAX_OFFERS_PER_ADVERTISER"},
		{"name limit", with("MAX_ADVERTISER_NAME_BYTES", "70000"), "MAX_ADVERTISER_NAME_BYTES"},
		{"id limit", with("MAX_ID_BYTES", "-1"), "MAX_ID_BYTES"},
		{"stall timeout", with("STALL_TIMEOUT", "0s"), "STALL_TIMEOUT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(env(tc.env))
			if err == nil {
				t.Fatalf("accepted %v", tc.env)
			}
			if !strings.Contains(err.Error(), tc.want+": ") {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

func TestURLFormAddressDoesNotEchoItsPassword(t *testing.T) {
	_, err := Load(env(map[string]string{"REDIS_ADDR": "redis://default:hunter2@redis.example:6379/0",
		"KAFKA_BROKERS": "sasl://svc:topsecret@k1:9092"}))
	if err == nil {
		t.Fatal("a URL is not host:port")
	}
	for _, secret := range []string{"hunter2", "topsecret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("config error shows the password %q: %v", secret, err)
		}
	}
	if !strings.Contains(err.Error(), "REDIS_ADDR: ") || !strings.Contains(err.Error(), "redis.example:6379") {
		t.Errorf("the error must still name the variable and the host: %v", err)
	}
}

func TestTokensFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tokens")
	body := "# rotated 2026-11\n0123456789abcdef0123\n\n  fedcba9876543210fedc  \n"
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{"API_TOKENS_FILE": f}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.APITokens, []string{"0123456789abcdef0123", "fedcba9876543210fedc"}) {
		t.Errorf("tokens = %q", c.APITokens)
	}
	if strings.Contains(fmt.Sprint(c.Masked()), "0123456789abcdef") {
		t.Error("Masked() shows a token")
	}
}
