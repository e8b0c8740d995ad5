// lustrax-ws-load: the load client of bench/ws.py, in Go so that one process of it takes more
// deliveries/s than the gateway processes it measures can send (the Python client of
// bench/ws_load.py was the limit at ~300k/s).
//
//	lustrax-ws-load --url ws://127.0.0.1:8765/v1/ws?age_token=T --connections N --seconds T
//	                [--warmup 2] [--subscribe feed] [--wait-go] [--result PATH] [--impl raw|gorilla]
//
// The same protocol as `python -m bench.ws_load client`: it opens N connections (100 at a time),
// subscribes each to --subscribe (none when empty: the bare server sends to every connection),
// prints "connected", waits for a line on stdin with --wait-go (so that several clients measure
// the same window), waits --warmup s, prints "measure-start", counts the text frames received for
// --seconds s, prints "measure-end" and writes one JSON object (to --result, else stdout).
// Latency is sampled on every 20th connection from the frame itself: the gateway's seq // 1024 is
// the Kafka timestamp in ms, the bare server's `t` its scheduled send time.
//
// --impl raw (the default) parses the frame headers over a bufio.Reader and skips the payloads of
// frames it does not sample; --impl gorilla reads with gorilla/websocket's NextReader, which
// skips unread payloads the same way (bench/ws.py --client-impl). Client CPU per frame, 1,000
// connections of a test server on this 2-core machine (loaded, so roughly): 50-frame batches raw
// 0.48-0.51 us, gorilla 0.72-0.77 us; one frame per read both 6-9 us (the kernel's read and ACK
// dominate). An epoll loop over raw sockets instead of a goroutine per connection cost more
// (1.85 vs 1.07 us at 10-frame batches) and was dropped.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

const (
	seqPerMs    = 1024 // gateways/ws/protocol.py SEQ_PER_MS
	sampleEvery = 20
	dialers     = 100 // connections opened at a time, as the Python client
)

var measuring atomic.Bool

// dialer opens every connection (main sets it with newDialer).
var dialer net.Dialer

// newDialer fixes each socket's receive buffer (SO_RCVBUF, set before connecting so that the
// window scale fits it; 0 leaves the kernel's autotuning): with tcp_rmem's max of 32 MiB, a
// client behind would otherwise let a backlog of many MiB per connection pile up in the kernel,
// push TCP into memory pressure (pruned and dropped segments) and measure that instead of the
// server; bounded, a backlog stays in the server, whose slow-client bound applies.
func newDialer(rcvbuf int) net.Dialer {
	d := net.Dialer{Timeout: 30 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}); cerr != nil {
				return cerr
			}
			return err
		}
	}
	return d
}

type client struct {
	sample    bool
	frames    atomic.Int64
	latencies []float64 // only its own goroutine appends; read once it has ended
}

func (c *client) text(payload []byte) {
	if !measuring.Load() {
		return
	}
	c.frames.Add(1)
	if c.sample && payload != nil {
		if sent, ok := sentMs(payload); ok {
			c.latencies = append(c.latencies, nowMs()-sent)
		}
	}
}

func nowMs() float64 { return float64(time.Now().UnixNano()) / 1e6 }

var (
	subscribedPrefix = []byte(`{"type":"subscribed"`)
	seqKey           = []byte(`"seq":`)
	tKey             = []byte(`"t":`)
)

// sentMs is when the frame was published: seq / 1024 (the gateway) or t (the bare server), as
// bench/ws_load.py reads them; the gateway's "subscribed" answers are not deliveries.
func sentMs(p []byte) (float64, bool) {
	if bytes.HasPrefix(p, subscribedPrefix) {
		return 0, false
	}
	if v, ok := number(p, seqKey); ok && v > 0 {
		return v / seqPerMs, true
	}
	return number(p, tKey)
}

func number(p, key []byte) (float64, bool) {
	i := bytes.Index(p, key)
	if i < 0 {
		return 0, false
	}
	p = bytes.TrimLeft(p[i+len(key):], " ")
	end := bytes.IndexAny(p, ",}")
	if end < 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(bytes.TrimSpace(p[:end])), 64)
	return v, err == nil
}

// masked writes a client frame; a zero masking key leaves the payload as it is (RFC 6455 5.3).
func masked(opcode byte, payload []byte) []byte {
	if len(payload) > 125 {
		panic("control or subscribe message too long")
	}
	return append([]byte{0x80 | opcode, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// upgradeRequest is the client's opening handshake (RFC 6455 4.1); the answer's
// Sec-WebSocket-Accept is not checked: the server is ours.
func upgradeRequest(u *url.URL) string {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	return "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// dialRaw opens one connection and returns it with its reader, positioned after the response headers.
func dialRaw(u *url.URL, bufSize int, subscribe []byte) (net.Conn, *bufio.Reader, error) {
	nc, err := dialer.Dial("tcp", u.Host)
	if err != nil {
		return nil, nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err = io.WriteString(nc, upgradeRequest(u)); err != nil {
		nc.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(nc, bufSize)
	status, err := br.ReadString('\n')
	if err == nil && len(status) >= 12 && status[:12] != "HTTP/1.1 101" {
		err = errors.New(trim(status, 60))
	}
	for err == nil {
		var line string
		if line, err = br.ReadString('\n'); line == "\r\n" {
			break
		}
	}
	if err == nil && subscribe != nil {
		_, err = nc.Write(masked(1, subscribe))
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, br, nil
}

// frameHeader reads a server frame's header: its opcode, header length and payload length; ok is
// false while the header itself is incomplete. Server frames are not masked.
func frameHeader(b []byte) (opcode byte, head, size int, ok bool) {
	if len(b) < 2 {
		return 0, 0, 0, false
	}
	opcode, head, size = b[0]&0x0F, 2, int(b[1]&0x7F)
	switch size {
	case 126:
		if len(b) < 4 {
			return 0, 0, 0, false
		}
		head, size = 4, int(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		if len(b) < 10 {
			return 0, 0, 0, false
		}
		head, size = 10, int(binary.BigEndian.Uint64(b[2:10]))
	}
	return opcode, head, size, true
}

// readRaw counts frames until the connection ends; it answers pings and only looks into the
// payloads of text frames it samples (a bufio.Peek when they fit the buffer: no copy).
func (c *client) readRaw(nc net.Conn, br *bufio.Reader) error {
	scratch := []byte(nil)
	for {
		h, err := br.Peek(2)
		if err == nil && h[1]&0x7F == 126 { // a 16-bit length follows
			h, err = br.Peek(4)
		} else if err == nil && h[1]&0x7F == 127 { // a 64-bit one
			h, err = br.Peek(10)
		}
		if err != nil {
			return err
		}
		opcode, head, n, _ := frameHeader(h)
		switch {
		case opcode == 1 && c.sample && measuring.Load():
			var payload []byte
			if head+n <= br.Size() {
				if h, err = br.Peek(head + n); err != nil {
					return err
				}
				payload = h[head:]
			} else {
				if _, err = br.Discard(head); err != nil {
					return err
				}
				if cap(scratch) < n {
					scratch = make([]byte, n)
				}
				if _, err = io.ReadFull(br, scratch[:n]); err != nil {
					return err
				}
				payload, head, n = scratch[:n], 0, 0
			}
			c.text(payload)
		case opcode == 1:
			c.text(nil)
		case opcode == 9:
			ping := make([]byte, n)
			if _, err = br.Discard(head); err == nil {
				_, err = io.ReadFull(br, ping)
			}
			if err == nil {
				_, err = nc.Write(masked(10, ping))
			}
			if err != nil {
				return err
			}
			continue
		case opcode == 8:
			return io.EOF
		}
		if _, err = br.Discard(head + n); err != nil {
			return err
		}
	}
}

func dialGorilla(rawURL string, bufSize int, subscribe []byte) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: bufSize, WriteBufferSize: 256,
		NetDial: dialer.Dial}
	ws, _, err := d.Dial(rawURL, nil)
	if err != nil {
		return nil, err
	}
	if subscribe != nil {
		if err = ws.WriteMessage(websocket.TextMessage, subscribe); err != nil {
			ws.Close()
			return nil, err
		}
	}
	return ws, nil
}

// readGorilla: NextReader skips what the previous message left unread; its ping handler answers.
func (c *client) readGorilla(ws *websocket.Conn) error {
	scratch := bytes.Buffer{}
	for {
		kind, r, err := ws.NextReader()
		if err != nil {
			return err
		}
		if kind != websocket.TextMessage {
			continue
		}
		if c.sample && measuring.Load() {
			scratch.Reset()
			if _, err = scratch.ReadFrom(r); err != nil {
				return err
			}
			c.text(scratch.Bytes())
		} else {
			c.text(nil)
		}
	}
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

type latency struct {
	P50     *float64 `json:"p50"`
	P99     *float64 `json:"p99"`
	Max     *float64 `json:"max"`
	Samples int      `json:"samples"`
}

type result struct {
	Connected        int            `json:"connected"`
	Held             int            `json:"held"`
	Failures         map[string]int `json:"failures"`
	ConnectS         float64        `json:"connect_s"`
	DeliveriesPerS   int64          `json:"deliveries_per_s"`
	Frames           int64          `json:"frames"`
	ClientCPUPct     int            `json:"client_cpu_pct"`
	Latency          latency        `json:"latency_ms"`
	LatencySamplesMs []float64      `json:"latency_samples_ms"`
	Impl             string         `json:"client_impl"`
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

func percentiles(lat []float64) latency {
	sort.Float64s(lat)
	pct := func(q float64) *float64 {
		if len(lat) == 0 {
			return nil
		}
		v := round1(lat[min(len(lat)-1, int(q*float64(len(lat))))])
		return &v
	}
	return latency{pct(0.5), pct(0.99), pct(1.0), len(lat)}
}

// failures counts the connections that did not open, by reason.
type failures struct {
	mu     sync.Mutex
	reason map[string]int
}

func (f *failures) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reason[fmt.Sprintf("%T: %s", err, trim(err.Error(), 60))]++
}

// session is N open connections of one implementation.
type session struct {
	connected int
	held      func() int                // still open (the server closed none of the others)
	stop      func() (int64, []float64) // closes them all: frames counted, latency samples
}

// dialAll opens n connections, `dialers` at a time; open(i) returns false on a failure.
func dialAll(n int, open func(i int) bool) {
	gate := make(chan struct{}, dialers)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		gate <- struct{}{}
		go func() {
			defer wg.Done()
			open(i)
			<-gate
		}()
	}
	wg.Wait()
}

// open dials the connections, each read by its own goroutine with readRaw or readGorilla.
func open(impl, rawURL string, u *url.URL, n, bufSize int, sub []byte, fails *failures) session {
	var (
		mu       sync.Mutex
		clients  []*client
		closers  []io.Closer
		readers  sync.WaitGroup
		closed   atomic.Int64
		stopping atomic.Bool
	)
	dialAll(n, func(i int) bool {
		c := &client{sample: i%sampleEvery == 0}
		var run func() error
		var closer io.Closer
		if impl == "raw" {
			nc, br, err := dialRaw(u, bufSize, sub)
			if err != nil {
				fails.add(err)
				return false
			}
			run, closer = func() error { return c.readRaw(nc, br) }, nc
		} else {
			ws, err := dialGorilla(rawURL, bufSize, sub)
			if err != nil {
				fails.add(err)
				return false
			}
			run, closer = func() error { return c.readGorilla(ws) }, ws
		}
		mu.Lock()
		clients, closers = append(clients, c), append(closers, closer)
		mu.Unlock()
		readers.Add(1)
		go func() {
			defer readers.Done()
			_ = run()
			if !stopping.Load() {
				closed.Add(1)
			}
		}()
		return true
	})
	return session{
		connected: len(clients),
		held:      func() int { return len(clients) - int(closed.Load()) },
		stop: func() (int64, []float64) {
			stopping.Store(true)
			for _, c := range closers {
				_ = c.Close()
			}
			readers.Wait()
			var frames int64
			lat := []float64{}
			for _, c := range clients {
				frames += c.frames.Load()
				lat = append(lat, c.latencies...)
			}
			return frames, lat
		},
	}
}

func main() {
	rawURL := flag.String("url", "", "the server's ws:// URL, with its query (token, age_token)")
	connections := flag.Int("connections", 1000, "connections to open")
	seconds := flag.Float64("seconds", 10, "length of the measured window")
	warmup := flag.Float64("warmup", 2, "seconds between go and the window")
	subscribe := flag.String("subscribe", "feed", "the channel to subscribe to; empty: none")
	waitGo := flag.Bool("wait-go", false, `wait for a line on stdin once connected`)
	resultPath := flag.String("result", "", "write the JSON result to this file instead of stdout")
	impl := flag.String("impl", "raw", "raw (frame headers parsed over a bufio.Reader) or gorilla (gorilla/websocket)")
	bufSize := flag.Int("read-buffer", 0, "read buffer per connection in bytes (0: 64 KiB up to 2,000 connections, else 16 KiB)")
	rcvbuf := flag.Int("rcvbuf", 256<<10, "SO_RCVBUF per connection in bytes (0: the kernel's autotuning)")
	flag.Parse()
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "ws" || u.Host == "" {
		fmt.Fprintln(os.Stderr, "--url: a ws://host:port/path URL")
		os.Exit(2)
	}
	if *impl != "raw" && *impl != "gorilla" {
		fmt.Fprintln(os.Stderr, "--impl: raw or gorilla")
		os.Exit(2)
	}
	if *bufSize <= 0 {
		*bufSize = 64 << 10
		if *connections > 2000 {
			*bufSize = 16 << 10
		}
	}
	dialer = newDialer(*rcvbuf)
	var sub []byte
	if *subscribe != "" {
		sub, _ = json.Marshal(map[string]any{"op": "subscribe", "channels": []string{*subscribe}})
	}

	fails := &failures{reason: map[string]int{}}
	started := time.Now()
	s := open(*impl, *rawURL, u, *connections, *bufSize, sub, fails)
	connectS := time.Since(started).Seconds()
	fmt.Println("connected") // bench/ws.py starts the traffic once every client is here
	if *waitGo {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	time.Sleep(time.Duration(*warmup * float64(time.Second)))
	fmt.Println("measure-start") // bench/ws.py samples the server's CPU time here
	t0, cpu0 := time.Now(), cpuSeconds()
	measuring.Store(true)
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	measuring.Store(false)
	elapsed, cpu := time.Since(t0).Seconds(), cpuSeconds()-cpu0
	fmt.Println("measure-end")
	held := s.held()
	frames, lat := s.stop()

	summary := percentiles(lat)
	for i := range lat {
		lat[i] = round1(lat[i])
	}
	out, _ := json.Marshal(result{
		Connected: s.connected, Held: held, Failures: fails.reason, ConnectS: math.Round(connectS*100) / 100,
		DeliveriesPerS: int64(math.Round(float64(frames) / elapsed)), Frames: frames,
		ClientCPUPct: int(math.Round(100 * cpu / elapsed)), Latency: summary, LatencySamplesMs: lat, Impl: *impl,
	})
	if *resultPath != "" {
		if err := os.WriteFile(*resultPath, out, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	} else {
		fmt.Println(string(out))
	}
}
