#!/usr/bin/env bash
# End to end, as a user runs it: build and start the docker compose stack, wait for health, see
# results reach calc.results.audit and explained failures reach calc.dlq, use the inspector CLI
# through compose, check that the services' users cannot do what they must not, scale
# consumer-basic to 3 under load and check that no request is lost, check that the results journal
# holds exactly one row for each of those requests, check that the Prometheus of the observability
# profile scrapes every service with the alerts loaded, then stop everything.
# On failure it prints every service's logs. `make e2e` runs it.
#
#   E2E_TIMEOUT   seconds before it gives up (default 360)
#   E2E_PROJECT   compose project name (default calc-events-e2e: a stack of your own is left alone)
#   E2E_REQUESTS  requests published while consumer-basic scales (default 3000)
#   E2E_KEEP=1    leave the stack running afterwards (default: docker compose down -v)
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT=${E2E_TIMEOUT:-360}
REQUESTS=${E2E_REQUESTS:-3000}
export COMPOSE_PROJECT_NAME=${E2E_PROJECT:-calc-events-e2e}
# Any free host ports, so the test runs beside `docker compose up` of your own.
export CALC_MANAGEMENT_PORT="" CALC_INSPECTOR_HOST_PORT="" CALC_JOURNAL_HOST_PORT="" CALC_PROMETHEUS_PORT=""
VHOST=calc

start=$SECONDS
passed=0
work=$(mktemp -d)

step() { printf '\n==== [%4ss] %s\n' $((SECONDS - start)) "$*"; }
ok() { passed=$((passed + 1)); printf '  ok   %s\n' "$*"; }
fail() { printf '  FAIL %s\n' "$*" >&2; exit 1; }
remaining() {
  local left=$((TIMEOUT - (SECONDS - start)))
  [ "$left" -gt 0 ] || fail "timed out after ${TIMEOUT}s (E2E_TIMEOUT)"
  echo "$left"
}
# Run a command bounded by the time left (where coreutils' timeout exists).
bounded() {
  if command -v timeout >/dev/null; then timeout "$(remaining)" "$@"; else "$@"; fi
}
# The observability profile is named so that `down` removes its prometheus too; `up` starts only
# the services it is given from it (its jaeger image cannot be built offline: never started here).
compose() { docker compose --profile observability "$@"; }
# `docker compose run` for a one-off command in a service's image and configuration.
run() { bounded docker compose run --rm --no-deps -T "$@" 2>>"$work/run.log"; }

finish() {
  local status=$?
  set +e
  if [ "$status" -ne 0 ]; then
    printf '\n==== FAILED after %ss: containers and the logs of every service\n' $((SECONDS - start)) >&2
    compose ps -a >&2
    compose logs --no-color --timestamps --tail=300 >&2
    [ -s "$work/run.log" ] && { echo "---- one-off commands (docker compose run) ----" >&2; tail -50 "$work/run.log" >&2; }
  fi
  docker rm -f "${COMPOSE_PROJECT_NAME}-otlp" >/dev/null 2>&1
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    echo "E2E_KEEP=1: the stack is still up (docker compose -p $COMPOSE_PROJECT_NAME down -v)"
  else
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  rm -rf "$work"
  [ "$status" -ne 0 ] || printf '\n==== e2e passed: %s checks in %ss\n' "$passed" $((SECONDS - start))
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# name -> messages (ready + unacked) of every queue in the vhost
queue_counts() {
  bounded docker compose exec -T rabbitmq rabbitmqctl -q list_queues -p "$VHOST" name messages \
    --no-table-headers >"$work/queues"
}
count_of() { awk -v q="$1" '$1 == q { print $2; found = 1 } END { if (!found) print -1 }' "$work/queues"; }

# Wait until `check` (a shell function) succeeds; $1 = what, in the failure message.
wait_for() {
  local what=$1; shift
  until "$@"; do
    [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "timed out waiting for $what"
    sleep 1
  done
}

# Nothing waiting or in flight in the work and retry queues, and the DLQ no longer growing.
quiet_since=""
is_quiet() {
  queue_counts
  local busy dlq
  busy=$(awk '$1 ~ /^calc\.(work|retry)\./ { n += $2 } END { print n + 0 }' "$work/queues")
  dlq=$(count_of calc.dlq)
  if [ "$busy" -eq 0 ] && [ "$dlq:$busy" = "$quiet_since" ]; then return 0; fi
  quiet_since="$dlq:$busy"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Python run inside the app image (it has aio-pika and the generated protobuf code).

# Probe what one broker user may do. argv: label, URL ("" = the container's own settings), then
# checks allow|deny:OP:NAME with OP passive|declare|get|consume|purge|publish, or deny:login.
# Publishing probes use a routing key no binding matches, so nothing is ever delivered.
PROBE=$(cat <<'PY'
import asyncio, sys
import aio_pika, aiormq
from messaging.settings import Settings

async def probe(connection, op, name):
    channel = await connection.channel()
    try:
        if op == "declare":
            await channel.declare_queue(name, durable=False, auto_delete=True)
            return "declared"
        if op == "publish":
            exchange = await channel.get_exchange(name, ensure=False)
            await exchange.publish(aio_pika.Message(b"e2e permission probe"), routing_key="e2e.probe")
            return "published"
        queue = await channel.declare_queue(name, passive=True)
        if op == "passive":
            return f"{queue.declaration_result.message_count} messages ready"
        if op == "get":
            message = await queue.get(no_ack=False, fail=False)
            if message is not None:
                await message.nack(requeue=True)
            return "got one" if message else "empty"
        if op == "consume":
            await queue.cancel(await queue.consume(lambda m: m.nack(requeue=True)))
            return "consumed"
        if op == "purge":
            await queue.purge()
            return "purged"
        raise ValueError(op)
    finally:
        if not channel.is_closed:
            await channel.close()

async def main(label, url, checks):
    try:
        connection = await aio_pika.connect(url or Settings.from_env().broker_url, timeout=10)
    except aiormq.exceptions.ProbableAuthenticationError:
        good = checks == ["deny:login"]
        print(f"  {'ok  ' if good else 'FAIL'} {label}: login refused (expected {checks[0]})")
        return 0 if good else 1
    surprises = 0
    async with connection:
        for check in checks:
            expect, op, name = check.split(":", 2)
            try:
                outcome, allowed = await probe(connection, op, name), True
            except aiormq.exceptions.ChannelAccessRefused as exc:
                outcome, allowed = "ACCESS_REFUSED: " + str(exc).split(" - ", 1)[-1].split(" in vhost")[0], False
            good = allowed == (expect == "allow")
            surprises += not good
            print(f"  {'ok  ' if good else 'FAIL'} {label}: {op} {name} -> {outcome} (expected: {expect})")
    return 1 if surprises else 0

sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
PY
)

# Drain calc.results.audit as calc-admin and check it holds exactly one outcome per published
# request (event ids on stdin) and as many failures as the DLQ gained. argv: expected DLQ growth.
AUDIT=$(cat <<'PY'
import asyncio, os, sys
from collections import Counter
from urllib.parse import quote
import aio_pika
from gen import calc_pb2
from messaging import topology

async def main(dlq_growth):
    published = {line.strip() for line in sys.stdin if line.strip()}
    url = f"amqp://calc-admin:{quote(os.environ['E2E_ADMIN_PASSWORD'], safe='')}@rabbitmq:5672/calc"
    outcomes, kinds = Counter(), Counter()
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.AUDIT_QUEUE, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            failed = message.routing_key.startswith(topology.FAILED_PREFIX)
            event = (calc_pb2.CalculationFailed if failed else calc_pb2.CalculationCompleted).FromString(message.body)
            outcomes[event.request_event_id] += 1
            kinds["failed" if failed else "completed"] += 1
    lost = published - set(outcomes)
    foreign = set(outcomes) - published
    duplicates = sum(n - 1 for n in outcomes.values())
    print(f"  published {len(published)}; outcomes {sum(outcomes.values())} "
          f"({kinds['completed']} completed, {kinds['failed']} failed); lost {len(lost)}, "
          f"duplicated {duplicates}, unexpected {len(foreign)}; DLQ grew by {dlq_growth}")
    problems = []
    if lost:
        problems.append(f"no outcome for {len(lost)} requests, e.g. {sorted(lost)[:3]}")
    if foreign:
        problems.append(f"{len(foreign)} outcomes for requests not published here")
    if duplicates:
        problems.append(f"{duplicates} duplicate outcomes (redeliveries)")
    if kinds["failed"] != dlq_growth:
        problems.append(f"{kinds['failed']} failures published but the DLQ grew by {dlq_growth}")
    for problem in problems:
        print(f"  FAIL {problem}")
    return 1 if problems else 0

sys.exit(asyncio.run(main(int(sys.argv[1]))))
PY
)

# In the journal's container: the rows of the published requests (event ids on stdin), once the
# journal has caught up; exactly one per request, none for anything else. argv: expected failures.
JOURNAL=$(cat <<'PY'
import asyncio, sys, time
from journal.store import Store
from messaging.settings import Settings

async def main(failures):
    published = sorted({line.strip() for line in sys.stdin if line.strip()})
    store = Store(Settings.from_env())
    await store.open(timeout=30, migrate=False)
    try:
        deadline = time.monotonic() + 90
        while True:
            rows = await store.pool.fetch("SELECT request_event_id, status, outcomes FROM journal_results "
                                          "WHERE request_event_id = ANY($1)", published)
            if len(rows) >= len(published) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        total = await store.pool.fetchval("SELECT count(*) FROM journal_results")
    finally:
        await store.close()
    failed = sum(1 for r in rows if r["status"] == "failed")
    duplicates = sum(r["outcomes"] - 1 for r in rows)
    print(f"  journal: {len(rows)} rows for {len(published)} requests ({failed} failed), "
          f"{duplicates} duplicates on the wire, {total} rows in all")
    problems = []
    if len(rows) != len(published):
        problems.append(f"{len(published) - len(rows)} requests have no journal row")
    if failed != failures:
        problems.append(f"{failed} failed rows, but {failures} failures were published")
    for problem in problems:
        print(f"  FAIL {problem}")
    return 1 if problems else 0

sys.exit(asyncio.run(main(int(sys.argv[1]))))
PY
)

# A stand-in OTLP/HTTP trace receiver: prints "service KIND name" for every span it is sent.
OTLP_RECEIVER=$(cat <<'PY'
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource in request.resource_spans:
            service = next((a.value.string_value for a in resource.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    kind = Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_")
                    print(service, kind, span.name, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("", 4318), Receiver).serve_forever()
PY
)

# Ask Prometheus (compose's, from the network) until every job has its targets up, then check that
# every rule of rules.yml is loaded and healthy. argv: seconds to wait, rules expected, then
# JOB=TARGETS for each scrape job.
PROMETHEUS=$(cat <<'PY'
import json, sys, time, urllib.parse, urllib.request

def get(path):
    with urllib.request.urlopen(f"http://prometheus:9090{path}", timeout=5) as answer:
        return json.load(answer)["data"]

def query(promql):
    return {r["metric"].get("job", ""): float(r["value"][1])
            for r in get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))["result"]}

def main(wait, rules, jobs):
    expected = dict(job.split("=") for job in jobs)
    deadline, seen = time.monotonic() + wait, {}
    while True:
        try:
            targets = get("/api/v1/targets?state=active")["activeTargets"]
        except OSError as exc:
            targets, seen = [], {"(prometheus)": [f"not answering: {exc}"]}
        else:
            seen = {}
            for t in targets:
                seen.setdefault(t["labels"]["job"], []).append(f"{t['labels']['instance']} {t['health']} {t['lastError']}".strip())
        up = {job: sum(" up" in s for s in states) for job, states in seen.items()}
        if all(up.get(job, 0) == int(n) and len(seen[job]) == int(n) for job, n in expected.items()):
            break
        if time.monotonic() > deadline:
            print(f"  FAIL targets not all up after {wait}s: {json.dumps(seen, indent=1)}")
            return 1
        time.sleep(2)
    for job in sorted(seen):
        print(f"  {job}: {len(seen[job])} target(s) up")
    loaded = [r for g in get("/api/v1/rules")["groups"] for r in g["rules"]]
    bad = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in loaded if r["health"] != "ok"]
    print(f"  rules: {len(loaded)} loaded ({sum(r['type'] == 'alerting' for r in loaded)} alerts), "
          f"{len(bad)} unhealthy")
    if len(loaded) != rules or bad:
        print(f"  FAIL expected {rules} healthy rules: {bad}")
        return 1
    # every service: its build info, and connected to the broker (each replica: min)
    apps = {job: int(n) for job, n in expected.items() if not job.startswith("rabbitmq")}
    built = query("count by (job) (calc_build_info)")
    connected = query("min by (job) (calc_broker_connected)")
    print(f"  calc_build_info series: {built}; min calc_broker_connected: {connected}")
    if built != {job: float(n) for job, n in apps.items()} or connected != dict.fromkeys(apps, 1.0):
        print("  FAIL not every service reports calc_build_info and calc_broker_connected 1")
        return 1
    return 0

sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
PY
)

dotenv() { sed -n "s/^$1=//p" .env | tail -1; }
ADMIN_PASSWORD=${CALC_ADMIN_PASSWORD:-$(dotenv CALC_ADMIN_PASSWORD)}
MONITOR_PASSWORD=${CALC_MONITOR_PASSWORD:-$(dotenv CALC_MONITOR_PASSWORD)}

# ---------------------------------------------------------------------------------------------
step "docker compose build (project $COMPOSE_PROJECT_NAME, timeout ${TIMEOUT}s)"
command -v docker >/dev/null || fail "docker is not installed"
compose version
compose down -v --remove-orphans >/dev/null 2>&1 || true
t=$SECONDS
docker image inspect prom/prometheus:v2 >/dev/null 2>&1 || fail "no image prom/prometheus:v2 (docker pull it, or build one from Debian's prometheus package)"
bounded docker compose build --quiet
ok "image calc-events:local built in $((SECONDS - t))s"

step "docker compose up -d"
t_up=$SECONDS
bounded docker compose up -d --quiet-pull
bounded docker compose up -d --no-deps prometheus  # from the observability profile, scraping from now

step "results reach calc.results.audit"
has_results() { queue_counts; [ "$(count_of calc.results.audit)" -gt 0 ]; }
wait_for "a result in calc.results.audit" has_results
ok "first result $((SECONDS - t_up))s after up ($(count_of calc.results.audit) in calc.results.audit)"

step "every service healthy"
bounded docker compose up -d --wait --wait-timeout "$(remaining)" >/dev/null 2>&1 \
  || { compose ps; fail "not every service became healthy"; }
compose ps --format '{{.Name}}: {{.Status}}'
ok "all services healthy $((SECONDS - t_up))s after up"

step "Prometheus (profile observability): every target up, the alerts loaded"
# A rule is evaluated every 15 s, so a rule whose health is still "unknown" waits too.
rules=$(grep -cE '^ +- (alert|record):' deploy/prometheus/rules.yml)
t=$SECONDS
until run --entrypoint python producer -c "$PROMETHEUS" 90 "$rules" producer=1 consumer-basic=2 \
    consumer-heavy=1 dlq-inspector=1 journal=1 rabbitmq=1 rabbitmq-queues=1 >"$work/prometheus.txt"; do
  grep -q "unhealthy" "$work/prometheus.txt" && [ $((SECONDS - t)) -lt 60 ] || { cat "$work/prometheus.txt"; fail "Prometheus does not scrape every service with the rules loaded"; }
  sleep 5
done
cat "$work/prometheus.txt"
ok "Prometheus: all 7 jobs up, every service connected, $rules rules of rules.yml loaded and healthy ($((SECONDS - t))s)"

step "traces: calc-producer send --wait exports its spans over OTLP/HTTP"
# No trace backend image can be built here, so a receiver in the project's own image (a few lines
# of opentelemetry-proto) stands in for the profile's Jaeger on the compose network.
receiver="${COMPOSE_PROJECT_NAME}-otlp"
bounded docker compose run -d --rm --no-deps --name "$receiver" --entrypoint python producer -u -c "$OTLP_RECEIVER" >/dev/null
answer=$(run -e OTEL_EXPORTER_OTLP_ENDPOINT="http://$receiver:4318" -e OTEL_SERVICE_NAME=calc-e2e-send \
  producer send add 2 3 --wait) || fail "send --wait failed: $answer"
[[ "$answer" == *"completed: 5" ]] || fail "send --wait printed: $answer"
spans() { docker logs "$receiver" 2>/dev/null | grep -q "calc-e2e-send PRODUCER publish calc.requests"; }
wait_for "the send's PRODUCER span at the OTLP receiver" spans
docker rm -f "$receiver" >/dev/null 2>&1
ok "send add 2 3 --wait: completed: 5, and its PRODUCER span 'publish calc.requests' arrived over OTLP/HTTP"

step "an explained failure reaches calc.dlq: calc-producer send divide 1 0"
event_id=$(run producer send divide 1 0)
[[ "$event_id" =~ ^[0-9a-f-]{36}$ ]] || fail "send printed no event_id: $event_id"
ok "published request $event_id"
shown() { run dlq-inspector show "$event_id" --json >"$work/show.json"; }
wait_for "$event_id in calc.dlq" shown
grep -q '"reason": "DIVISION_BY_ZERO"' "$work/show.json" || fail "wrong reason: $(cat "$work/show.json")"
grep -q '"original_routing_key": "calc.requested.divide"' "$work/show.json" || fail "no routing key: $(cat "$work/show.json")"
ok "dlq-inspector show: DIVISION_BY_ZERO, division by zero, from calc.requested.divide"
run dlq-inspector replay --id "$event_id" --yes >"$work/replay.txt" || fail "replay failed: $(cat "$work/replay.txt")"
grep -q "replayed $event_id" "$work/replay.txt" || fail "replay did not report $event_id: $(cat "$work/replay.txt")"
replayed_back() { shown 2>/dev/null && grep -q '"app_id": "calc-dlq-inspector"' "$work/show.json"; }
wait_for "$event_id back in calc.dlq after its replay" replayed_back
grep -q '"reason": "DIVISION_BY_ZERO"' "$work/show.json" || fail "replayed with another reason: $(cat "$work/show.json")"
ok "dlq-inspector replay --id: republished, failed again, back in calc.dlq with DIVISION_BY_ZERO"

step "the inspector CLI and service through compose"
run dlq-inspector report >"$work/report.txt"
sed 's/^/  | /' "$work/report.txt" | head -12
grep -q "DIVISION_BY_ZERO" "$work/report.txt" || fail "report does not list DIVISION_BY_ZERO"
ok "docker compose run --rm dlq-inspector report"
run dlq-inspector report --json >"$work/report.json"
grep -q '"complete": true' "$work/report.json" || fail "report --json incomplete: $(cat "$work/report.json")"
ok "docker compose run --rm dlq-inspector report --json"
port=$(compose port dlq-inspector 8080 | sed 's/.*://')
exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "dlq-inspector serve is not published on 127.0.0.1:$port"
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -1 <&3 | grep -q ' 200 ' || fail "GET /healthz on the published port did not answer 200"
exec 3<&-
ok "dlq-inspector serve answers /healthz on published port 127.0.0.1:$port"

step "least privilege: each service's own credentials, and the users it must not be"
probe_as() {  # service label url checks...
  local service=$1; shift
  bounded docker compose exec -T "$service" python -c "$PROBE" "$@" || fail "$1 may do more (or less) than it should"
}
probe_as producer "calc-producer" "" \
  deny:get:calc.dlq deny:consume:calc.dlq deny:purge:calc.work.basic deny:publish:calc.results \
  deny:publish:calc.retry.1 deny:publish:amq.default deny:declare:calc.e2e.probe allow:passive:calc.dlq
# the consumer may publish to calc.dlx (a request with a forged x-death is dead-lettered by the
# consumer, not the broker): tests/unit/test_deploy_definitions.py holds that grant, not this probe,
# whose publish would leave a probe message in calc.dlq
probe_as consumer-basic "calc-consumer" "" \
  deny:get:calc.dlq deny:get:calc.results.audit deny:publish:calc.requests \
  deny:declare:calc.e2e.probe
probe_as dlq-inspector "calc-inspector" "" \
  allow:get:calc.dlq deny:get:calc.work.basic deny:get:calc.results.audit deny:publish:calc.results \
  deny:publish:calc.retry.1 deny:declare:calc.e2e.probe
probe_as producer "calc-monitor" "amqp://calc-monitor:$MONITOR_PASSWORD@rabbitmq:5672/calc" \
  allow:passive:calc.work.basic deny:get:calc.work.basic deny:publish:calc.requests
probe_as journal "calc-journal" "" \
  allow:passive:calc.results.journal deny:get:calc.dlq deny:get:calc.results.audit \
  deny:publish:calc.results deny:publish:calc.requests deny:declare:calc.e2e.probe
probe_as producer "guest" "amqp://guest:guest@rabbitmq:5672/calc" deny:login
ok "every user can do what it needs and nothing else"

step "scale consumer-basic to 3 while $REQUESTS requests flow: nothing lost"
compose stop producer >/dev/null 2>&1
wait_for "the work and retry queues to drain" is_quiet
bounded docker compose exec -T rabbitmq rabbitmqctl -q purge_queue -p "$VHOST" calc.results.audit >/dev/null
queue_counts
dlq_before=$(count_of calc.dlq)
ok "producer stopped, queues drained, audit queue emptied (calc.dlq holds $dlq_before)"
# --ids-file /dev/stdout: every confirmed event_id, then the JSON summary.
run producer bulk --count "$REQUESTS" --rate 600 --seed 4 --failure-share 0.2 \
  --ids-file /dev/stdout --json >"$work/bulk.out" &
bulk=$!
sleep 2
bounded docker compose up -d --no-deps --no-recreate --wait --wait-timeout "$(remaining)" \
  --scale consumer-basic=3 consumer-basic >/dev/null 2>&1 || fail "consumer-basic did not scale to 3"
queue_counts
consumers=$(bounded docker compose exec -T rabbitmq rabbitmqctl -q list_queues -p "$VHOST" name consumers \
  --no-table-headers | awk '$1 == "calc.work.basic" { print $2 }')
[ "$consumers" = 3 ] || fail "calc.work.basic has $consumers consumers, not 3"
ok "consumer-basic scaled to 3 mid-stream (calc.work.basic has 3 consumers)"
wait "$bulk" || fail "bulk failed: $(tail -3 "$work/bulk.out")"
summary=$(tail -1 "$work/bulk.out")
grep -q "\"confirmed\": $REQUESTS" <<<"$summary" || fail "not every request was confirmed: $summary"
ok "bulk: $summary"
wait_for "the work and retry queues to drain" is_quiet
dlq_after=$(count_of calc.dlq)
sed '$d' "$work/bulk.out" | bounded docker compose run --rm --no-deps -T -e E2E_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  --entrypoint python producer -c "$AUDIT" $((dlq_after - dlq_before)) 2>>"$work/run.log" \
  || fail "requests were lost or duplicated"
ok "every request has exactly one outcome; every failure is in calc.dlq"
for container in $(compose ps -q consumer-basic); do
  name=$(docker inspect --format '{{.Name}}' "$container")
  handled=$(docker logs "$container" 2>&1 | grep -cE ' (completed|failed) event_id=' || true)
  printf '  %s handled %s requests since it started\n' "${name#/}" "$handled"
done

step "the results journal: one row per request, the replayed failure, HTTP"
# every failure of the bulk is in calc.dlq (checked above): as many failed rows
sed '$d' "$work/bulk.out" | bounded docker compose exec -T journal python -c "$JOURNAL" $((dlq_after - dlq_before)) \
  || fail "the journal does not hold exactly one row per request"
ok "calc-journal: exactly one row per request of the bulk"
bounded docker compose exec -T journal calc-journal get "$event_id" --json >"$work/journal-get.json" \
  || fail "calc-journal get $event_id: $(cat "$work/journal-get.json")"
grep -q '"reason": "DIVISION_BY_ZERO"' "$work/journal-get.json" || fail "journal row: $(cat "$work/journal-get.json")"
grep -q '"outcomes": 2' "$work/journal-get.json" || fail "the replay's second failure is not counted: $(cat "$work/journal-get.json")"
ok "calc-journal get $event_id: failed DIVISION_BY_ZERO, 2 outcomes (the original and its replay)"
bounded docker compose exec -T journal calc-journal stats | sed 's/^/  | /'
port=$(compose port journal 8081 | sed 's/.*://')
exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "calc-journal serve is not published on 127.0.0.1:$port"
printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -1 <&3 | grep -q ' 200 ' || fail "GET /readyz on the published port did not answer 200"
exec 3<&-
ok "calc-journal serve answers /readyz on published port 127.0.0.1:$port"

step "the inspector's report agrees with the broker"
run dlq-inspector report --json >"$work/report.json"
grep -q "\"total\": $dlq_after," "$work/report.json" || fail "report total is not $dlq_after: $(head -5 "$work/report.json")"
ok "dlq-inspector report --json: total $dlq_after, as rabbitmqctl counts"

step "docker compose down -v"
