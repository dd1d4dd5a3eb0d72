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

	// Kafka credentials and TLS (external brokers only).
	KafkaSASL SASL
	KafkaTLS  TLS

	RedisAddr     string // empty: start the embedded store
	RedisUsername string
	RedisPassword string
	RedisDB       int
	RedisTLS      TLS

	RawTopic        string
	ProcessedTopic  string
	DeadLetterTopic string
	TopicPartitions int
	ConsumerGroup   string

	HTTPAddr         string
	AdminAddr        string // empty: /metrics on HTTP_ADDR and no pprof
	CORSOrigins      []string
	APITokens        []string // empty: the API is open
	APITokensFile    string
	StreamMaxClients int

	Limits Limits

	GeneratorRate       int // events per second, 0 = unlimited
	GeneratorMaxEvents  int64
	GeneratorSeed       int64
	GeneratorUsers      int
	GeneratorHotels     int
	GeneratorReplayFile string

	BatchMaxRecords int
	StallTimeout    time.Duration
	ShutdownTimeout time.Duration
	StatsInterval   time.Duration
	LogLevel        string
	LogFormat       string
}

// SASL is how searchflow authenticates to Kafka; an empty Mechanism means no SASL.
type SASL struct {
	Mechanism string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	Username  string
	Password  string
}

// TLS is one client's TLS settings. With Enabled and no CAFile the system roots verify the
// server; CertFile and KeyFile together give a client certificate.
type TLS struct {
	Enabled                   bool
	CAFile, CertFile, KeyFile string
	ServerName                string
}

// Limits bound what one raw event may hold; an event past any of them is dead-lettered with its
// own reason. The defaults are far above real searches (about a dozen advertisers with one or two
// offers each, 36-byte user ids) and far below what would strain Kafka, Redis or the API.
type Limits struct {
	AdvertisersPerEvent int
	OffersPerAdvertiser int
	AdvertiserNameBytes int
	IDBytes             int
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
		{"KAFKA_SASL_MECHANISM", "", "empty, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", "SASL mechanism for KAFKA_BROKERS; empty: no SASL"},
		{"KAFKA_SASL_USERNAME", "", "string", "SASL user name"},
		{"KAFKA_SASL_PASSWORD", "", "string, kept as given", "SASL password (never logged)"},
		{"KAFKA_SASL_PASSWORD_FILE", "", "file path", "read the SASL password from this file instead (one trailing newline dropped)"},
		{"KAFKA_TLS", "false", "true or false", "connect to KAFKA_BROKERS over TLS (system roots unless KAFKA_TLS_CA_FILE)"},
		{"KAFKA_TLS_CA_FILE", "", "PEM file path", "CA certificates that verify the brokers"},
		{"KAFKA_TLS_CERT_FILE", "", "PEM file path", "client certificate (with KAFKA_TLS_KEY_FILE)"},
		{"KAFKA_TLS_KEY_FILE", "", "PEM file path", "client private key (with KAFKA_TLS_CERT_FILE)"},
		{"KAFKA_TLS_SERVER_NAME", "", "host name", "name the brokers' certificates must carry; empty: the host of each address"},
		{"REDIS_ADDR", "", "host:port", "Redis server; empty starts the embedded in-memory store"},
		{"REDIS_USERNAME", "", "string", "Redis ACL user; empty: the default user"},
		{"REDIS_PASSWORD", "", "string, kept as given", "Redis password (never logged)"},
		{"REDIS_PASSWORD_FILE", "", "file path", "read the Redis password from this file instead (one trailing newline dropped)"},
		{"REDIS_DB", "0", "integer 0..15", "Redis database number"},
		{"REDIS_TLS", "false", "true or false", "connect to REDIS_ADDR over TLS (system roots unless REDIS_TLS_CA_FILE)"},
		{"REDIS_TLS_CA_FILE", "", "PEM file path", "CA certificates that verify Redis"},
		{"REDIS_TLS_CERT_FILE", "", "PEM file path", "client certificate (with REDIS_TLS_KEY_FILE)"},
		{"REDIS_TLS_KEY_FILE", "", "PEM file path", "client private key (with REDIS_TLS_CERT_FILE)"},
		{"REDIS_TLS_SERVER_NAME", "", "host name", "name Redis's certificate must carry; empty: the host of REDIS_ADDR"},
		{"RAW_TOPIC", "raw_events", "Kafka topic name", "topic the generator writes and the transformer reads"},
		{"PROCESSED_TOPIC", "processed_events", "Kafka topic name", "topic the transformer writes and the aggregator reads"},
		{"DEAD_LETTER_TOPIC", "dead_letter_events", "Kafka topic name", "topic for records the transformer cannot read"},
		{"TOPIC_PARTITIONS", "6", "integer 1..1000", "partitions of topics searchflow creates when missing"},
		{"CONSUMER_GROUP", "searchflow", "string", "prefix of the consumer groups (<prefix>-transformer, <prefix>-aggregator)"},
		{"HTTP_ADDR", ":5000", "host:port", "where the API listens"},
		{"ADMIN_ADDR", "", "host:port", "serve /metrics and /debug/pprof here instead; empty serves /metrics on HTTP_ADDR and no pprof"},
		{"CORS_ORIGINS", "*", "comma list of origins, or *", "origins allowed to read the API from a browser"},
		{"API_TOKENS_FILE", "", "file path", "bearer tokens, one per line, that the API, /stream, /dashboard and /metrics require; empty: open"},
		{"STREAM_MAX_CLIENTS", "100", "integer 1..100000", "most /stream clients at once; more are answered 503"},
		{"MAX_ADVERTISERS_PER_EVENT", "1000", "integer 1..100000", "an event with more advertisers is dead-lettered (too_many_advertisers)"},
		{"MAX_OFFERS_PER_ADVERTISER", "1000", "integer 1..1000000", "an advertiser with more offers dead-letters its event (too_many_offers)"},
		{"MAX_ADVERTISER_NAME_BYTES", "256", "integer 1..65536", "a longer advertiser name dead-letters its event (advertiser_name_too_long)"},
		{"MAX_ID_BYTES", "256", "integer 1..65536", "a longer user_id or hotel_id dead-letters its event (user_id_too_long, hotel_id_too_long)"},
		{"GENERATOR_RATE", "1000", "integer >= 0 (events/s, 0 = as fast as possible)", "generator rate limit"},
		{"GENERATOR_MAX_EVENTS", "0", "integer >= 0 (0 = unbounded)", "generator stops after this many events"},
		{"GENERATOR_SEED", "1", "integer", "seed of the synthetic events; equal seeds give equal events"},
		{"GENERATOR_USERS", "10000", "integer >= 1", "distinct users the generator draws from"},
		{"GENERATOR_HOTELS", "1000", "integer >= 1", "distinct hotels the generator draws from"},
		{"GENERATOR_REPLAY_FILE", "", "file path", "replay this file in the original TSV format instead of synthetic events"},
		{"BATCH_MAX_RECORDS", "10000", "integer 1..1000000", "most records the transformer and aggregator take per batch"},
		{"STALL_TIMEOUT", "30s", "Go duration > 0", "a partition with records left that has not moved for this long makes /readyz fail"},
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
	c.KafkaSASL = SASL{
		Mechanism: strings.ToUpper(p.str("KAFKA_SASL_MECHANISM")),
		Username:  p.str("KAFKA_SASL_USERNAME"),
		Password:  p.secret("KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"),
	}
	c.KafkaTLS = p.tls("KAFKA_TLS")
	c.RedisAddr = p.optionalHostPort("REDIS_ADDR")
	c.RedisUsername = p.str("REDIS_USERNAME")
	c.RedisPassword = p.secret("REDIS_PASSWORD", "REDIS_PASSWORD_FILE")
	c.RedisDB = p.intRange("REDIS_DB", 0, 15)
	c.RedisTLS = p.tls("REDIS_TLS")
	c.RawTopic = p.topic("RAW_TOPIC")
	c.ProcessedTopic = p.topic("PROCESSED_TOPIC")
	c.DeadLetterTopic = p.topic("DEAD_LETTER_TOPIC")
	c.TopicPartitions = p.intRange("TOPIC_PARTITIONS", 1, 1000)
	c.ConsumerGroup = p.str("CONSUMER_GROUP")
	c.HTTPAddr = p.hostPort("HTTP_ADDR")
	c.AdminAddr = p.optionalHostPort("ADMIN_ADDR")
	c.CORSOrigins = p.origins("CORS_ORIGINS")
	c.APITokensFile = p.str("API_TOKENS_FILE")
	c.APITokens = p.tokens("API_TOKENS_FILE")
	c.StreamMaxClients = p.intRange("STREAM_MAX_CLIENTS", 1, 100_000)
	c.Limits = Limits{
		AdvertisersPerEvent: p.intRange("MAX_ADVERTISERS_PER_EVENT", 1, 100_000),
		OffersPerAdvertiser: p.intRange("MAX_OFFERS_PER_ADVERTISER", 1, 1_000_000),
		AdvertiserNameBytes: p.intRange("MAX_ADVERTISER_NAME_BYTES", 1, 65536),
		IDBytes:             p.intRange("MAX_ID_BYTES", 1, 65536),
	}
	c.GeneratorRate = p.intRange("GENERATOR_RATE", 0, 100_000_000)
	c.GeneratorMaxEvents = int64(p.intRange("GENERATOR_MAX_EVENTS", 0, 1<<62))
	c.GeneratorSeed = int64(p.intRange("GENERATOR_SEED", -1<<62, 1<<62))
	c.GeneratorUsers = p.intRange("GENERATOR_USERS", 1, 100_000_000)
	c.GeneratorHotels = p.intRange("GENERATOR_HOTELS", 1, 100_000_000)
	c.GeneratorReplayFile = p.readableFile("GENERATOR_REPLAY_FILE")
	c.BatchMaxRecords = p.intRange("BATCH_MAX_RECORDS", 1, 1_000_000)
	c.StallTimeout = p.duration("STALL_TIMEOUT")
	c.ShutdownTimeout = p.duration("SHUTDOWN_TIMEOUT")
	c.StatsInterval = p.duration("STATS_INTERVAL")
	c.LogLevel = p.oneOf("LOG_LEVEL", "debug", "info", "warn", "error")
	c.LogFormat = p.oneOf("LOG_FORMAT", "json", "console")
	if c.RawTopic != "" && (c.RawTopic == c.ProcessedTopic || c.RawTopic == c.DeadLetterTopic || c.ProcessedTopic == c.DeadLetterTopic) {
		p.fail("RAW_TOPIC", "RAW_TOPIC, PROCESSED_TOPIC and DEAD_LETTER_TOPIC must be three different topics")
	}
	p.checkServices(c)
	return c, errors.Join(p.errs...)
}

// checkServices rejects settings that cannot take effect: credentials and TLS are for external
// services (the embedded ones have none), a SASL mechanism needs a user and a password, and a
// client certificate needs its key.
func (p *parser) checkServices(c Config) {
	switch c.KafkaSASL.Mechanism {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		p.fail("KAFKA_SASL_MECHANISM", "%q is not a supported mechanism", c.KafkaSASL.Mechanism)
	}
	if s := c.KafkaSASL; s.Mechanism != "" {
		if s.Username == "" {
			p.fail("KAFKA_SASL_USERNAME", "is empty but KAFKA_SASL_MECHANISM is %s", s.Mechanism)
		}
		if s.Password == "" {
			p.fail("KAFKA_SASL_PASSWORD", "is empty (and no KAFKA_SASL_PASSWORD_FILE) but KAFKA_SASL_MECHANISM is %s", s.Mechanism)
		}
	}
	if c.EmbeddedKafka() {
		if c.KafkaSASL.Mechanism != "" {
			p.fail("KAFKA_SASL_MECHANISM", "is set but KAFKA_BROKERS is empty: the embedded broker takes no credentials")
		}
		if c.KafkaTLS.Enabled {
			p.fail("KAFKA_TLS", "is true but KAFKA_BROKERS is empty: the embedded broker does not speak TLS")
		}
	}
	if c.EmbeddedRedis() {
		if c.RedisUsername != "" || c.RedisPassword != "" {
			p.fail("REDIS_ADDR", "is empty (embedded store) but REDIS_USERNAME or REDIS_PASSWORD is set: the embedded store takes no credentials")
		}
		if c.RedisTLS.Enabled {
			p.fail("REDIS_TLS", "is true but REDIS_ADDR is empty: the embedded store does not speak TLS")
		}
	}
}

// Masked returns the configuration as key/value pairs for the start-up log, secrets masked.
func (c Config) Masked() map[string]any {
	mask := func(secret string) string {
		if secret == "" {
			return ""
		}
		return "***"
	}
	return map[string]any{
		"STAGES": strings.Join(c.Stages, ","), "KAFKA_BROKERS": strings.Join(c.KafkaBrokers, ","),
		"KAFKA_SASL_MECHANISM": c.KafkaSASL.Mechanism, "KAFKA_SASL_USERNAME": c.KafkaSASL.Username,
		"KAFKA_SASL_PASSWORD": mask(c.KafkaSASL.Password), "KAFKA_TLS": c.KafkaTLS.Enabled,
		"KAFKA_TLS_CA_FILE": c.KafkaTLS.CAFile, "KAFKA_TLS_CERT_FILE": c.KafkaTLS.CertFile,
		"KAFKA_TLS_KEY_FILE": c.KafkaTLS.KeyFile, "KAFKA_TLS_SERVER_NAME": c.KafkaTLS.ServerName,
		"EMBEDDED_KAFKA_ADDR": c.EmbeddedKafkaAddr, "DATA_DIR": c.DataDir, "REDIS_ADDR": c.RedisAddr,
		"REDIS_USERNAME": c.RedisUsername, "REDIS_PASSWORD": mask(c.RedisPassword), "REDIS_DB": c.RedisDB,
		"REDIS_TLS": c.RedisTLS.Enabled, "REDIS_TLS_CA_FILE": c.RedisTLS.CAFile, "REDIS_TLS_CERT_FILE": c.RedisTLS.CertFile,
		"REDIS_TLS_KEY_FILE": c.RedisTLS.KeyFile, "REDIS_TLS_SERVER_NAME": c.RedisTLS.ServerName,
		"API_TOKENS_FILE": c.APITokensFile, "API_TOKENS": len(c.APITokens), "STREAM_MAX_CLIENTS": c.StreamMaxClients,
		"MAX_ADVERTISERS_PER_EVENT": c.Limits.AdvertisersPerEvent, "MAX_OFFERS_PER_ADVERTISER": c.Limits.OffersPerAdvertiser,
		"MAX_ADVERTISER_NAME_BYTES": c.Limits.AdvertiserNameBytes, "MAX_ID_BYTES": c.Limits.IDBytes,
		"STALL_TIMEOUT": c.StallTimeout.String(), "RAW_TOPIC": c.RawTopic, "PROCESSED_TOPIC": c.ProcessedTopic,
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

// secret reads a secret from name, kept exactly as given (spaces are part of a password), or from
// the file fileName names, without its one trailing newline. Setting both is an error.
func (p *parser) secret(name, fileName string) string {
	v := p.getenv(name)
	path := p.raw(fileName)
	if path == "" {
		return v
	}
	if v != "" {
		p.fail(fileName, "is set and so is %s; set one of them", name)
		return v
	}
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		p.fail(fileName, "cannot read %q: %v", path, err)
		return ""
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		p.fail(fileName, "%q is empty", path)
	}
	return s
}

func (p *parser) boolean(name string) bool {
	switch v := strings.ToLower(p.raw(name)); v {
	case "true", "1", "yes":
		return true
	case "false", "0", "no":
		return false
	default:
		p.fail(name, "%q is not a boolean", v)
		return false
	}
}

// tls reads the TLS settings under prefix (KAFKA_TLS, REDIS_TLS): the switch, the CA, client
// certificate and key files, and the server name. A file given while the switch is off is an
// error rather than silently unused.
func (p *parser) tls(prefix string) TLS {
	t := TLS{
		Enabled:    p.boolean(prefix),
		CAFile:     p.readableFile(prefix + "_CA_FILE"),
		CertFile:   p.readableFile(prefix + "_CERT_FILE"),
		KeyFile:    p.readableFile(prefix + "_KEY_FILE"),
		ServerName: p.str(prefix + "_SERVER_NAME"),
	}
	if !t.Enabled {
		for name, v := range map[string]string{"_CA_FILE": t.CAFile, "_CERT_FILE": t.CertFile, "_KEY_FILE": t.KeyFile, "_SERVER_NAME": t.ServerName} {
			if v != "" {
				p.fail(prefix+name, "is set but %s is false", prefix)
			}
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.fail(prefix+"_CERT_FILE", "%s_CERT_FILE and %s_KEY_FILE go together", prefix, prefix)
	}
	return t
}

// tokens reads the bearer tokens from the file name names: one per line, blank lines and lines
// starting with # ignored. A named file without a token is an error: it would lock everyone out
// or, worse, be taken for "open".
func (p *parser) tokens(name string) []string {
	path := p.raw(name)
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		p.fail(name, "cannot read %q: %v", path, err)
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < 16 {
			p.fail(name, "a token in %q is shorter than 16 characters", path)
			return nil
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		p.fail(name, "%q holds no token", path)
	}
	return out
}

// redact hides the credentials of a URL-like value (scheme://user:password@host) before it is
// quoted in an error: a REDIS_ADDR given as a URL by mistake must not print its password.
func redact(v string) string {
	at := strings.LastIndex(v, "@")
	if at < 0 {
		return v
	}
	start := 0
	if i := strings.Index(v, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return v[:start] + "***" + v[at:]
}

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
		p.fail(name, "%q is not host:port", redact(v))
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
			p.fail(name, "%q is not host:port", redact(s))
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
