package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func FuzzParseStatusQuery(f *testing.F) {
	for _, s := range []string{"", "wait=ready", "wait=ready&timeout=30s", "timeout=1h", "wait=%zz",
		"wait=ready&timeout=-5s", "wait=ready&wait=ready", "x=1", "wait=ready&timeout=9223372036854775807ns", ";", "&&&="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ParseStatusQuery(raw)
		if err != nil {
			if q != (StatusQuery{}) {
				t.Fatalf("error %v with a non-zero query %+v", err, q)
			}
			return
		}
		if q.WaitReady != (q.Timeout > 0) {
			t.Fatalf("%q: %+v", raw, q)
		}
		if q.Timeout < 0 || q.Timeout > MaxWaitTimeout {
			t.Fatalf("%q: timeout %s out of bounds", raw, q.Timeout)
		}
	})
}

func FuzzParseActionBody(f *testing.F) {
	for _, s := range []string{"", "{}", `{"dry_run":true}`, "null", "[]", "{} {}", "{", `{"a":1}  `, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseActionBody(body)
		if err != nil {
			return
		}
		if m == nil {
			t.Fatal("nil map without an error")
		}
		if len(strings.TrimSpace(string(body))) > 0 && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

// FuzzServeHTTP sends arbitrary method, path, query, headers and body through the whole
// handler: it must never panic and every answer must carry the version header, and every
// error a JSON body.
func FuzzServeHTTP(f *testing.F) {
	f.Add("GET", "/v1/status", "wait=ready&timeout=1ms", "", "", uint32(1000), []byte(nil))
	f.Add("POST", "/v1/prepare", "", "", "", uint32(0), []byte(`{"dry_run":true}`))
	f.Add("POST", "/v1/prepare", "", "http://x", "", uint32(0), []byte(`{`))
	f.Add("GET", "/v1/../v1/report", "", "", "evil", uint32(1000), []byte(nil))
	f.Add("PUT", "/v1/metrics", "a=%", "", "", uint32(0), []byte("x"))
	// A ready report: a long poll answers at once whatever timeout the fuzzer picks.
	s := New(newFake(testReport(true)), Options{})
	f.Fuzz(func(t *testing.T, method, path, rawQuery, origin, host string, uid uint32, body []byte) {
		if path == "/v1/events" {
			return // streams until the client leaves; covered by its own test
		}
		r := httptest.NewRequest("GET", "/", strings.NewReader(string(body)))
		r.Method = method
		r.URL = &url.URL{Path: path, RawQuery: rawQuery}
		r.Host = host
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		r = r.WithContext(WithPeer(r.Context(), Peer{UID: uid, PID: 1}))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Header().Get(api.VersionHeader) == "" {
			t.Fatalf("no version header (%d)", w.Code)
		}
		if w.Code >= 400 {
			var e api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%d without a JSON error: %q", w.Code, w.Body)
			}
		}
		if w.Code == http.StatusInternalServerError {
			t.Fatalf("500: %s", w.Body)
		}
	})
}
