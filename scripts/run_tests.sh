#!/usr/bin/env bash
# The whole test suite, set-up included:  bash scripts/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
python -m pytest tests -q -p no:cacheprovider "$@"
