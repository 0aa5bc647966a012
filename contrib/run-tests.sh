#!/usr/bin/env bash
# THE test command: system deps, venv, real services, ruff, mypy, pytest.
#   contrib/run-tests.sh [pytest args...]
# Works from any directory. Exits with pytest's status; fails earlier if ruff or mypy fail.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

step() { printf '\n==== %s ====\n' "$*"; }

step "system packages (contrib/install-deps.sh)"
bash contrib/install-deps.sh

step "virtualenv .venv + pip install -e '.[test]'"
if [ -x .venv/bin/python ]; then
    echo "reusing $REPO_ROOT/.venv"
else
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check -e '.[test]'

step "test services (contrib/test-services.sh start)"
# Services a developer already had running are reused and left running; the ones started
# here are stopped on exit.
services_started=0
stop_services() {
    if [ "$services_started" -eq 1 ]; then
        step "stopping test services"
        bash "$REPO_ROOT/contrib/test-services.sh" stop || true
    fi
}
trap stop_services EXIT
if bash contrib/test-services.sh status >/dev/null 2>&1; then
    echo "test services already running: reusing them (contrib/test-services.sh stop to stop)"
else
    services_started=1
    bash contrib/test-services.sh start
fi
# shellcheck disable=SC1091
. "${MAILGUARD_TEST_DIR:-/tmp/mailguard-test}/services.env"
export MAILGUARD_REQUIRE_SERVICES=1

status=0

step "ruff check mailguard tests"
ruff check mailguard tests || status=1

step "mypy"
mypy || status=1

step "pytest -q $*"
pytest_status=0
pytest -q "$@" || pytest_status=$?

if [ "$status" -ne 0 ]; then
    step "FAILED: ruff and/or mypy reported errors (pytest exit status $pytest_status)"
    [ "$pytest_status" -ne 0 ] && exit "$pytest_status"
    exit 1
fi
exit "$pytest_status"
