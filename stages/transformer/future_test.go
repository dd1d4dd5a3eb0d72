package transformer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/kafkatest"
)

// TestFutureTimestampsAreDeadLettered: an event whose search_timestamp is more than
// MaxFutureSkew ahead of its raw record's Kafka timestamp is dead-lettered as future_timestamp;
// one exactly at the skew, and one far in the past (a replay of old data), are not. The record's
// timestamp is the reference, never the wall clock: these records are stamped in 2030.
func TestFutureTimestampsAreDeadLettered(t *testing.T) {
	_, addr := kafkatest.Start(t, 1, "raw", "processed", "hotels", "dlq")
	stamp := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	raw := func(user string, ts int64) *kgo.Record {
		v := fmt.Sprintf(`{"user_id":%q,"hotel_id":1,"search_timestamp":%d,"hotel_advertisers":{"a":[{"eurocents":5}]}}`, user, ts)
		return &kgo.Record{Topic: "raw", Value: []byte(v), Timestamp: stamp}
	}
	kafkatest.Produce(t, addr,
		raw("at-the-skew", stamp.Add(30*time.Minute).Unix()),
		raw("one-second-past", stamp.Add(30*time.Minute+time.Second).Unix()),
		raw("days-ahead", stamp.Add(72*time.Hour).Unix()),
		raw("years-behind", 1620000000))

	_, stop := runStoppable(t, Config{RawTopic: "raw", ProcessedTopic: "processed", HotelTopic: "hotels", DeadLetterTopic: "dlq",
		Group: "g", MaxFutureSkew: 30 * time.Minute}, kgo.SeedBrokers(addr))
	kafkatest.WaitCommitted(t, addr, "g", "raw")
	stop()
	users := func(topic string) map[string]string {
		out := map[string]string{}
		for _, r := range kafkatest.ReadCommittedToEnd(t, addr, topic) {
			out[string(r.Value)] = kafkatest.Header(r, event.HeaderReason)
		}
		return out
	}
	processed, dead := users("processed"), users("dlq")
	if len(processed) != 2 || len(dead) != 2 {
		t.Fatalf("%d processed, %d dead letters; want 2 and 2:\n%v\n%v", len(processed), len(dead), processed, dead)
	}
	for v, reason := range dead {
		if reason != string(event.ReasonFutureTimestamp) {
			t.Errorf("dead letter %s: reason %q, want %q", v, reason, event.ReasonFutureTimestamp)
		}
	}
	for _, want := range []string{"one-second-past", "days-ahead"} {
		found := false
		for v := range dead {
			found = found || strings.Contains(v, `"user_id":"`+want+`"`)
		}
		if !found {
			t.Errorf("%s was not dead-lettered: %v", want, dead)
		}
	}
}
