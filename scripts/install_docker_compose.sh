#!/usr/bin/env bash
# The compose files are validated by tests/integration/test_compose.py with Debian's `docker-compose config`,
# which needs no Docker engine. This installs it when it is missing: VITRINE_DOCKER_COMPOSE names another
# binary to use instead. Without apt-get the test is skipped (it says why).
set -euo pipefail
compose="${VITRINE_DOCKER_COMPOSE:-/usr/bin/docker-compose}"
if [ -x "$compose" ]; then
    exit 0
fi
if [ -n "${VITRINE_DOCKER_COMPOSE:-}" ]; then
    echo "VITRINE_DOCKER_COMPOSE=$VITRINE_DOCKER_COMPOSE is not an executable file" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "no apt-get: the compose-file checks will be skipped (install docker-compose to run them)" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing Debian's docker-compose for the compose-file checks (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
"$compose" version
