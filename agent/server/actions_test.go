package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

// actionsBackend is the fake backend with prepare and restore.
type actionsBackend struct {
	*fakeBackend
	calls []string
	peers []Peer
	err   error
}

func (a *actionsBackend) Plan(context.Context) (*api.QuiescePlan, error) {
	a.calls = append(a.calls, "plan")
	if a.err != nil {
		return nil, a.err
	}
	return &api.QuiescePlan{SchemaVersion: api.SchemaVersion, Path: "unmount"}, nil
}

func (a *actionsBackend) Prepare(_ context.Context, p Peer) (*api.QuiesceResult, error) {
	a.calls, a.peers = append(a.calls, "prepare"), append(a.peers, p)
	if a.err != nil {
		return nil, a.err
	}
	return &api.QuiesceResult{SchemaVersion: api.SchemaVersion, Action: "prepare", Outcome: api.OutcomeBlocked}, nil
}

func (a *actionsBackend) Restore(_ context.Context, p Peer) (*api.QuiesceResult, error) {
	a.calls, a.peers = append(a.calls, "restore"), append(a.peers, p)
	if a.err != nil {
		return nil, a.err
	}
	return &api.QuiesceResult{SchemaVersion: api.SchemaVersion, Action: "restore", Outcome: api.OutcomeRestored}, nil
}

type coded struct{ code int }

func (c coded) Error() string   { return "busy right now" }
func (c coded) HTTPStatus() int { return c.code }

func TestActions(t *testing.T) {
	b := &actionsBackend{fakeBackend: newFake(testReport(true))}
	s := New(b, Options{})

	w := do(t, s, &rootPeer, "POST", "/v1/prepare", `{"dry_run":true}`)
	var plan api.QuiescePlan
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &plan) != nil || plan.Path != "unmount" {
		t.Fatalf("dry run: %d %s", w.Code, w.Body)
	}
	for _, tc := range []struct{ path, body, outcome string }{
		{"/v1/prepare", "", api.OutcomeBlocked},
		{"/v1/prepare", `{"dry_run":false}`, api.OutcomeBlocked},
		{"/v1/restore", "{}", api.OutcomeRestored},
	} {
		w := do(t, s, &rootPeer, "POST", tc.path, tc.body)
		var res api.QuiesceResult
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &res) != nil || res.Outcome != tc.outcome || res.SchemaVersion != 1 {
			t.Errorf("%s %q: %d %s", tc.path, tc.body, w.Code, w.Body)
		}
	}
	if want := []string{"plan", "prepare", "prepare", "restore"}; len(b.calls) != len(want) {
		t.Errorf("calls %v, want %v", b.calls, want)
	}
	for _, p := range b.peers {
		if p.UID != rootPeer.UID || p.PID != rootPeer.PID {
			t.Errorf("the backend got peer %v, want the caller %v", p, rootPeer)
		}
	}
	// A refused caller never reaches the backend.
	n := len(b.calls)
	wantError(t, do(t, s, &userPeer, "POST", "/v1/prepare", `{"dry_run":true}`), http.StatusForbidden, "not root")
	if len(b.calls) != n {
		t.Error("a refused request reached the backend")
	}
	// Errors: a status the backend names, else 500; both as JSON errors.
	b.err = coded{http.StatusConflict}
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", ""), http.StatusConflict, "prepare: busy right now")
	b.err = errors.New("journal unwritable")
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/restore", ""), http.StatusInternalServerError, "restore: journal unwritable")
}
