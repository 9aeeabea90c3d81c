package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Long-poll limits of GET /v1/status?wait=ready.
const (
	DefaultWaitTimeout = 30 * time.Second
	MaxWaitTimeout     = time.Hour
)

// StatusQuery is the decoded query of GET /v1/status.
type StatusQuery struct {
	// WaitReady asks the server to hold the answer until the report is ready or Timeout
	// passes (?wait=ready).
	WaitReady bool
	// Timeout bounds the wait (?timeout=30s, a Go duration, 0 < timeout <= MaxWaitTimeout;
	// default DefaultWaitTimeout). Zero when WaitReady is false.
	Timeout time.Duration
	// NoHolders leaves the holders list out of the answer (?holders=0; it is [] then):
	// with ~1000 holders it is half a megabyte that `adeagentctl status` does not show.
	NoHolders bool
}

// parseQuery decodes a raw query string and refuses parameters the route does not know
// and repeated parameters.
func parseQuery(raw string, allowed ...string) (url.Values, error) {
	if len(raw) > 4096 {
		return nil, fmt.Errorf("query string longer than 4096 bytes")
	}
	v, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("malformed query: %w", err)
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		known := false
		for _, a := range allowed {
			if k == a {
				known = true
				break
			}
		}
		if !known {
			if len(allowed) == 0 {
				return nil, fmt.Errorf("unknown query parameter %q: this route takes none", k)
			}
			return nil, fmt.Errorf("unknown query parameter %q (known: %s)", k, strings.Join(allowed, ", "))
		}
		if len(v[k]) > 1 {
			return nil, fmt.Errorf("query parameter %q given %d times", k, len(v[k]))
		}
	}
	return v, nil
}

// ParseStatusQuery decodes the raw query of GET /v1/status: empty, or wait=ready with an
// optional timeout. Anything else is an error (the server answers 400).
func ParseStatusQuery(raw string) (StatusQuery, error) {
	v, err := parseQuery(raw, "holders", "timeout", "wait")
	if err != nil {
		return StatusQuery{}, err
	}
	var q StatusQuery
	if h, ok := v["holders"]; ok {
		switch h[0] {
		case "0":
			q.NoHolders = true
		case "1":
		default:
			return StatusQuery{}, fmt.Errorf("holders=%q: want 0 (leave the list out) or 1", h[0])
		}
	}
	if w, ok := v["wait"]; ok {
		if w[0] != "ready" {
			return StatusQuery{}, fmt.Errorf("wait=%q: the only value is \"ready\"", w[0])
		}
		q.WaitReady = true
		q.Timeout = DefaultWaitTimeout
	}
	if t, ok := v["timeout"]; ok {
		if !q.WaitReady {
			return StatusQuery{}, fmt.Errorf("timeout needs wait=ready")
		}
		d, err := time.ParseDuration(t[0])
		if err != nil {
			return StatusQuery{}, fmt.Errorf("timeout=%q: want a duration such as 30s or 5m", t[0])
		}
		if d <= 0 || d > MaxWaitTimeout {
			return StatusQuery{}, fmt.Errorf("timeout=%q: want more than 0 and at most %s", t[0], MaxWaitTimeout)
		}
		q.Timeout = d
	}
	return q, nil
}

// ParseFreshQuery decodes the raw query of GET /v1/report and /v1/holders: empty, or
// fresh=1 (also true, yes) to answer from a full evaluation made for the request rather
// than the last periodic one. fresh=0 (false, no) is the default.
func ParseFreshQuery(raw string) (fresh bool, err error) {
	v, err := parseQuery(raw, "fresh")
	if err != nil {
		return false, err
	}
	f, ok := v["fresh"]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(f[0]) {
	case "1", "true", "yes", "":
		return true, nil
	case "0", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("fresh=%q: want 1 or 0", f[0])
}

// ParseActionBody checks the body of POST /v1/prepare and /v1/restore: empty, or one JSON
// object. The fields are defined with the actions themselves (issue 6).
func ParseActionBody(body []byte) (map[string]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return map[string]json.RawMessage{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("malformed body: want a JSON object: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("malformed body: want a JSON object, not null")
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		return nil, fmt.Errorf("malformed body: trailing data after the JSON object")
	}
	return m, nil
}
