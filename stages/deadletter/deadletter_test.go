package deadletter

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
)

func headers(r *kgo.Record, key string) []string {
	var out []string
	for _, h := range r.Headers {
		if h.Key == key {
			out = append(out, string(h.Value))
		}
	}
	return out
}

// TestDeadLetterStaysUnderTheLimit feeds the hostile originals of issue 9 — a value near 1 MiB
// quoted in a long error, a huge key, a flood of headers, one giant header — and checks that
// every dead letter fits MaxRecordBytes, itself far under Kafka's default 1 MiB.
func TestDeadLetterStaysUnderTheLimit(t *testing.T) {
	if MaxRecordBytes > 512<<10 {
		t.Fatalf("MaxRecordBytes = %d: the caps must keep a dead letter far under 1 MiB", MaxRecordBytes)
	}
	many := make([]kgo.RecordHeader, 100_000)
	for i := range many {
		many[i] = kgo.RecordHeader{Key: "h" + strconv.Itoa(i), Value: []byte("v")}
	}
	cases := map[string]*kgo.Record{
		"value near 1 MiB": {Value: []byte(strings.Repeat("x", 1<<20-10))},
		"huge key":         {Key: []byte(strings.Repeat("k", 900<<10)), Value: []byte("v")},
		"header flood":     {Value: []byte("v"), Headers: many},
		"one giant header": {Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "big", Value: make([]byte, 1<<20)}}},
		"everything at once": {Key: make([]byte, 1<<20), Value: make([]byte, 1<<20),
			Headers: append([]kgo.RecordHeader{{Key: "big", Value: make([]byte, 1<<20)}}, many...)},
	}
	for name, r := range cases {
		r.Topic, r.Partition, r.Offset = "raw", 3, 1234
		detail := "record is not JSON: " + string(r.Value) // the error quotes the value
		dl := Record("dlq", r, "transformer", event.ReasonNotJSON, detail)
		if size := Size(dl); size > MaxRecordBytes {
			t.Errorf("%s: dead letter of %d bytes, over %d", name, size, MaxRecordBytes)
		}
		if got := headers(dl, event.HeaderError); len(got) != 1 || len(got[0]) > MaxErrorBytes || !utf8.ValidString(got[0]) {
			t.Errorf("%s: error header of %d bytes", name, len(got[0]))
		}
		if len(r.Value) > MaxValueBytes && (len(dl.Value) != MaxValueBytes || headers(dl, HeaderValueTruncated)[0] != strconv.Itoa(len(r.Value))) {
			t.Errorf("%s: value cut to %d, header %v", name, len(dl.Value), headers(dl, HeaderValueTruncated))
		}
		if len(r.Key) > MaxKeyBytes && (len(dl.Key) != MaxKeyBytes || headers(dl, HeaderKeyTruncated)[0] != strconv.Itoa(len(r.Key))) {
			t.Errorf("%s: key cut to %d, header %v", name, len(dl.Key), headers(dl, HeaderKeyTruncated))
		}
	}
	// The flood keeps headers in order while they fit and counts the rest.
	dl := Record("dlq", cases["header flood"], "transformer", event.ReasonNotJSON, "x")
	if got := headers(dl, "h0"); len(got) != 1 {
		t.Errorf("the first incoming header must be kept")
	}
	if d := headers(dl, HeaderHeadersDropped); len(d) != 1 || d[0] != strconv.Itoa(100_000-MaxHeaders) {
		t.Errorf("headers_dropped = %v, want %d", d, 100_000-MaxHeaders)
	}
}

// TestDeadLetterHeadersCannotBeForged: a producer that sets reason, error, stage or source_* on
// its own record does not decide what the dead letter says.
func TestDeadLetterHeadersCannotBeForged(t *testing.T) {
	r := &kgo.Record{Topic: "raw", Partition: 2, Offset: 77, Value: []byte("{"), Headers: []kgo.RecordHeader{
		{Key: event.HeaderReason, Value: []byte("all_good")},
		{Key: event.HeaderSourceTopic, Value: []byte("elsewhere")},
		{Key: event.HeaderSourcePartition, Value: []byte("9")},
		{Key: event.HeaderSourceOffset, Value: []byte("0")},
		{Key: event.HeaderStage, Value: []byte("nobody")},
		{Key: event.HeaderError, Value: []byte("none")},
		{Key: HeaderValueTruncated, Value: []byte("1")},
		{Key: "trace_id", Value: []byte("abc")},
	}}
	dl := Record("dlq", r, "transformer", event.ReasonNotJSON, "record is not JSON")
	want := map[string]string{event.HeaderReason: "not_json", event.HeaderSourceTopic: "raw", event.HeaderSourcePartition: "2",
		event.HeaderSourceOffset: "77", event.HeaderStage: "transformer", event.HeaderError: "record is not JSON", "trace_id": "abc"}
	for k, v := range want {
		if got := headers(dl, k); len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want exactly [%q]", k, got, v)
		}
	}
	if got := headers(dl, HeaderValueTruncated); len(got) != 0 {
		t.Errorf("a forged %s survived: %q", HeaderValueTruncated, got)
	}
}

func TestCutKeepsCharacters(t *testing.T) {
	s := strings.Repeat("é", 1000) // 2 bytes each
	got := cut(s, 101)
	if len(got) > 101 || !utf8.ValidString(got) || !strings.HasSuffix(got, "(cut)") {
		t.Errorf("cut = %d bytes %q", len(got), got)
	}
	if cut("short", 10) != "short" {
		t.Error("a short string must stay")
	}
}

// TestDeadLetterIsStampedAnew: a record the broker refused for its timestamp must not have its
// dead letter refused for the same one; the original timestamp is kept in a header.
func TestDeadLetterIsStampedAnew(t *testing.T) {
	at := time.Date(1999, 1, 2, 3, 4, 5, 0, time.UTC)
	dl := Record("dlq", &kgo.Record{Topic: "raw", Value: []byte("x"), Timestamp: at}, "transformer", event.ReasonPoison, "INVALID_TIMESTAMP")
	if !dl.Timestamp.IsZero() {
		t.Errorf("timestamp %v: the producer must stamp the dead letter", dl.Timestamp)
	}
	if got := headers(dl, HeaderTimestamp); len(got) != 1 || got[0] != strconv.FormatInt(at.UnixMilli(), 10) {
		t.Errorf("%s = %v", HeaderTimestamp, got)
	}
}
