#!/usr/bin/env bash
# The project's test command (README). Unit tests always run; integration tests that need
# root run when this is run as root and skip with a reason otherwise. The VM scenarios
# (e2e/vm) run when ADEAGENT_VM=1 is set, as .ci/run does; they take minutes, hence the
# long timeout.
set -euo pipefail
cd "$(dirname "$0")"
go test -count=1 -timeout 60m ./... "$@"
