// Package certtest makes a throwaway certificate authority for tests of TLS setups: a CA, a server
// certificate for the loopback addresses, a client certificate, and an unrelated CA that verifies
// neither, written as PEM files in the test's temporary directory.
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is one generated set of certificates. File paths are absolute; the files are removed with
// the test's temporary directory.
type PKI struct {
	Dir string

	CAFile string // the CA that signed the server and client certificates

	ServerCertFile, ServerKeyFile string // for 127.0.0.1, ::1 and localhost
	ClientCertFile, ClientKeyFile string // for mutual TLS

	// WrongCAFile is a CA that signed nothing here: a client trusting it must reject the server.
	WrongCAFile string
	// WrongClientCertFile and WrongClientKeyFile are a client certificate signed by the wrong CA:
	// a server asking for client certificates must reject it.
	WrongClientCertFile, WrongClientKeyFile string

	ServerCert tls.Certificate
	ClientCert tls.Certificate
	CAPool     *x509.CertPool
}

// New generates the certificates in t.TempDir. ECDSA P-256 keeps it to a few milliseconds.
func New(t testing.TB) *PKI {
	t.Helper()
	p, err := Generate(t.TempDir())
	if err != nil {
		t.Fatalf("certtest: %v", err)
	}
	return p
}

// Generate writes the certificates into dir.
func Generate(dir string) (*PKI, error) {
	ca, err := newCA("searchflow test CA")
	if err != nil {
		return nil, err
	}
	wrong, err := newCA("unrelated test CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	clientTemplate := func() *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: "searchflow"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	client, err := ca.issue(clientTemplate())
	if err != nil {
		return nil, err
	}
	wrongClient, err := wrong.issue(clientTemplate())
	if err != nil {
		return nil, err
	}

	p := &PKI{Dir: dir, CAPool: x509.NewCertPool()}
	p.CAPool.AddCert(ca.cert)
	files := []struct {
		path *string
		name string
		data []byte
	}{
		{&p.CAFile, "ca.pem", ca.certPEM},
		{&p.WrongCAFile, "wrong-ca.pem", wrong.certPEM},
		{&p.ServerCertFile, "server.pem", server.certPEM},
		{&p.ServerKeyFile, "server-key.pem", server.keyPEM},
		{&p.ClientCertFile, "client.pem", client.certPEM},
		{&p.ClientKeyFile, "client-key.pem", client.keyPEM},
		{&p.WrongClientCertFile, "wrong-client.pem", wrongClient.certPEM},
		{&p.WrongClientKeyFile, "wrong-client-key.pem", wrongClient.keyPEM},
	}
	for _, f := range files {
		*f.path = filepath.Join(dir, f.name)
		// 0600: redis-server and OpenSSL accept it, and keys should never be world-readable.
		if err := os.WriteFile(*f.path, f.data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	if p.ServerCert, err = tls.X509KeyPair(server.certPEM, server.keyPEM); err != nil {
		return nil, fmt.Errorf("load server pair: %w", err)
	}
	if p.ClientCert, err = tls.X509KeyPair(client.certPEM, client.keyPEM); err != nil {
		return nil, fmt.Errorf("load client pair: %w", err)
	}
	return p, nil
}

// ServerConfig is what a test server listens with: the server certificate, and the CA that
// verifies client certificates under clientAuth (tls.RequireAndVerifyClientCert for mutual TLS,
// tls.NoClientCert for server-only TLS).
func (p *PKI) ServerConfig(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.ServerCert},
		ClientCAs:    p.CAPool,
		ClientAuth:   clientAuth,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientConfig is what a test client connects with: it trusts the CA and presents the client
// certificate.
func (p *PKI) ClientConfig() *tls.Config {
	return &tls.Config{
		RootCAs:      p.CAPool,
		Certificates: []tls.Certificate{p.ClientCert},
		MinVersion:   tls.VersionTLS12,
	}
}

type authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

type issued struct {
	certPEM, keyPEM []byte
}

func newCA(name string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	if err := fillValidity(tmpl); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &authority{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func (a *authority) issue(tmpl *x509.Certificate) (issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return issued{}, fmt.Errorf("generate key for %s: %w", tmpl.Subject.CommonName, err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if err := fillValidity(tmpl); err != nil {
		return issued{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return issued{}, fmt.Errorf("sign certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return issued{}, fmt.Errorf("encode key for %s: %w", tmpl.Subject.CommonName, err)
	}
	return issued{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// fillValidity gives a certificate a random serial and a validity that starts an hour ago, so a
// peer whose clock is slightly behind still accepts it.
func fillValidity(tmpl *x509.Certificate) error {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	return nil
}
