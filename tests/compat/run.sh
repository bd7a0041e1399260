#!/usr/bin/env bash
# `make compat`: the second-emulator scenarios. Starts LocalStack (S3, SQS, SNS, EventBridge,
# SES) and a moto server (DynamoDB only) on free loopback ports, runs tests/compat against both,
# writes the "Second emulator" section of docs/reliability.md, and always stops both servers.
#
#   APP_VENV     orderpipe's venv (default .venv): runs moto, the tests and the report
#   COMPAT_VENV  LocalStack's venv (default .venv-compat), made by `make compat`
#
# Arguments go to pytest (`bash tests/compat/run.sh -k backoff`); such a partial run leaves
# docs/reliability.md alone.
set -euo pipefail
set -m # job control: each background server gets its own process group, with its pid as id
cd "$(dirname "$0")/../.."

APP_VENV=${APP_VENV:-.venv}
COMPAT_VENV=${COMPAT_VENV:-.venv-compat}
WORK=build/compat
RESULTS=$WORK/results.jsonl
PY=$APP_VENV/bin/python

rm -rf "$WORK"
mkdir -p "$WORK/localstack"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LS_PORT=$(free_port)
MOTO_PORT=$(free_port)
while [ "$MOTO_PORT" = "$LS_PORT" ]; do MOTO_PORT=$(free_port); done

LS_PID=""
MOTO_PID=""
WATCH_PID=""
stop_group() { # $1: pid of a server started in the background (it leads its own group)
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do # LocalStack takes ~15 s to stop its services
        kill -0 -- "-$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    echo "compat: process group $pid still running after 30 s; killing it" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
}
cleanup() {
    [ -z "$WATCH_PID" ] || kill -- "-$WATCH_PID" 2>/dev/null || true
    WATCH_PID=""
    stop_group "$LS_PID"
    stop_group "$MOTO_PID"
    LS_PID=""
    MOTO_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Flags (docs/reliability.md, "Second emulator"): not in Docker (/.dockerenv exists on some
# hosts), no DNS server on port 53, path-style queue URLs, no telemetry.
env \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$PWD/$WORK/localstack" \
    GATEWAY_LISTEN="127.0.0.1:$LS_PORT" \
    LOCALSTACK_HOST="localhost:$LS_PORT" \
    DNS_ADDRESS=0 \
    SQS_ENDPOINT_STRATEGY=path \
    DISABLE_EVENTS=1 \
    "$COMPAT_VENV/bin/python" -m localstack.runtime.main >"$WORK/localstack.log" 2>&1 &
LS_PID=$!
# If this script is killed outright, the watcher still stops LocalStack (moto watches us itself).
( while kill -0 $$ 2>/dev/null; do sleep 1; done; kill -TERM -- "-$LS_PID" 2>/dev/null ) &
WATCH_PID=$!
disown "$WATCH_PID" # its end is expected: no job report for it
# moto for DynamoDB only (LocalStack's DynamoDB downloads a JDK at first use).
"$PY" -m core.local.emulator --port "$MOTO_PORT" --parent-pid $$ >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!

"$PY" - "$LS_PORT" "$MOTO_PORT" "$LS_PID" "$MOTO_PID" <<'EOF'
import json, os, sys, time, urllib.request

ls_port, moto_port, ls_pid, moto_pid = sys.argv[1:5]
wanted = ("s3", "sqs", "sns", "events", "ses")
checks = {
    "LocalStack": (f"http://127.0.0.1:{ls_port}/_localstack/health", int(ls_pid)),
    "moto": (f"http://127.0.0.1:{moto_port}/moto-api/data.json", int(moto_pid)),
}
deadline = time.monotonic() + 90
for name, (url, pid) in checks.items():
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if name != "LocalStack":
                    break
                services = json.load(r).get("services", {})
                if all(services.get(s) in ("available", "running") for s in wanted):
                    break
        except OSError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"compat: {name} exited while starting; see build/compat/")
        if time.monotonic() > deadline:
            sys.exit(f"compat: {name} did not answer within 90 s; see build/compat/")
        time.sleep(0.2)
print(f"compat: LocalStack at 127.0.0.1:{ls_port}, moto (DynamoDB) at 127.0.0.1:{moto_port}")
EOF

started=$(date +%s)
set +e
ORDERPIPE_COMPAT_LOCALSTACK="http://127.0.0.1:$LS_PORT" \
ORDERPIPE_COMPAT_DYNAMODB="http://127.0.0.1:$MOTO_PORT" \
ORDERPIPE_COMPAT_RESULTS="$RESULTS" \
ORDERPIPE_COMPAT_AWS_CLI="$(cd "$COMPAT_VENV" && pwd)/bin/aws" \
    "$APP_VENV/bin/pytest" -q -p no:cacheprovider tests/compat "$@"
rc=$?
set -e
wall=$(( $(date +%s) - started ))

cleanup
if [ $# -gt 0 ]; then
    echo "compat: partial run (pytest $*); docs/reliability.md left as it was"
    exit $rc
fi
"$PY" tests/compat/report.py --results "$RESULTS" --wall "$wall" \
    --localstack "$("$COMPAT_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("localstack-core"))')"
exit $rc
