// Package proto is the wire format between the VM test bed (e2e/vm, host side) and its
// guest agent (e2e/vm/guestagent): newline-delimited JSON over a virtio-serial port, one
// Request per line to the guest, one Response per line back, matched by ID.
//
// Lines rather than length prefixes because the channel outlives guest reboots: whatever
// a dead guest left half-read in the pipe ends at the next newline, so the new agent
// drops one unparsable line and is in step again; the host drops answers whose ID it no
// longer waits for. []byte fields travel as base64 (encoding/json's default).
package proto

// PortName is the virtio-serial port name (qemu virtserialport name=, the guest's
// /sys/class/virtio-ports/*/name).
const PortName = "org.adeagent.e2e.0"

// Operations.
const (
	// OpPing answers with the boot id; the host uses it to see the agent is up and
	// whether the guest rebooted.
	OpPing = "ping"
	// OpRun writes Files, then runs Argv (if any) and returns its output and exit code.
	OpRun = "run"
	// OpRead returns the contents of Path.
	OpRead = "read"
)

// File is a file the agent writes before running a command (parents are created).
type File struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	Data []byte `json:"data"`
}

// Request is one command to the guest agent.
type Request struct {
	ID uint64 `json:"id"`
	Op string `json:"op"`
	// Argv is the command (argv[0] looked up in PATH); empty runs nothing.
	Argv []string `json:"argv,omitempty"`
	// Env is added to the agent's environment (KEY=VALUE).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; default "/".
	Dir   string `json:"dir,omitempty"`
	Stdin []byte `json:"stdin,omitempty"`
	// TimeoutMS bounds the command; the agent kills its process group then. 0: 10 min.
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	Files     []File `json:"files,omitempty"`
	// Path is the file OpRead returns.
	Path string `json:"path,omitempty"`
}

// Response answers the Request with the same ID.
type Response struct {
	ID       uint64 `json:"id"`
	Stdout   []byte `json:"stdout,omitempty"`
	Stderr   []byte `json:"stderr,omitempty"`
	ExitCode int    `json:"exit_code"`
	// DurationMS is how long the command ran.
	DurationMS int64 `json:"duration_ms"`
	// TimedOut: the command was killed at its timeout (ExitCode is then -1).
	TimedOut bool `json:"timed_out,omitempty"`
	// Error is why the request could not be carried out (bad file, command not found …);
	// a command that ran and failed has an ExitCode instead.
	Error string `json:"error,omitempty"`
	// BootID is the guest's /proc/sys/kernel/random/boot_id (every response).
	BootID string `json:"boot_id"`
	// Data is OpRead's file contents.
	Data []byte `json:"data,omitempty"`
}
