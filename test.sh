#!/usr/bin/env bash
# The project's test command (README). Unit tests always run; integration tests that need
# root run when this is run as root and skip with a reason otherwise.
set -euo pipefail
cd "$(dirname "$0")"
go test -count=1 ./... "$@"
