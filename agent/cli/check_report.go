package cli

import (
	"io"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/render"
)

// The human report lives in package render, shared with adeagentctl.

const (
	ansiBold = render.ANSIBold
	ansiRed  = render.ANSIRed
)

func writeReport(w io.Writer, rep *api.Report, colour bool) { render.Report(w, rep, colour) }

func shellQuote(s string) string { return render.ShellQuote(s) }
