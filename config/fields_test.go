package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leafFields lists the path (KafkaTLS.CAFile) of every field of struct type t that is not itself
// a struct, found without the package's own walk.
func leafFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, leafFields(f.Type, prefix+f.Name+".")...)
			continue
		}
		out = append(out, prefix+f.Name)
	}
	return out
}

func fieldPath(t reflect.Type, index []int) string {
	var names []string
	for _, i := range index {
		f := t.Field(i)
		names = append(names, f.Name)
		t = f.Type
	}
	return strings.Join(names, ".")
}

func configSettings(t *testing.T) []setting {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Config's tags: %v", r)
		}
	}()
	var out []setting
	walk(reflect.TypeFor[Config](), func(s setting) { out = append(out, s) }, nil)
	return out
}

// readersOf maps each variable of Vars to the fields that read it: its own field, a derived
// field's from, or for NAME_FILE the secret field NAME. A variable without a field is missing.
func readersOf(t *testing.T, settings []setting) map[string][]setting {
	t.Helper()
	out := map[string][]setting{}
	for _, v := range Vars() {
		for _, s := range settings {
			if s.Name == v.Name || s.parse == "secret" && s.Name+"_FILE" == v.Name {
				out[v.Name] = append(out[v.Name], s)
			}
		}
		if len(out[v.Name]) == 0 {
			t.Errorf("%s is in Vars but no field of Config reads it", v.Name)
		}
	}
	return out
}

func TestEveryFieldHasAVariable(t *testing.T) {
	settings := configSettings(t)
	typ := reflect.TypeFor[Config]()
	bound := map[string]string{}
	for _, s := range settings {
		bound[fieldPath(typ, s.index)] = s.Name
	}
	vars := map[string]bool{}
	for _, v := range Vars() {
		vars[v.Name] = true
	}
	for _, path := range leafFields(typ, "") {
		switch name := bound[path]; {
		case name == "":
			t.Errorf("field %s has no variable: give it an env tag", path)
		case !vars[name]:
			t.Errorf("field %s reads %s, which Vars does not list", path, name)
		}
	}
	readersOf(t, settings)
}

// TestEveryVariableSetsItsField sets one variable at a time to a valid value other than its
// default and checks that Load puts it into every field that reads the variable and that Masked
// shows the change. Together with TestEveryFieldHasAVariable: a tagged field is read and logged
// with no other edit, and no variable is listed that nothing reads.
func TestEveryVariableSetsItsField(t *testing.T) {
	settings := configSettings(t)
	readers := readersOf(t, settings)
	base, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	baseLog := base.Masked()
	if len(baseLog) != len(settings) {
		t.Errorf("Masked has %d keys for %d fields", len(baseLog), len(settings))
	}
	covered := map[string]bool{}
	for _, v := range Vars() {
		value := sampleValue(t, v, readers[v.Name])
		// Cross-variable checks may refuse one variable alone (a CA file without KAFKA_TLS, say);
		// Load still returns what it read, and that is what is checked here.
		c, _ := Load(env(map[string]string{v.Name: value}))
		log := c.Masked()
		for _, s := range readers[v.Name] {
			path := fieldPath(reflect.TypeFor[Config](), s.index)
			covered[path] = true
			got := reflect.ValueOf(c).FieldByIndex(s.index).Interface()
			if reflect.DeepEqual(got, reflect.ValueOf(base).FieldByIndex(s.index).Interface()) {
				t.Errorf("%s=%q left %s at its default %v", v.Name, value, path, got)
			}
			if reflect.DeepEqual(log[s.logKey], baseLog[s.logKey]) {
				t.Errorf("%s=%q: Masked()[%s] still shows %v", v.Name, value, s.logKey, log[s.logKey])
			}
		}
	}
	for _, s := range settings {
		if path := fieldPath(reflect.TypeFor[Config](), s.index); !covered[path] {
			t.Errorf("no variable of Vars sets %s", path)
		}
	}
}

// sampleValue is a valid value for v, other than its default, chosen by how its fields parse it.
func sampleValue(t *testing.T, v Var, readers []setting) string {
	t.Helper()
	file := func(body string) string {
		f := filepath.Join(t.TempDir(), "sample")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	kinds := map[string]bool{}
	for _, s := range readers {
		kinds[s.parse] = true
	}
	s := readers[0]
	switch {
	case kinds["tokens"]:
		return file("0123456789abcdef0123\n")
	case kinds["secret"] && v.Name == s.Name+"_FILE":
		return file("from a file\n")
	case kinds["file"]:
		return file("")
	case kinds["bool"]:
		return strconv.FormatBool(v.Default != "true")
	case kinds["int"]:
		if v.Default == strconv.FormatInt(s.lo, 10) {
			return strconv.FormatInt(s.hi, 10)
		}
		return strconv.FormatInt(s.lo, 10)
	case kinds["fraction"]:
		return "0.25"
	case kinds["skew"]:
		return "2"
	case kinds["windows"]:
		return "30m,2h"
	case kinds["duration"], kinds["duration0"]:
		if v.Default == "1h" {
			return "2h"
		}
		return "1h"
	case kinds["oneof"]:
		if s.oneOf[0] == v.Default {
			return s.oneOf[1]
		}
		return s.oneOf[0]
	case kinds["hostport"], kinds["hostports"]:
		return "sample:1"
	case kinds["origins"]:
		return "https://sample"
	case kinds["stages"]:
		return StageAPI
	case kinds["string"], kinds["upper"], kinds["secret"], kinds["topic"], kinds["instance"]:
		return "sample"
	}
	t.Fatalf("%s: no sample for parse kinds %v; add one here", v.Name, kinds)
	return ""
}

// probe stands for a struct that grows a setting: its tags alone put it into the variables, the
// loader and the log, checks included.
type probe struct {
	Count  int           `env:"PROBE_COUNT" default:"3" range:"1..5" accepts:"integer 1..5" help:"how many"`
	Wait   time.Duration `env:"PROBE_WAIT" default:"1s" accepts:"Go duration > 0" help:"how long"`
	Token  string        `env:"PROBE_TOKEN" secret:"true" help:"probe token"`
	Server probeServer   `env:"PROBE_SERVER" with:"what=the probe"`
}

type probeServer struct {
	Addr string `env:"{prefix}_ADDR" parse:"hostport" accepts:"host:port" help:"where {what} listens"`
}

func (s probeServer) check(p *parser, prefix string) {
	if s.Addr == "" {
		p.fail(prefix+"_ADDR", "is required")
	}
}

func TestNewTaggedFieldNeedsNoOtherEdit(t *testing.T) {
	want := []Var{
		{"PROBE_COUNT", "3", "integer 1..5", "how many"},
		{"PROBE_WAIT", "1s", "Go duration > 0", "how long"},
		{"PROBE_TOKEN", "", "string, kept as given", "probe token (never logged)"},
		{"PROBE_TOKEN_FILE", "", "file path", "read the probe token from this file instead (one trailing newline dropped)"},
		{"PROBE_SERVER_ADDR", "", "host:port", "where the probe listens"},
	}
	if got := varsOf(reflect.TypeFor[probe]()); !reflect.DeepEqual(got, want) {
		t.Errorf("vars:\n got %v\nwant %v", got, want)
	}

	var p probe
	err := load(&p, env(map[string]string{"PROBE_COUNT": "9", "PROBE_TOKEN": " t "}))
	wantErr := "PROBE_COUNT: 9 is out of range (accepts integer 1..5)\n" +
		"PROBE_SERVER_ADDR: is required (accepts host:port)"
	if err == nil || err.Error() != wantErr {
		t.Errorf("error:\n got %v\nwant %s", err, wantErr)
	}
	if p.Count != 9 || p.Wait != time.Second || p.Token != " t " {
		t.Errorf("loaded %+v", p)
	}

	p.Server.Addr = "h:1"
	wantLog := map[string]any{"PROBE_COUNT": 9, "PROBE_WAIT": "1s", "PROBE_TOKEN": "***", "PROBE_SERVER_ADDR": "h:1"}
	if got := masked(reflect.ValueOf(p)); !reflect.DeepEqual(got, wantLog) {
		t.Errorf("masked = %v, want %v", got, wantLog)
	}
}

// TestMalformedTagsPanic: a mistake in the tags stops every use of the struct, so the first test
// that touches Vars, Load or Masked reports it.
func TestMalformedTagsPanic(t *testing.T) {
	cases := map[string]any{
		"no variable": struct {
			X string
		}{},
		"no help": struct {
			X string `env:"X" accepts:"string"`
		}{},
		"integer without range": struct {
			X int `env:"X" accepts:"integer" help:"h"`
		}{},
		"unknown parse": struct {
			X string `env:"X" parse:"url" accepts:"url" help:"h"`
		}{},
		"list without parse": struct {
			X []string `env:"X" accepts:"list" help:"h"`
		}{},
		"secret with default": struct {
			X string `env:"X" default:"hunter2" secret:"true" help:"h"`
		}{},
		"unfilled placeholder": struct {
			X string `env:"{prefix}_X" accepts:"string" help:"h"`
		}{},
		"from an undeclared variable": struct {
			X []string `from:"NOPE" parse:"tokens"`
		}{},
		"declared twice": struct {
			X string `env:"X" accepts:"string" help:"h"`
			Y string `env:"X" accepts:"string" help:"h"`
		}{},
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if !strings.HasPrefix(fmt.Sprint(r), "config: ") {
					t.Errorf("panic %v", r)
				}
			}()
			varsOf(reflect.TypeOf(v))
		})
	}
}
