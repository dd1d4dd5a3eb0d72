package transport

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/internal/certtest"
	"github.com/searchflow/searchflow/internal/redistest"
)

const redisPassword = "redis-Pa55-word"

// startRedis runs a TLS-only redis-server whose only user is "searchflow" with redisPassword,
// allowed every command on the keys searchflow owns.
func startRedis(t *testing.T, p *certtest.PKI, requireClientCert bool) *redistest.Server {
	t.Helper()
	return redistest.Start(t, redistest.WithTLS(p, requireClientCert),
		redistest.WithUser("searchflow", redisPassword, "~{searchflow}:*", "+@all"), redistest.WithoutDefaultUser())
}

// redistestServer is startRedis with another password and client certificates optional.
func redistestServer(t *testing.T, p *certtest.PKI, password string) *redistest.Server {
	t.Helper()
	return redistest.Start(t, redistest.WithTLS(p, false),
		redistest.WithUser("searchflow", password, "~{searchflow}:*", "+@all"), redistest.WithoutDefaultUser())
}

func newRedis(t *testing.T, addr, user, password string, tlsCfg config.TLS) *Redis {
	return newRedisDB(t, addr, user, password, 0, tlsCfg)
}

func newRedisDB(t *testing.T, addr, user, password string, db int, tlsCfg config.TLS) *Redis {
	t.Helper()
	r, err := NewRedis([]string{addr}, user, password, db, tlsCfg)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	return r
}

// redisConnect connects as the pipeline does; on failure it returns the explained error and how
// long the attempt took.
func redisConnect(t *testing.T, r *Redis) (rueidis.Client, error, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := rueidis.NewClient(r.Option())
	if err != nil {
		return nil, r.Explain(err), time.Since(start)
	}
	t.Cleanup(c.Close)
	return c, nil, time.Since(start)
}

func TestRedisTLSWithACLUser(t *testing.T) {
	p := certtest.New(t)
	srv := startRedis(t, p, false)
	withCA := config.TLS{Enabled: true, CAFile: p.CAFile}

	t.Run("right user over TLS", func(t *testing.T) {
		c, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword, withCA))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
			t.Fatalf("PING: %v", err)
		}
		if err := c.Do(ctx, c.B().Set().Key("{searchflow}:probe").Value("1").Build()).Error(); err != nil {
			t.Fatalf("SET under {searchflow}: %v", err)
		}
		// The ACL really is in force: a key outside searchflow's prefix is refused, and Explain
		// says it is a permission.
		err = c.Do(ctx, c.B().Set().Key("other:probe").Value("1").Build()).Error()
		wantErr(t, newRedis(t, srv.Addr, "searchflow", redisPassword, withCA).Explain(err), "redis:", `user "searchflow" lacks a permission`, "NOPERM")
	})
	t.Run("right user with server name", func(t *testing.T) {
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword,
			config.TLS{Enabled: true, CAFile: p.CAFile, ServerName: "localhost"}))
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", "wrong-"+redisPassword, withCA))
		wantErr(t, err, "redis:", `authentication failed for user "searchflow"`, "REDIS_PASSWORD", "WRONGPASS")
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "", "", withCA))
		wantErr(t, err, "redis:", "requires authentication", "REDIS_PASSWORD", "NOAUTH")
	})
	t.Run("password without user", func(t *testing.T) {
		// The default user is off: a password alone logs in as it and is refused.
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "", redisPassword, withCA))
		wantErr(t, err, `authentication failed for user "default"`, "REDIS_USERNAME")
	})
	t.Run("wrong CA", func(t *testing.T) {
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword, config.TLS{Enabled: true, CAFile: p.WrongCAFile}))
		wantErr(t, err, "redis:", "TLS verification failed", "not signed by a trusted CA", "REDIS_TLS_CA_FILE")
	})
	t.Run("wrong server name", func(t *testing.T) {
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword,
			config.TLS{Enabled: true, CAFile: p.CAFile, ServerName: "redis.example"}))
		wantErr(t, err, `not valid for "redis.example"`, "REDIS_TLS_SERVER_NAME")
	})
	t.Run("plaintext client", func(t *testing.T) {
		_, err, took := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword, config.TLS{}))
		wantErr(t, err, "redis:", "set REDIS_TLS=true")
		// The TLS port drops the client at its first bytes; rueidis's own dial timeout (5 s)
		// bounds the worst case.
		if took > 6*time.Second {
			t.Errorf("plaintext client took %v to fail", took)
		}
	})
}

func TestRedisMutualTLS(t *testing.T) {
	p := certtest.New(t)
	srv := startRedis(t, p, true)
	t.Run("with client certificate", func(t *testing.T) {
		_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword,
			config.TLS{Enabled: true, CAFile: p.CAFile, CertFile: p.ClientCertFile, KeyFile: p.ClientKeyFile}))
		if err != nil {
			t.Fatal(err)
		}
	})
	for name, tlsCfg := range map[string]config.TLS{
		"without client certificate":                {Enabled: true, CAFile: p.CAFile},
		"with a client certificate from another CA": {Enabled: true, CAFile: p.CAFile, CertFile: p.WrongClientCertFile, KeyFile: p.WrongClientKeyFile},
	} {
		t.Run(name, func(t *testing.T) {
			_, err, _ := redisConnect(t, newRedis(t, srv.Addr, "searchflow", redisPassword, tlsCfg))
			wantErr(t, err, "redis:", "client certificate", "REDIS_TLS_CERT_FILE")
		})
	}
}

// TestRedisTLSClientAgainstAPlaintextServer uses a listener that answers like a plaintext Redis
// does to a command it cannot parse, which a TLS client reads as a malformed record.
func TestRedisTLSClientAgainstAPlaintextServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("-ERR unknown command\r\n"))
			_ = conn.Close()
		}
	}()
	p := certtest.New(t)
	_, err, _ = redisConnect(t, newRedis(t, l.Addr().String(), "searchflow", redisPassword, config.TLS{Enabled: true, CAFile: p.CAFile}))
	wantErr(t, err, "redis:", "does not speak TLS on this port", "REDIS_TLS=false", "first record does not look like a TLS handshake")
}

// TestRedisTLSClientAgainstARealPlaintextServer: redis-server waits for the end of a "command"
// that a ClientHello never sends, so only the dial timeout (5 s by default, 300 ms here) ends it.
func TestRedisTLSClientAgainstARealPlaintextServer(t *testing.T) {
	p := certtest.New(t)
	srv := redistest.Start(t)
	r := newRedis(t, srv.Addr, "", "", config.TLS{Enabled: true, CAFile: p.CAFile})
	opt := r.Option()
	opt.Dialer.Timeout = 300 * time.Millisecond
	c, err := rueidis.NewClient(opt)
	if err == nil {
		c.Close()
		t.Fatal("a TLS client connected to a plaintext port")
	}
	wantErr(t, r.Explain(err), "redis:", "does not speak TLS on this port", "REDIS_TLS")
}

func TestNewRedisNamesTheBadSetting(t *testing.T) {
	p := certtest.New(t)
	_, err := NewRedis([]string{"127.0.0.1:6379"}, "", "", 0, config.TLS{Enabled: true, CAFile: p.ClientKeyFile})
	wantErr(t, err, "REDIS_TLS_CA_FILE "+p.ClientKeyFile+": no certificate found")
	_, err = NewRedis([]string{"127.0.0.1:6379"}, "", "", 0, config.TLS{Enabled: true, CertFile: p.ClientCertFile, KeyFile: p.WrongClientKeyFile})
	wantErr(t, err, "REDIS_TLS_CERT_FILE "+p.ClientCertFile+" and REDIS_TLS_KEY_FILE "+p.WrongClientKeyFile)
}

func TestRedisOption(t *testing.T) {
	p := certtest.New(t)
	r := newRedisDB(t, "redis.internal:6380", "app", "pw-123456", 3, config.TLS{Enabled: true, CAFile: p.CAFile, ServerName: "redis.example"})
	opt := r.Option()
	if strings.Join(opt.InitAddress, ",") != "redis.internal:6380" || opt.Username != "app" || opt.Password != "pw-123456" || opt.SelectDB != 3 {
		t.Errorf("option = %+v", opt)
	}
	if opt.TLSConfig == nil || opt.TLSConfig.ServerName != "redis.example" || opt.TLSConfig.RootCAs == nil || opt.TLSConfig.MinVersion == 0 {
		t.Fatalf("TLS config = %+v", opt.TLSConfig)
	}
	opt.TLSConfig.ServerName = "changed"
	if r.Option().TLSConfig.ServerName != "redis.example" {
		t.Error("a caller's change to the TLS config leaked into the next Option")
	}
	if newRedis(t, "127.0.0.1:6379", "", "", config.TLS{}).Option().TLSConfig != nil {
		t.Error("TLS config without REDIS_TLS")
	}
}
