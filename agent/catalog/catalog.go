// Package catalog is the data adeagent knows about heavy services: families with their
// unit names per distro, reactivators, process names, data paths and pre-stop steps, and
// the list of units adeagent never stops (DESIGN.md §5, research/services_selinux.md §2).
//
// The catalog is data. The default is catalog.yaml embedded in the binary; the config can
// add families or replace one by name (Merge). Nothing outside this package branches on a
// family name.
package catalog

import (
	_ "embed"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed catalog.yaml
var defaultYAML []byte

// Distro families for DistroUnits.
const (
	Debian  = "debian"
	RHEL    = "rhel"
	SUSE    = "suse"
	Mariner = "mariner"
)

// Catalog is the set of known service families and the never-stop list.
type Catalog struct {
	Families  []Family `yaml:"families"`
	NeverStop []string `yaml:"never_stop"`
}

// Family is one kind of heavy service (Docker, MongoDB, …).
type Family struct {
	Name         string              `yaml:"name"`
	Title        string              `yaml:"title"`
	Heavy        bool                `yaml:"heavy"`
	Order        int                 `yaml:"order"`
	Units        []string            `yaml:"units"`
	DistroUnits  map[string][]string `yaml:"distro_units"`
	Umbrella     []string            `yaml:"umbrella"`
	Reactivators []string            `yaml:"reactivators"`
	Processes    Processes           `yaml:"processes"`
	Data         []string            `yaml:"data"`
	PreStop      []Step              `yaml:"prestop"`
	Notes        string              `yaml:"notes"`
	// StopTimeout bounds each stop job of the family's units and reactivators during
	// prepare (Go duration text, e.g. "5m"). Empty: DefaultStopTimeout.
	StopTimeout string `yaml:"stop_timeout"`
}

// DefaultStopTimeout bounds a stop job of a family without stop_timeout.
const DefaultStopTimeout = 2 * time.Minute

// StopDeadline is the family's stop_timeout, or DefaultStopTimeout.
func (f Family) StopDeadline() time.Duration {
	if d, err := time.ParseDuration(f.StopTimeout); err == nil && d > 0 {
		return d
	}
	return DefaultStopTimeout
}

// Processes says how to recognise a family's processes without systemd.
type Processes struct {
	// Comm are globs over /proc/PID/comm (at most 15 characters, as the kernel keeps it).
	Comm []string `yaml:"comm"`
	// Exe are globs over the base name of /proc/PID/exe.
	Exe []string `yaml:"exe"`
	// Cmdline are substrings of the command line, arguments joined by single spaces and
	// framed by one space on each side (" kafka.Kafka " matches a whole argument).
	Cmdline []string `yaml:"cmdline"`
}

// Step is one pre-stop step: a hint for people and, when it needs no parameters, an argv
// (run by prepare without a shell) or a built-in action.
type Step struct {
	Hint string   `yaml:"hint"`
	Argv []string `yaml:"argv"`
	// Action is a built-in step of prepare instead of an argv: ActionDockerContainers.
	Action string `yaml:"action"`
	// Timeout bounds the step (Go duration text). Empty: DefaultStepTimeout.
	Timeout string `yaml:"timeout"`
}

// Built-in pre-stop actions.
const (
	// ActionDockerContainers records the running containers and their restart policies
	// through the Docker Engine API (restore starts them again), and stops them first when
	// dockerd runs with live-restore (they would outlive docker.service otherwise).
	ActionDockerContainers = "docker-containers"
)

// DefaultStepTimeout bounds a pre-stop step without timeout.
const DefaultStepTimeout = 5 * time.Minute

// Deadline is the step's timeout, or DefaultStepTimeout.
func (s Step) Deadline() time.Duration {
	if d, err := time.ParseDuration(s.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultStepTimeout
}

var (
	defaultOnce sync.Once
	defaultCat  *Catalog
	defaultErr  error
)

// Default returns the embedded catalog. Callers must not modify it.
func Default() (*Catalog, error) {
	defaultOnce.Do(func() {
		defaultCat, defaultErr = Parse(defaultYAML)
		if defaultErr != nil {
			defaultErr = fmt.Errorf("embedded catalog: %w", defaultErr)
		}
	})
	return defaultCat, defaultErr
}

// Parse reads and validates a catalog document.
func Parse(data []byte) (*Catalog, error) {
	var c Catalog
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("parse catalog: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks names are unique and every glob parses.
func (c *Catalog) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, f := range c.Families {
		if f.Name == "" {
			errs = append(errs, fmt.Errorf("family #%d: no name", i+1))
			continue
		}
		if seen[f.Name] {
			errs = append(errs, fmt.Errorf("family %q: listed twice", f.Name))
		}
		seen[f.Name] = true
		globs := slices.Concat(f.Units, f.Umbrella, f.Reactivators, f.Processes.Comm, f.Processes.Exe)
		for _, units := range f.DistroUnits {
			globs = append(globs, units...)
		}
		for _, g := range globs {
			if _, err := filepath.Match(g, ""); err != nil || g == "" {
				errs = append(errs, fmt.Errorf("family %q: bad pattern %q", f.Name, g))
			}
		}
		if f.StopTimeout != "" {
			if d, err := time.ParseDuration(f.StopTimeout); err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("family %q: bad stop_timeout %q (want a Go duration like 5m)", f.Name, f.StopTimeout))
			}
		}
		for _, st := range f.PreStop {
			if st.Timeout != "" {
				if d, err := time.ParseDuration(st.Timeout); err != nil || d <= 0 {
					errs = append(errs, fmt.Errorf("family %q: prestop: bad timeout %q", f.Name, st.Timeout))
				}
			}
			switch st.Action {
			case "", ActionDockerContainers:
			default:
				errs = append(errs, fmt.Errorf("family %q: prestop: unknown action %q (want %s)", f.Name, st.Action, ActionDockerContainers))
			}
			if st.Action != "" && len(st.Argv) > 0 {
				errs = append(errs, fmt.Errorf("family %q: prestop: a step has either argv or action, not both", f.Name))
			}
		}
		for d := range f.DistroUnits {
			switch d {
			case Debian, RHEL, SUSE, Mariner:
			default:
				errs = append(errs, fmt.Errorf("family %q: unknown distro family %q (want debian, rhel, suse or mariner)", f.Name, d))
			}
		}
	}
	for _, g := range c.NeverStop {
		if _, err := filepath.Match(g, ""); err != nil || g == "" {
			errs = append(errs, fmt.Errorf("never_stop: bad pattern %q", g))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	return nil
}

// Merge returns a new catalog: c's families with those of o added, a family of o replacing
// the one of c with the same name; the never-stop lists are joined (never shortened).
func (c *Catalog) Merge(o *Catalog) *Catalog {
	out := &Catalog{NeverStop: slices.Clone(c.NeverStop)}
	byName := map[string]int{}
	for _, f := range c.Families {
		byName[f.Name] = len(out.Families)
		out.Families = append(out.Families, f)
	}
	if o == nil {
		return out
	}
	for _, f := range o.Families {
		if i, ok := byName[f.Name]; ok {
			out.Families[i] = f
			continue
		}
		byName[f.Name] = len(out.Families)
		out.Families = append(out.Families, f)
	}
	for _, g := range o.NeverStop {
		if !slices.Contains(out.NeverStop, g) {
			out.NeverStop = append(out.NeverStop, g)
		}
	}
	return out
}

// Heavy returns the heavy families in stop order (then by name).
func (c *Catalog) Heavy() []Family {
	var out []Family
	for _, f := range c.Families {
		if f.Heavy {
			out = append(out, f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Order != out[j].Order {
			return out[i].Order < out[j].Order
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Family returns the family called name.
func (c *Catalog) Family(name string) (Family, bool) {
	for _, f := range c.Families {
		if f.Name == name {
			return f, true
		}
	}
	return Family{}, false
}

// IsNeverStop reports whether unit is on the never-stop list.
func (c *Catalog) IsNeverStop(unit string) bool {
	return matchAny(c.NeverStop, unit)
}

// UnitPatterns returns the unit globs of the family for a distro family ("" or an unknown
// one: every distro's globs, since a name that does not exist matches nothing).
func (f Family) UnitPatterns(distroFamily string) []string {
	out := slices.Clone(f.Units)
	if units, ok := f.DistroUnits[distroFamily]; ok {
		return append(out, units...)
	}
	if distroFamily == "" || !isKnownDistro(distroFamily) {
		keys := make([]string, 0, len(f.DistroUnits))
		for k := range f.DistroUnits {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, f.DistroUnits[k]...)
		}
	}
	return out
}

func isKnownDistro(d string) bool {
	switch d {
	case Debian, RHEL, SUSE, Mariner:
		return true
	}
	return false
}

// MatchUnit reports whether unit is one of the family's units on this distro family.
func (f Family) MatchUnit(distroFamily, unit string) bool {
	return matchAny(f.UnitPatterns(distroFamily), unit)
}

// MatchReactivator reports whether unit is one of the family's reactivators.
func (f Family) MatchReactivator(unit string) bool {
	return matchAny(f.Reactivators, unit)
}

// IsUmbrella reports whether unit is a oneshot wrapper whose "active (exited)" state says
// nothing about running processes.
func (f Family) IsUmbrella(unit string) bool {
	return matchAny(f.Umbrella, unit)
}

// MatchProcess reports whether a process belongs to the family. comm is /proc/PID/comm,
// exe the base name of /proc/PID/exe ("" if unknown), argv the command line.
func (f Family) MatchProcess(comm, exe string, argv []string) bool {
	if comm != "" && matchAny(f.Processes.Comm, comm) {
		return true
	}
	if exe != "" && matchAny(f.Processes.Exe, exe) {
		return true
	}
	if len(f.Processes.Cmdline) > 0 && len(argv) > 0 {
		line := " " + strings.Join(argv, " ") + " "
		for _, s := range f.Processes.Cmdline {
			if s != "" && strings.Contains(line, s) {
				return true
			}
		}
	}
	return false
}

// HasProcessMatchers reports whether MatchProcess can ever be true.
func (f Family) HasProcessMatchers() bool {
	return len(f.Processes.Comm)+len(f.Processes.Exe)+len(f.Processes.Cmdline) > 0
}

// DistroFamily maps os-release ID and ID_LIKE to a distro family of this catalog, or "".
func DistroFamily(id string, idLike []string) string {
	for _, v := range append([]string{id}, idLike...) {
		switch strings.ToLower(v) {
		case "debian", "ubuntu":
			return Debian
		case "rhel", "centos", "fedora", "ol", "almalinux", "rocky", "redhat":
			return RHEL
		case "suse", "sles", "sled", "opensuse", "opensuse-leap":
			return SUSE
		case "mariner", "azurelinux":
			return Mariner
		}
	}
	return ""
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}
