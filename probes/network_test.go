package probes

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// loopbackPorts returns the address of a live listener and of a closed port, both on
// 127.0.0.1. Tests never dial anything else.
func loopbackPorts(t *testing.T) (open, closed string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed = gone.Addr().String()
	gone.Close()
	return ln.Addr().String(), closed
}

func TestNetworkProbe(t *testing.T) {
	open, closed := loopbackPorts(t)
	tests := []struct {
		name      string
		endpoints []Endpoint
		timeout   time.Duration
		want      []wantFinding
	}{
		{"none configured", nil, 0, nil},
		{"reachable", []Endpoint{{Name: "local", Addr: open}}, 0, nil},
		{"closed port", []Endpoint{{Name: "local", Addr: open}, {Name: "keyvault", Addr: closed}}, time.Second, []wantFinding{{
			key: "network.endpoint", blocker: true, severity: api.SeverityHigh, title: "keyvault (" + closed + ") is unreachable",
			summary: []string{"connection was refused"}, hint: []string{"Allow outbound TCP to " + closed},
		}}},
		{"invalid address", []Endpoint{{Name: "broken", Addr: "no-port-here"}}, 0, []wantFinding{{
			key: "network.endpoint", blocker: true, title: "broken has an invalid address", hint: []string{"host:port"},
		}}},
		// A 1 ns connect timeout expires before the dial: the timeout path, on loopback.
		{"timeout", []Endpoint{{Name: "slow", Addr: open}}, time.Nanosecond, []wantFinding{{
			key: "network.endpoint", blocker: true, summary: []string{"no answer within 1ns"},
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := &Env{Endpoints: tc.endpoints, ConnectTimeout: tc.timeout}
			got, err := networkProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "network", got, tc.want)
		})
	}
}

func TestNetworkProbeConcurrentAndBounded(t *testing.T) {
	open, closed := loopbackPorts(t)
	var eps []Endpoint
	for range 20 {
		eps = append(eps, Endpoint{Name: "up", Addr: open}, Endpoint{Name: "down", Addr: closed})
	}
	start := time.Now()
	got, err := networkProbe{}.Run(context.Background(), &Env{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Errorf("got %d findings, want 20", len(got))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	if p := (networkProbe{}); p.Timeout() >= DefaultProbeTimeout || p.Timeout() < netDefaultConnectTimeout {
		t.Errorf("Timeout() = %s, want between the connect timeout and the runner's default", p.Timeout())
	}
}

func TestNetReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.DNSError{Err: "no such host", Name: "x.vault.azure.net", IsNotFound: true}, "does not resolve"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, "no route to the host"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, "network is unreachable"},
		{context.DeadlineExceeded, "no answer within 2s"},
		{errors.New("weird"), "weird"},
	} {
		if got := netReason(tc.err, 2*time.Second); !strings.Contains(got, tc.want) {
			t.Errorf("netReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	// IMDS and wireserver get their own explanations and commands.
	f := netFinding(netResult{ep: Endpoint{Name: "imds", Addr: imdsIP + ":80"}, host: imdsIP, port: "80", err: context.DeadlineExceeded}, 2*time.Second)
	if !f.Blocker || !strings.Contains(f.Summary, "IMDS") || !strings.Contains(f.Remediation.Hint, "without a proxy") || f.Remediation.Commands[0][0] != "ip" {
		t.Errorf("IMDS finding: %+v", f)
	}
	f = netFinding(netResult{ep: Endpoint{Name: "wireserver", Addr: wireserverIP + ":80"}, host: wireserverIP, port: "80", err: context.DeadlineExceeded}, 2*time.Second)
	if !f.Blocker || !strings.Contains(f.Summary, "encryption settings update request was not accepted") {
		t.Errorf("wireserver finding: %+v", f)
	}
}
