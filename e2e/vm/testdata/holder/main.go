// Command holder is the stand-in workload of the VM quiesce and acceptance tests
// (e2e/vm/quiesce_test.go, acceptance_test.go): it opens FILE for appending (creating its
// directory), writes a line to it every few seconds, and runs until SIGTERM or SIGINT.
// Built static (CGO_ENABLED=0) on the host, it runs as the stand-in database services,
// inside a Docker image imported from a tar, and from a tmpfs. Extra arguments are
// ignored: they only make its command line look like the real service's (the service
// catalog matches some families by command line).
//
//	holder FILE [ARGS...]
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: holder FILE [ARGS...]")
		os.Exit(2)
	}
	path := os.Args[1]
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	fmt.Fprintf(f, "%s start pid %d\n", time.Now().UTC().Format(time.RFC3339), os.Getpid())
	for {
		select {
		case s := <-sig:
			fmt.Fprintf(f, "%s stop (%v) pid %d\n", time.Now().UTC().Format(time.RFC3339), s, os.Getpid())
			f.Close()
			return
		case t := <-tick.C:
			fmt.Fprintf(f, "%s alive pid %d\n", t.UTC().Format(time.RFC3339), os.Getpid())
		}
	}
}
