package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/version"
)

// rawServer listens on a unix socket and hands each connection to handle, which reads the
// request with net/http's parser and writes whatever bytes the test wants.
func rawServer(t *testing.T, handle func(req *http.Request, body []byte, conn net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					t.Errorf("server: read request: %v", err)
					return
				}
				body, _ := io.ReadAll(req.Body)
				handle(req, body, conn)
			}()
		}
	}()
	return path
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestTransportSendsAWellFormedRequest(t *testing.T) {
	got := make(chan *http.Request, 1)
	var gotBody []byte
	sock := rawServer(t, func(req *http.Request, body []byte, conn net.Conn) {
		gotBody = body
		got <- req
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"outcome\":\"x\"}")
	})
	c := &Client{Socket: sock}
	var v struct{ Outcome string }
	if _, err := c.postJSON(testCtx(t), "/v1/prepare", map[string]bool{"dry_run": true}, &v); err != nil {
		t.Fatal(err)
	}
	req := <-got
	if req.Method != "POST" || req.URL.Path != "/v1/prepare" || req.Host != PseudoHost || req.ProtoMajor != 1 || req.ProtoMinor != 1 {
		t.Errorf("request line/host: %s %s %s host %q", req.Method, req.URL, req.Proto, req.Host)
	}
	if req.Header.Get(VersionHeader) != version.Version || req.Header.Get("Content-Type") != "application/json" || !req.Close {
		t.Errorf("headers: %v (close %v)", req.Header, req.Close)
	}
	if string(gotBody) != `{"dry_run":true}` || req.ContentLength != int64(len(gotBody)) {
		t.Errorf("body %q, Content-Length %d", gotBody, req.ContentLength)
	}
	if v.Outcome != "x" {
		t.Errorf("decoded %+v", v)
	}

	// A query is encoded into the target.
	sock = rawServer(t, func(req *http.Request, _ []byte, conn net.Conn) {
		got <- req
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
	})
	c = &Client{Socket: sock}
	if _, err := c.StatusBrief(testCtx(t), true, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	req = <-got
	if q := req.URL.Query(); req.Method != "GET" || q.Get("holders") != "0" || q.Get("wait") != "ready" || q.Get("timeout") != "1.5s" {
		t.Errorf("status request %s %s", req.Method, req.URL)
	}
}

func TestTransportBodyFraming(t *testing.T) {
	cases := []struct {
		name, answer, want string
		wantErr            string
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more", "hello", ""},
		{"close-delimited", "HTTP/1.0 200 OK\r\n\r\nuntil the end", "until the end", ""},
		{"chunked with extension and trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5;name=x\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer-X: 1\r\n\r\n", "hello 0123456789", ""},
		{"chunked, LF only", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", "abc", ""},
		{"short content-length", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "", "unexpected EOF"},
		{"truncated chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "", "unexpected EOF"},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", "", "bad chunk size"},
		{"chunk longer than its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "", "longer than its chunk size"},
		{"no terminating chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "", "unexpected EOF"},
		{"bad content-length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "", "bad Content-Length"},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", "", "not an HTTP/1.x status line"},
		{"bad status code", "HTTP/1.1 2x0 OK\r\n\r\n", "", "bad status code"},
		{"no answer", "", "", "unexpected EOF"},
		{"headers cut mid-line", "HTTP/1.1 200 OK\r\nContent-Le", "", "malformed MIME header"},
		{"headers cut between lines", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", "", "unexpected EOF"},
		{"headers too large", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxHeaderBytes+readBufferSize) + "\r\n\r\n", "", errHeadTooLarge.Error()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sock := rawServer(t, func(_ *http.Request, _ []byte, conn net.Conn) { io.WriteString(conn, tc.answer) })
			c := &Client{Socket: sock}
			resp, err := c.do(testCtx(t), "GET", "/v1/metrics", nil, nil)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want an error with %q", body, err, tc.wantErr)
				}
				if errors.Is(err, ErrDaemonUnreachable) {
					t.Errorf("a daemon that answered is not unreachable: %v", err)
				}
				return
			}
			if err != nil || string(body) != tc.want {
				t.Fatalf("got %q, %v; want %q", body, err, tc.want)
			}
		})
	}
}

// An event stream's lines reach the caller as they are sent, not when the stream ends.
func TestTransportStreamsChunks(t *testing.T) {
	next := make(chan string)
	sock := rawServer(t, func(_ *http.Request, _ []byte, conn net.Conn) {
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
		for line := range next {
			chunk := line + "\n"
			io.WriteString(conn, strconv.FormatInt(int64(len(chunk)), 16)+"\r\n"+chunk+"\r\n")
		}
		io.WriteString(conn, "0\r\n\r\n")
	})
	c := &Client{Socket: sock}
	seen := make(chan Event)
	done := make(chan error, 1)
	go func() {
		done <- c.Events(testCtx(t), func(ev Event) error { seen <- ev; return nil })
	}()
	for i := range 3 {
		next <- `{"schema_version":1,"type":"report","holders":` + strconv.Itoa(i+1) + `}`
		select {
		case ev := <-seen:
			if ev.Holders != i+1 {
				t.Fatalf("event %d: %+v", i, ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d did not arrive while the stream stayed open", i)
		}
	}
	close(next)
	if err := <-done; !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("end of stream: %v", err)
	}
}

// A cancelled context ends a request that waits for its answer.
func TestTransportCancelWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	sock := rawServer(t, func(_ *http.Request, _ []byte, _ net.Conn) { <-release })
	c := &Client{Socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Status(ctx, false, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("returned after %v", el)
	}
}
