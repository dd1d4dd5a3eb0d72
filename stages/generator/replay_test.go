package generator

import (
	"cmp"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/eventref"
)

// wantReplayEvent is what one hotel of a replay line must become. advertisers is the exact text
// of the hotel's "advertisers" value in the line, or "" when the hotel has none.
type wantReplayEvent struct {
	hotel, advertisers string
}

func TestParseReplayLine(t *testing.T) {
	const user = "a9da7e2b-7a33-4d4e-9a1c-2c6e2d8f1c11"
	tests := []struct {
		name string
		user string // default user
		ts   string // default "1620224528"
		body string
		want []wantReplayEvent
	}{
		{
			name: "original sample",
			body: `{6036:{"advertisers":{"Amoma":[{"eurocents":17558,"breakfast":false}]}},` +
				`6035:{"advertisers":{"Mercure":[{"eurocents":31266,"breakfast":true},{"eurocents":12621}],"Destinia":[{"eurocents":12621,"breakfast":null}]}}}`,
			want: []wantReplayEvent{
				{"6036", `{"Amoma":[{"eurocents":17558,"breakfast":false}]}`},
				{"6035", `{"Mercure":[{"eurocents":31266,"breakfast":true},{"eurocents":12621}],"Destinia":[{"eurocents":12621,"breakfast":null}]}`},
			},
		},
		{
			name: "whitespace inside the advertisers object is kept",
			body: `{ 7 : {"advertisers": {"Amoma" : [ {"eurocents": 100} ] } } , 8:{"advertisers":{"HRS":[{"eurocents":5}]}} }`,
			want: []wantReplayEvent{
				{"7", `{"Amoma" : [ {"eurocents": 100} ] }`},
				{"8", `{"HRS":[{"eurocents":5}]}`},
			},
		},
		{
			name: "digits, colons, commas and braces inside strings are untouched",
			body: `{6036:{"advertisers":{"24:7 {hotels}":[{"eurocents":1}],"x,12:y":[{"eurocents":2}],"q\"5:{\"":[{"eurocents":3}],"[1]":[{"eurocents":4}]}}}`,
			want: []wantReplayEvent{
				{"6036", `{"24:7 {hotels}":[{"eurocents":1}],"x,12:y":[{"eurocents":2}],"q\"5:{\"":[{"eurocents":3}],"[1]":[{"eurocents":4}]}`},
			},
		},
		{
			name: "hotel ids that are already strings",
			body: `{"6036":{"advertisers":{"Amoma":[{"eurocents":9}]}}}`,
			want: []wantReplayEvent{{"6036", `{"Amoma":[{"eurocents":9}]}`}},
		},
		{
			name: "other fields of a hotel entry are ignored",
			body: `{11:{"name":"x","advertisers":{"Amoma":[{"eurocents":9}]},"stars":4}}`,
			want: []wantReplayEvent{{"11", `{"Amoma":[{"eurocents":9}]}`}},
		},
		{
			name: "hotel without advertisers",
			body: `{1:{"advertisers":{"Amoma":[{"eurocents":9}]}},2:{},3:{"other":{4:5}}}`,
			want: []wantReplayEvent{
				{"1", `{"Amoma":[{"eurocents":9}]}`},
				{"2", ""},
				{"3", ""},
			},
		},
		{
			name: "timestamp with spaces and a CRLF line end",
			ts:   " 1620224528 ",
			body: "{5:{\"advertisers\":{\"Amoma\":[{\"eurocents\":9}]}}}\r\n",
			want: []wantReplayEvent{{"5", `{"Amoma":[{"eurocents":9}]}`}},
		},
		{
			name: "user id that needs JSON escaping",
			user: `we"ird\user <x>`,
			body: `{5:{"advertisers":{"Amoma":[{"eurocents":9}]}}}`,
			want: []wantReplayEvent{{"5", `{"Amoma":[{"eurocents":9}]}`}},
		},
		{
			name: "no hotels",
			body: `{}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, ts := cmp.Or(tt.user, user), cmp.Or(tt.ts, "1620224528")
			got, err := ParseReplayLine(u + "\t" + ts + "\t" + tt.body)
			if err != nil {
				t.Fatalf("ParseReplayLine: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events, want %d: %q", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				checkReplayEvent(t, got[i], u, 1620224528, w)
			}
		})
	}
}

// checkReplayEvent checks one parsed event against the line's user and timestamp and the
// hotel it must stand for, and that the transformer judges it as the hotel deserves.
func checkReplayEvent(t *testing.T, got ReplayEvent, user string, ts int64, want wantReplayEvent) {
	t.Helper()
	if string(got.Key) != user {
		t.Errorf("hotel %s: key %q, want the user %q", want.hotel, got.Key, user)
	}
	if !json.Valid(got.Value) {
		t.Fatalf("hotel %s: value is not JSON: %s", want.hotel, got.Value)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(got.Value, &fields); err != nil {
		t.Fatalf("hotel %s: value is not an object: %v: %s", want.hotel, err, got.Value)
	}
	var gotUser, gotHotel string
	var gotTS int64
	if err := json.Unmarshal(fields["user_id"], &gotUser); err != nil || gotUser != user {
		t.Errorf("hotel %s: user_id %s, want %q", want.hotel, fields["user_id"], user)
	}
	// The hotel id must be a JSON string, as the synthetic events have it.
	if err := json.Unmarshal(fields["hotel_id"], &gotHotel); err != nil || gotHotel != want.hotel {
		t.Errorf("hotel %s: hotel_id %s, want the string %q", want.hotel, fields["hotel_id"], want.hotel)
	}
	if err := json.Unmarshal(fields["search_timestamp"], &gotTS); err != nil || gotTS != ts {
		t.Errorf("hotel %s: search_timestamp %s, want %d", want.hotel, fields["search_timestamp"], ts)
	}
	adv, hasAdv := fields["hotel_advertisers"]
	switch {
	case want.advertisers == "" && hasAdv:
		t.Errorf("hotel %s: hotel_advertisers %s, want none", want.hotel, adv)
	case want.advertisers != "" && string(adv) != want.advertisers:
		t.Errorf("hotel %s: hotel_advertisers\n got %s\nwant %s", want.hotel, adv, want.advertisers)
	}

	p, err := eventref.Transform(got.Value)
	if want.advertisers == "" {
		// The transformer, not the replay, rejects a hotel without offers: it dead-letters.
		var verr *event.ValidationError
		if !errors.As(err, &verr) || verr.Reason != event.ReasonMissingAdvertisers {
			t.Errorf("hotel %s: Transform error %v, want reason %s", want.hotel, err, event.ReasonMissingAdvertisers)
		}
		return
	}
	if err != nil {
		t.Errorf("hotel %s: Transform: %v\n%s", want.hotel, err, got.Value)
		return
	}
	if p.UserID != user || p.HotelID != want.hotel {
		t.Errorf("hotel %s: transformed to %+v", want.hotel, p)
	}
}

func TestParseReplayLineErrors(t *testing.T) {
	const good = `{6036:{"advertisers":{"Amoma":[{"eurocents":17558,"breakfast":false}]}}}`
	tests := []struct {
		name, line string
	}{
		{"user id not UTF-8", "u\xff\t1620224528\t" + good},
		{"lone minus as hotel id", "u1\t1620224528\t{-:{\"advertisers\":{}}}"},
		{"empty line", ""},
		{"one field", "u1"},
		{"two fields", "u1\t1620224528"},
		{"four fields", "u1\t1620224528\t" + good + "\textra"},
		{"fields split by spaces", "u1 1620224528 " + good},
		{"empty user", "\t1620224528\t" + good},
		{"blank user", "   \t1620224528\t" + good},
		{"empty timestamp", "u1\t\t" + good},
		{"timestamp not a number", "u1\tyesterday\t" + good},
		{"fractional timestamp", "u1\t1620224528.5\t" + good},
		{"timestamp overflows int64", "u1\t99999999999999999999\t" + good},
		{"empty hotel results", "u1\t1620224528\t"},
		{"hotel results not an object", "u1\t1620224528\t[1,2]"},
		{"hotel results a string", "u1\t1620224528\t\"x\""},
		{"missing colon", "u1\t1620224528\t{6036 {\"advertisers\":{}}}"},
		{"missing value", "u1\t1620224528\t{6036:{\"advertisers\":}}"},
		{"missing comma between hotels", "u1\t1620224528\t{1:{} 2:{}}"},
		{"hotel entry not an object", "u1\t1620224528\t{6036:5}"},
		{"mismatched brackets", "u1\t1620224528\t{6036:{\"advertisers\":[}]}"},
		{"unterminated object", "u1\t1620224528\t{6036:{\"advertisers\":{}}"},
		{"unterminated string", "u1\t1620224528\t{6036:{\"advertisers\":{\"Amoma}}}"},
		{"extra closing brace", "u1\t1620224528\t" + good + "}"},
		{"extra closing bracket", "u1\t1620224528\t" + good + "]"},
		{"trailing word", "u1\t1620224528\t" + good + " x"},
		{"trailing number", "u1\t1620224528\t" + good + "7"},
		{"second object", "u1\t1620224528\t" + good + "{}"},
		{"trailing comma", "u1\t1620224528\t" + good + ","},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReplayLine(tt.line)
			if err == nil {
				t.Fatalf("ParseReplayLine(%q) = %q, want an error", tt.line, got)
			}
			if got != nil {
				t.Errorf("ParseReplayLine(%q) returned %d events with its error", tt.line, len(got))
			}
		})
	}
}

func FuzzParseReplayLine(f *testing.F) {
	f.Add("u1\t1620224528\t{6036:{\"advertisers\":{\"Amoma\":[{\"eurocents\":17558,\"breakfast\":false}]}},6035:{}}")
	f.Add("u1\t1\t{\"1\":{\"advertisers\":{\"a:1,{\":[]}}}")
	f.Add("u1\t1\t{-5:null}")
	f.Fuzz(func(t *testing.T, line string) {
		events, err := ParseReplayLine(line)
		if err != nil {
			return
		}
		user := strings.Split(strings.TrimRight(line, "\r\n"), "\t")[0]
		for _, ev := range events {
			// Every event the parser accepts is something the transformer can judge: valid JSON,
			// keyed by the line's user.
			if !json.Valid(ev.Value) {
				t.Fatalf("ParseReplayLine(%q) gave invalid JSON %s", line, ev.Value)
			}
			if string(ev.Key) != user {
				t.Fatalf("ParseReplayLine(%q) gave key %q, want %q", line, ev.Key, user)
			}
		}
	})
}
