package generator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ReplayEvent is one raw event taken from a line of a replay file.
type ReplayEvent struct {
	Key, Value []byte
}

// ParseReplayLine reads one line of the original project's data format,
//
//	user_id<TAB>unix_ts<TAB>{6036:{"advertisers":{...}},6035:{...}}
//
// where hotel ids are bare numbers, and returns one raw event per hotel, in the line's order, with
// the line's user and timestamp. The advertisers object is passed on untouched: judging it is the
// transformer's job, so a hotel with bad offers reaches the dead-letter topic rather than vanishing
// here. An error means the line itself cannot be read.
func ParseReplayLine(line string) ([]ReplayEvent, error) {
	parts := strings.Split(strings.TrimRight(line, "\r\n"), "\t")
	if len(parts) != 3 {
		return nil, fmt.Errorf("want 3 tab-separated fields, got %d", len(parts))
	}
	user := parts[0]
	if strings.TrimSpace(user) == "" {
		return nil, fmt.Errorf("empty user id")
	}
	if !utf8.ValidString(user) {
		// The key would keep the bad bytes while the JSON value replaced them: refuse the line.
		return nil, fmt.Errorf("user id is not valid UTF-8")
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(parts[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("timestamp %q is not an integer", parts[1])
	}
	body, err := quoteBareKeys(parts[2])
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("hotel results are not an object")
	}
	userJSON, _ := json.Marshal(user)
	var out []ReplayEvent
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("hotel results: %w", err)
		}
		hotel, _ := tok.(string)
		var entry struct {
			Advertisers json.RawMessage `json:"advertisers"`
		}
		if err := dec.Decode(&entry); err != nil {
			return nil, fmt.Errorf("hotel %s: %w", hotel, err)
		}
		hotelJSON, _ := json.Marshal(hotel)
		var v bytes.Buffer
		v.Grow(len(entry.Advertisers) + len(userJSON) + 80)
		v.WriteString(`{"user_id":`)
		v.Write(userJSON)
		v.WriteString(`,"hotel_id":`)
		v.Write(hotelJSON)
		v.WriteString(`,"search_timestamp":`)
		v.WriteString(strconv.FormatInt(ts, 10))
		if entry.Advertisers != nil {
			v.WriteString(`,"hotel_advertisers":`)
			v.Write(entry.Advertisers)
		}
		v.WriteByte('}')
		out = append(out, ReplayEvent{Key: []byte(user), Value: v.Bytes()})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("hotel results: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after hotel results")
	}
	return out, nil
}

// quoteBareKeys turns the bare numeric object keys of the original format ({6036:{...}}) into
// JSON strings, leaving string contents alone.
func quoteBareKeys(s string) ([]byte, error) {
	out := make([]byte, 0, len(s)+64)
	var stack []byte // open containers: '{' or '['
	inString, escaped, wantKey := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			out = append(out, c)
			continue
		case '"':
			inString, wantKey = true, false
			out = append(out, c)
			continue
		case '{':
			stack = append(stack, c)
			out = append(out, c)
			wantKey = true
			continue
		case '[':
			stack = append(stack, c)
		case '}', ']':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced %q at byte %d", c, i)
			}
			stack = stack[:len(stack)-1]
		case ',':
			out = append(out, c)
			wantKey = len(stack) > 0 && stack[len(stack)-1] == '{'
			continue
		}
		if wantKey && (c >= '0' && c <= '9' || c == '-' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9') {
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			out = append(out, '"')
			out = append(out, s[i:j]...)
			out = append(out, '"')
			i = j - 1
			wantKey = false
			continue
		}
		wantKey = false
		out = append(out, c)
	}
	if inString || len(stack) != 0 {
		return nil, fmt.Errorf("unterminated JSON")
	}
	return out, nil
}
