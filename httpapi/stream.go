package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"
)

// DefaultStreamMaxClients is how many /stream clients are served at once unless
// WithStreamMaxClients says otherwise.
const DefaultStreamMaxClients = 100

// streamWriteTimeout bounds the write of one event. The server's write timeout is for ordinary
// requests, so a stream renews its deadline per event; a client that stops reading altogether is
// ended when it runs out, which frees its place.
const streamWriteTimeout = 30 * time.Second

// stream sends the broadcaster's events as Server-Sent Events until the client goes away or the
// server shuts down. HEAD answers the headers a GET would get and returns.
func (s *Server) stream(c echo.Context) error {
	if c.Request().Method == http.MethodHead {
		if s.live.full() {
			return tooManyStreams()
		}
		setStreamHeaders(c.Response().Header())
		c.Response().WriteHeader(http.StatusOK)
		return nil
	}
	client, err := s.live.join()
	if err != nil {
		return err
	}
	defer s.live.leave(client)

	w := c.Response()
	setStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.Writer)
	// The headers go out now, so that the browser reports the stream open before the first event.
	if err := rc.Flush(); err != nil {
		return nil
	}
	ctx := c.Request().Context()
	var buf []byte
	for id := 0; ; id++ {
		var data []byte
		select {
		case data = <-client.events:
		case <-ctx.Done():
			return nil
		case <-s.live.closing:
			return nil
		}
		// Ids count the events of this connection; the data is the same for every client.
		buf = append(buf[:0], "id: "...)
		buf = strconv.AppendInt(buf, int64(id), 10)
		buf = append(buf, "\ndata: "...)
		buf = append(buf, data...)
		buf = append(buf, '\n', '\n')
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(buf); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}

func setStreamHeaders(h http.Header) {
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

func tooManyStreams() error {
	return echo.NewHTTPError(http.StatusServiceUnavailable, "too many live streams open, try again later")
}

// broadcaster serves every /stream client from one loop: it reads the view once per tick,
// whatever the number of clients, and hands the same encoded event to each. The first client
// starts the loop, the last one to leave stops it, and close (on Shutdown) stops it for good.
//
// A slow client never holds the others back: each client has a mailbox of one event, and an event
// the client has not taken by the next tick is dropped for the newer one. Every event is a whole
// snapshot, not a change, so a client that falls behind skips updates but shows current numbers
// once it catches up, and is not disconnected for it. A client that stops reading altogether is
// ended by streamWriteTimeout.
type broadcaster struct {
	every time.Duration
	max   int
	read  func(ctx context.Context) ([]byte, error) // one event's data
	log   *zap.Logger

	closing chan struct{} // closed by close: ends every stream

	mu      sync.Mutex
	clients map[*streamClient]struct{}
	last    []byte             // the running loop's latest event, handed at once to a client that joins
	stop    context.CancelFunc // stops the running loop; nil when none runs
	closed  bool
	loops   sync.WaitGroup
}

// streamClient is one /stream connection as the broadcaster sees it.
type streamClient struct {
	events chan []byte // capacity 1: the newest event the client has not written yet
}

func newBroadcaster(every time.Duration, maxClients int, read func(context.Context) ([]byte, error), log *zap.Logger) *broadcaster {
	return &broadcaster{every: every, max: maxClients, read: read, log: log, closing: make(chan struct{}),
		clients: map[*streamClient]struct{}{}}
}

// join adds a client, starting the loop if it is the first; it answers 503 when max clients are
// already served or the server is shutting down.
func (b *broadcaster) join() (*streamClient, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, echo.NewHTTPError(http.StatusServiceUnavailable, "the server is shutting down")
	}
	if len(b.clients) >= b.max {
		return nil, tooManyStreams()
	}
	c := &streamClient{events: make(chan []byte, 1)}
	b.clients[c] = struct{}{}
	if b.last != nil {
		c.events <- b.last
	}
	if b.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		b.stop = cancel
		b.loops.Add(1)
		go b.run(ctx)
	}
	return c, nil
}

// leave removes a client, stopping the loop if it was the last.
func (b *broadcaster) leave(c *streamClient) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.clients, c)
	if len(b.clients) == 0 && b.stop != nil {
		b.stop()
		b.stop, b.last = nil, nil
	}
}

// full reports whether one more client would be turned away.
func (b *broadcaster) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed || len(b.clients) >= b.max
}

// close ends every stream, refuses new ones and waits for the loop to stop.
func (b *broadcaster) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.closing)
		if b.stop != nil {
			b.stop()
			b.stop, b.last = nil, nil
		}
	}
	b.mu.Unlock()
	b.loops.Wait()
}

// run reads an event at once and then once per tick, until ctx ends.
func (b *broadcaster) run(ctx context.Context) {
	defer b.loops.Done()
	tick := time.NewTicker(b.every)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		data, err := b.read(rctx)
		cancel()
		switch {
		case err == nil:
			b.publish(ctx, data)
		case ctx.Err() == nil:
			b.log.Debug("stream: cannot read the view", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// publish offers data to every client, replacing an event a client has not taken yet.
func (b *broadcaster) publish(ctx context.Context, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ctx.Err() != nil {
		return // stopped while reading: the clients now belong to another loop, or to none
	}
	b.last = data
	for c := range b.clients {
		// Only the broadcaster sends, under b.mu, so after taking out the unread event there is
		// room for the new one.
		select {
		case <-c.events:
		default:
		}
		c.events <- data
	}
}
