// Package config loads searchflow's configuration from environment variables: one struct, parsed
// and validated once at start, every field with a default and an error that names its variable.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Stage names accepted in STAGES.
const (
	StageGenerator   = "generator"
	StageTransformer = "transformer"
	StageAggregator  = "aggregator"
	StageAPI         = "api"
)

// AllStages lists every stage in pipeline order.
func AllStages() []string {
	return []string{StageGenerator, StageTransformer, StageAggregator, StageAPI}
}

// Config is the whole effective configuration of one searchflow process.
type Config struct {
	Stages []string

	KafkaBrokers      []string // empty: start the embedded broker
	EmbeddedKafkaAddr string
	DataDir           string

	RedisAddr     string // empty: start the embedded store
	RedisPassword string
	RedisDB       int

	RawTopic        string
	ProcessedTopic  string
	DeadLetterTopic string
	TopicPartitions int
	ConsumerGroup   string

	HTTPAddr    string
	AdminAddr   string // empty: /metrics on HTTP_ADDR and no pprof
	CORSOrigins []string

	GeneratorRate       int // events per second, 0 = unlimited
	GeneratorMaxEvents  int64
	GeneratorSeed       int64
	GeneratorUsers      int
	GeneratorHotels     int
	GeneratorReplayFile string

	BatchMaxRecords int
	ShutdownTimeout time.Duration
	StatsInterval   time.Duration
	LogLevel        string
	LogFormat       string
}

// Enabled reports whether the named stage runs in this process.
func (c Config) Enabled(stage string) bool {
	for _, s := range c.Stages {
		if s == stage {
			return true
		}
	}
	return false
}

// EmbeddedKafka reports whether the in-process broker serves this process.
func (c Config) EmbeddedKafka() bool { return len(c.KafkaBrokers) == 0 }

// EmbeddedRedis reports whether the in-process Redis-protocol store serves this process.
func (c Config) EmbeddedRedis() bool { return c.RedisAddr == "" }

// Var describes one environment variable: its name, default and what it accepts.
type Var struct {
	Name    string
	Default string
	Accepts string
	Help    string
}

// Vars lists every variable Load reads, in the order the README's table shows them.
func Vars() []Var {
	return []Var{
		{"STAGES", "generator,transformer,aggregator,api", "comma list of generator, transformer, aggregator, api", "stages this process runs"},
		{"KAFKA_BROKERS", "", "comma list of host:port", "Kafka seed brokers; empty starts the embedded broker"},
		{"EMBEDDED_KAFKA_ADDR", "127.0.0.1:9092", "host:port", "where the embedded broker listens (kcat can connect)"},
		{"DATA_DIR", "./data", "directory path", "where the embedded broker persists its log"},
		{"REDIS_ADDR", "", "host:port", "Redis server; empty starts the embedded in-memory store"},
		{"REDIS_PASSWORD", "", "string", "Redis password (masked in logs)"},
		{"REDIS_DB", "0", "integer 0..15", "Redis database number"},
		{"RAW_TOPIC", "raw_events", "Kafka topic name", "topic the generator writes and the transformer reads"},
		{"PROCESSED_TOPIC", "processed_events", "Kafka topic name", "topic the transformer writes and the aggregator reads"},
		{"DEAD_LETTER_TOPIC", "dead_letter_events", "Kafka topic name", "topic for records the transformer cannot read"},
		{"TOPIC_PARTITIONS", "6", "integer 1..1000", "partitions of topics searchflow creates when missing"},
		{"CONSUMER_GROUP", "searchflow", "string", "prefix of the consumer groups (<prefix>-transformer, <prefix>-aggregator)"},
		{"HTTP_ADDR", ":5000", "host:port", "where the API listens"},
		{"ADMIN_ADDR", "", "host:port", "serve /metrics and /debug/pprof here instead; empty serves /metrics on HTTP_ADDR and no pprof"},
		{"CORS_ORIGINS", "*", "comma list of origins, or *", "origins allowed to read the API from a browser"},
		{"GENERATOR_RATE", "1000", "integer >= 0 (events/s, 0 = as fast as possible)", "generator rate limit"},
		{"GENERATOR_MAX_EVENTS", "0", "integer >= 0 (0 = unbounded)", "generator stops after this many events"},
		{"GENERATOR_SEED", "1", "integer", "seed of the synthetic events; equal seeds give equal events"},
		{"GENERATOR_USERS", "10000", "integer >= 1", "distinct users the generator draws from"},
		{"GENERATOR_HOTELS", "1000", "integer >= 1", "distinct hotels the generator draws from"},
		{"GENERATOR_REPLAY_FILE", "", "file path", "replay this file in the original TSV format instead of synthetic events"},
		{"BATCH_MAX_RECORDS", "10000", "integer 1..1000000", "most records the transformer and aggregator take per batch"},
		{"SHUTDOWN_TIMEOUT", "30s", "Go duration > 0", "drain deadline after SIGINT/SIGTERM"},
		{"STATS_INTERVAL", "10s", "Go duration > 0", "how often each stage logs its counts"},
		{"LOG_LEVEL", "info", "debug, info, warn, error", "log level"},
		{"LOG_FORMAT", "json", "json, console", "log encoding"},
	}
}

// Load reads the configuration through getenv (os.Getenv in main, a map in tests). Every invalid
// variable is reported, joined into one error.
func Load(getenv func(string) string) (Config, error) {
	p := parser{getenv: getenv, defaults: map[string]string{}}
	for _, v := range Vars() {
		p.defaults[v.Name] = v.Default
		p.accepts = append(p.accepts, v)
	}
	var c Config
	c.Stages = p.stages("STAGES")
	c.KafkaBrokers = p.hostPorts("KAFKA_BROKERS")
	c.EmbeddedKafkaAddr = p.hostPort("EMBEDDED_KAFKA_ADDR")
	c.DataDir = p.str("DATA_DIR")
	c.RedisAddr = p.optionalHostPort("REDIS_ADDR")
	c.RedisPassword = p.str("REDIS_PASSWORD")
	c.RedisDB = p.intRange("REDIS_DB", 0, 15)
	c.RawTopic = p.topic("RAW_TOPIC")
	c.ProcessedTopic = p.topic("PROCESSED_TOPIC")
	c.DeadLetterTopic = p.topic("DEAD_LETTER_TOPIC")
	c.TopicPartitions = p.intRange("TOPIC_PARTITIONS", 1, 1000)
	c.ConsumerGroup = p.str("CONSUMER_GROUP")
	c.HTTPAddr = p.hostPort("HTTP_ADDR")
	c.AdminAddr = p.optionalHostPort("ADMIN_ADDR")
	c.CORSOrigins = p.origins("CORS_ORIGINS")
	c.GeneratorRate = p.intRange("GENERATOR_RATE", 0, 100_000_000)
	c.GeneratorMaxEvents = int64(p.intRange("GENERATOR_MAX_EVENTS", 0, 1<<62))
	c.GeneratorSeed = int64(p.intRange("GENERATOR_SEED", -1<<62, 1<<62))
	c.GeneratorUsers = p.intRange("GENERATOR_USERS", 1, 100_000_000)
	c.GeneratorHotels = p.intRange("GENERATOR_HOTELS", 1, 100_000_000)
	c.GeneratorReplayFile = p.readableFile("GENERATOR_REPLAY_FILE")
	c.BatchMaxRecords = p.intRange("BATCH_MAX_RECORDS", 1, 1_000_000)
	c.ShutdownTimeout = p.duration("SHUTDOWN_TIMEOUT")
	c.StatsInterval = p.duration("STATS_INTERVAL")
	c.LogLevel = p.oneOf("LOG_LEVEL", "debug", "info", "warn", "error")
	c.LogFormat = p.oneOf("LOG_FORMAT", "json", "console")
	if c.RawTopic != "" && (c.RawTopic == c.ProcessedTopic || c.RawTopic == c.DeadLetterTopic || c.ProcessedTopic == c.DeadLetterTopic) {
		p.fail("RAW_TOPIC", "RAW_TOPIC, PROCESSED_TOPIC and DEAD_LETTER_TOPIC must be three different topics")
	}
	return c, errors.Join(p.errs...)
}

// Masked returns the configuration as key/value pairs for the start-up log, secrets masked.
func (c Config) Masked() map[string]any {
	pw := ""
	if c.RedisPassword != "" {
		pw = "***"
	}
	return map[string]any{
		"STAGES": strings.Join(c.Stages, ","), "KAFKA_BROKERS": strings.Join(c.KafkaBrokers, ","),
		"EMBEDDED_KAFKA_ADDR": c.EmbeddedKafkaAddr, "DATA_DIR": c.DataDir, "REDIS_ADDR": c.RedisAddr,
		"REDIS_PASSWORD": pw, "REDIS_DB": c.RedisDB, "RAW_TOPIC": c.RawTopic, "PROCESSED_TOPIC": c.ProcessedTopic,
		"DEAD_LETTER_TOPIC": c.DeadLetterTopic, "TOPIC_PARTITIONS": c.TopicPartitions, "CONSUMER_GROUP": c.ConsumerGroup,
		"HTTP_ADDR": c.HTTPAddr, "ADMIN_ADDR": c.AdminAddr, "CORS_ORIGINS": strings.Join(c.CORSOrigins, ","), "GENERATOR_RATE": c.GeneratorRate, "GENERATOR_MAX_EVENTS": c.GeneratorMaxEvents,
		"GENERATOR_SEED": c.GeneratorSeed, "GENERATOR_USERS": c.GeneratorUsers, "GENERATOR_HOTELS": c.GeneratorHotels,
		"GENERATOR_REPLAY_FILE": c.GeneratorReplayFile, "BATCH_MAX_RECORDS": c.BatchMaxRecords,
		"SHUTDOWN_TIMEOUT": c.ShutdownTimeout.String(), "STATS_INTERVAL": c.StatsInterval.String(),
		"LOG_LEVEL": c.LogLevel, "LOG_FORMAT": c.LogFormat,
	}
}

type parser struct {
	getenv   func(string) string
	defaults map[string]string
	accepts  []Var
	errs     []error
}

func (p *parser) raw(name string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return p.defaults[name]
}

func (p *parser) fail(name, format string, args ...any) {
	accepts := ""
	for _, v := range p.accepts {
		if v.Name == name {
			accepts = v.Accepts
		}
	}
	p.errs = append(p.errs, fmt.Errorf("%s: %s (accepts %s)", name, fmt.Sprintf(format, args...), accepts))
}

func (p *parser) str(name string) string { return p.raw(name) }

func (p *parser) intRange(name string, lo, hi int) int {
	s := p.raw(name)
	n, err := strconv.Atoi(s)
	if err != nil {
		p.fail(name, "%q is not an integer", s)
		return 0
	}
	if n < lo || n > hi {
		p.fail(name, "%d is out of range", n)
	}
	return n
}

func (p *parser) duration(name string) time.Duration {
	s := p.raw(name)
	d, err := time.ParseDuration(s)
	if err != nil {
		p.fail(name, "%q is not a duration", s)
		return 0
	}
	if d <= 0 {
		p.fail(name, "%s must be positive", s)
	}
	return d
}

func (p *parser) oneOf(name string, allowed ...string) string {
	v := strings.ToLower(p.raw(name))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, "%q is not allowed", v)
	return v
}

func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func (p *parser) hostPort(name string) string {
	v := p.raw(name)
	if !validHostPort(v) {
		p.fail(name, "%q is not host:port", v)
	}
	return v
}

func (p *parser) optionalHostPort(name string) string {
	if p.raw(name) == "" {
		return ""
	}
	return p.hostPort(name)
}

func (p *parser) hostPorts(name string) []string {
	v := p.raw(name)
	if v == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if !validHostPort(s) {
			p.fail(name, "%q is not host:port", s)
			continue
		}
		out = append(out, s)
	}
	return out
}

func (p *parser) origins(name string) []string {
	var out []string
	for _, o := range strings.Split(p.raw(name), ",") {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "*" || strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://"):
			out = append(out, o)
		default:
			p.fail(name, "%q is not an origin (scheme://host[:port])", o)
		}
	}
	return out
}

func (p *parser) topic(name string) string {
	v := p.raw(name)
	if v == "" || len(v) > 249 || v == "." || v == ".." {
		p.fail(name, "%q is not a valid topic name", v)
		return v
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			p.fail(name, "%q is not a valid topic name", v)
			break
		}
	}
	return v
}

func (p *parser) stages(name string) []string {
	v := p.raw(name)
	seen := map[string]bool{}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" || seen[s] {
			continue
		}
		known := false
		for _, k := range AllStages() {
			known = known || k == s
		}
		if !known {
			p.fail(name, "unknown stage %q", s)
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	if len(out) == 0 && len(p.errs) == 0 {
		p.fail(name, "no stage enabled")
	}
	return out
}

func (p *parser) readableFile(name string) string {
	v := p.raw(name)
	if v == "" {
		return ""
	}
	f, err := os.Open(filepath.Clean(v))
	if err != nil {
		p.fail(name, "cannot open %q: %v", v, err)
		return v
	}
	_ = f.Close()
	return v
}
