// Package sysd answers questions about systemd units over D-Bus (github.com/coreos/go-systemd/v22).
//
// It implements probes.Units. Every call is bounded by a deadline: the caller's, or
// DefaultTimeout when the caller's context has none. The connection never reconnects
// (go-systemd does not, research/services_selinux.md §3 pitfall 1); after a failure the
// caller falls back to what /proc shows, and a long-lived user should make a new Client.
package sysd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// bus is the part of *sdbus.Conn this package uses (a seam for tests).
type bus interface {
	ListUnitsByPatternsContext(ctx context.Context, states []string, patterns []string) ([]sdbus.UnitStatus, error)
	ListUnitsContext(ctx context.Context) ([]sdbus.UnitStatus, error)
	GetUnitTypePropertyContext(ctx context.Context, unit string, unitType string, propertyName string) (*sdbus.Property, error)
	Close()
}

// dial opens the connection. life is the connection's lifetime: godbus closes the
// connection when it is done, so it must not be a short deadline context.
var dial = func(life context.Context) (bus, error) {
	// System bus first; as root, systemd's private socket when dbus is down.
	c, err := sdbus.NewWithContext(life)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Client is a connection to systemd. It is safe for concurrent use.
type Client struct {
	bus  bus
	stop context.CancelFunc
	once sync.Once
	// noPatterns is set once systemd said it has no ListUnitsByPatterns (systemd < 230,
	// e.g. 219 on RHEL/CentOS 7); from then on ListUnits lists everything and filters.
	noPatterns atomic.Bool
}

var _ probes.Units = (*Client)(nil)

// New connects to systemd within ctx's deadline (DefaultTimeout if it has none).
func New(ctx context.Context) (*Client, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	life, stop := context.WithCancel(context.Background())
	type result struct {
		b   bus
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := dial(life)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			stop()
			return nil, fmt.Errorf("connect to systemd: %w", r.err)
		}
		return &Client{bus: r.b, stop: stop}, nil
	case <-ctx.Done():
		// Cancelling life closes a half-made connection, which unblocks the dialer.
		stop()
		go func() {
			if r := <-ch; r.b != nil {
				r.b.Close()
			}
		}()
		return nil, fmt.Errorf("connect to systemd: %w", ctx.Err())
	}
}

// Available reports whether systemd can be asked about root: root is the running host and
// systemd is PID 1 (sd_booted(3): /run/systemd/system exists).
func Available(root hostroot.Root) bool {
	if !root.IsHost() {
		return false
	}
	fi, err := os.Stat(root.Path("/run/systemd/system"))
	return err == nil && fi.IsDir()
}

// ForRoot returns a connected Client when Available(root), else nil. A failure to connect
// is not fatal: it also returns nil, and callers fall back to /proc.
func ForRoot(ctx context.Context, root hostroot.Root) *Client {
	if !Available(root) {
		return nil
	}
	c, err := New(ctx)
	if err != nil {
		return nil
	}
	return c
}

// Close closes the connection. It may be called more than once, and on a nil Client.
func (c *Client) Close() {
	if c == nil {
		return
	}
	c.once.Do(func() {
		c.bus.Close()
		c.stop()
	})
}

// ListUnits returns the loaded units whose names match any of patterns (all loaded units
// when patterns is empty), sorted by name, with MainPID filled in for running services.
func (c *Client) ListUnits(ctx context.Context, patterns []string) ([]probes.UnitState, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	var (
		units []sdbus.UnitStatus
		err   error
	)
	if !c.noPatterns.Load() {
		units, err = c.bus.ListUnitsByPatternsContext(ctx, []string{}, nonNil(patterns))
		if isUnknownMethod(err) {
			c.noPatterns.Store(true)
		} else if err != nil {
			return nil, fmt.Errorf("systemd ListUnitsByPatterns: %w", err)
		}
	}
	if c.noPatterns.Load() {
		all, err := c.bus.ListUnitsContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("systemd ListUnits: %w", err)
		}
		units = filterByPatterns(all, patterns)
	}
	out := convert(units)
	for i := range out {
		if ctx.Err() != nil {
			break // out of time: the rest keep MainPID 0
		}
		if !strings.HasSuffix(out[i].Name, ".service") || !isRunning(out[i].ActiveState) {
			continue
		}
		p, err := c.bus.GetUnitTypePropertyContext(ctx, out[i].Name, "Service", "MainPID")
		if err != nil || p == nil {
			continue // best effort: a unit that vanished meanwhile has no MainPID
		}
		if pid, ok := p.Value.Value().(uint32); ok {
			out[i].MainPID = int(pid)
		}
	}
	return out, nil
}

// isUnknownMethod reports whether err is D-Bus's "no such method" (old systemd).
func isUnknownMethod(err error) bool {
	if err == nil {
		return false
	}
	var e godbus.Error
	if errors.As(err, &e) {
		return e.Name == "org.freedesktop.DBus.Error.UnknownMethod"
	}
	var pe *godbus.Error
	if errors.As(err, &pe) && pe != nil {
		return pe.Name == "org.freedesktop.DBus.Error.UnknownMethod"
	}
	return false
}

// filterByPatterns keeps units whose name matches a glob, the way systemd's
// ListUnitsByPatterns does (fnmatch without flags; filepath.Match is the same for unit
// names, which never hold '/'). No patterns keeps everything.
func filterByPatterns(units []sdbus.UnitStatus, patterns []string) []sdbus.UnitStatus {
	if len(patterns) == 0 {
		return units
	}
	var out []sdbus.UnitStatus
	for _, u := range units {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, u.Name); ok {
				out = append(out, u)
				break
			}
		}
	}
	return out
}

// convert turns systemd's answer into probes.UnitState, one entry per name, sorted.
func convert(units []sdbus.UnitStatus) []probes.UnitState {
	seen := map[string]bool{}
	out := make([]probes.UnitState, 0, len(units))
	for _, u := range units {
		if u.Name == "" || seen[u.Name] {
			continue
		}
		seen[u.Name] = true
		out = append(out, probes.UnitState{Name: u.Name, ActiveState: u.ActiveState, SubState: u.SubState})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func isRunning(activeState string) bool {
	switch activeState {
	case "active", "activating", "deactivating", "reloading", "refreshing":
		return true
	}
	return false
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
