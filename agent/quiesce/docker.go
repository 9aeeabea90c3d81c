package quiesce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// DockerSocket is the Docker Engine API socket's host path.
const DockerSocket = "/run/docker.sock"

// ErrNoDocker is returned when the Docker Engine API socket is absent.
var ErrNoDocker = errors.New("docker is not present (no /run/docker.sock)")

// DockerAPI talks to the Docker Engine API over its unix socket with net/http (no SDK).
type DockerAPI struct {
	Socket string // the socket's path (already mapped through the host root)
	client *http.Client
}

// NewDockerAPI returns a client for the socket under root.
func NewDockerAPI(root hostroot.Root) *DockerAPI {
	return &DockerAPI{Socket: root.Path(DockerSocket)}
}

func (d *DockerAPI) http() *http.Client {
	if d.client == nil {
		sock := d.Socket
		d.client = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		}}
	}
	return d.client
}

// Present reports whether the socket exists.
func (d *DockerAPI) Present() bool {
	fi, err := os.Stat(d.Socket)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func (d *DockerAPI) do(ctx context.Context, method, path string, out any) error {
	if !d.Present() {
		return ErrNoDocker
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, nil)
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", method, path, err)
	}
	resp, err := d.http().Do(req)
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	// 304: already started/stopped — what we wanted.
	if resp.StatusCode == http.StatusNotModified {
		return nil
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		if e.Message == "" {
			e.Message = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("docker %s %s: %s: %s", method, path, resp.Status, e.Message)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("docker %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// Running lists the running containers with their restart policies.
func (d *DockerAPI) Running(ctx context.Context) ([]Container, error) {
	var list []struct {
		ID     string   `json:"Id"`
		Names  []string `json:"Names"`
		Image  string   `json:"Image"`
		State  string   `json:"State"`
		Status string   `json:"Status"`
	}
	if err := d.do(ctx, http.MethodGet, "/containers/json", &list); err != nil {
		return nil, err
	}
	out := make([]Container, 0, len(list))
	for _, c := range list {
		ct := Container{ID: c.ID, Image: c.Image, Running: c.State == "" || c.State == "running"}
		if len(c.Names) > 0 {
			ct.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		var insp struct {
			HostConfig struct {
				RestartPolicy struct {
					Name string `json:"Name"`
				} `json:"RestartPolicy"`
			} `json:"HostConfig"`
		}
		if err := d.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(c.ID)+"/json", &insp); err == nil {
			ct.RestartPolicy = insp.HostConfig.RestartPolicy.Name
		}
		out = append(out, ct)
	}
	return out, nil
}

// LiveRestore reports whether dockerd runs with live-restore (containers outlive it).
func (d *DockerAPI) LiveRestore(ctx context.Context) (bool, error) {
	var info struct {
		LiveRestoreEnabled bool `json:"LiveRestoreEnabled"`
	}
	if err := d.do(ctx, http.MethodGet, "/info", &info); err != nil {
		return false, err
	}
	return info.LiveRestoreEnabled, nil
}

// Stop stops a container (SIGTERM, then dockerd's SIGKILL after grace — Docker's own clean
// stop, the same as `docker stop -t`).
func (d *DockerAPI) Stop(ctx context.Context, id string, grace time.Duration) error {
	return d.do(ctx, http.MethodPost, fmt.Sprintf("/containers/%s/stop?t=%d", url.PathEscape(id), int(grace.Seconds())), nil)
}

// Start starts a container; starting a running one is not an error.
func (d *DockerAPI) Start(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/start", nil)
}

// IsRunning reports whether a container runs.
func (d *DockerAPI) IsRunning(ctx context.Context, id string) (bool, error) {
	var insp struct {
		State struct {
			Running bool `json:"Running"`
		} `json:"State"`
	}
	if err := d.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", &insp); err != nil {
		return false, err
	}
	return insp.State.Running, nil
}
