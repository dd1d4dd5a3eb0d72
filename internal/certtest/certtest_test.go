package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"strings"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func pool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(readCert(t, path))
	return p
}

func TestCertificatesVerifyAsIntended(t *testing.T) {
	p := New(t)
	server := readCert(t, p.ServerCertFile)
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := server.Verify(x509.VerifyOptions{DNSName: name, Roots: pool(t, p.CAFile)}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := server.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool(t, p.WrongCAFile)}); err == nil {
		t.Error("the wrong CA verifies the server certificate")
	}
	client := x509.VerifyOptions{Roots: pool(t, p.CAFile), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := readCert(t, p.ClientCertFile).Verify(client); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := readCert(t, p.WrongClientCertFile).Verify(client); err == nil {
		t.Error("the CA verifies the wrong client certificate")
	}
	for _, f := range []string{p.ServerKeyFile, p.ClientKeyFile, p.WrongClientKeyFile} {
		if _, err := tls.LoadX509KeyPair(strings.Replace(f, "-key", "", 1), f); err != nil {
			t.Errorf("key pair %s: %v", f, err)
		}
	}
}

// TestMutualTLSHandshake runs both sides of a handshake with ServerConfig and ClientConfig.
func TestMutualTLSHandshake(t *testing.T) {
	p := New(t)
	serverSide, clientSide := net.Pipe()
	// Closing the pipe, not the TLS connections: a TLS close_notify on an unread synchronous pipe
	// would block for tls's 5 s write deadline.
	defer serverSide.Close()
	defer clientSide.Close()
	server := tls.Server(serverSide, p.ServerConfig(tls.RequireAndVerifyClientCert))
	done := make(chan error, 1)
	go func() { done <- server.Handshake() }()
	cfg := p.ClientConfig()
	cfg.ServerName = "localhost"
	client := tls.Client(clientSide, cfg)
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := server.ConnectionState().PeerCertificates; len(got) == 0 || got[0].Subject.CommonName != "searchflow" {
		t.Errorf("server saw client certificates %v", got)
	}
}
