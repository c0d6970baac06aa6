#!/usr/bin/env bash
# The console's screenshots in docs/img (console-*.png): the browser tests (tests/test_console_browser.py, real
# chromium at 1280x800, one at 400 px wide) save them when ROUTER_SCREENSHOTS names a folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUTER_SCREENSHOTS=docs/img python3 -m pytest -p no:cacheprovider -q tests/test_console_browser.py
