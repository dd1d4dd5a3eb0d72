package event

import "fmt"

// scanner walks JSON bytes. The first syntax error stops it: every method is a no-op once err is
// set, so callers check err once at the end.
type scanner struct {
	b       []byte
	i       int
	depth   int
	err     error
	tooDeep bool
}

func (s *scanner) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
	}
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// kindAt skips whitespace and classifies the next value by its first byte: '"', '{', '[', 't',
// 'f', 'n', or '0' for a number.
func (s *scanner) kindAt() byte {
	s.ws()
	switch c := s.peek(); c {
	case '"', '{', '[', 't', 'f', 'n':
		return c
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return '0'
	default:
		return 0
	}
}

func (s *scanner) enter() bool {
	s.depth++
	if s.depth > MaxDepth {
		s.tooDeep = true
		s.fail("nesting deeper than %d", MaxDepth)
		return false
	}
	return true
}

// object parses an object, calling member with each raw key (without quotes; esc says whether
// it holds escapes) positioned at the member's value, which member must consume.
func (s *scanner) object(member func(key []byte, esc bool)) {
	if s.err != nil {
		return
	}
	s.ws()
	if s.peek() != '{' {
		s.fail("expected an object at byte %d", s.i)
		return
	}
	if !s.enter() {
		return
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		s.depth--
		return
	}
	for s.err == nil {
		s.ws()
		if s.peek() != '"' {
			s.fail("expected a key at byte %d", s.i)
			return
		}
		key, esc := s.str()
		s.ws()
		if s.peek() != ':' {
			s.fail("expected ':' at byte %d", s.i)
			return
		}
		s.i++
		member(key, esc)
		if s.err != nil {
			return
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return
		default:
			s.fail("expected ',' or '}' at byte %d", s.i)
			return
		}
	}
}

// array parses an array, calling elem positioned at each element, which elem must consume.
func (s *scanner) array(elem func()) {
	if s.err != nil {
		return
	}
	s.ws()
	if s.peek() != '[' {
		s.fail("expected an array at byte %d", s.i)
		return
	}
	if !s.enter() {
		return
	}
	s.i++
	s.ws()
	if s.peek() == ']' {
		s.i++
		s.depth--
		return
	}
	for s.err == nil {
		elem()
		if s.err != nil {
			return
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return
		default:
			s.fail("expected ',' or ']' at byte %d", s.i)
			return
		}
	}
}

// str consumes a string and returns its raw body (escapes intact) and whether it has escapes.
// The input is known to be valid UTF-8.
func (s *scanner) str() ([]byte, bool) {
	if s.err != nil {
		return nil, false
	}
	s.ws()
	if s.peek() != '"' {
		s.fail("expected a string at byte %d", s.i)
		return nil, false
	}
	s.i++
	start, esc := s.i, false
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			body := s.b[start:s.i]
			s.i++
			return body, esc
		case c == '\\':
			esc = true
			if s.i+1 >= len(s.b) {
				s.fail("unterminated escape")
				return nil, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) || !isHex(s.b[s.i+2]) || !isHex(s.b[s.i+3]) || !isHex(s.b[s.i+4]) || !isHex(s.b[s.i+5]) {
					s.fail("invalid \\u escape at byte %d", s.i)
					return nil, false
				}
				s.i += 6
			default:
				s.fail("invalid escape at byte %d", s.i)
				return nil, false
			}
		case c < 0x20:
			s.fail("control character in string at byte %d", s.i)
			return nil, false
		default:
			s.i++
		}
	}
	s.fail("unterminated string")
	return nil, false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number consumes a number per the JSON grammar and returns its bytes.
func (s *scanner) number() []byte {
	if s.err != nil {
		return nil
	}
	s.ws()
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	switch {
	case s.peek() == '0':
		s.i++
	case isDigit(s.peek()):
		for isDigit(s.peek()) {
			s.i++
		}
	default:
		s.fail("invalid number at byte %d", start)
		return nil
	}
	if s.peek() == '.' {
		s.i++
		if !isDigit(s.peek()) {
			s.fail("invalid number at byte %d", start)
			return nil
		}
		for isDigit(s.peek()) {
			s.i++
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !isDigit(s.peek()) {
			s.fail("invalid number at byte %d", start)
			return nil
		}
		for isDigit(s.peek()) {
			s.i++
		}
	}
	return s.b[start:s.i]
}

func (s *scanner) literal(word string) {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return
	}
	s.fail("invalid literal at byte %d", s.i)
}

// skipValue consumes any value, checking its syntax.
func (s *scanner) skipValue() {
	if s.err != nil {
		return
	}
	switch s.kindAt() {
	case '"':
		s.str()
	case '0':
		s.number()
	case '{':
		s.object(func([]byte, bool) { s.skipValue() })
	case '[':
		s.array(s.skipValue)
	case 't':
		s.literal("true")
	case 'f':
		s.literal("false")
	case 'n':
		s.literal("null")
	default:
		s.fail("unexpected byte at %d", s.i)
	}
}
