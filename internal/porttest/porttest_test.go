package porttest

import (
	"net"
	"testing"
	"time"
)

func TestRefusing(t *testing.T) {
	addr := Refusing(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", addr)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("another listener could take %s", addr)
	}
}
