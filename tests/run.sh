#!/usr/bin/env bash
# The test command (README, .ci/run): the Python apps' virtualenv first (tests/python/setup.sh,
# a no-op when it is up to date), the Debian packages some tests drive (tests/tools.sh, a no-op
# when they are there), then cargo test with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/python/setup.sh
bash tests/tools.sh
exec cargo test "$@"
