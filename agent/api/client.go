package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/adeagent/adeagent/agent/version"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/adeagent/adeagent.sock"

// PseudoHost is the Host of every request to the socket: the server refuses any other
// (see agent/server).
const PseudoHost = "local-adeagent.sock"

// WaitResultHeader tells how GET /v1/status?wait=ready ended: "ready" or "timeout".
const WaitResultHeader = "Adeagent-Wait-Result"

// maxResponseBytes bounds what the client reads of one answer.
const maxResponseBytes = 64 << 20

// ErrDaemonUnreachable matches (errors.Is) every error that says the daemon could not be
// reached at all: no socket (ENOENT), nobody listening (ECONNREFUSED), no permission
// (EACCES), a dial timeout. The *UnreachableError carrying it keeps the cause.
var ErrDaemonUnreachable = errors.New("adeagent daemon unreachable")

// UnreachableError is a failed dial to the daemon's socket.
type UnreachableError struct {
	Socket string
	Err    error // the dial error; errors.Is(err, syscall.ENOENT) etc. work through it
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the adeagent daemon at %s: %v", e.Socket, e.Err)
}

// Unwrap exposes both ErrDaemonUnreachable and the cause.
func (e *UnreachableError) Unwrap() []error { return []error{ErrDaemonUnreachable, e.Err} }

// APIError is a non-2xx answer of the daemon, with its {"error":…} message.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("daemon answered %d %s: %s", e.Status, statusText(e.Status), e.Message)
}

// Client talks to the daemon's socket API. The zero value with Socket set is ready to
// use; a Client must not be copied after first use.
type Client struct {
	// Socket is the daemon's socket path; empty means DefaultSocket.
	Socket string
	// OnVersionMismatch, when set, is called once per Client the first time the daemon's
	// version (api.VersionHeader) differs from this program's.
	OnVersionMismatch func(client, daemon string)

	warnOnce sync.Once
}

func (c *Client) socket() string {
	if c.Socket == "" {
		return DefaultSocket
	}
	return c.Socket
}

// do sends one request and returns the response whatever its status.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte) (*response, error) {
	target := path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	resp, err := c.roundTrip(ctx, method, target, body)
	if err != nil {
		var ue *UnreachableError
		if errors.As(err, &ue) {
			return nil, err
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	c.checkVersion(resp.Header.Get(VersionHeader))
	return resp, nil
}

func (c *Client) checkVersion(daemon string) {
	if daemon == "" || daemon == version.Version || c.OnVersionMismatch == nil {
		return
	}
	c.warnOnce.Do(func() { c.OnVersionMismatch(version.Version, daemon) })
}

// readAnswer reads resp's body and turns a non-2xx status into an *APIError.
func readAnswer(resp *response, what string) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%s: read the answer: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, apiError(resp.StatusCode, b)
	}
	return b, nil
}

func apiError(code int, body []byte) *APIError {
	var e Error
	if err := json.Unmarshal(body, &e); err == nil && e.Error != "" {
		return &APIError{Status: code, Message: e.Error}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = statusText(code)
	}
	return &APIError{Status: code, Message: msg}
}

// getJSON GETs path, decodes the answer into v and returns its raw bytes.
func (c *Client) getJSON(ctx context.Context, path string, query url.Values, v any) ([]byte, textproto.MIMEHeader, error) {
	resp, err := c.do(ctx, "GET", path, query, nil)
	if err != nil {
		return nil, nil, err
	}
	b, err := readAnswer(resp, "GET "+path)
	if err != nil {
		return nil, resp.Header, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, resp.Header, fmt.Errorf("GET %s: decode the answer: %w", path, err)
	}
	return b, resp.Header, nil
}

// StatusResult is the answer of GET /v1/status.
type StatusResult struct {
	Report *Report
	// TimedOut: a wait=ready long poll ended by its timeout, not by readiness.
	TimedOut bool
	// Raw is the JSON the daemon sent.
	Raw []byte
}

// Status asks for the current report, without its holders list or the findings' related
// resources (Report.Holders and Finding.Related are nil; StatusResult.Raw has the whole
// answer; Report or Holders return them). With wait, the daemon holds the answer until the
// report is ready or timeout passes (0: the daemon's default of 30 s); ctx should allow
// longer than timeout. Before the daemon's first evaluation it fails with an *APIError
// of status 503 (with wait: only if the first report does not come within timeout).
func (c *Client) Status(ctx context.Context, wait bool, timeout time.Duration) (*StatusResult, error) {
	return c.status(ctx, wait, timeout, false)
}

// StatusBrief is Status without the holders list on the wire either (?holders=0; Raw has
// "holders": []): what `adeagentctl status` and `wait` show, without transferring half a
// megabyte on a VM with ~1000 holders.
func (c *Client) StatusBrief(ctx context.Context, wait bool, timeout time.Duration) (*StatusResult, error) {
	return c.status(ctx, wait, timeout, true)
}

func (c *Client) status(ctx context.Context, wait bool, timeout time.Duration, brief bool) (*StatusResult, error) {
	q := url.Values{}
	if brief {
		q.Set("holders", "0")
	}
	if wait {
		q.Set("wait", "ready")
		if timeout > 0 {
			q.Set("timeout", timeout.String())
		}
	}
	var rep Report
	doc := statusDoc{Report: &rep}
	raw, hdr, err := c.getJSON(ctx, "/v1/status", q, &doc)
	if err != nil {
		return nil, err
	}
	rep.Findings = nil
	for _, f := range doc.Findings {
		rep.Findings = append(rep.Findings, f.Finding)
	}
	return &StatusResult{Report: &rep, TimedOut: hdr.Get(WaitResultHeader) == "timeout", Raw: raw}, nil
}

// statusDoc decodes a status answer without its holders list and without the findings'
// related resources (Status leaves Report.Holders and Finding.Related nil; Raw has them):
// status and wait show neither, and with ~1000 holders decoding them took most of
// adeagentctl's CPU time (an os-drive.holders finding relates every holder's pid).
type statusDoc struct {
	*Report
	Holders  skipJSON       `json:"holders"`
	Findings []briefFinding `json:"findings"`
}

// briefFinding is a Finding whose related list is checked but not decoded.
type briefFinding struct {
	Finding
	Related skipJSON `json:"related"`
}

// skipJSON is a JSON value that is checked but not decoded.
type skipJSON struct{}

func (*skipJSON) UnmarshalJSON([]byte) error { return nil }

// Report returns the full readiness report and the JSON the daemon sent.
func (c *Client) Report(ctx context.Context) (*Report, []byte, error) {
	return c.report(ctx, nil)
}

// ReportFresh is Report from a full evaluation the daemon makes for the request
// (GET /v1/report?fresh=1) instead of its last periodic one. Concurrent requests share one
// evaluation; the daemon spaces on-demand evaluations by a few seconds.
func (c *Client) ReportFresh(ctx context.Context) (*Report, []byte, error) {
	return c.report(ctx, url.Values{"fresh": {"1"}})
}

func (c *Client) report(ctx context.Context, q url.Values) (*Report, []byte, error) {
	var rep Report
	raw, _, err := c.getJSON(ctx, "/v1/report", q, &rep)
	if err != nil {
		return nil, nil, err
	}
	return &rep, raw, nil
}

// Holders returns the OS drive's current holders and the JSON the daemon sent.
func (c *Client) Holders(ctx context.Context) (*HoldersReport, []byte, error) {
	return c.holders(ctx, nil)
}

// HoldersFresh is Holders from the full holder scan of an evaluation the daemon makes for
// the request (GET /v1/holders?fresh=1), not its live set or last periodic scan.
func (c *Client) HoldersFresh(ctx context.Context) (*HoldersReport, []byte, error) {
	return c.holders(ctx, url.Values{"fresh": {"1"}})
}

func (c *Client) holders(ctx context.Context, q url.Values) (*HoldersReport, []byte, error) {
	var hr HoldersReport
	raw, _, err := c.getJSON(ctx, "/v1/holders", q, &hr)
	if err != nil {
		return nil, nil, err
	}
	return &hr, raw, nil
}

// Metrics returns the daemon's Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, "GET", "/v1/metrics", nil, nil)
	if err != nil {
		return "", err
	}
	b, err := readAnswer(resp, "GET /v1/metrics")
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// DaemonVersion returns the version the daemon sends in api.VersionHeader. Any answer
// carries it, so it works before the daemon's first evaluation too.
func (c *Client) DaemonVersion(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, "GET", "/v1/status", nil, nil)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	v := resp.Header.Get(VersionHeader)
	if v == "" {
		return "", fmt.Errorf("the daemon sent no %s header", VersionHeader)
	}
	return v, nil
}

// ErrStreamEnded is returned by Events when the daemon ended the stream (it shut down).
var ErrStreamEnded = errors.New("the daemon ended the event stream")

// Events streams GET /v1/events, calling fn for each event in order, until ctx is done
// (it returns ctx's error), fn returns an error (returned as is), or the daemon ends the
// stream (ErrStreamEnded).
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.do(ctx, "GET", "/v1/events", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		_, err := readAnswer(resp, "GET /v1/events")
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("events: decode %q: %w", truncate(line, 120), err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return ErrStreamEnded
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
