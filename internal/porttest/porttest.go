// Package porttest gives tests loopback addresses nothing answers on. Finding a port by
// listening and closing it races with every other process on the machine; a socket bound to the
// port and never listening holds it for the whole test, and the kernel refuses connections to it.
package porttest

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// Refusing returns a loopback address where nothing listens, and where nothing can start
// listening while the test runs.
func Refusing(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
