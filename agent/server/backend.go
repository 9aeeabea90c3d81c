// Package server is adeagent's local API: HTTP/1.1 + JSON over a Unix socket (DESIGN.md
// §7). It only presents what a Backend knows; the daemon (package agent) implements it.
package server

import (
	"context"
	"io"

	"github.com/adeagent/adeagent/agent/api"
)

// Backend is what the API serves.
type Backend interface {
	// Report is the latest full readiness report, or nil before the first evaluation
	// finished (the API then answers 503 {"error":"not ready"}).
	Report() *api.Report
	// Changed returns a channel that is closed when the next report replaces the current
	// one (for GET /v1/status?wait=ready long-polls).
	Changed() <-chan struct{}
	// Holders returns the OS drive's current holders.
	Holders(ctx context.Context) (*api.HoldersReport, error)
	// Fresh runs a full evaluation that starts after the call and returns its report and
	// its OS-drive holder scan (nil when the os-drive probe did not complete). Concurrent
	// callers share one evaluation, and the backend spaces on-demand evaluations, so that
	// any reader of the socket can ask for one without being able to keep the daemon busy.
	Fresh(ctx context.Context) (*api.Report, *api.HoldersReport, error)
	// Subscribe streams events until ctx is done, then closes the channel. A slow reader
	// loses events rather than blocking the daemon.
	Subscribe(ctx context.Context) <-chan api.Event
	// WriteMetrics writes the Prometheus text exposition of the daemon's state.
	WriteMetrics(w io.Writer) error
}

// Actions is implemented by a backend that can prepare and restore (the daemon); without
// it POST /v1/prepare and /v1/restore answer 501. The peer is who asked (for the journal
// and the log). An error with an HTTPStatus() int method sets the answer's status code
// (409 while another action runs, 503 when systemd is unreachable); others are 500.
type Actions interface {
	Plan(ctx context.Context) (*api.QuiescePlan, error)
	Prepare(ctx context.Context, peer Peer) (*api.QuiesceResult, error)
	Restore(ctx context.Context, peer Peer) (*api.QuiesceResult, error)
}
