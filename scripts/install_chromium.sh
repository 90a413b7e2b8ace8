#!/usr/bin/env bash
# The browser tests (tests/e2e/test_web_page.py) drive Debian's chromium with playwright; playwright's own
# browser download is not used (and cannot run here). This installs chromium when it is missing:
# VITRINE_CHROMIUM names another binary to use instead.
set -euo pipefail
browser="${VITRINE_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then
    exit 0
fi
if [ -n "${VITRINE_CHROMIUM:-}" ]; then
    echo "VITRINE_CHROMIUM=$VITRINE_CHROMIUM is not an executable file" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "the browser tests need Chromium: install it, then set VITRINE_CHROMIUM to its binary" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing Debian's chromium for the browser tests (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
"$browser" --version
