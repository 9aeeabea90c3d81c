package sysd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// Job results systemd reports for a finished job (org.freedesktop.systemd1.Manager
// JobRemoved). Only JobDone means the job did what it was asked, and even then a start
// may have been skipped by a Condition*= (research/services_selinux.md §3 pitfall 3):
// re-read ActiveState.
const (
	JobDone       = "done"
	JobCanceled   = "canceled"
	JobTimeout    = "timeout"
	JobFailed     = "failed"
	JobDependency = "dependency"
	JobSkipped    = "skipped"
)

// jobBus is the part of *sdbus.Conn the job calls use. It is separate from bus so the
// read-only fakes of sysd_test.go need not grow; the real connection implements both.
type jobBus interface {
	StopUnitContext(ctx context.Context, name string, mode string, ch chan<- string) (int, error)
	StartUnitContext(ctx context.Context, name string, mode string, ch chan<- string) (int, error)
	MaskUnitFilesContext(ctx context.Context, files []string, runtime bool, force bool) ([]sdbus.MaskUnitFileChange, error)
	UnmaskUnitFilesContext(ctx context.Context, files []string, runtime bool) ([]sdbus.UnmaskUnitFileChange, error)
	ReloadContext(ctx context.Context) error
	GetUnitPropertiesContext(ctx context.Context, unit string) (map[string]any, error)
	GetUnitTypePropertyContext(ctx context.Context, unit string, unitType string, propertyName string) (*sdbus.Property, error)
}

var _ jobBus = (*sdbus.Conn)(nil)

// ErrNoJobs is returned when the connection cannot run jobs (a test double of bus).
var ErrNoJobs = errors.New("systemd connection cannot run jobs")

func (c *Client) jobs() (jobBus, error) {
	if jb, ok := c.bus.(jobBus); ok {
		return jb, nil
	}
	return nil, ErrNoJobs
}

// UnitInfo is what prepare and restore need to know about one unit.
type UnitInfo struct {
	Name          string
	ID            string // the unit's primary name (aliases resolve to it)
	LoadState     string // loaded, not-found, masked, …
	ActiveState   string
	SubState      string
	UnitFileState string // enabled, disabled, static, masked-runtime, …
	CanStop       bool
	CanStart      bool
	// RequiresMountsFor lists paths the unit needs mounted (RequiresMountsFor=).
	RequiresMountsFor []string
	// ControlGroup is the unit's cgroup path relative to the cgroup root ("" when systemd
	// has none for it, e.g. a timer, or an inactive unit whose cgroup is gone).
	ControlGroup string
	// FragmentPath is the unit file systemd loaded ("" for a generated or missing unit).
	FragmentPath string
}

// Unit reads a unit's properties.
func (c *Client) Unit(ctx context.Context, name string) (UnitInfo, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	jb, err := c.jobs()
	if err != nil {
		return UnitInfo{}, err
	}
	props, err := jb.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return UnitInfo{}, fmt.Errorf("systemd properties of %s: %w", name, err)
	}
	u := UnitInfo{
		Name:              name,
		ID:                str(props["Id"]),
		LoadState:         str(props["LoadState"]),
		ActiveState:       str(props["ActiveState"]),
		SubState:          str(props["SubState"]),
		UnitFileState:     str(props["UnitFileState"]),
		CanStop:           boolean(props["CanStop"]),
		CanStart:          boolean(props["CanStart"]),
		RequiresMountsFor: strs(props["RequiresMountsFor"]),
		FragmentPath:      str(props["FragmentPath"]),
	}
	if t := unitType(name); t != "" {
		if p, err := jb.GetUnitTypePropertyContext(ctx, name, t, "ControlGroup"); err == nil && p != nil {
			u.ControlGroup = str(p.Value.Value())
		}
	}
	return u, nil
}

// StopUnit queues a stop job (mode "replace") and waits for its result within ctx. The
// result is one of the Job* constants; an error means no result came (the deadline
// passed, or systemd refused the job: RefuseManualStop, no such unit, …). After a
// deadline the job stays queued in systemd: go-systemd v22.7.0 cannot cancel it.
func (c *Client) StopUnit(ctx context.Context, name string) (string, error) {
	return c.job(ctx, "stop", name)
}

// StartUnit queues a start job (mode "replace") and waits for its result within ctx.
// "done" does not mean active: re-read ActiveState.
func (c *Client) StartUnit(ctx context.Context, name string) (string, error) {
	return c.job(ctx, "start", name)
}

func (c *Client) job(ctx context.Context, verb, name string) (string, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	jb, err := c.jobs()
	if err != nil {
		return "", err
	}
	// Buffered: go-systemd sends the result with a blocking write, and a reader that
	// gave up (deadline) must not wedge the connection's dispatcher.
	ch := make(chan string, 1)
	call := jb.StopUnitContext
	if verb == "start" {
		call = jb.StartUnitContext
	}
	if _, err := call(ctx, name, "replace", ch); err != nil {
		return "", fmt.Errorf("systemd %s %s: %w", verb, name, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return "", fmt.Errorf("systemd %s %s: no job result: %w", verb, name, ctx.Err())
	}
}

// MaskRuntime masks units until the next boot (/run/systemd/system/UNIT → /dev/null)
// and reloads systemd so the loaded units see it. A unit file of the same name in /run
// is never overwritten (force=false).
func (c *Client) MaskRuntime(ctx context.Context, units []string) error {
	return c.unitFiles(ctx, "mask", units)
}

// UnmaskRuntime removes runtime masks (a missing mask is not an error) and reloads.
func (c *Client) UnmaskRuntime(ctx context.Context, units []string) error {
	return c.unitFiles(ctx, "unmask", units)
}

func (c *Client) unitFiles(ctx context.Context, verb string, units []string) error {
	if len(units) == 0 {
		return nil
	}
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	jb, err := c.jobs()
	if err != nil {
		return err
	}
	if verb == "mask" {
		_, err = jb.MaskUnitFilesContext(ctx, units, true, false)
	} else {
		_, err = jb.UnmaskUnitFilesContext(ctx, units, true)
	}
	if err != nil {
		return fmt.Errorf("systemd %s --runtime %s: %w", verb, strings.Join(units, " "), err)
	}
	// systemctl mask reloads too: without it the loaded unit keeps its old load state
	// and a start request still succeeds.
	if err := jb.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemd daemon-reload after %s: %w", verb, err)
	}
	return nil
}

// unitType is the D-Bus interface suffix that carries ControlGroup for a unit.
func unitType(name string) string {
	switch {
	case strings.HasSuffix(name, ".service"):
		return "Service"
	case strings.HasSuffix(name, ".socket"):
		return "Socket"
	case strings.HasSuffix(name, ".mount"):
		return "Mount"
	case strings.HasSuffix(name, ".swap"):
		return "Swap"
	case strings.HasSuffix(name, ".scope"):
		return "Scope"
	case strings.HasSuffix(name, ".slice"):
		return "Slice"
	}
	return ""
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func boolean(v any) bool {
	b, _ := v.(bool)
	return b
}

func strs(v any) []string {
	s, _ := v.([]string)
	return s
}
