#!/usr/bin/env bash
# The whole test suite, set-up included:  bash scripts/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
# The service's web page is tested in a real headless browser: Debian's chromium + chromedriver
# (about 100 MB, a minute). Installed here, not in setup_env.sh (which the quick start also runs),
# and only as root with apt-get; elsewhere tests/test_serve_page.py skips, saying why.
# PADDLESEG_EXT_NO_BROWSER=1 skips the install.
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
   && [ "${PADDLESEG_EXT_NO_BROWSER:-0}" != 1 ]; then
  echo "[run_tests] installing chromium + chromium-driver (apt-get) for the service page test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver; } >/tmp/paddleseg_ext_chromium.log 2>&1 \
    || echo "[run_tests] chromium install failed (log: /tmp/paddleseg_ext_chromium.log); the page test will skip"
fi
cd "$ROOT"
python -m pytest tests -q -p no:cacheprovider "$@"
