package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/searchflow/searchflow/config"
)

// tlsConfig builds the client side of t. prefix is the settings' variable prefix (KAFKA_TLS,
// REDIS_TLS), so that an error names the variable to fix. Without a CA file the system roots
// verify the server; without a server name the client checks the host it dials.
func tlsConfig(prefix string, t config.TLS) (*tls.Config, error) {
	c := &tls.Config{
		// TLS 1.0 and 1.1 are deprecated (RFC 8996); every supported Kafka and Redis speaks 1.2.
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(filepath.Clean(t.CAFile))
		if err != nil {
			return nil, fmt.Errorf("%s_CA_FILE: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s_CA_FILE %s: no certificate found", prefix, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Clean(t.CertFile), filepath.Clean(t.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("%s_CERT_FILE %s and %s_KEY_FILE %s: %w", prefix, t.CertFile, prefix, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// tlsCause says why a TLS connection to a server failed, naming the settings under prefix to
// check, or "" when err is not a TLS failure.
func tlsCause(prefix string, err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("TLS verification failed: the server's certificate is not signed by a trusted CA (check %s_CA_FILE)", prefix)
	case errors.As(err, &hostname):
		return fmt.Sprintf("TLS verification failed: the server's certificate is not valid for %q (check %s_SERVER_NAME or the address)", hostname.Host, prefix)
	case errors.As(err, &invalid):
		return fmt.Sprintf("TLS verification failed: the server's certificate is not valid here (expired, not yet valid or not for servers; check %s_CA_FILE)", prefix)
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return fmt.Sprintf("TLS verification failed (check %s_CA_FILE and %s_SERVER_NAME)", prefix, prefix)
	case errors.As(err, &header):
		return fmt.Sprintf("the server does not speak TLS on this port (set %s=false or use its TLS port)", prefix)
	case strings.Contains(err.Error(), "remote error: tls:"):
		// The server sent a TLS alert: with a verified server certificate, it refused ours (Go's
		// client sends none when the server's accepted CAs do not include its issuer).
		return fmt.Sprintf("the server refused the TLS handshake, most likely the client certificate: it wants one signed by a CA it trusts (check %s_CERT_FILE and %s_KEY_FILE)", prefix, prefix)
	}
	return ""
}
