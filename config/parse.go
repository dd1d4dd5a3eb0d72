package config

import (
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/searchflow/searchflow/trends"
)

// parser reads variables through getenv and collects every error, each naming its variable and
// quoting what the variable accepts.
type parser struct {
	getenv func(string) string
	vars   map[string]Var
	errs   []error
}

func newParser(getenv func(string) string, vars []Var) *parser {
	p := &parser{getenv: getenv, vars: make(map[string]Var, len(vars))}
	for _, v := range vars {
		p.vars[v.Name] = v
	}
	return p
}

// readers maps each parse kind to how it reads a setting's variable. The value read is converted
// to the field's type (an int64 to int, say).
func readers() map[string]func(p *parser, s setting) any {
	return map[string]func(p *parser, s setting) any{
		"string":    func(p *parser, s setting) any { return p.raw(s.Name) },
		"upper":     func(p *parser, s setting) any { return strings.ToUpper(p.raw(s.Name)) },
		"secret":    func(p *parser, s setting) any { return p.secret(s.Name, s.Name+"_FILE") },
		"bool":      func(p *parser, s setting) any { return p.boolean(s.Name) },
		"int":       func(p *parser, s setting) any { return p.intRange(s.Name, s.lo, s.hi) },
		"duration":  func(p *parser, s setting) any { return p.duration(s.Name, false) },
		"duration0": func(p *parser, s setting) any { return p.duration(s.Name, true) },
		"fraction":  func(p *parser, s setting) any { return p.float(s.Name, 0, 1) },
		"skew":      func(p *parser, s setting) any { return p.float(s.Name, 0, 3) },
		"windows":   func(p *parser, s setting) any { return p.windows(s.Name) },
		"oneof":     func(p *parser, s setting) any { return p.oneOf(s.Name, s.oneOf...) },
		"hostport":  func(p *parser, s setting) any { return p.hostPort(s.Name) },
		"hostports": func(p *parser, s setting) any { return p.hostPorts(s.Name) },
		"origins":   func(p *parser, s setting) any { return p.origins(s.Name) },
		"topic":     func(p *parser, s setting) any { return p.topic(s.Name) },
		"instance":  func(p *parser, s setting) any { return p.instance(s.Name) },
		"file":      func(p *parser, s setting) any { return p.readableFile(s.Name) },
		"stages":    func(p *parser, s setting) any { return p.stages(s.Name) },
		"tokens":    func(p *parser, s setting) any { return p.tokens(s.Name) },
	}
}

// set reads the setting's variable into field.
func (p *parser) set(field reflect.Value, s setting) {
	v := reflect.ValueOf(readers()[s.parse](p, s))
	if !v.Type().ConvertibleTo(s.typ) {
		panic(fmt.Sprintf("config: %s: parse %s gives %s, not the field's %s", s.Name, s.parse, v.Type(), s.typ))
	}
	field.Set(v.Convert(s.typ))
}

// raw is the variable's value without surrounding space, or its default when that is empty.
func (p *parser) raw(name string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return p.vars[name].Default
}

func (p *parser) fail(name, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s (accepts %s)", name, fmt.Sprintf(format, args...), p.vars[name].Accepts))
}

// secret reads a secret from name, kept exactly as given (spaces are part of a password), or from
// the file fileName names, without its one trailing newline. Setting both is an error.
func (p *parser) secret(name, fileName string) string {
	v := p.getenv(name)
	path := p.raw(fileName)
	if path == "" {
		return v
	}
	if v != "" {
		p.fail(fileName, "is set and so is %s; set one of them", name)
		return v
	}
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		p.fail(fileName, "cannot read %q: %v", path, err)
		return ""
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		p.fail(fileName, "%q is empty", path)
	}
	return s
}

func (p *parser) boolean(name string) bool {
	switch v := strings.ToLower(p.raw(name)); v {
	case "true", "1", "yes":
		return true
	case "false", "0", "no":
		return false
	default:
		p.fail(name, "%q is not a boolean", v)
		return false
	}
}

// tokens reads the bearer tokens from the file name names: one per line, blank lines and lines
// starting with # ignored. A named file without a token is an error: it would lock everyone out
// or, worse, be taken for "open".
func (p *parser) tokens(name string) []string {
	path := p.raw(name)
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		p.fail(name, "cannot read %q: %v", path, err)
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < 16 {
			p.fail(name, "a token in %q is shorter than 16 characters", path)
			return nil
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		p.fail(name, "%q holds no token", path)
	}
	return out
}

// redact hides the credentials of a URL-like value (scheme://user:password@host) before it is
// quoted in an error: a REDIS_ADDR given as a URL by mistake must not print its password.
func redact(v string) string {
	at := strings.LastIndex(v, "@")
	if at < 0 {
		return v
	}
	start := 0
	if i := strings.Index(v, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return v[:start] + "***" + v[at:]
}

func (p *parser) intRange(name string, lo, hi int64) int64 {
	s := p.raw(name)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		p.fail(name, "%q is not an integer", s)
		return 0
	}
	if n < lo || n > hi {
		p.fail(name, "%d is out of range", n)
	}
	return n
}

// duration reads a Go duration: positive, or with zeroOK zero too ("0", "0s").
func (p *parser) duration(name string, zeroOK bool) time.Duration {
	s := p.raw(name)
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		p.fail(name, "%q is not a duration", s)
		return 0
	case d < 0 && zeroOK:
		p.fail(name, "%s is negative", s)
	case d <= 0 && !zeroOK:
		p.fail(name, "%s must be positive", s)
	}
	return d
}

// float reads a number in [lo, hi].
func (p *parser) float(name string, lo, hi float64) float64 {
	s := p.raw(name)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) {
		p.fail(name, "%q is not a number", s)
		return 0
	}
	if f < lo || f > hi {
		p.fail(name, "%s is out of range", s)
	}
	return f
}

// windows reads the trend windows (trends.ParseWindows says what is wrong with each element).
func (p *parser) windows(name string) []trends.Window {
	ws, err := trends.ParseWindows(p.raw(name))
	if err != nil {
		p.fail(name, "%v", err)
	}
	return ws
}

func (p *parser) oneOf(name string, allowed ...string) string {
	v := strings.ToLower(p.raw(name))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, "%q is not allowed", v)
	return v
}

func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// hostPort reads one address. It is empty only when the variable's default is, which means "not
// used" (REDIS_ADDR: the embedded store; ADMIN_ADDR: no admin server).
func (p *parser) hostPort(name string) string {
	v := p.raw(name)
	if v != "" && !validHostPort(v) {
		p.fail(name, "%q is not host:port", redact(v))
	}
	return v
}

func (p *parser) hostPorts(name string) []string {
	v := p.raw(name)
	if v == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if !validHostPort(s) {
			p.fail(name, "%q is not host:port", redact(s))
			continue
		}
		out = append(out, s)
	}
	return out
}

func (p *parser) origins(name string) []string {
	var out []string
	for _, o := range strings.Split(p.raw(name), ",") {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "*" || strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://"):
			out = append(out, o)
		default:
			p.fail(name, "%q is not an origin (scheme://host[:port])", o)
		}
	}
	return out
}

func (p *parser) topic(name string) string {
	v := p.raw(name)
	if v == "" || len(v) > 249 || v == "." || v == ".." || !kafkaName(v) {
		p.fail(name, "%q is not a valid topic name", v)
	}
	return v
}

// instance reads a name that goes into a transactional ID: empty, or up to 200 letters, digits,
// '.', '_' and '-'.
func (p *parser) instance(name string) string {
	v := p.raw(name)
	switch {
	case len(v) > 200:
		p.fail(name, "is %d bytes long: at most 200", len(v))
	case !kafkaName(v):
		p.fail(name, "%q may hold only letters, digits, '.', '_' and '-'", v)
	}
	return v
}

// kafkaName reports whether v holds only the characters of a Kafka topic name.
func kafkaName(v string) bool {
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (p *parser) stages(name string) []string {
	v := p.raw(name)
	seen := map[string]bool{}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" || seen[s] {
			continue
		}
		known := false
		for _, k := range AllStages() {
			known = known || k == s
		}
		if !known {
			p.fail(name, "unknown stage %q", s)
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	if len(out) == 0 && len(p.errs) == 0 {
		p.fail(name, "no stage enabled")
	}
	return out
}

func (p *parser) readableFile(name string) string {
	v := p.raw(name)
	if v == "" {
		return ""
	}
	f, err := os.Open(filepath.Clean(v))
	if err != nil {
		p.fail(name, "cannot open %q: %v", v, err)
		return v
	}
	_ = f.Close()
	return v
}
