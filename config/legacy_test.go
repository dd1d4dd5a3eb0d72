package config

import (
	"strings"
	"testing"
)

// TestLegacyNames: the original project's variables are read under searchflow's names when
// those are unset (KAFKA_BROKER_SERVER alone must reach the user's Kafka, not start the embedded
// broker), lose to them when both are set, and each one set gives one warning naming what to set
// instead — or, for one without an equivalent, that it is ignored and why.
func TestLegacyNames(t *testing.T) {
	old := map[string]string{
		"KAFKA_BROKER_SERVER": "kafka:9092", "KAFKA_RAW_DATA_TOPIC": "raw", "KAFKA_PROCESSED_DATA_TOPIC": "processed",
		"KAFKA_CONSUMER_GROUP_ID": "consumer_group_1", "REDIS_HOST": "redis", "REDIS_PORT": "6380", "REDIS_DB": "2",
		"KAFKA_AUTO_COMMIT": "true", "KAFKA_OFFSET_COMMIT_INTERVAL": "5000",
	}
	getenv, warnings := WithLegacyNames(env(old))
	cfg, err := Load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EmbeddedKafka() || cfg.KafkaBrokers[0] != "kafka:9092" || cfg.RawTopic != "raw" || cfg.ProcessedTopic != "processed" ||
		cfg.ConsumerGroup != "consumer_group_1" || cfg.RedisAddrs[0] != "redis:6380" || cfg.RedisDB != 2 {
		t.Errorf("the original's variables were not read: %+v", cfg)
	}
	for _, want := range []string{"KAFKA_BROKER_SERVER", "KAFKA_RAW_DATA_TOPIC", "KAFKA_PROCESSED_DATA_TOPIC", "KAFKA_CONSUMER_GROUP_ID",
		"REDIS_HOST and REDIS_PORT", "KAFKA_AUTO_COMMIT", "KAFKA_OFFSET_COMMIT_INTERVAL"} {
		n := 0
		for _, w := range warnings {
			if strings.HasPrefix(w, want+" ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d warnings about %s, want 1: %q", n, want, warnings)
		}
	}
	if len(warnings) != 7 {
		t.Errorf("%d warnings, want 7: %q", len(warnings), warnings)
	}

	// The new names win, and the old ones are still named.
	both := map[string]string{"KAFKA_BROKER_SERVER": "old:9092", "KAFKA_BROKERS": "new:9092", "REDIS_PORT": "6380", "REDIS_ADDR": "new:6379"}
	getenv, warnings = WithLegacyNames(env(both))
	cfg, err = Load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KafkaBrokers[0] != "new:9092" || cfg.RedisAddrs[0] != "new:6379" || len(warnings) != 2 ||
		!strings.Contains(strings.Join(warnings, "\n"), "wins") {
		t.Errorf("brokers %v, redis %v, warnings %q: the new names must win, with a warning each", cfg.KafkaBrokers, cfg.RedisAddrs, warnings)
	}

	// Nothing of the original's set: nothing to say.
	if _, warnings := WithLegacyNames(env(nil)); len(warnings) != 0 {
		t.Errorf("warnings without any original variable: %q", warnings)
	}
}
