// Package deadletter builds the records searchflow sends to the dead-letter topic: the original
// key, value and headers, cut to sizes that keep the whole record far below any producer limit,
// plus searchflow's own headers saying why and where from — which the producer of the original
// record cannot forge, since incoming headers with those names are dropped.
package deadletter

import (
	"strconv"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
)

// Size caps. With them a dead letter stays under MaxRecordBytes whatever the original held, so
// an oversized or header-stuffed record cannot fail its own dead-lettering and stall its
// partition.
const (
	MaxValueBytes   = 256 << 10 // the original value beyond this is cut (HeaderValueTruncated)
	MaxKeyBytes     = 4 << 10   // the original key beyond this is cut (HeaderKeyTruncated)
	MaxErrorBytes   = 1 << 10   // the error header beyond this is cut, at a character boundary
	MaxHeaderBytes  = 64 << 10  // incoming headers kept, in order, while they fit (HeaderHeadersDropped)
	MaxHeaders      = 1000      // and at most this many
	MaxRecordBytes  = MaxValueBytes + MaxKeyBytes + MaxErrorBytes + MaxHeaderBytes + MaxHeaders*2 + 1<<10
	headerOverheads = 2 // a header's two length varints, at the least
)

// Headers searchflow adds besides event's (reason, error, source_*, stage).
const (
	HeaderValueTruncated = "value_truncated_from" // the original value's length, when it was cut
	HeaderKeyTruncated   = "key_truncated_from"   // the original key's length, when it was cut
	HeaderHeadersDropped = "headers_dropped"      // how many incoming headers did not fit
	HeaderTimestamp      = "source_timestamp"     // the original record's timestamp, Unix milliseconds
)

// IsReserved reports whether a header name is one searchflow writes on dead letters: such a
// header on an incoming record is dropped from its dead letter.
func IsReserved(name string) bool {
	switch name {
	case event.HeaderError, event.HeaderReason, event.HeaderSourceTopic, event.HeaderSourcePartition,
		event.HeaderSourceOffset, event.HeaderStage, HeaderValueTruncated, HeaderKeyTruncated, HeaderHeadersDropped,
		HeaderTimestamp:
		return true
	}
	return false
}

// Record returns the dead letter of r, bound for topic: why (reason, and detail in the error
// header), which stage refused it, and where it came from. extra headers (not reserved names)
// are added after the original ones. The dead letter is stamped when it is produced, the
// original timestamp kept in a header: a timestamp the broker refused (INVALID_TIMESTAMP) must
// not fail the dead letter too.
func Record(topic string, r *kgo.Record, stage string, reason event.Reason, detail string, extra ...kgo.RecordHeader) *kgo.Record {
	out := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value}
	headers := make([]kgo.RecordHeader, 0, len(r.Headers)+len(extra)+9)
	budget, dropped := MaxHeaderBytes, 0
	for _, h := range r.Headers {
		size := len(h.Key) + len(h.Value) + headerOverheads
		if IsReserved(h.Key) || size > budget || len(headers) >= MaxHeaders {
			dropped++
			continue
		}
		budget -= size
		headers = append(headers, h)
	}
	for _, h := range extra {
		if !IsReserved(h.Key) {
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kgo.RecordHeader{Key: event.HeaderReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: event.HeaderError, Value: []byte(cut(detail, MaxErrorBytes))},
		kgo.RecordHeader{Key: event.HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: event.HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: event.HeaderSourceOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		kgo.RecordHeader{Key: event.HeaderStage, Value: []byte(stage)},
		kgo.RecordHeader{Key: HeaderTimestamp, Value: strconv.AppendInt(nil, r.Timestamp.UnixMilli(), 10)},
	)
	if dropped > 0 {
		headers = append(headers, kgo.RecordHeader{Key: HeaderHeadersDropped, Value: strconv.AppendInt(nil, int64(dropped), 10)})
	}
	if len(out.Value) > MaxValueBytes {
		headers = append(headers, kgo.RecordHeader{Key: HeaderValueTruncated, Value: strconv.AppendInt(nil, int64(len(out.Value)), 10)})
		out.Value = out.Value[:MaxValueBytes]
	}
	if len(out.Key) > MaxKeyBytes {
		headers = append(headers, kgo.RecordHeader{Key: HeaderKeyTruncated, Value: strconv.AppendInt(nil, int64(len(out.Key)), 10)})
		out.Key = out.Key[:MaxKeyBytes]
	}
	out.Headers = headers
	return out
}

// Size is the bytes a record's key, value and headers take, within a few bytes of varints: what
// the producer's record limit is measured against.
func Size(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value) + 32 // length varints, attributes, timestamp and offset deltas
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 2*5
	}
	return n
}

// cut shortens s to at most max bytes without splitting a character, marking the cut.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "… (cut)"
	end := max - len(mark)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + mark
}
