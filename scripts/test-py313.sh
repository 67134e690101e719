#!/usr/bin/env bash
# The unit and integration tiers (not chaos) on Python 3.13, the image's Python, in python:3.13-slim.
#
# The work tree is mounted read-only and copied into the container (without .venv, .git and
# caches), where `.[dev]` is installed into the image's /usr/local venv: the host's .venv is
# neither used nor touched. The container shares the host's network, so it reaches the broker
# at RABBITMQ_URL (default: the local one) and PyPI as the host does; the host's pip index,
# proxy and CA bundle settings are passed in. The tests make their vhosts with rabbitmqctl:
# scripts/rabbitmqctl_relay.py runs the host's for them, so the Erlang cookie stays on the host.
#
#   scripts/test-py313.sh            (make test-py313)
#   PYTEST_ARGS="-x -k deadlines" scripts/test-py313.sh
#   CALC_PY313_IMAGE=python:3.13-slim, CALC_PY313_PIP_CACHE=~/.cache/calc-events/pip-py313
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

image=${CALC_PY313_IMAGE:-python:3.13-slim}
export RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/}
export PYTEST_ARGS=${PYTEST_ARGS:-}
pip_cache=${CALC_PY313_PIP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/calc-events/pip-py313}
mkdir -p "$pip_cache"

relay=$(mktemp -d /tmp/calc-py313-relay.XXXXXX)
name=calc-py313-$$
relay_pid=
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$relay"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 scripts/rabbitmqctl_relay.py serve "$relay" &
relay_pid=$!
for _ in $(seq 50); do [ -S "$relay/sock" ] && break; sleep 0.1; done
[ -S "$relay/sock" ] || { echo "test-py313: the rabbitmqctl relay did not start" >&2; exit 1; }

# pip as the host has it: index, proxies, CA bundle (file:// indexes on the host's disk are not
# passed; the container downloads from the index the host uses).
run=(docker run --rm --init --name "$name" --network host
     -v "$PWD:/src:ro" -v "$pip_cache:/root/.cache/pip" -v "$relay:/run/rabbitmqctl-relay"
     -e RABBITMQ_URL -e PYTEST_ARGS
     -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_ROOT_USER_ACTION=ignore)
[ -n "${RABBITMQ_MANAGEMENT_URL:-}" ] && run+=(-e RABBITMQ_MANAGEMENT_URL)
pip_config() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
index_url=${PIP_INDEX_URL:-$(pip_config index-url)}
trusted_host=${PIP_TRUSTED_HOST:-$(pip_config trusted-host)}
[ -n "$index_url" ] && [ "${index_url#file:}" = "$index_url" ] && run+=(-e "PIP_INDEX_URL=$index_url")
[ -n "$trusted_host" ] && run+=(-e "PIP_TRUSTED_HOST=$trusted_host")
for var in PIP_DEFAULT_TIMEOUT HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [ -n "${!var:-}" ] && run+=(-e "$var")
done
cert=${PIP_CERT:-$(pip_config cert)}
[ -z "$cert" ] && [ -f /etc/ssl/certs/ca-certificates.crt ] && cert=/etc/ssl/certs/ca-certificates.crt
if [ -n "$cert" ] && [ -f "$cert" ]; then
  run+=(-v "$(realpath "$cert"):/etc/ssl/certs/host-ca-bundle.crt:ro" -e PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
fi

# buf and promtool, which make check's tests run, as the host's make install put them: native
# binaries (buf's npm wrapper needs Node.js, which the image lacks), mounted onto the PATH.
buf_native=$(ls node_modules/@bufbuild/buf-linux-*/bin/buf 2>/dev/null | head -n 1)
[ -n "$buf_native" ] && [ -x .venv/bin/promtool ] || { echo "test-py313: buf or promtool missing: run make install" >&2; exit 1; }
run+=(-v "$(realpath "$buf_native"):/usr/local/bin/buf:ro" -v "$(realpath .venv/bin/promtool):/usr/local/bin/promtool:ro")

echo "test-py313: $image, tests against ${RABBITMQ_URL%%//*}//${RABBITMQ_URL##*@}" >&2
"${run[@]}" "$image" bash -c '
set -euo pipefail
mkdir /w
tar -C /src --exclude=./.venv --exclude=./node_modules --exclude=./.git --exclude=__pycache__ --exclude="*.egg-info" \
    --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.hypothesis \
    --exclude=./build --exclude=./bench/results -cf - . | tar -C /w -xf -
cd /w
ln -s /w/scripts/rabbitmqctl_relay.py /usr/local/bin/rabbitmqctl
python -VV
began=$SECONDS
pip install --quiet --progress-bar off -e ".[dev]"
echo "test-py313: .[dev] installed in $((SECONDS - began))s"
status=0
# not test_install_tools.py: it tests the host'"'"'s make install (npm, apt), which this container does not
# run (its buf and promtool are the host'"'"'s); the host'"'"'s unit tier runs it
python -m pytest tests/unit --ignore=tests/unit/test_install_tools.py $PYTEST_ARGS || status=$?
python -m pytest tests/integration -m "not chaos" $PYTEST_ARGS || status=$?
exit $status
' && status=0 || status=$?
echo "test-py313: exit $status after $((SECONDS - started))s" >&2
exit $status
