package config

import (
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
		t.Errorf("brokers = %v redis = %q", c.KafkaBrokers, c.RedisAddr)
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
		"STAGES":                "generator,mixer",
		"KAFKA_BROKERS":         "nohostport",
		"EMBEDDED_KAFKA_ADDR":   "localhost",
		"REDIS_ADDR":            "redis",
		"REDIS_DB":              "16",
		"RAW_TOPIC":             "bad topic",
		"TOPIC_PARTITIONS":      "0",
		"HTTP_ADDR":             "5000",
		"GENERATOR_RATE":        "-1",
		"GENERATOR_MAX_EVENTS":  "many",
		"GENERATOR_SEED":        "x",
		"GENERATOR_USERS":       "0",
		"GENERATOR_HOTELS":      "1.5",
		"GENERATOR_REPLAY_FILE": "/does/not/exist",
		"BATCH_MAX_RECORDS":     "0",
		"SHUTDOWN_TIMEOUT":      "30",
		"STATS_INTERVAL":        "-1s",
		"LOG_LEVEL":             "loud",
		"LOG_FORMAT":            "xml",
		"ADMIN_ADDR":            "admin",
		"CORS_ORIGINS":          "example.com",
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
