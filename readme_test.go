package main

import (
	"os"
	"strings"
	"testing"

	"github.com/searchflow/searchflow/config"
)

// TestREADMEConfigTable keeps the README's configuration table in step with config.Vars.
func TestREADMEConfigTable(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if !strings.Contains(readme[:200], "make run") || !strings.Contains(readme[:300], "make test") {
		t.Error("README must open with `make run` and `make test`")
	}
	for _, v := range config.Vars() {
		def := "`" + v.Default + "`"
		if v.Default == "" {
			def = "(empty)"
		}
		row := "| `" + v.Name + "` | " + def + " |"
		if !strings.Contains(readme, row) {
			t.Errorf("README config table lacks the row for %s with default %s", v.Name, def)
		}
	}
}
