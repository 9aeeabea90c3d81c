package ctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/render"
)

// actionTimeout is how long prepare and restore wait for the daemon by default: a
// database's clean stop may take minutes (the catalog allows MySQL 15).
const actionTimeout = 60 * time.Minute

// prepare asks the daemon to quiesce the VM (or, with --dry-run, what it would do) and
// prints the outcome: exit 0 ready (or a plan), 1 blocked or failed, 2 usage, 3
// unreachable.
func (r *runner) prepare(ctx context.Context, args []string) int {
	fs := r.flags()
	dryRun := fs.Bool("dry-run", false, "print what prepare would stop and change; change nothing")
	asJSON := fs.Bool("json", false, "print the daemon's JSON (schema_version 1)")
	timeout := fs.Duration("timeout", actionTimeout, "give up waiting for the daemon's answer after `D` (the prepare goes on)")
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *dryRun {
		plan, raw, err := r.client.Plan(ctx)
		if err != nil {
			return r.failAction(ctx, err)
		}
		if *asJSON {
			return r.writeRaw(ctx, raw, ExitOK)
		}
		render.Plan(r.env.Stdout, plan, r.env.Colour)
		return ExitOK
	}
	res, raw, err := r.client.Prepare(ctx)
	if err != nil {
		return r.failAction(ctx, err)
	}
	code := ExitOK
	if res.Outcome != api.OutcomeReady {
		code = ExitNotReady
	}
	if *asJSON {
		return r.writeRaw(ctx, raw, code)
	}
	render.QuiesceResult(r.env.Stdout, res, r.env.Colour)
	return code
}

// restore asks the daemon to undo what prepare did: exit 0 restored (or nothing owed),
// 1 failed.
func (r *runner) restore(ctx context.Context, args []string) int {
	fs := r.flags()
	asJSON := fs.Bool("json", false, "print the daemon's JSON (schema_version 1)")
	timeout := fs.Duration("timeout", actionTimeout, "give up waiting for the daemon's answer after `D` (the restore goes on)")
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, raw, err := r.client.Restore(ctx)
	if err != nil {
		return r.failAction(ctx, err)
	}
	code := ExitOK
	if res.Outcome == api.OutcomeFailed {
		code = ExitNotReady
	}
	if *asJSON {
		return r.writeRaw(ctx, raw, code)
	}
	render.QuiesceResult(r.env.Stdout, res, r.env.Colour)
	return code
}

// failAction is fail with the hints an action's refusals need.
func (r *runner) failAction(ctx context.Context, err error) int {
	code := r.fail(ctx, err)
	var ae *api.APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case 403: // Forbidden
			fmt.Fprintln(r.env.Stderr, "prepare and restore change the system: run them as root (or as a member of the configured operator_group).")
		case 409: // Conflict
			fmt.Fprintln(r.env.Stderr, "See 'adeagentctl status' for what runs now and 'adeagentctl events' to follow it.")
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(r.env.Stderr, "No answer in time; the daemon goes on. Follow it with 'adeagentctl status' or 'adeagentctl events'.\n")
	}
	return code
}

func (r *runner) writeRaw(ctx context.Context, raw []byte, code int) int {
	if _, err := r.env.Stdout.Write(raw); err != nil {
		return r.fail(ctx, fmt.Errorf("write: %w", err))
	}
	return code
}
