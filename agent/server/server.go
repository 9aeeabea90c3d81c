package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/user"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/version"
)

// PseudoHost is the only Host a request may name (besides none). The socket has no host
// name; refusing every other Host keeps a web page that reaches the socket through a
// proxy or a DNS-rebinding trick from talking to the API (as tailscale's validHost does).
// The client sends requests to http://local-adeagent.sock/v1/….
const PseudoHost = api.PseudoHost

// WaitResultHeader says how GET /v1/status?wait=ready ended: "ready" when the report
// became ready, "timeout" when the timeout passed first. The body is the current report
// either way.
const WaitResultHeader = api.WaitResultHeader

// Defaults of Options.
const (
	DefaultMaxBodyBytes   = 64 << 10
	DefaultHoldersTimeout = 60 * time.Second
	DefaultShutdownGrace  = 5 * time.Second
	DefaultMaxStreams     = 256
)

// MetricsContentType is the content type of GET /v1/metrics (Prometheus text format).
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// Options configure a Server. The zero value works: no operator group, a no-op logger.
type Options struct {
	// Logger receives refusals, panics and serve errors. Nil logs nothing.
	Logger *zap.Logger
	// OperatorGroup names a group whose members may use the write routes besides uid 0.
	// Empty: only root may write. A group that does not exist admits nobody (and is logged).
	OperatorGroup string
	// Version is sent in api.VersionHeader; default version.Version.
	Version string
	// MaxBodyBytes limits request bodies; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// HoldersTimeout bounds Backend.Holders per request; default DefaultHoldersTimeout.
	HoldersTimeout time.Duration
	// ShutdownGrace is how long Serve waits for requests after ctx is done; default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// MaxStreams bounds the open event streams and status long polls together (each holds
	// a connection and a goroutine); more get 429. Default DefaultMaxStreams.
	MaxStreams int
}

// Server is the socket API: an http.Handler over a Backend.
type Server struct {
	b    Backend
	opts Options
	log  *zap.Logger

	operatorGID string // resolved OperatorGroup gid; "" when none
	// groupIDs lists the group ids of a uid (supplementary included); a field so that
	// tests can fake the user database.
	groupIDs func(uid uint32) ([]string, error)

	streams atomic.Int64 // open event streams and long polls

	// encoded is the JSON of the last report answered, reused while the backend serves
	// the same report: with ~1000 holders it is half a megabyte, and encoding it for every
	// `adeagentctl status` cost more than the rest of the round trip.
	encMu   sync.Mutex
	encoded [2]encodedReport // [0] without the holders list, [1] whole
}

// encodedReport is a report's JSON answer.
type encodedReport struct {
	rep  *api.Report
	json []byte
}

// New returns the API server for b.
func New(b Backend, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Version == "" {
		opts.Version = version.Version
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.HoldersTimeout <= 0 {
		opts.HoldersTimeout = DefaultHoldersTimeout
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	s := &Server{b: b, opts: opts, log: opts.Logger, groupIDs: userGroupIDs}
	if opts.OperatorGroup != "" {
		g, err := user.LookupGroup(opts.OperatorGroup)
		if err != nil {
			s.log.Warn("api: operator group not found; only root may use the write routes",
				zap.String("group", opts.OperatorGroup), zap.Error(err))
		} else {
			s.operatorGID = g.Gid
		}
	}
	return s
}

func userGroupIDs(uid uint32) ([]string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, fmt.Errorf("look up uid %d: %w", uid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of uid %d: %w", uid, err)
	}
	return ids, nil
}

// Serve answers requests on ln until ctx is done, then stops accepting, ends long polls
// and event streams, and waits up to Options.ShutdownGrace for the requests in flight.
// It closes ln. It returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := &http.Server{
		Handler:     s,
		ConnContext: connContext,
		BaseContext: func(net.Listener) context.Context { return baseCtx },
		// No ReadTimeout: its deadline stays on the connection while the handler runs and
		// would cancel long polls and event streams. Bodies are bounded by MaxBodyBytes.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Long polls and event streams watch their request context, which derives from
	// baseCtx: cancel it so that they end and Shutdown does not wait for them.
	cancelBase()
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		return fmt.Errorf("shut down the API server: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// access levels of the routes.
type access int

const (
	read  access = iota // anyone the socket's mode lets connect
	write               // uid 0 or a member of the operator group
)

type route struct {
	path   string // after /v1/
	method string
	access access
	// beforeReport: the route answers before the first evaluation finished (else 503).
	beforeReport bool
	// ownQuery: the handler parses the query itself; other routes take the parameters
	// named in params (none when empty), and their handler checks the values.
	ownQuery bool
	params   []string
	handler  func(s *Server, w http.ResponseWriter, r *http.Request, q string)
}

// routes is the route table, sorted by path (TestRoutesSorted keeps it so).
//
//	GET  /v1/events   JSON lines (api.Event), flushed per event, until the client leaves
//	GET  /v1/holders  api.HoldersReport; ?fresh=1 from a full evaluation made for the request
//	GET  /v1/metrics  Prometheus text (answers before the first evaluation too)
//	POST /v1/prepare  write access; body {} or {"dry_run": true}: api.QuiesceResult after
//	                  the prepare (which may take minutes), or api.QuiescePlan for a dry
//	                  run; 409 while another prepare/restore runs, 501 without Actions
//	GET  /v1/report   api.Report; ?fresh=1 from a full evaluation made for the request
//	                  (concurrent requests share one; the daemon spaces them)
//	POST /v1/restore  write access; body {}: api.QuiesceResult
//	GET  /v1/status   api.Report; ?wait=ready[&timeout=D] long-polls until ready or D
//	                  (default 30s, at most 1h) and sets Adeagent-Wait-Result;
//	                  ?holders=0 leaves the holders list out ([])
//
// Every request is checked in this order: Host ("" or PseudoHost) and no Origin/Referer
// (403), route (404), method (405, with Allow), write access (403, logged with uid and
// pid), query (400), first evaluation done (503 {"error":"not ready"}). Every answer
// carries api.VersionHeader; every error is JSON {"error": "…"}.
var routes = []route{
	{path: "events", method: http.MethodGet, access: read, handler: (*Server).events},
	{path: "holders", method: http.MethodGet, access: read, params: []string{"fresh"}, handler: (*Server).holders},
	{path: "metrics", method: http.MethodGet, access: read, beforeReport: true, handler: (*Server).metrics},
	{path: "prepare", method: http.MethodPost, access: write, handler: (*Server).action},
	{path: "report", method: http.MethodGet, access: read, params: []string{"fresh"}, handler: (*Server).report},
	{path: "restore", method: http.MethodPost, access: write, handler: (*Server).action},
	// status checks its own query and waits for the first report when asked to.
	{path: "status", method: http.MethodGet, access: read, beforeReport: true, ownQuery: true, handler: (*Server).status},
}

func findRoute(path string) (route, bool) {
	i, ok := slices.BinarySearchFunc(routes, path, func(r route, p string) int { return strings.Compare(r.path, p) })
	if !ok {
		return route{}, false
	}
	return routes[i], true
}

// ServeHTTP checks the request (host, origin, route, method, access, query) and
// dispatches it. It never lets a panic escape: the client gets 500 and the log a line.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &responseWriter{ResponseWriter: w}
	defer s.recoverPanic(rw, r)
	rw.Header().Set(api.VersionHeader, s.opts.Version)
	peer := PeerFromContext(r.Context())

	if r.Host != "" && r.Host != PseudoHost {
		s.refuse(rw, r, peer, http.StatusForbidden, fmt.Sprintf("invalid Host %q: want %q or none", r.Host, PseudoHost))
		return
	}
	if r.Header.Get("Origin") != "" || r.Header.Get("Referer") != "" {
		s.refuse(rw, r, peer, http.StatusForbidden, "requests with an Origin or Referer header are refused (browser requests are not allowed)")
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		writeError(rw, http.StatusNotFound, fmt.Sprintf("no route %s: the API lives under /v1/", r.URL.Path))
		return
	}
	rt, ok := findRoute(name)
	if !ok {
		writeError(rw, http.StatusNotFound, fmt.Sprintf("no route %s", r.URL.Path))
		return
	}
	if r.Method != rt.method {
		rw.Header().Set("Allow", rt.method)
		writeError(rw, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, rt.method))
		return
	}
	if rt.access == write {
		if err := s.mayWrite(peer); err != nil {
			s.refuse(rw, r, peer, http.StatusForbidden, err.Error())
			return
		}
	}
	if !rt.ownQuery {
		if _, err := parseQuery(r.URL.RawQuery, rt.params...); err != nil {
			writeError(rw, http.StatusBadRequest, err.Error())
			return
		}
	}
	if !rt.beforeReport && s.b.Report() == nil {
		writeError(rw, http.StatusServiceUnavailable, "not ready")
		return
	}
	r.Body = http.MaxBytesReader(rw, r.Body, s.opts.MaxBodyBytes)
	rt.handler(s, rw, r, r.URL.RawQuery)
}

// mayWrite says whether peer may use the write routes: uid 0, or a member (primary or
// supplementary) of the operator group.
func (s *Server) mayWrite(p Peer) error {
	if p.Err != nil {
		return fmt.Errorf("write access needs known peer credentials: %v", p.Err)
	}
	if p.UID == 0 {
		return nil
	}
	if s.operatorGID != "" {
		if strconv.FormatUint(uint64(p.GID), 10) == s.operatorGID {
			return nil
		}
		ids, err := s.groupIDs(p.UID)
		if err == nil && slices.Contains(ids, s.operatorGID) {
			return nil
		}
		return fmt.Errorf("write access denied: uid %d is neither root nor in group %s", p.UID, s.opts.OperatorGroup)
	}
	return fmt.Errorf("write access denied: uid %d is not root", p.UID)
}

// refuse answers a refused request and logs who asked.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, p Peer, code int, msg string) {
	fields := []zap.Field{
		zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("reason", msg),
	}
	if p.Err == nil {
		fields = append(fields, zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID))
	} else {
		fields = append(fields, zap.NamedError("peer_error", p.Err))
	}
	s.log.Warn("api: request refused", fields...)
	writeError(w, code, msg)
}

func (s *Server) recoverPanic(w *responseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler { //nolint:errorlint // net/http compares it the same way
		panic(v)
	}
	p := PeerFromContext(r.Context())
	s.log.Error("api: handler panic", zap.String("method", r.Method), zap.String("path", r.URL.Path),
		zap.Stringer("peer", p), zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
	if !w.wroteHeader {
		writeError(w, http.StatusInternalServerError, "internal error (logged by the daemon)")
	}
}

// status is GET /v1/status[?wait=ready&timeout=D][&holders=0].
func (s *Server) status(w http.ResponseWriter, r *http.Request, raw string) {
	q, err := ParseStatusQuery(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !q.WaitReady {
		rep := s.b.Report()
		if rep == nil {
			writeError(w, http.StatusServiceUnavailable, "not ready")
			return
		}
		s.writeReportOpt(w, rep, !q.NoHolders)
		return
	}
	if !s.openStream(w) {
		return
	}
	defer s.streams.Add(-1)
	timer := time.NewTimer(q.Timeout)
	defer timer.Stop()
	for {
		// Take the channel before the report, so that a report published in between
		// closes the channel we wait on.
		changed := s.b.Changed()
		if rep := s.b.Report(); rep != nil && rep.Ready {
			w.Header().Set(WaitResultHeader, "ready")
			s.writeReportOpt(w, rep, !q.NoHolders)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			rep := s.b.Report()
			w.Header().Set(WaitResultHeader, "timeout")
			if rep == nil {
				writeError(w, http.StatusServiceUnavailable, "not ready")
				return
			}
			s.writeReportOpt(w, rep, !q.NoHolders)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// openStream counts a new long-lived request, or answers 429 when MaxStreams are open.
// The caller decrements s.streams when it returns true.
func (s *Server) openStream(w http.ResponseWriter) bool {
	if n := s.streams.Add(1); n > int64(s.opts.MaxStreams) {
		s.streams.Add(-1)
		s.log.Warn("api: too many open streams", zap.Int("max", s.opts.MaxStreams))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many open event streams and long polls (at most %d)", s.opts.MaxStreams))
		return false
	}
	return true
}

// report is GET /v1/report (?fresh=1: from a full evaluation made for the request).
func (s *Server) report(w http.ResponseWriter, r *http.Request, raw string) {
	fresh, err := ParseFreshQuery(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rep := s.b.Report()
	if fresh {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.HoldersTimeout)
		defer cancel()
		if rep, _, err = s.b.Fresh(ctx); err != nil {
			s.freshFailed(w, r, err)
			return
		}
	}
	if rep == nil {
		writeError(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	s.writeReport(w, rep)
}

// freshFailed answers a ?fresh=1 request whose evaluation did not come.
func (s *Server) freshFailed(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client left
	}
	s.log.Warn("api: fresh evaluation failed", zap.Error(err))
	if errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("fresh evaluation: %v", err))
		return
	}
	writeError(w, http.StatusInternalServerError, fmt.Sprintf("fresh evaluation: %v", err))
}

// holders is GET /v1/holders (?fresh=1: the holder scan of a full evaluation made for the
// request, not the live watch's set or the last periodic scan).
func (s *Server) holders(w http.ResponseWriter, r *http.Request, raw string) {
	fresh, err := ParseFreshQuery(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.HoldersTimeout)
	defer cancel()
	var hr *api.HoldersReport
	if fresh {
		if _, hr, err = s.b.Fresh(ctx); err != nil {
			s.freshFailed(w, r, err)
			return
		}
	}
	if hr == nil {
		hr, err = s.b.Holders(ctx)
	}
	if err != nil {
		s.log.Warn("api: holders failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("holders: %v", err))
		return
	}
	if hr == nil {
		writeError(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	writeJSON(w, http.StatusOK, hr)
}

// metrics is GET /v1/metrics.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ string) {
	var buf bytes.Buffer
	if err := s.b.WriteMetrics(&buf); err != nil {
		s.log.Warn("api: metrics failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("metrics: %v", err))
		return
	}
	w.Header().Set("Content-Type", MetricsContentType)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// events is GET /v1/events: one JSON object per line, flushed per event, until the
// client goes away or the server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ string) {
	if !s.openStream(w) {
		return
	}
	defer s.streams.Add(-1)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel() // ends the subscription whichever way the stream ends
	ch := s.b.Subscribe(ctx)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/jsonl; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if err := enc.Encode(ev); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// action is POST /v1/prepare and POST /v1/restore; access was checked. The body is a
// JSON object (empty means {}); prepare takes "dry_run" (bool), restore takes nothing.
func (s *Server) action(w http.ResponseWriter, r *http.Request, _ string) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("read body: %v", err))
		return
	}
	fields, err := ParseActionBody(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/v1/")
	dryRun := false
	for k, v := range fields {
		if k != "dry_run" || name != "prepare" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown field %q for %s", k, name))
			return
		}
		if err := json.Unmarshal(v, &dryRun); err != nil {
			writeError(w, http.StatusBadRequest, "dry_run: want true or false")
			return
		}
	}
	act, ok := s.b.(Actions)
	if !ok {
		writeError(w, http.StatusNotImplemented, name+" is not available from this backend")
		return
	}
	peer := PeerFromContext(r.Context())
	var v any
	switch {
	case name == "prepare" && dryRun:
		v, err = act.Plan(r.Context())
	case name == "prepare":
		s.log.Info("prepare requested", zap.Uint32("uid", peer.UID), zap.Int32("pid", peer.PID))
		v, err = act.Prepare(r.Context(), peer)
	default:
		s.log.Info("restore requested", zap.Uint32("uid", peer.UID), zap.Int32("pid", peer.PID))
		v, err = act.Restore(r.Context(), peer)
	}
	if err != nil {
		code := http.StatusInternalServerError
		var sc interface{ HTTPStatus() int }
		if errors.As(err, &sc) {
			code = sc.HTTPStatus()
		}
		writeError(w, code, fmt.Sprintf("%s: %v", name, err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// writeJSON answers with v as indented JSON.
// writeReport answers 200 with rep, encoded once per report.
func (s *Server) writeReport(w http.ResponseWriter, rep *api.Report) {
	s.writeReportOpt(w, rep, true)
}

// writeReportOpt is writeReport, with or without the holders list (then []).
func (s *Server) writeReportOpt(w http.ResponseWriter, rep *api.Report, holders bool) {
	slot := 0
	if holders {
		slot = 1
	}
	s.encMu.Lock()
	e := &s.encoded[slot]
	b := e.json
	if e.rep != rep || b == nil {
		v := rep
		if !holders {
			c := *rep
			c.Holders = []api.Holder{}
			v = &c
		}
		var err error
		if b, err = json.MarshalIndent(v, "", "  "); err != nil {
			s.encMu.Unlock()
			writeJSON(w, http.StatusOK, v) // answers 500 with the error
			return
		}
		b = append(b, '\n')
		e.rep, e.json = rep, b
	}
	s.encMu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Error: fmt.Sprintf("encode the answer: %v", err)})
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

// responseWriter remembers whether the header was sent, for the panic handler.
type responseWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *responseWriter) WriteHeader(code int) {
	w.wroteHeader = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's Flush.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
