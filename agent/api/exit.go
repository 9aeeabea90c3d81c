package api

// Exit codes of adeagent and adeagentctl (DESIGN.md §3): part of the contract scripts rely on.
const (
	ExitOK          = 0 // ready / success / nothing holds the target
	ExitNotReady    = 1 // not ready, blockers present, holders found, or the action failed
	ExitUsage       = 2 // usage or configuration error
	ExitUnreachable = 3 // the daemon could not be reached (adeagentctl only)
)
