#!/usr/bin/env bash
# The test command (README, .ci/run): the Python apps' virtualenv first (tests/python/setup.sh,
# a no-op when it is up to date), then cargo test with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/python/setup.sh
exec cargo test "$@"
