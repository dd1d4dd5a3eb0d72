package config

import (
	"fmt"
	"net"
	"sort"
)

// The original project's environment variables (README: Migrating from the original). A
// variable with an equivalent here is read under its new name when that one is unset; one
// without is ignored. Either way it is never taken silently: each one set gives a warning that
// names what to set instead.

// renamed is an original variable and searchflow's name for it.
type renamed struct{ old, new, note string }

// renamedVars are the original variables with an equivalent here.
func renamedVars() []renamed {
	return []renamed{
		{"KAFKA_BROKER_SERVER", "KAFKA_BROKERS", ""},
		{"KAFKA_RAW_DATA_TOPIC", "RAW_TOPIC", ""},
		{"KAFKA_PROCESSED_DATA_TOPIC", "PROCESSED_TOPIC", ""},
		{"KAFKA_CONSUMER_GROUP_ID", "CONSUMER_GROUP", " (here a prefix: the groups are <CONSUMER_GROUP>-transformer, -aggregator and -aggregator-hotels)"},
	}
}

// IgnoredLegacyVars are the original variables that have no equivalent here, and why.
func IgnoredLegacyVars() map[string]string {
	return map[string]string{
		"KAFKA_API_VERSION":                "franz-go negotiates each request's version with the broker",
		"KAFKA_RETRIES":                    "producers retry until the record is written (idempotent or transactional: a retry never duplicates)",
		"KAFKA_ENCODING":                   "records are UTF-8 JSON",
		"KAFKA_BATCH_SIZE":                 "batches are sized by franz-go (bytes and linger); BATCH_MAX_RECORDS bounds what a stage takes per poll",
		"KAFKA_GROUP_BATCHES_MILLISECONDS": "the producers' linger is searchflow's own (5 ms for the generator)",
		"KAFKA_ACKS":                       "always all: idempotent and transactional producers require it",
		"KAFKA_AUTO_COMMIT":                "offsets are committed with the work: the transformer's in its transactions, the aggregators' with the view in Redis",
		"KAFKA_OFFSET_COMMIT_INTERVAL":     "offsets are committed with each batch, not on a timer",
		"KAFKA_OFFSET_RESET":               "a group without offsets reads from the start of its topic; the aggregators resume from the view's offsets",
	}
}

// WithLegacyNames returns getenv reading the original project's variables under searchflow's
// names where those are unset, and one warning per original variable that is set, sorted.
// REDIS_HOST and REDIS_PORT make REDIS_ADDR (localhost and 6379 for the one missing); REDIS_DB
// and REDIS_PASSWORD have the same names and meaning here.
func WithLegacyNames(getenv func(string) string) (func(string) string, []string) {
	set := map[string]string{}
	var warnings []string
	for _, r := range renamedVars() {
		v := getenv(r.old)
		switch {
		case v == "":
		case getenv(r.new) != "":
			warnings = append(warnings, fmt.Sprintf("%s is the original project's name; %s is set too and wins: unset %s", r.old, r.new, r.old))
		default:
			set[r.new] = v
			warnings = append(warnings, fmt.Sprintf("%s is the original project's name: read as %s%s; set %s instead", r.old, r.new, r.note, r.new))
		}
	}
	if host, port := getenv("REDIS_HOST"), getenv("REDIS_PORT"); host != "" || port != "" {
		if getenv("REDIS_ADDR") != "" {
			warnings = append(warnings, "REDIS_HOST and REDIS_PORT are the original project's names; REDIS_ADDR is set too and wins: unset them")
		} else {
			if host == "" {
				host = "localhost"
			}
			if port == "" {
				port = "6379"
			}
			set["REDIS_ADDR"] = net.JoinHostPort(host, port)
			warnings = append(warnings, fmt.Sprintf("REDIS_HOST and REDIS_PORT are the original project's names: read as REDIS_ADDR=%s; set REDIS_ADDR instead", set["REDIS_ADDR"]))
		}
	}
	for name, why := range IgnoredLegacyVars() {
		if getenv(name) != "" {
			warnings = append(warnings, fmt.Sprintf("%s is a setting of the original project with no equivalent here, ignored: %s", name, why))
		}
	}
	sort.Strings(warnings)
	return func(name string) string {
		if v, ok := set[name]; ok {
			return v
		}
		return getenv(name)
	}, warnings
}
