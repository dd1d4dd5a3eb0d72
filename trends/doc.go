// Package trends is the event-time window logic of the trending counts: which fixed bucket an
// event falls in, which buckets make up a sliding window at query time, when an event is too late
// to count, and when a bucket can be retired. Pure code, no I/O and no clock: every time here is
// an event time (an event's search_timestamp, Unix seconds) or a Kafka record timestamp, never the
// wall clock, so replaying the same records always gives the same buckets.
package trends
