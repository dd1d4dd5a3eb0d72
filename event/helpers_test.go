package event_test

import (
	"encoding/json"
	"testing"

	"github.com/searchflow/searchflow/event"
)

// transform is the hand-written decoder's verdict as a Processed: what AppendProcessed writes
// under the default limits, decoded.
func transform(raw []byte) (event.Processed, error) {
	return transformWithin(event.DefaultLimits(), raw)
}

// transformWithin is transform under the limits lim.
func transformWithin(lim event.Limits, raw []byte) (event.Processed, error) {
	b, _, err := lim.AppendProcessed(nil, raw)
	if err != nil {
		return event.Processed{}, err
	}
	var p event.Processed
	if err := json.Unmarshal(b, &p); err != nil {
		panic("AppendProcessed wrote JSON that does not decode: " + err.Error())
	}
	return p, nil
}

// encode is a processed event's JSON as encoding/json writes it: the bytes AppendProcessed must
// write too.
func encode(tb testing.TB, p event.Processed) []byte {
	tb.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
