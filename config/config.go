// Package config loads searchflow's configuration from environment variables: one struct, parsed
// and validated once at start, every field with a default and an error that names its variable.
//
// The struct is the only list of settings. Each field's tags name its variable, its default, what
// it accepts, its help line and whether it is secret; Load, Vars (the README's table) and Masked
// (the start-up log) are all read from those tags, so a new setting is one new tagged field.
package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"time"

	"github.com/searchflow/searchflow/trends"
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

// Config is the whole effective configuration of one searchflow process. Field order is the
// order of the README's table. The tags of a field (a nested struct's fields in its place):
//
//	env      the variable; inside a nested struct {prefix} stands for the struct field's env
//	default  the value when the variable is unset or blank
//	accepts  what the variable accepts; every error about it quotes this
//	help     the README's one line
//	parse    how to read it when the field's type does not say: stages, hostport (empty allowed
//	         only when the default is empty), hostports, origins, topic, file (must open), upper,
//	         tokens; otherwise bool, int (with range), duration (> 0), oneof, secret or string
//	range    lo..hi, for an integer
//	oneof    the allowed values, space-separated, lower case
//	secret   never logged: Masked shows *** (a string) or a count (a list). A secret string is
//	         kept as given and may come from the file <env>_FILE names instead; both variables
//	         are listed, their accepts and help written from the field's help.
//	from     instead of env: a variable another field declares, read again by this field's parse
//	log      the key in Masked, when it is not the variable's name
//	with     on a nested struct field: name=text pairs, split by ;, that fill {name} in the tags
//	         of its fields
//
// After a struct's fields are read its check method, if any, reports what only the fields
// together can show.
type Config struct {
	Stages []string `env:"STAGES" default:"generator,transformer,aggregator,api" parse:"stages" accepts:"comma list of generator, transformer, aggregator, api" help:"stages this process runs"`

	KafkaBrokers      []string `env:"KAFKA_BROKERS" parse:"hostports" accepts:"comma list of host:port" help:"Kafka seed brokers; empty starts the embedded broker"`
	EmbeddedKafkaAddr string   `env:"EMBEDDED_KAFKA_ADDR" default:"127.0.0.1:9092" parse:"hostport" accepts:"host:port" help:"where the embedded broker listens (kcat can connect)"`
	DataDir           string   `env:"DATA_DIR" default:"./data" accepts:"directory path" help:"where the embedded broker persists its log, and the embedded store its view (view.snapshot)"`

	// What embedded mode keeps (see README "Long runs on embedded defaults").
	EmbeddedRetention        time.Duration `env:"EMBEDDED_RETENTION" default:"1h" accepts:"Go duration 1s..8760h" help:"embedded broker: records are kept this long, then deleted once nothing needs them (the transformer committed past them; the view's snapshot holds them)"`
	EmbeddedRetentionMB      int           `env:"EMBEDDED_RETENTION_MB" default:"256" range:"1..1_000_000" accepts:"integer 1..1000000 (MiB)" help:"embedded broker: each topic's disk budget; past it the oldest records are deleted sooner, once nothing needs them"`
	EmbeddedSnapshotInterval time.Duration `env:"EMBEDDED_SNAPSHOT_INTERVAL" default:"30s" accepts:"Go duration 100ms..1h" help:"embedded mode: how often the embedded store's view is written to DATA_DIR/view.snapshot and the embedded broker's topics are trimmed"`

	KafkaCompression string `env:"KAFKA_COMPRESSION" default:"snappy" oneof:"none gzip snappy lz4 zstd" accepts:"none, gzip, snappy, lz4, zstd" help:"codec of the record batches searchflow produces; its consumers need it (README: Migrating from the original)"`

	// Kafka credentials and TLS (external brokers only).
	KafkaSASL SASL `env:"KAFKA_SASL"`
	KafkaTLS  TLS  `env:"KAFKA_TLS" with:"addr=KAFKA_BROKERS;server=the brokers;certs=the brokers' certificates;host=each address"`

	RedisAddrs        []string `env:"REDIS_ADDR" parse:"hostports" accepts:"comma list of host:port" help:"Redis server, or seed nodes of a Redis Cluster; empty starts the embedded in-memory store"`
	EmbeddedRedisAddr string   `env:"EMBEDDED_REDIS_ADDR" default:"127.0.0.1:0" parse:"hostport" accepts:"host:port" help:"where the embedded store listens; port 0 picks a free one. Give it a fixed port for searchflow verify and rebuild to reach it"`
	RedisCluster      string   `env:"REDIS_CLUSTER" default:"auto" oneof:"auto on off" accepts:"auto, on, off" help:"Redis Cluster mode: auto asks the server; on requires a cluster; off talks to one server even if it answers CLUSTER SLOTS"`
	RedisUsername     string   `env:"REDIS_USERNAME" accepts:"string" help:"Redis ACL user; empty: the default user"`
	RedisPassword     string   `env:"REDIS_PASSWORD" secret:"true" help:"Redis password"`
	RedisDB           int      `env:"REDIS_DB" default:"0" range:"0..15" accepts:"integer 0..15" help:"Redis database number; 0 on Redis Cluster, which has no other"`
	RedisTLS          TLS      `env:"REDIS_TLS" with:"addr=REDIS_ADDR;server=Redis;certs=Redis's certificate;host=REDIS_ADDR"`

	RawTopic           string          `env:"RAW_TOPIC" default:"raw_events" parse:"topic" accepts:"Kafka topic name" help:"topic the generator writes and the transformer reads"`
	ProcessedTopic     string          `env:"PROCESSED_TOPIC" default:"processed_events" parse:"topic" accepts:"Kafka topic name" help:"topic the transformer writes (keyed by user) and the aggregator reads"`
	HotelTopic         string          `env:"HOTEL_TOPIC" default:"processed_events_by_hotel" parse:"topic" accepts:"Kafka topic name" help:"the processed events again, keyed by hotel: the hotel aggregator reads it"`
	DeadLetterTopic    string          `env:"DEAD_LETTER_TOPIC" default:"dead_letter_events" parse:"topic" accepts:"Kafka topic name" help:"topic for records the transformer or the aggregators cannot take"`
	TopicPartitions    int             `env:"TOPIC_PARTITIONS" default:"6" range:"1..1000" accepts:"integer 1..1000" help:"partitions of topics searchflow creates when missing"`
	InstanceID         string          `env:"INSTANCE_ID" accepts:"string of letters, digits, '.', '_', '-'" parse:"instance" help:"this process's stable name: with external Kafka the transformer's transactional ID is <CONSUMER_GROUP>-transformer-<INSTANCE_ID>; empty: the host name"`
	AllowedLateness    time.Duration   `env:"ALLOWED_LATENESS" default:"5m" parse:"duration0" accepts:"Go duration 0..8760h" help:"trends: an event more than this behind its partition's stream time (highest event time so far) is late: counted all time, in no window"`
	TrendWindows       []trends.Window `env:"TREND_WINDOWS" default:"1h,24h" parse:"windows" accepts:"comma list of Go durations 24s..720h" help:"trends: the sliding event-time windows of the /trends endpoints"`
	MaxFutureSkew      time.Duration   `env:"MAX_FUTURE_SKEW" default:"1h" accepts:"Go duration 1s..8760h" help:"an event whose search_timestamp is further ahead of its raw record's Kafka timestamp is dead-lettered (future_timestamp)"`
	TransactionTimeout time.Duration   `env:"TRANSACTION_TIMEOUT" default:"10s" accepts:"Go duration 1s..15m" help:"Kafka transaction timeout: how long readers wait behind a crashed transformer's open transaction that no successor aborts"`
	ConsumerGroup      string          `env:"CONSUMER_GROUP" default:"searchflow" accepts:"string" help:"prefix of the consumer groups (<prefix>-transformer, <prefix>-aggregator, <prefix>-aggregator-hotels)"`

	HTTPAddr         string   `env:"HTTP_ADDR" default:":5000" parse:"hostport" accepts:"host:port" help:"where the API listens"`
	AdminAddr        string   `env:"ADMIN_ADDR" parse:"hostport" accepts:"host:port" help:"serve /metrics and /debug/pprof here instead; empty serves /metrics on HTTP_ADDR and no pprof"`
	CORSOrigins      []string `env:"CORS_ORIGINS" default:"*" parse:"origins" accepts:"comma list of origins, or *" help:"origins allowed to read the API from a browser"`
	APITokens        []string `from:"API_TOKENS_FILE" parse:"tokens" secret:"true" log:"API_TOKENS"` // empty: the API is open
	APITokensFile    string   `env:"API_TOKENS_FILE" accepts:"file path" help:"bearer tokens, one per line, that the API, /stream, /dashboard and /metrics require; empty: open"`
	StreamMaxClients int      `env:"STREAM_MAX_CLIENTS" default:"100" range:"1..100_000" accepts:"integer 1..100000" help:"most /stream clients at once; more are answered 503"`

	Limits Limits

	// 4_611_686_018_427_387_904 is 1<<62.
	GeneratorRate         int           `env:"GENERATOR_RATE" default:"1000" range:"0..100_000_000" accepts:"integer >= 0 (events/s, 0 = as fast as possible)" help:"generator rate limit"`
	GeneratorMaxEvents    int64         `env:"GENERATOR_MAX_EVENTS" default:"0" range:"0..4_611_686_018_427_387_904" accepts:"integer >= 0 (0 = unbounded)" help:"generator stops after this many events"`
	GeneratorSeed         int64         `env:"GENERATOR_SEED" default:"1" range:"-4_611_686_018_427_387_904..4_611_686_018_427_387_904" accepts:"integer" help:"seed of the synthetic events; equal seeds give equal events"`
	GeneratorUsers        int           `env:"GENERATOR_USERS" default:"10000" range:"1..100_000_000" accepts:"integer >= 1" help:"distinct users the generator draws from"`
	GeneratorHotels       int           `env:"GENERATOR_HOTELS" default:"1000" range:"1..100_000_000" accepts:"integer >= 1" help:"distinct hotels the generator draws from"`
	GeneratorDisorder     time.Duration `env:"GENERATOR_DISORDER" default:"0s" parse:"duration0" accepts:"Go duration 0..24h" help:"synthetic events: each search_timestamp is moved back by up to this much at random (out-of-order event times)"`
	GeneratorLateFraction float64       `env:"GENERATOR_LATE_FRACTION" default:"0" parse:"fraction" accepts:"number 0..1" help:"synthetic events: this share is stamped far in the past (twice ALLOWED_LATENESS + GENERATOR_DISORDER back), so that it is late"`
	GeneratorSkew         float64       `env:"GENERATOR_SKEW" default:"1.1" parse:"skew" accepts:"number 0..3 (0 = uniform)" help:"synthetic events: Zipf exponent of user and hotel popularity (rank r drawn with weight 1/r^skew); the popular set drifts over time"`
	GeneratorReplayFile   string        `env:"GENERATOR_REPLAY_FILE" parse:"file" accepts:"file path" help:"replay this file in the original TSV format instead of synthetic events"`

	BatchMaxRecords     int           `env:"BATCH_MAX_RECORDS" default:"10000" range:"1..1_000_000" accepts:"integer 1..1000000" help:"most records the transformer and aggregator take per batch"`
	GroupSessionTimeout time.Duration `env:"GROUP_SESSION_TIMEOUT" default:"45s" accepts:"Go duration 6s..30m" help:"how long the consumer groups wait for a member that stopped heartbeating (a killed process) before its partitions move"`
	StallTimeout        time.Duration `env:"STALL_TIMEOUT" default:"30s" accepts:"Go duration > 0" help:"a partition with records left that has not moved for this long makes /readyz fail"`
	ShutdownTimeout     time.Duration `env:"SHUTDOWN_TIMEOUT" default:"30s" accepts:"Go duration > 0" help:"drain deadline after SIGINT/SIGTERM"`
	StatsInterval       time.Duration `env:"STATS_INTERVAL" default:"10s" accepts:"Go duration > 0" help:"how often each stage logs its counts"`
	LogLevel            string        `env:"LOG_LEVEL" default:"info" oneof:"debug info warn error" accepts:"debug, info, warn, error" help:"log level"`
	LogFormat           string        `env:"LOG_FORMAT" default:"json" oneof:"json console" accepts:"json, console" help:"log encoding"`
}

// SASL is how searchflow authenticates to Kafka; an empty Mechanism means no SASL.
type SASL struct {
	Mechanism string `env:"{prefix}_MECHANISM" parse:"upper" accepts:"empty, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" help:"SASL mechanism for KAFKA_BROKERS; empty: no SASL"`
	Username  string `env:"{prefix}_USERNAME" accepts:"string" help:"SASL user name"`
	Password  string `env:"{prefix}_PASSWORD" secret:"true" help:"SASL password"`
}

// TLS is one client's TLS settings. With Enabled and no CAFile the system roots verify the
// server; CertFile and KeyFile together give a client certificate. Its help lines are filled in
// by the field that holds it: {addr} the server's address variable, {server} who is verified,
// {certs} whose certificate carries the name, {host} where the name is taken from by default.
type TLS struct {
	Enabled    bool   `env:"{prefix}" default:"false" accepts:"true or false" help:"connect to {addr} over TLS (system roots unless {prefix}_CA_FILE)"`
	CAFile     string `env:"{prefix}_CA_FILE" parse:"file" accepts:"PEM file path" help:"CA certificates that verify {server}"`
	CertFile   string `env:"{prefix}_CERT_FILE" parse:"file" accepts:"PEM file path" help:"client certificate (with {prefix}_KEY_FILE)"`
	KeyFile    string `env:"{prefix}_KEY_FILE" parse:"file" accepts:"PEM file path" help:"client private key (with {prefix}_CERT_FILE)"`
	ServerName string `env:"{prefix}_SERVER_NAME" accepts:"host name" help:"name {certs} must carry; empty: the host of {host}"`
}

// Limits bound what one raw event may hold; an event past any of them is dead-lettered with its
// own reason. The defaults are far above real searches (about a dozen advertisers with one or two
// offers each, 36-byte user ids) and far below what would strain Kafka, Redis or the API.
type Limits struct {
	AdvertisersPerEvent int `env:"MAX_ADVERTISERS_PER_EVENT" default:"1000" range:"1..100_000" accepts:"integer 1..100000" help:"an event with more advertisers is dead-lettered (too_many_advertisers)"`
	OffersPerAdvertiser int `env:"MAX_OFFERS_PER_ADVERTISER" default:"1000" range:"1..1_000_000" accepts:"integer 1..1000000" help:"an advertiser with more offers dead-letters its event (too_many_offers)"`
	AdvertiserNameBytes int `env:"MAX_ADVERTISER_NAME_BYTES" default:"256" range:"1..65536" accepts:"integer 1..65536" help:"a longer advertiser name dead-letters its event (advertiser_name_too_long)"`
	IDBytes             int `env:"MAX_ID_BYTES" default:"256" range:"1..65536" accepts:"integer 1..65536" help:"a longer user_id or hotel_id dead-letters its event (user_id_too_long, hotel_id_too_long)"`
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
func (c Config) EmbeddedRedis() bool { return len(c.RedisAddrs) == 0 }

// SnapshotPath is the file the embedded store's view is kept in between runs.
func (c Config) SnapshotPath() string { return filepath.Join(c.DataDir, "view.snapshot") }

// Var describes one environment variable: its name, default and what it accepts.
type Var struct {
	Name    string
	Default string
	Accepts string
	Help    string
}

// Vars lists every variable Load reads, in the order the README's table shows them.
func Vars() []Var { return varsOf(reflect.TypeFor[Config]()) }

// Load reads the configuration through getenv (os.Getenv in main, a map in tests). Every invalid
// variable is reported, joined into one error.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	err := load(&c, getenv)
	return c, err
}

// Masked returns the configuration as key/value pairs for the start-up log, secrets masked.
func (c Config) Masked() map[string]any { return masked(reflect.ValueOf(c)) }

// check runs once every field is read: the four topics must differ, and the services must be
// able to use what they are given.
func (c Config) check(p *parser, _ string) {
	topics := map[string]bool{}
	for _, t := range []string{c.RawTopic, c.ProcessedTopic, c.HotelTopic, c.DeadLetterTopic} {
		if t != "" && topics[t] {
			p.fail("RAW_TOPIC", "RAW_TOPIC, PROCESSED_TOPIC, HOTEL_TOPIC and DEAD_LETTER_TOPIC must be four different topics (%s is named twice)", t)
		}
		topics[t] = true
	}
	c.checkServices(p)
	if c.GroupSessionTimeout != 0 && (c.GroupSessionTimeout < 6*time.Second || c.GroupSessionTimeout > 30*time.Minute) {
		p.fail("GROUP_SESSION_TIMEOUT", "is %s: must be between 6s and 30m (the broker's group.min.session.timeout.ms and group.max.session.timeout.ms by default)", c.GroupSessionTimeout)
	}
	if c.TransactionTimeout != 0 && (c.TransactionTimeout < time.Second || c.TransactionTimeout > 15*time.Minute) {
		p.fail("TRANSACTION_TIMEOUT", "is %s: must be between 1s and 15m (the broker's transaction.max.timeout.ms is 15m by default)", c.TransactionTimeout)
	}
	if c.MaxFutureSkew != 0 && (c.MaxFutureSkew < time.Second || c.MaxFutureSkew > 8760*time.Hour) {
		p.fail("MAX_FUTURE_SKEW", "is %s: must be between 1s and 8760h", c.MaxFutureSkew)
	}
	if c.AllowedLateness > 8760*time.Hour {
		p.fail("ALLOWED_LATENESS", "is %s: must be at most 8760h", c.AllowedLateness)
	}
	if c.GeneratorDisorder > 24*time.Hour {
		p.fail("GENERATOR_DISORDER", "is %s: must be at most 24h", c.GeneratorDisorder)
	}
	if c.EmbeddedRetention != 0 && (c.EmbeddedRetention < time.Second || c.EmbeddedRetention > 8760*time.Hour) {
		p.fail("EMBEDDED_RETENTION", "is %s: must be between 1s and 8760h", c.EmbeddedRetention)
	}
	if c.EmbeddedSnapshotInterval != 0 && (c.EmbeddedSnapshotInterval < 100*time.Millisecond || c.EmbeddedSnapshotInterval > time.Hour) {
		p.fail("EMBEDDED_SNAPSHOT_INTERVAL", "is %s: must be between 100ms and 1h", c.EmbeddedSnapshotInterval)
	}
}

// checkServices rejects settings that cannot take effect: credentials and TLS are for external
// services (the embedded ones have none), a SASL mechanism needs a user and a password, and a
// client certificate needs its key.
func (c Config) checkServices(p *parser) {
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
	if c.RedisCluster == "on" && c.RedisDB != 0 {
		p.fail("REDIS_DB", "is %d but REDIS_CLUSTER is on: Redis Cluster has only database 0", c.RedisDB)
	}
	if c.EmbeddedRedis() {
		if c.RedisCluster == "on" {
			p.fail("REDIS_CLUSTER", "is on but REDIS_ADDR is empty: the embedded store is one server, not a cluster")
		}
		if c.RedisUsername != "" || c.RedisPassword != "" {
			p.fail("REDIS_ADDR", "is empty (embedded store) but REDIS_USERNAME or REDIS_PASSWORD is set: the embedded store takes no credentials")
		}
		if c.RedisTLS.Enabled {
			p.fail("REDIS_TLS", "is true but REDIS_ADDR is empty: the embedded store does not speak TLS")
		}
	}
}

// check runs after the TLS fields under prefix (KAFKA_TLS, REDIS_TLS) are read: a file or name
// given while the switch is off is an error rather than silently unused, and a client
// certificate needs its key.
func (t TLS) check(p *parser, prefix string) {
	if !t.Enabled {
		for _, f := range []struct{ suffix, value string }{
			{"_CA_FILE", t.CAFile}, {"_CERT_FILE", t.CertFile}, {"_KEY_FILE", t.KeyFile}, {"_SERVER_NAME", t.ServerName},
		} {
			if f.value != "" {
				p.fail(prefix+f.suffix, "is set but %s is false", prefix)
			}
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.fail(prefix+"_CERT_FILE", "%s_CERT_FILE and %s_KEY_FILE go together", prefix, prefix)
	}
}

// load fills the struct dst points to through getenv, field by field in declaration order, and
// runs each struct's check after its fields (the outermost last).
func load(dst any, getenv func(string) string) error {
	v := reflect.ValueOf(dst).Elem()
	p := newParser(getenv, varsOf(v.Type()))
	walk(v.Type(), func(s setting) {
		p.set(v.FieldByIndex(s.index), s)
	}, func(index []int, prefix string) {
		if c, ok := v.FieldByIndex(index).Interface().(checker); ok {
			c.check(p, prefix)
		}
	})
	return errors.Join(p.errs...)
}

// checker is a struct whose fields are only valid together; prefix is the struct field's env.
type checker interface {
	check(p *parser, prefix string)
}
