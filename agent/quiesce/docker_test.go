package quiesce

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// dockerd fakes the Docker Engine API on a unix socket under a fixture root.
func dockerd(t *testing.T) (*DockerAPI, *[]string, map[string]bool) {
	t.Helper()
	// Unix socket paths are short (108 bytes): use a short temp dir as the root.
	dir, err := os.MkdirTemp("", "dk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, _ := hostroot.New(dir)
	l, err := net.Listen("unix", root.Path(DockerSocket))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []string
	running := map[string]bool{"aaa": true, "bbb": true}
	policy := map[string]string{"aaa": "no", "bbb": "unless-stopped"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var list []map[string]any
		for _, id := range []string{"aaa", "bbb"} {
			if running[id] {
				list = append(list, map[string]any{"Id": id, "Names": []string{"/" + id + "-name"}, "Image": "busybox", "State": "running"})
			}
		}
		json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("GET /containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		id := r.PathValue("id")
		if _, ok := policy[id]; !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such container: ` + id + `"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"State": map[string]any{"Running": running[id]},
			"HostConfig": map[string]any{"RestartPolicy": map[string]any{"Name": policy[id]}}})
	})
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"LiveRestoreEnabled":true}`))
	})
	mux.HandleFunc("POST /containers/{id}/{verb}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		id, verb := r.PathValue("id"), r.PathValue("verb")
		calls = append(calls, verb+" "+id+" "+r.URL.RawQuery)
		want := verb == "start"
		if running[id] == want {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		running[id] = want
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return NewDockerAPI(root), &calls, running
}

func TestDockerAPI(t *testing.T) {
	d, calls, running := dockerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !d.Present() {
		t.Fatal("socket not present")
	}
	cs, err := d.Running(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != "aaa" || cs[0].Name != "aaa-name" || cs[0].RestartPolicy != "no" || cs[1].RestartPolicy != "unless-stopped" || !cs[0].Running {
		t.Fatalf("containers %+v", cs)
	}
	if live, err := d.LiveRestore(ctx); err != nil || !live {
		t.Fatalf("live-restore %v %v", live, err)
	}
	if err := d.Stop(ctx, "aaa", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if up, err := d.IsRunning(ctx, "aaa"); err != nil || up {
		t.Fatalf("aaa running=%v %v", up, err)
	}
	if err := d.Start(ctx, "aaa"); err != nil {
		t.Fatal(err)
	}
	// Starting a running container (304) is fine.
	if err := d.Start(ctx, "bbb"); err != nil {
		t.Fatal(err)
	}
	if !running["aaa"] {
		t.Error("aaa not started")
	}
	if got := strings.Join(*calls, "|"); got != "stop aaa t=10|start aaa |start bbb " {
		t.Errorf("calls %q", got)
	}
	if _, err := d.IsRunning(ctx, "zzz"); err == nil || !strings.Contains(err.Error(), "No such container") {
		t.Errorf("err %v", err)
	}
}

func TestDockerAbsent(t *testing.T) {
	root, _ := hostroot.New(t.TempDir())
	d := NewDockerAPI(root)
	if d.Present() {
		t.Fatal("present without a socket")
	}
	if _, err := d.Running(context.Background()); err != ErrNoDocker {
		t.Fatalf("err %v", err)
	}
}
