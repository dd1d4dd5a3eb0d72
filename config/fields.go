package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/searchflow/searchflow/trends"
)

// setting is one leaf field of a configuration struct with its tags read (see Config).
type setting struct {
	Var           // the variable read; Name is the from variable for a derived field
	index   []int // the field, for reflect.Value.FieldByIndex
	typ     reflect.Type
	parse   string   // how the variable is read: a key of readers
	derived bool     // from: another field declares the variable; this one reads it again
	secret  bool     // never logged
	logKey  string   // the key in Masked
	lo, hi  int64    // range, for integers
	oneOf   []string // allowed values, for oneof
}

// walk calls leaf for every leaf field of struct type t in declaration order, a nested struct's
// fields in its place, and end (when not nil) after the fields of each struct, t itself last.
// Malformed tags are a programming error and panic, so that any test of Vars, Load or Masked
// fails on them.
func walk(t reflect.Type, leaf func(setting), end func(index []int, prefix string)) {
	walkStruct(t, nil, "", strings.NewReplacer(), leaf, end)
}

func walkStruct(t reflect.Type, index []int, prefix string, fill *strings.Replacer, leaf func(setting), end func([]int, string)) {
	for i := range t.NumField() {
		f := t.Field(i)
		at := append(slices.Clip(index), i)
		if f.Type.Kind() != reflect.Struct {
			leaf(newSetting(f, at, fill))
			continue
		}
		sub := fill.Replace(f.Tag.Get("env"))
		walkStruct(f.Type, at, sub, placeholders(sub, f.Tag.Get("with")), leaf, end)
	}
	if end != nil {
		end(index, prefix)
	}
}

// placeholders fills {prefix} with prefix (when there is one) and each {name} of a with tag
// ("name=text;name=text") with its text.
func placeholders(prefix, with string) *strings.Replacer {
	var pairs []string
	if prefix != "" {
		pairs = append(pairs, "{prefix}", prefix)
	}
	for _, kv := range strings.Split(with, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			pairs = append(pairs, "{"+k+"}", v)
		} else if kv != "" {
			panic(fmt.Sprintf("config: with tag %q: %q is not name=text", with, kv))
		}
	}
	return strings.NewReplacer(pairs...)
}

// newSetting reads the tags of field f.
func newSetting(f reflect.StructField, index []int, fill *strings.Replacer) setting {
	tag := func(key string) string {
		v := fill.Replace(f.Tag.Get(key))
		if strings.Contains(v, "{") {
			panic(fmt.Sprintf("config: field %s: tag %s %q has an unfilled placeholder", f.Name, key, v))
		}
		return v
	}
	s := setting{
		Var:    Var{Name: tag("env"), Default: tag("default"), Accepts: tag("accepts"), Help: tag("help")},
		index:  index,
		typ:    f.Type,
		parse:  tag("parse"),
		secret: tag("secret") != "",
		logKey: tag("log"),
	}
	if from := tag("from"); from != "" {
		if s.Name != "" {
			panic(fmt.Sprintf("config: field %s: env and from tags exclude each other", f.Name))
		}
		s.Name, s.derived = from, true
	}
	if v := tag("secret"); v != "" && v != "true" {
		panic(fmt.Sprintf("config: field %s: secret tag %q: write secret:\"true\"", f.Name, v))
	}
	if o := tag("oneof"); o != "" {
		s.oneOf = strings.Fields(o)
	}
	if s.logKey == "" {
		s.logKey = s.Name
	}
	if err := s.complete(tag("range")); err != nil {
		panic(fmt.Sprintf("config: field %s: %v", f.Name, err))
	}
	return s
}

// complete infers the parse kind from the field's type when the tags do not give it, reads the
// range, and reports tags that do not fit together.
func (s *setting) complete(rng string) error {
	switch {
	case s.Name == "":
		return fmt.Errorf("no env tag (and no from tag): every field is read from a variable")
	case s.derived && s.Default+s.Accepts+s.Help != "":
		return fmt.Errorf("a from field takes no default, accepts or help: %s documents them", s.Name)
	case s.secret && s.typ.Kind() != reflect.String && s.typ != reflect.TypeFor[[]string]():
		return fmt.Errorf("secret %s is neither a string nor a list", s.Name)
	case s.secret && !s.derived && (s.typ.Kind() != reflect.String || s.parse != ""):
		return fmt.Errorf("secret %s is a string read as given: no parse tag", s.Name)
	case s.secret && !s.derived && (s.Default != "" || s.Accepts != "" || s.Help == ""):
		return fmt.Errorf("secret %s takes a help tag only; its accepts are written for it", s.Name)
	case !s.derived && !s.secret && (s.Accepts == "" || s.Help == ""):
		return fmt.Errorf("%s needs accepts and help tags", s.Name)
	}
	if s.parse == "" {
		s.parse = inferParse(s.typ, s.secret, len(s.oneOf) > 0)
	}
	if _, ok := readers()[s.parse]; !ok {
		return fmt.Errorf("%s: no parse tag, or an unknown one (%q)", s.Name, s.parse)
	}
	if (s.parse == "int") != (rng != "") {
		return fmt.Errorf("%s: an integer needs a range tag, and only an integer takes one", s.Name)
	}
	if rng == "" {
		return nil
	}
	lo, hi, _ := strings.Cut(rng, "..")
	var err1, err2 error
	s.lo, err1 = strconv.ParseInt(lo, 0, 64)
	s.hi, err2 = strconv.ParseInt(hi, 0, 64)
	if err1 != nil || err2 != nil || s.lo > s.hi {
		return fmt.Errorf("%s: range %q is not lo..hi", s.Name, rng)
	}
	return nil
}

// inferParse is the parse kind a field's type implies; "" when the type needs a parse tag.
func inferParse(t reflect.Type, secret, oneOf bool) string {
	switch {
	case oneOf:
		return "oneof"
	case t == reflect.TypeFor[time.Duration]():
		return "duration"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return "int"
	case t.Kind() == reflect.String && secret:
		return "secret"
	case t.Kind() == reflect.String:
		return "string"
	}
	return ""
}

// vars is what the README lists for the setting: nothing for a derived field, the variable and
// its _FILE companion for a secret string, else the variable.
func (s setting) vars() []Var {
	switch {
	case s.derived:
		return nil
	case s.parse == "secret":
		return []Var{
			{s.Name, "", "string, kept as given", s.Help + " (never logged)"},
			{s.Name + "_FILE", "", "file path", "read the " + s.Help + " from this file instead (one trailing newline dropped)"},
		}
	}
	return []Var{s.Var}
}

// varsOf lists the variables of struct type t in field order. A variable declared twice, or a
// from tag naming a variable no field declares, panics.
func varsOf(t reflect.Type) []Var {
	var out []Var
	var reads []string
	declared := map[string]bool{}
	walk(t, func(s setting) {
		if s.derived {
			reads = append(reads, s.Name)
		}
		for _, v := range s.vars() {
			if declared[v.Name] {
				panic("config: " + v.Name + " is declared by two fields")
			}
			declared[v.Name] = true
			out = append(out, v)
		}
	}, nil)
	for _, name := range reads {
		if !declared[name] {
			panic("config: a from tag names " + name + ", which no field declares")
		}
	}
	return out
}

// masked is the value of struct v as the start-up log shows it, one key per field.
func masked(v reflect.Value) map[string]any {
	m := map[string]any{}
	walk(v.Type(), func(s setting) {
		if _, dup := m[s.logKey]; dup {
			panic("config: two fields log as " + s.logKey + "; give one a log tag")
		}
		m[s.logKey] = s.show(v.FieldByIndex(s.index))
	}, nil)
	return m
}

// show is how the log prints the field's value: lists comma-joined, durations as text, a secret
// string as *** (empty stays empty) and a secret list as its length.
func (s setting) show(v reflect.Value) any {
	switch x := v.Interface().(type) {
	case []string:
		if s.secret {
			return len(x)
		}
		return strings.Join(x, ",")
	case string:
		if s.secret && x != "" {
			return "***"
		}
		return x
	case time.Duration:
		return x.String()
	case []trends.Window:
		names := make([]string, len(x))
		for i, w := range x {
			names[i] = w.Name()
		}
		return strings.Join(names, ",")
	}
	return v.Interface()
}
