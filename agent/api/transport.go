package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/version"
)

// The client speaks just enough HTTP/1.1 for the daemon's socket: one request per
// connection (Connection: close), bodies framed by Content-Length, chunked encoding or the
// end of the connection. net/http would do the same, but it brings crypto/tls and friends
// into adeagentctl: 5 MB more binary and ~1.7 ms more process start on every
// `adeagentctl status`, a third of the round trip (issue 4's footprint).

// dialTimeout bounds connecting to the socket; the request itself is bounded by its context.
const dialTimeout = 5 * time.Second

// maxHeaderBytes bounds the status line and headers of an answer.
const maxHeaderBytes = 64 << 10

const readBufferSize = 32 << 10

// errHeadTooLarge: the answer's status line and headers went past maxHeaderBytes.
var errHeadTooLarge = errors.New("the answer's headers are too large")

// capReader fails once left bytes have been read; left < 0 means no limit.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return c.r.Read(p)
	}
	if c.left == 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// response is one answer of the daemon.
type response struct {
	StatusCode int
	Header     textproto.MIMEHeader
	// Body must be closed; closing it closes the connection.
	Body io.ReadCloser
}

// roundTrip sends one request on a new connection and returns the answer once its headers
// have arrived. Cancelling ctx closes the connection, which ends a blocked read of Body too.
func (c *Client) roundTrip(ctx context.Context, method, target string, body []byte) (*response, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", c.socket())
	if err != nil {
		return nil, &UnreachableError{Socket: c.socket(), Err: err}
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (*response, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}

	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: adeagent-client/%s\r\n%s: %s\r\nConnection: close\r\n",
		method, target, PseudoHost, version.Version, VersionHeader, version.Version)
	if body != nil {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		return fail(fmt.Errorf("send the request: %w", err))
	}

	// The cap bounds the head (status line and headers, plus what the buffer reads ahead);
	// it is lifted for the body, which readAnswer bounds by itself.
	capped := &capReader{r: conn, left: maxHeaderBytes + readBufferSize}
	br := bufio.NewReaderSize(capped, readBufferSize)
	resp, err := readResponseHead(br, method)
	if err != nil {
		return fail(err)
	}
	capped.left = -1
	resp.Body = &connBody{Reader: resp.Body, conn: conn, stop: stop, ctx: ctx}
	return resp, nil
}

// readResponseHead reads the status line and headers from br; the returned Body reads the
// framed body from br (its Close does nothing: connBody closes the connection).
func readResponseHead(br *bufio.Reader, method string) (*response, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", noEOF(err))
	}
	code, err := parseStatusLine(line)
	if err != nil {
		return nil, err
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("read the answer's headers: %w", noEOF(err))
	}
	resp := &response{StatusCode: code, Header: hdr}
	switch {
	case method == "HEAD" || code == 204 || code == 304 || code/100 == 1:
		resp.Body = io.NopCloser(strings.NewReader(""))
	case hasToken(hdr.Values("Transfer-Encoding"), "chunked"):
		resp.Body = io.NopCloser(&chunkedReader{r: br})
	case hdr.Get("Content-Length") != "":
		n, err := strconv.ParseInt(strings.TrimSpace(hdr.Get("Content-Length")), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("read the answer: bad Content-Length %q", hdr.Get("Content-Length"))
		}
		resp.Body = io.NopCloser(&exactReader{r: io.LimitReader(br, n), left: n})
	default:
		// Connection: close framing: the body ends with the connection.
		resp.Body = io.NopCloser(br)
	}
	return resp, nil
}

// parseStatusLine returns the status code of "HTTP/1.1 200 OK".
func parseStatusLine(line string) (int, error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, fmt.Errorf("read the answer: not an HTTP/1.x status line: %q", truncate([]byte(line), 80))
	}
	codeText, _, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 || code < 100 {
		return 0, fmt.Errorf("read the answer: bad status code in %q", truncate([]byte(line), 80))
	}
	return code, nil
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// noEOF turns a bare EOF while a message is incomplete into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// connBody is an answer's body: Close releases the connection; after a cancelled context a
// read error is the context's error.
type connBody struct {
	io.Reader
	conn net.Conn
	stop func() bool
	ctx  context.Context
}

func (b *connBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() != nil {
		err = b.ctx.Err()
	}
	return n, err
}

func (b *connBody) Close() error {
	b.stop()
	return b.conn.Close()
}

// exactReader reads a Content-Length body and says io.ErrUnexpectedEOF when the connection
// ends before it.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, io.EOF
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// chunkedReader decodes a chunked body (RFC 9112 §7.1). Read returns what one chunk has
// ready without waiting for the next, so an event stream's lines arrive as they are sent.
type chunkedReader struct {
	r        *bufio.Reader
	left     uint64 // bytes left in the current chunk
	needCRLF bool   // the CRLF after a chunk's data is still to be read
	err      error
}

// maxChunkLine bounds a chunk-size line (size, extensions) and a trailer line.
const maxChunkLine = 4096

func (c *chunkedReader) Read(p []byte) (int, error) {
	for c.left == 0 && c.err == nil {
		c.err = c.nextChunk()
	}
	if c.err != nil {
		return 0, c.err
	}
	if uint64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= uint64(n)
	if c.left == 0 {
		c.needCRLF = true
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

// nextChunk reads the next chunk's size line; after the last chunk it reads the trailers
// and returns io.EOF.
func (c *chunkedReader) nextChunk() error {
	if c.needCRLF {
		line, err := c.line()
		if err != nil {
			return err
		}
		if line != "" {
			return errors.New("chunked body: data longer than its chunk size")
		}
		c.needCRLF = false
	}
	line, err := c.line()
	if err != nil {
		return err
	}
	sizeText, _, _ := strings.Cut(line, ";")
	size, err := strconv.ParseUint(strings.TrimSpace(sizeText), 16, 63)
	if err != nil {
		return fmt.Errorf("chunked body: bad chunk size %q", truncate([]byte(line), 40))
	}
	if size > 0 {
		c.left = size
		return nil
	}
	for { // trailers, up to the empty line
		line, err := c.line()
		if err != nil {
			return err
		}
		if line == "" {
			return io.EOF
		}
	}
}

// line reads one CRLF- (or LF-) terminated line of at most maxChunkLine bytes.
func (c *chunkedReader) line() (string, error) {
	var b []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxChunkLine {
			return "", errors.New("chunked body: line too long")
		}
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return "", noEOF(err)
		}
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// statusText names the statuses the daemon answers with (net/http's StatusText, without
// net/http).
func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 409:
		return "Conflict"
	case 413:
		return "Request Entity Too Large"
	case 500:
		return "Internal Server Error"
	case 503:
		return "Service Unavailable"
	}
	return "status " + strconv.Itoa(code)
}
