// Package kafkatest gives tests an in-process kfake broker and helpers to produce to and read
// back from it.
package kafkatest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Start runs a one-broker kfake cluster with the given topics (partitions each), closed in
// t.Cleanup, and returns its address.
func Start(t testing.TB, partitions int32, topics ...string) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

// Produce writes records synchronously, failing the test on any error.
func Produce(t testing.TB, addr string, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("kafkatest: producer: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("kafkatest: produce: %v", err)
	}
}

// ReadAll reads topic from the start with read-committed isolation until want records arrived
// and returns them.
func ReadAll(t testing.TB, addr, topic string, want int) []*kgo.Record {
	t.Helper()
	return readUntil(t, addr, topic, func(recs []*kgo.Record) bool { return len(recs) >= want })
}

// readUntil reads topic from the start with read-committed isolation until done says the records
// read so far are enough, and returns them; it fails the test after a minute.
func readUntil(t testing.TB, addr, topic string, done func([]*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatalf("kafkatest: consumer: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for !done(out) {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			t.Fatalf("kafkatest: read %s: %d records and still not done at the deadline", topic, len(out))
		}
		fs.EachError(func(_ string, _ int32, err error) {
			if err != context.DeadlineExceeded {
				t.Logf("kafkatest: fetch error: %v", err)
			}
		})
		out = append(out, fs.Records()...)
	}
	return out
}

// ReadToEnd reads every record of a topic written without transactions, up to the end offsets
// it has when called.
func ReadToEnd(t testing.TB, addr, topic string) []*kgo.Record {
	t.Helper()
	return readToEnd(t, addr, topic, false)
}

// ReadCommittedToEnd reads a transactional topic from its start as a read_committed consumer
// does, up to the end offsets (high watermarks) it has when called, and returns the committed
// records. Aborted records and the transactions' control markers are not returned but count
// towards the end, so a partition that ends with a commit marker or an aborted batch is read to
// its end, and a copy committed after the records a test waited for cannot go unseen. A
// transaction still open below an end offset is waited for, a minute at most.
func ReadCommittedToEnd(t testing.TB, addr, topic string) []*kgo.Record {
	t.Helper()
	return readToEnd(t, addr, topic, true)
}

// readToEnd reads each partition of topic from its start to its end offset with plain Fetch
// requests: unlike a consumer's poll, each answer says how far the partition was read, skipped
// records and markers included.
func readToEnd(t testing.TB, addr, topic string, committed bool) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		t.Fatalf("kafkatest: start offsets of %s: %v", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("kafkatest: end offsets of %s: %v", topic, err)
	}
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		t.Fatalf("kafkatest: metadata of %s: %v", topic, err)
	}
	td := md.Topics[topic]
	var out []*kgo.Record
	ends.Each(func(end kadm.ListedOffset) {
		start, _ := starts.Lookup(topic, end.Partition)
		pd, ok := td.Partitions[end.Partition]
		if !ok || pd.Err != nil {
			t.Fatalf("kafkatest: no leader known for %s/%d", topic, end.Partition)
		}
		r := partitionReader{cl: cl.Broker(int(pd.Leader)), topic: topic, topicID: td.ID, partition: end.Partition,
			committed: committed}
		recs, err := r.read(ctx, start.Offset, end.Offset)
		if err != nil {
			t.Fatalf("kafkatest: read %s to its end: %v", topic, err)
		}
		out = append(out, recs...)
	})
	return out
}

// partitionReader fetches one partition from its leader.
type partitionReader struct {
	cl        *kgo.Broker
	topic     string
	topicID   [16]byte
	partition int32
	committed bool // read_committed, else read_uncommitted
}

// read returns the records in [from, end), fetching until its position reaches end.
func (r partitionReader) read(ctx context.Context, from, end int64) ([]*kgo.Record, error) {
	isolation := kgo.ReadUncommitted()
	if r.committed {
		isolation = kgo.ReadCommitted()
	}
	var out []*kgo.Record
	for from < end {
		req := kmsg.NewPtrFetchRequest()
		if r.committed {
			req.IsolationLevel = 1
		}
		req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 100, 1, 8<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = r.topic, r.topicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = r.partition, from, 8<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, r.cl)
		if err != nil {
			return nil, fmt.Errorf("%s/%d at offset %d of %d: %w", r.topic, r.partition, from, end, err)
		}
		part := r.find(resp)
		if part == nil {
			return nil, fmt.Errorf("%s/%d: the partition is not in the fetch answer", r.topic, r.partition)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: from, IsolationLevel: isolation,
			Topic: r.topic, Partition: r.partition}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return nil, fmt.Errorf("%s/%d at offset %d: %w", r.topic, r.partition, from, fp.Err)
		}
		for _, rec := range fp.Records {
			if rec.Offset < end {
				out = append(out, rec)
			}
		}
		// next stays at from while the rest lies beyond an open transaction (read_committed stops
		// at the last stable offset): the answer waited MaxWaitMillis, ask again.
		from = max(from, next)
	}
	return out, nil
}

func (r partitionReader) find(resp *kmsg.FetchResponse) *kmsg.FetchResponseTopicPartition {
	for i := range resp.Topics {
		if rt := &resp.Topics[i]; rt.Topic == r.topic || rt.TopicID == r.topicID {
			for j := range rt.Partitions {
				if rt.Partitions[j].Partition == r.partition {
					return &rt.Partitions[j]
				}
			}
		}
	}
	return nil
}

// WaitCommitted waits until group has committed every partition of topic, a topic written without
// transactions, up to the end offset it has when called: the group has nothing left to read.
func WaitCommitted(t testing.TB, addr, group, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("kafkatest: end offsets of %s: %v", topic, err)
	}
	for {
		left := ""
		commits, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			left = err.Error()
		}
		ends.Each(func(end kadm.ListedOffset) {
			c, ok := commits.Lookup(topic, end.Partition)
			if left == "" && end.Offset > 0 && (!ok || c.At < end.Offset) {
				left = fmt.Sprintf("%s/%d: committed %d of %d", topic, end.Partition, c.At, end.Offset)
			}
		})
		if left == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: group %s did not commit %s to its end within a minute: %s", group, topic, left)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Header returns the value of r's last header named key, "" when it has none.
func Header(r *kgo.Record, key string) string {
	v := ""
	for _, h := range r.Headers {
		if h.Key == key {
			v = string(h.Value)
		}
	}
	return v
}

// ProduceInvalidRaw slips raw records the transformer must dead-letter (not JSON, no
// advertisers, a negative price) into topic, keyed by round, and returns how many it wrote.
func ProduceInvalidRaw(t testing.TB, addr, topic string, round int) int {
	t.Helper()
	invalidRaw := [...]string{`not json`, `{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{}}`,
		`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":-1}]}}`}
	recs := make([]*kgo.Record, 0, len(invalidRaw))
	for i, v := range invalidRaw {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("bad-%d-%d", round, i)), Value: []byte(v)})
	}
	Produce(t, addr, recs...)
	return len(recs)
}
