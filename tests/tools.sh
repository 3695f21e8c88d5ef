#!/usr/bin/env bash
# The Debian packages some tests drive, installed when missing (tests/run.sh runs this first):
# prometheus, whose server and promtool tests/metrics.rs starts and runs; nghttp2-client, whose
# h2load and nghttp tests/http2.rs runs. As root, or through
# sudo when it needs no password (-n: it fails rather than asks, with no one to type); without
# either, it says what is missing, and those tests say so and pass, unless CI is set, where
# they fail. The tests start their own Prometheus on 127.0.0.1: the package's service, which a
# machine running systemd starts at install on every interface (:9090), is stopped and
# disabled.
set -euo pipefail

missing=()
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  missing+=(prometheus)
fi
# h2load and nghttp, which tests/http2.rs drives HTTP/2 with.
if ! command -v h2load >/dev/null || ! command -v nghttp >/dev/null; then
  missing+=(nghttp2-client)
fi
[ "${#missing[@]}" -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "tests/tools.sh: not installing ${missing[*]} (not root, no sudo without a password):" \
      "the tests that need it will say so" >&2
    exit 0
  fi
fi
echo "tests/tools.sh: installing ${missing[*]} (Debian packages)" >&2
"${as_root[@]}" apt-get -qq update </dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get -qq install -y --no-install-recommends "${missing[@]}" </dev/null >/dev/null
if [ -d /run/systemd/system ]; then
  "${as_root[@]}" systemctl disable --now --quiet prometheus </dev/null || true
fi
