// Package config loads adeagent's configuration file, /etc/adeagent/adeagent.yaml.
//
// A missing file means the built-in defaults. Every key is optional; unknown keys, values
// of the wrong type and invalid values are errors that name FILE:LINE and the key, e.g.
//
//	/etc/adeagent/adeagent.yaml:7: probes.memroy: unknown probe "memroy" (did you mean "memory"?)
//
// The keys, with their defaults (docs/config.md has the same as a reference for the README):
//
//	log_level: info                      # debug | info | warn | error
//	socket: /run/adeagent/adeagent.sock  # the API socket
//	state_dir: /var/lib/adeagent         # the journal and the last report
//	operator_group: ""                   # group allowed to prepare/restore besides root
//	probes:                              # every probe is enabled unless switched off here
//	  <probe name>: {enabled: true}
//	network:
//	  connect_timeout: 2s                # per TCP dial of network.endpoint
//	  endpoints:                         # replaces the defaults when given
//	    - {name: imds, addr: "169.254.169.254:80"}
//	    - {name: wireserver, addr: "168.63.129.16:80"}
//	  key_vault: ""                      # optional Key Vault host, dialled on port 443
//	ade:
//	  auto_prepare: true                 # prepare when ADE's request marker appears
//	  path: auto                         # auto | unmount | online
//	quiesce:
//	  allow: []                          # unit globs prepare may stop beyond the catalog
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultPath is where adeagent looks for its configuration.
const DefaultPath = "/etc/adeagent/adeagent.yaml"

// Config is adeagent's effective configuration.
// groupName is what shadow-utils accepts as a group name.
var groupName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*\$?$`)

type Config struct {
	// LogLevel is the log level: debug, info, warn or error. Default "info".
	LogLevel string `yaml:"log_level"`
	// Socket is the API socket path. Default "/run/adeagent/adeagent.sock".
	Socket string `yaml:"socket"`
	// StateDir holds the journal and the last report. Default "/var/lib/adeagent".
	StateDir string `yaml:"state_dir"`
	// OperatorGroup names a group whose members may use the API's write routes (prepare,
	// restore) besides root. Default "": root only. Read at daemon start.
	OperatorGroup string `yaml:"operator_group"`
	// Probes switches probes on and off by name. Every probe not listed is enabled.
	Probes map[string]Probe `yaml:"probes"`
	// Network configures network.endpoint.
	Network Network `yaml:"network"`
	// ADE configures how adeagent follows Azure Disk Encryption.
	ADE ADE `yaml:"ade"`
	// Quiesce configures what prepare may stop.
	Quiesce Quiesce `yaml:"quiesce"`
	// HolderScan configures the OS drive's holder scan.
	HolderScan HolderScan `yaml:"holder_scan"`

	source     string   // the file the values came from; "" for built-in defaults
	probeNames []string // the probe names known at load time
}

// Probe is one probe's settings.
type Probe struct {
	// Enabled runs the probe. Default true.
	Enabled bool `yaml:"enabled"`
}

// Network is the network.endpoint probe's settings.
type Network struct {
	// ConnectTimeout bounds each TCP dial. Default 2s; at most 1m.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// Endpoints are dialled by network.endpoint. Default: IMDS 169.254.169.254:80 and the
	// wireserver 168.63.129.16:80. A list given here replaces the defaults.
	Endpoints []Endpoint `yaml:"endpoints"`
	// KeyVault is the Key Vault host ADE uses ("myvault.vault.azure.net"), dialled on port
	// 443 unless a port is given. Default none.
	KeyVault string `yaml:"key_vault,omitempty"`
}

// Endpoint is a TCP endpoint: a name for reports and host:port.
type Endpoint struct {
	Name string `yaml:"name"`
	Addr string `yaml:"addr"`
}

// ADE is how adeagent follows Azure Disk Encryption.
type ADE struct {
	// AutoPrepare makes the daemon prepare the VM when ADE's request marker appears
	// (ADE kills whatever holds the old root about 60 s later). Default true.
	AutoPrepare bool `yaml:"auto_prepare"`
	// Path overrides the ADE path of this distribution: auto (from ADE's support table),
	// unmount or online. Default "auto".
	Path string `yaml:"path"`
}

// Quiesce configures prepare.
type Quiesce struct {
	// Allow lists extra unit globs (systemctl pattern syntax, e.g. "myapp-*.service") that
	// prepare may stop besides the built-in catalog. Default empty.
	Allow []string `yaml:"allow"`
}

// HolderScan configures the OS drive's holder scan.
type HolderScan struct {
	// FDSource is where the scan reads every process's open files from: "auto" (the
	// kernel's BPF task_file iterator on hosts with 1000 processes or more, where it pays
	// for its load time, when the kernel has it; /proc otherwise), "bpf" (always; a scan
	// fails where it cannot load) or "proc" (never load a BPF program). Default "auto".
	FDSource string `yaml:"fd_source"`
}

// Duration is a time.Duration written as "2s" in YAML.
type Duration time.Duration

// MarshalYAML writes the duration as Go duration text.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default endpoints of network.endpoint.
var defaultEndpoints = []Endpoint{
	{Name: "imds", Addr: "169.254.169.254:80"},
	{Name: "wireserver", Addr: "168.63.129.16:80"},
}

// Default returns the built-in configuration. probeNames are the probes that exist.
func Default(probeNames []string) *Config {
	return &Config{
		LogLevel: "info",
		Socket:   "/run/adeagent/adeagent.sock",
		StateDir: "/var/lib/adeagent",
		Probes:   map[string]Probe{},
		Network: Network{
			ConnectTimeout: Duration(2 * time.Second),
			Endpoints:      append([]Endpoint(nil), defaultEndpoints...),
		},
		ADE:        ADE{AutoPrepare: true, Path: "auto"},
		Quiesce:    Quiesce{Allow: []string{}},
		HolderScan: HolderScan{FDSource: "auto"},
		probeNames: append([]string(nil), probeNames...),
	}
}

// Load reads the configuration at path over the defaults. A missing file gives the
// defaults. probeNames are the probes that exist (the registry's names, passed in so this
// package does not depend on probes); keys under probes: must be among them. A nil
// probeNames skips that check.
func Load(path string, probeNames []string) (*Config, error) {
	c := Default(probeNames)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	c.source = path
	if err := c.parse(path, data); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse reads configuration text (file names it in errors) over the defaults.
func Parse(file string, data []byte, probeNames []string) (*Config, error) {
	c := Default(probeNames)
	c.source = file
	if err := c.parse(file, data); err != nil {
		return nil, err
	}
	return c, nil
}

// Source is the file the configuration came from, or "" for the built-in defaults.
func (c *Config) Source() string { return c.source }

// ProbeEnabled reports whether the probe called name runs.
func (c *Config) ProbeEnabled(name string) bool {
	p, ok := c.Probes[name]
	return !ok || p.Enabled
}

// AllEndpoints is Network.Endpoints plus the Key Vault endpoint, if configured.
func (c *Config) AllEndpoints() []Endpoint {
	eps := append([]Endpoint(nil), c.Network.Endpoints...)
	if c.Network.KeyVault != "" {
		eps = append(eps, Endpoint{Name: "key-vault", Addr: withPort(c.Network.KeyVault, "443")})
	}
	return eps
}

// YAML renders the effective configuration, every probe listed with its state.
func (c *Config) YAML() ([]byte, error) {
	out := *c
	out.Probes = map[string]Probe{}
	for _, n := range c.probeNames {
		out.Probes[n] = Probe{Enabled: true}
	}
	for n, p := range c.Probes {
		out.Probes[n] = p
	}
	if out.Quiesce.Allow == nil {
		out.Quiesce.Allow = []string{}
	}
	var b bytes.Buffer
	src := "built-in defaults"
	if c.source != "" {
		src = c.source
	}
	fmt.Fprintf(&b, "# adeagent effective configuration (from %s)\n", src)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&out); err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	return b.Bytes(), nil
}

// Error is a configuration mistake at FILE:LINE under a key.
type Error struct {
	File string
	Line int
	Key  string // dotted path, e.g. "network.endpoints[1].addr"; "" for the document
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return loc + ": " + e.Msg
	}
	return loc + ": " + e.Key + ": " + e.Msg
}

// parser walks the YAML node tree of one file.
type parser struct {
	file string
}

func (p *parser) errf(n *yaml.Node, key, format string, a ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, a...)}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (c *Config) parse(file string, data []byte) error {
	p := &parser{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: defaults
		}
		return p.syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return p.errf(&extra, "", "more than one YAML document; keep one")
	} else if !errors.Is(err, io.EOF) {
		return p.syntaxError(err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return nil
	}
	return p.mapping(root, "", map[string]func(k, v *yaml.Node, key string) error{
		"log_level": func(_, v *yaml.Node, key string) error {
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			switch s {
			case "debug", "info", "warn", "error":
				c.LogLevel = s
				return nil
			}
			return p.errf(v, key, "unknown level %q (want debug, info, warn or error)", s)
		},
		"socket": func(_, v *yaml.Node, key string) error {
			s, err := p.absPath(v, key)
			c.Socket = s
			return err
		},
		"state_dir": func(_, v *yaml.Node, key string) error {
			s, err := p.absPath(v, key)
			c.StateDir = s
			return err
		},
		"operator_group": func(_, v *yaml.Node, key string) error {
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if s != "" && !groupName.MatchString(s) {
				return p.errf(v, key, "invalid group name %q", s)
			}
			c.OperatorGroup = s
			return nil
		},
		"probes":  func(_, v *yaml.Node, key string) error { return p.probes(c, v, key) },
		"network": func(_, v *yaml.Node, key string) error { return p.network(c, v, key) },
		"ade": func(_, v *yaml.Node, key string) error {
			return p.mapping(v, key, map[string]func(k, v *yaml.Node, key string) error{
				"auto_prepare": func(_, v *yaml.Node, key string) error {
					b, err := p.boolean(v, key)
					c.ADE.AutoPrepare = b
					return err
				},
				"path": func(_, v *yaml.Node, key string) error {
					s, err := p.str(v, key)
					if err != nil {
						return err
					}
					switch s {
					case "auto", "unmount", "online":
						c.ADE.Path = s
						return nil
					}
					return p.errf(v, key, "unknown path %q (want auto, unmount or online)", s)
				},
			})
		},
		"holder_scan": func(_, v *yaml.Node, key string) error {
			return p.mapping(v, key, map[string]func(k, v *yaml.Node, key string) error{
				"fd_source": func(_, v *yaml.Node, key string) error {
					s, err := p.str(v, key)
					if err != nil {
						return err
					}
					switch s {
					case "auto", "bpf", "proc":
						c.HolderScan.FDSource = s
						return nil
					}
					return p.errf(v, key, "unknown fd source %q (want auto, bpf or proc)", s)
				},
			})
		},
		"quiesce": func(_, v *yaml.Node, key string) error {
			return p.mapping(v, key, map[string]func(k, v *yaml.Node, key string) error{
				"allow": func(_, v *yaml.Node, key string) error {
					globs, err := p.strings(v, key)
					if err != nil {
						return err
					}
					for i, g := range globs {
						if _, err := path.Match(g, ""); err != nil || g == "" {
							return p.errf(v.Content[i], fmt.Sprintf("%s[%d]", key, i), "invalid unit glob %q", g)
						}
					}
					c.Quiesce.Allow = globs
					return nil
				},
			})
		},
	})
}

func (p *parser) syntaxError(err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: p.file, Line: line, Msg: "YAML syntax: " + m[2]}
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return &Error{File: p.file, Msg: strings.Join(te.Errors, "; ")}
	}
	return &Error{File: p.file, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

func (p *parser) probes(c *Config, v *yaml.Node, key string) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return p.errf(v, key, "want a mapping of probe names, got %s", kindName(v))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		name := k.Value
		pkey := key + "." + name
		if seen[name] {
			return p.errf(k, pkey, "duplicate key")
		}
		seen[name] = true
		if c.probeNames != nil && !containsStr(c.probeNames, name) {
			return p.errf(k, pkey, "unknown probe %q%s", name, suggest(name, c.probeNames))
		}
		pc := Probe{Enabled: true}
		err := p.mapping(val, pkey, map[string]func(k, v *yaml.Node, key string) error{
			"enabled": func(_, v *yaml.Node, key string) error {
				b, err := p.boolean(v, key)
				pc.Enabled = b
				return err
			},
		})
		if err != nil {
			return err
		}
		c.Probes[name] = pc
	}
	return nil
}

func (p *parser) network(c *Config, v *yaml.Node, key string) error {
	return p.mapping(v, key, map[string]func(k, v *yaml.Node, key string) error{
		"connect_timeout": func(_, v *yaml.Node, key string) error {
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 || d > time.Minute {
				return p.errf(v, key, "want a duration between 1ms and 1m such as 2s, got %q", s)
			}
			c.Network.ConnectTimeout = Duration(d)
			return nil
		},
		"endpoints": func(_, v *yaml.Node, key string) error {
			if isNull(v) {
				c.Network.Endpoints = nil
				return nil
			}
			if v.Kind != yaml.SequenceNode {
				return p.errf(v, key, "want a list of {name, addr}, got %s", kindName(v))
			}
			var eps []Endpoint
			names := map[string]bool{}
			for i, item := range v.Content {
				ikey := fmt.Sprintf("%s[%d]", key, i)
				var ep Endpoint
				var nameNode, addrNode *yaml.Node
				err := p.mapping(item, ikey, map[string]func(k, v *yaml.Node, key string) error{
					"name": func(_, v *yaml.Node, key string) error {
						s, err := p.str(v, key)
						ep.Name, nameNode = s, v
						return err
					},
					"addr": func(_, v *yaml.Node, key string) error {
						s, err := p.str(v, key)
						ep.Addr, addrNode = s, v
						return err
					},
				})
				if err != nil {
					return err
				}
				if item.Kind != yaml.MappingNode {
					return p.errf(item, ikey, "want {name, addr}, got %s", kindName(item))
				}
				if ep.Name == "" {
					return p.errf(item, ikey+".name", "missing (every endpoint needs a name)")
				}
				if names[ep.Name] {
					return p.errf(nameNode, ikey+".name", "duplicate endpoint name %q", ep.Name)
				}
				names[ep.Name] = true
				if ep.Addr == "" {
					return p.errf(item, ikey+".addr", "missing (want host:port)")
				}
				if err := checkHostPort(ep.Addr); err != nil {
					return p.errf(addrNode, ikey+".addr", "%v", err)
				}
				eps = append(eps, ep)
			}
			c.Network.Endpoints = eps
			return nil
		},
		"key_vault": func(_, v *yaml.Node, key string) error {
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if strings.Contains(s, "/") {
				return p.errf(v, key, "want a host name such as myvault.vault.azure.net, not a URL: %q", s)
			}
			if err := checkHostPort(withPort(s, "443")); err != nil {
				return p.errf(v, key, "%v", err)
			}
			c.Network.KeyVault = s
			return nil
		},
	})
}

// mapping walks a mapping node, calling the handler of each key; unknown and duplicate
// keys are errors. A null node (key present without a value) is an empty mapping.
func (p *parser) mapping(n *yaml.Node, prefix string, handlers map[string]func(k, v *yaml.Node, key string) error) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, prefix, "want a mapping, got %s", kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if prefix != "" {
			key = prefix + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			return p.errf(k, prefix, "keys must be plain names")
		}
		if seen[k.Value] {
			return p.errf(k, key, "duplicate key")
		}
		seen[k.Value] = true
		h, ok := handlers[k.Value]
		if !ok {
			known := make([]string, 0, len(handlers))
			for name := range handlers {
				known = append(known, name)
			}
			sort.Strings(known)
			hint := suggest(k.Value, known)
			if hint == "" {
				hint = " (known: " + strings.Join(known, ", ") + ")"
			}
			return p.errf(k, key, "unknown key%s", hint)
		}
		if err := h(k, v, key); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) str(n *yaml.Node, key string) (string, error) {
	if isNull(n) {
		return "", p.errf(n, key, "missing value (remove the key for the default)")
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", p.errf(n, key, "want a string, got %s", kindName(n))
	}
	return n.Value, nil
}

func (p *parser) boolean(n *yaml.Node, key string) (bool, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, nil
		}
	}
	if n.Kind == yaml.ScalarNode {
		return false, p.errf(n, key, "want true or false, got %q", n.Value)
	}
	return false, p.errf(n, key, "want true or false, got %s", kindName(n))
}

func (p *parser) strings(n *yaml.Node, key string) ([]string, error) {
	if isNull(n) {
		return []string{}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, key, "want a list of strings, got %s", kindName(n))
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		s, err := p.str(item, fmt.Sprintf("%s[%d]", key, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) absPath(n *yaml.Node, key string) (string, error) {
	s, err := p.str(n, key)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(s) {
		return "", p.errf(n, key, "want an absolute path, got %q", s)
	}
	return filepath.Clean(s), nil
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!null":
			return "nothing"
		}
		return fmt.Sprintf("%s %s", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	}
	return "nothing"
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if host == "" {
		return fmt.Errorf("missing host in %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q in %q: want 1-65535", port, addr)
	}
	return nil
}

// withPort adds port to host when it has none.
func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(host, port)
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns ` (did you mean "x"?)` for the closest of known within edit distance 2.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Damerau–Levenshtein distance (optimal string alignment) of a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
