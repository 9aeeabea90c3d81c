package probes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// networkProbe dials every configured endpoint over TCP, all at once, and reports the
// unreachable ones. ADE needs the wireserver 168.63.129.16:80 (it posts the disk
// encryption settings there: "encryption settings update request was not accepted"),
// IMDS 169.254.169.254:80 (security type, VMSS check) and the Key Vault (research
// ade_extension.md §2 "Network", appendix 6) — and it only finds out mid-flight.
type networkProbe struct{}

func (networkProbe) Name() string { return "network" }

const (
	// netDefaultConnectTimeout applies when Env.ConnectTimeout is zero.
	netDefaultConnectTimeout = 2 * time.Second
	// netProbeTimeout is the probe's own deadline: all dials run concurrently, so one
	// connect timeout plus a margin; kept below the runner's 5 s default.
	netProbeTimeout = 4 * time.Second
)

// Timeout implements TimeoutProbe.
func (networkProbe) Timeout() time.Duration { return netProbeTimeout }

const (
	imdsIP       = "169.254.169.254"
	wireserverIP = "168.63.129.16"
)

type netResult struct {
	ep      Endpoint
	host    string
	port    string
	err     error
	elapsed time.Duration
}

func (p networkProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	timeout := env.ConnectTimeout
	if timeout <= 0 {
		timeout = netDefaultConnectTimeout
	}
	results := make([]netResult, len(env.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range env.Endpoints {
		results[i].ep = ep
		host, port, err := net.SplitHostPort(ep.Addr)
		if err != nil || host == "" || port == "" {
			if err == nil {
				err = errors.New("missing host or port")
			}
			results[i].err = fmt.Errorf("invalid address %q: %w", ep.Addr, err)
			continue
		}
		results[i].host, results[i].port = host, port
		wg.Add(1)
		go func(r *netResult) {
			defer wg.Done()
			d := net.Dialer{Timeout: timeout}
			start := time.Now()
			conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(r.host, r.port))
			r.elapsed = time.Since(start)
			if err != nil {
				r.err = err
				return
			}
			_ = conn.Close()
		}(&results[i])
	}
	wg.Wait()

	var out []api.Finding
	for _, r := range results {
		if r.err == nil {
			continue
		}
		out = append(out, netFinding(r, timeout))
	}
	return stampProbe(p.Name(), out), nil
}

// netKind names what an endpoint is, from its address (falling back to its name).
func netKind(r netResult) string {
	switch r.host {
	case imdsIP:
		return "IMDS (the Azure Instance Metadata Service)"
	case wireserverIP:
		return "the Azure wireserver"
	}
	if r.ep.Name != "" {
		return r.ep.Name
	}
	return "endpoint"
}

// netReason explains a dial error in words.
func netReason(err error, timeout time.Duration) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("its name does not resolve (%v)", dnsErr)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the connection was refused (nothing listens there, or a firewall rejects it)"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "there is no route to the host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "the network is unreachable (no route)"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("no answer within %s (packets dropped by a firewall or network security group, or no route)", timeout)
	case errors.Is(err, context.Canceled):
		return "the check was cancelled"
	}
	return err.Error()
}

func netFinding(r netResult, timeout time.Duration) api.Finding {
	name := r.ep.Name
	if name == "" {
		name = r.ep.Addr
	}
	if r.host == "" {
		return api.Finding{
			Key:      "network.endpoint",
			Title:    fmt.Sprintf("Endpoint %s has an invalid address", name),
			Summary:  fmt.Sprintf("The configured endpoint %s could not be checked: %v. Whether ADE can reach it is unknown.", name, r.err),
			Severity: api.SeverityHigh, Blocker: true,
			Remediation: api.Remediation{
				Hint: fmt.Sprintf("Give endpoint %q an address of the form host:port (e.g. myvault.vault.azure.net:443) in the adeagent configuration.", name),
			},
		}
	}
	kind := netKind(r)
	summary := fmt.Sprintf("TCP connect to %s (%s, %s) failed after %s: %s.", name, kind, r.ep.Addr,
		r.elapsed.Round(time.Millisecond), netReason(r.err, timeout))
	var hint string
	var cmds [][]string
	switch r.host {
	case imdsIP:
		summary += " ADE asks IMDS for the VM's security type and whether it is in a scale set before it starts."
		hint = "IMDS must be reachable directly, without a proxy (set no_proxy for 169.254.169.254) and without a firewall rule dropping it. " +
			"It exists only on Azure VMs; off Azure this is expected, and ADE cannot run there either."
		cmds = [][]string{{"ip", "route", "get", r.host},
			{"curl", "-sS", "--noproxy", "*", "-H", "Metadata: true", "http://169.254.169.254/metadata/instance?api-version=2021-02-01"}}
	case wireserverIP:
		summary += " ADE posts the disk encryption settings to the wireserver; when that fails, encryption stops with \"encryption settings update request was not accepted\"."
		hint = "Allow outbound TCP to 168.63.129.16:80 (network security groups, host firewall, and a proxy must not intercept it). " +
			"WALinuxAgent's own iptables rules only let root reach it, so test as root. It exists only on Azure VMs; off Azure this is expected."
		cmds = [][]string{{"ip", "route", "get", r.host},
			{"curl", "-sS", "http://168.63.129.16/?comp=versions"},
			{"iptables", "-t", "security", "-L", "OUTPUT", "-n", "-v"}}
	default:
		summary += " ADE needs it during encryption and only finds out mid-flight."
		hint = fmt.Sprintf("Allow outbound TCP to %s from this VM (network security group, firewall, proxy, Key Vault firewall and private endpoint DNS), "+
			"as in Microsoft's \"Azure Disk Encryption on an isolated network\" guide.", r.ep.Addr)
		cmds = [][]string{{"getent", "hosts", r.host}}
		if r.port == "443" {
			cmds = append(cmds, []string{"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n", "https://" + r.host + "/"})
		}
	}
	return api.Finding{
		Key:         "network.endpoint",
		Title:       fmt.Sprintf("%s (%s) is unreachable", name, r.ep.Addr),
		Summary:     summary,
		Severity:    api.SeverityHigh,
		Blocker:     true,
		Remediation: api.Remediation{Hint: hint, Commands: cmds},
	}
}
