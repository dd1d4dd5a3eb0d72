package pipeline

import (
	"strconv"
	"testing"

	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
)

// TestKafkaCompression: the batches searchflow produces — the generator's raw records, the
// transformer's processed and hotel records — carry the codec KAFKA_COMPRESSION names, which is
// what a consumer of those topics must be able to decode (README: Migrating from the original).
func TestKafkaCompression(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// The codec numbers of Kafka's record batch attributes.
	for name, code := range map[string]uint8{"none": 0, "gzip": 1, "lz4": 3, "zstd": 4} {
		t.Run(name, func(t *testing.T) {
			const n = 200
			// A database per codec: each run has its own broker, whose offsets start at 0 again.
			h := start(t, map[string]string{"REDIS_ADDR": srv.Addr, "REDIS_DB": strconv.Itoa(int(code)),
				"KAFKA_COMPRESSION": name, "GENERATOR_MAX_EVENTS": strconv.Itoa(n)})
			for _, topic := range []string{"raw_events", "processed_events", "processed_events_by_hotel"} {
				recs := kafkatest.ReadAll(t, h.kafka, topic, n)
				compressed := 0
				for _, r := range recs {
					switch got := r.Attrs.CompressionType(); got {
					case code:
						compressed++
					case 0:
						// franz-go sends a batch uncompressed when compressing it would not make
						// it smaller (a batch of one short record, say): a consumer reads it
						// without the codec, so it is no different from a compressed one.
					default:
						t.Fatalf("KAFKA_COMPRESSION=%s: a record of %s came in a batch of codec %d, want %d", name, topic, got, code)
					}
				}
				if compressed == 0 {
					t.Fatalf("KAFKA_COMPRESSION=%s: none of the %d records of %s came in a batch of codec %d", name, len(recs), topic, code)
				}
			}
			h.stop()
		})
	}
}
