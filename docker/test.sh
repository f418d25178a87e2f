#!/usr/bin/env bash
# Container test: builds the image from a clean export of the repository, runs sluice-echo and sluice
# from it with --network host on loopback ports 18080 (proxy), 19000 (echo), 19901 (admin), and checks
# forwarding, the rate limit, the non-root user, the in-image probe and a clean drain on stop.
#
#   docker/test.sh                          # podman if installed, else docker; image from git HEAD
#   CONTAINER_ENGINE=docker docker/test.sh
#   SLUICE_SOURCE=worktree docker/test.sh   # tracked + untracked, non-ignored files, edits included
#   SLUICE_SKIP_BUILD=1 docker/test.sh      # test an image that is already built
#
# Environment: SLUICE_IMAGE (default sluice:dev), SLUICE_BUILD_TIMEOUT seconds (default 1800),
# SLUICE_TEST_PROXY_PORT / _ECHO_PORT / _ADMIN_PORT (defaults 18080 / 19000 / 19901; must be free).
# Every wait is bounded; containers and the temp dir are removed on any exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then engine=podman; else engine=docker; fi
fi
case "$engine" in docker | podman) ;; *) echo "CONTAINER_ENGINE must be docker or podman, not '$engine'" >&2; exit 2 ;; esac
image=${SLUICE_IMAGE:-sluice:dev}
source_mode=${SLUICE_SOURCE:-head}
build_timeout=${SLUICE_BUILD_TIMEOUT:-1800}
proxy_port=${SLUICE_TEST_PROXY_PORT:-18080}
echo_port=${SLUICE_TEST_ECHO_PORT:-19000}
admin_port=${SLUICE_TEST_ADMIN_PORT:-19901}
drain_timeout_s=5   # drain.timeout of the test config below; a stop must finish within it
tag=$$
echo_name=sluice-test-echo-$tag
proxy_name=sluice-test-proxy-$tag
work=$(mktemp -d /tmp/sluice-container-test.XXXXXX)
failures=0
started=$(date +%s)

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] || [ "$failures" -ne 0 ]; then
    for c in "$proxy_name" "$echo_name"; do
      if timeout 20 "$engine" container inspect "$c" >/dev/null 2>&1; then
        echo "--- last log lines of $c"
        timeout 20 "$engine" logs --tail 30 "$c" 2>&1 || true
      fi
    done
  fi
  timeout 60 "$engine" rm -f -t 0 "$proxy_name" "$echo_name" >/dev/null 2>&1 \
    || timeout 60 "$engine" rm -f "$proxy_name" "$echo_name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "== $* ($(($(date +%s) - started))s)"; }
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*"; failures=$((failures + 1)); }
check() {  # check DESCRIPTION COMMAND...: runs the command, records the result
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
now_ms() { date +%s%3N; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# HTTP status of a GET, or 000 when nothing answered; headers go to $2 when given.
http_status() { curl -s -o /dev/null --max-time 5 ${2:+-D "$2"} -w '%{http_code}' "$1" || true; }
running() { [ "$(timeout 20 "$engine" container inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }
command -v "$engine" >/dev/null || { echo "$engine is not installed" >&2; exit 2; }
for p in $proxy_port $echo_port $admin_port; do
  if port_in_use "$p"; then echo "127.0.0.1:$p is in use; free it or set SLUICE_TEST_*_PORT" >&2; exit 2; fi
done

if [ -z "${SLUICE_SKIP_BUILD:-}" ]; then
  say "exporting the repository ($source_mode) to $work/src"
  mkdir -p "$work/src"
  case "$source_mode" in
    head) git -C "$repo" archive --format=tar HEAD | tar -x -C "$work/src" ;;
    worktree)
      # What git would commit: tracked and untracked files minus ignored ones and deletions.
      (cd "$repo" && git ls-files -z -c -o --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -x -C "$work/src" ;;
    *) echo "SLUICE_SOURCE must be head or worktree, not '$source_mode'" >&2; exit 2 ;;
  esac
  [ -f "$work/src/Dockerfile" ] || { echo "the export has no Dockerfile (not committed yet? try SLUICE_SOURCE=worktree)" >&2; exit 2; }

  say "building $image with $engine"
  build_args=(build -t "$image")
  # docker format keeps HEALTHCHECK (OCI image config has no field for it); chroot isolation works
  # where podman itself runs in a container.
  [ "$engine" = podman ] && build_args+=(--format docker --pull=missing)
  [ "$engine" = podman ] && export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
  build_start=$(date +%s)
  if ! timeout "$build_timeout" "$engine" "${build_args[@]}" "$work/src" >"$work/build.log" 2>&1; then
    tail -40 "$work/build.log"
    echo "image build failed (or exceeded ${build_timeout}s)" >&2
    exit 1
  fi
  echo "  built in $(($(date +%s) - build_start))s"
fi

say "inspecting the image"
size=$(timeout 30 "$engine" image inspect -f '{{.Size}}' "$image")
echo "  size: $((size / 1000000)) MB"
check "runs as uid 10001 by default" [ "$(timeout 30 "$engine" image inspect -f '{{.Config.User}}' "$image")" = 10001:10001 ]
check "stop signal is SIGTERM" [ "$(timeout 30 "$engine" image inspect -f '{{.Config.StopSignal}}' "$image")" = SIGTERM ]
inspect_json=$(timeout 30 "$engine" image inspect "$image")
check "HEALTHCHECK runs sluice --probe" grep -q -- '--probe' <<<"$inspect_json"
check "exposes 8080 and 9901" grep -q '9901/tcp' <<<"$inspect_json"
ldd_out=$(timeout 60 "$engine" run --rm --network none --no-healthcheck --entrypoint ldd "$image" /usr/local/bin/sluice /usr/local/bin/sluice-echo 2>&1 || true)
libraries_resolved() { ! grep -q "not found" <<<"$1" && grep -q libc.so <<<"$1"; }
check "every shared library of both binaries is present" libraries_resolved "$ldd_out"
check "sluice --version runs" timeout 60 "$engine" run --rm --network none --no-healthcheck "$image" --version

cat >"$work/sluice.yaml" <<YAML
listen: "127.0.0.1:$proxy_port"
threads: 2
upstream:
  servers: ["127.0.0.1:$echo_port"]
limits:
  - name: per-ip
    key: ip
    rate: 1/m
    burst: 3
    when:
      path_prefix: /limited/
drain:
  delay: 0s
  timeout: ${drain_timeout_s}s
admin:
  listen: "127.0.0.1:$admin_port"
log:
  level: info
YAML
# The container user (uid 10001) must be able to read the mounted file; mktemp made the dir 0700.
chmod 0755 "$work"
chmod 0644 "$work/sluice.yaml"
mount=(-v "$work/sluice.yaml:/etc/sluice/sluice.yaml:ro")

say "validating the test config inside the image"
check_out=$(timeout 60 "$engine" run --rm --network none --no-healthcheck "${mount[@]}" "$image" --check 2>&1 || true)
check "sluice --check on the mounted config prints ok" [ "$check_out" = ok ]

say "starting sluice-echo (127.0.0.1:$echo_port) and sluice (127.0.0.1:$proxy_port, admin :$admin_port)"
timeout 60 "$engine" run -d --name "$echo_name" --network host --no-healthcheck \
  --entrypoint sluice-echo "$image" --listen "127.0.0.1:$echo_port" >/dev/null
# The image's health check probes admin port 9901; this config moved admin, so the command follows it.
# Podman schedules checks through systemd timers; "disable" keeps the check for `podman healthcheck run`.
health_interval=2s
[ "$engine" = podman ] && health_interval=disable
timeout 60 "$engine" run -d --name "$proxy_name" --network host "${mount[@]}" \
  --health-cmd "sluice --probe http://127.0.0.1:$admin_port/healthz" --health-interval "$health_interval" \
  --health-retries 2 "$image" >/dev/null

ready=no
for _ in $(seq 1 150); do  # 150 x 0.2 s = 30 s at most
  if [ "$(http_status "http://127.0.0.1:$admin_port/readyz")" = 200 ] \
    && [ "$(http_status "http://127.0.0.1:$echo_port/")" = 200 ]; then ready=yes; break; fi
  if ! running "$proxy_name" || ! running "$echo_name"; then break; fi
  sleep 0.2
done
check "both containers come up and /readyz answers 200 within 30s" [ "$ready" = yes ]
if [ "$ready" != yes ]; then exit 1; fi

say "forwarding and rate limiting"
check "GET / goes through to echo: 200" [ "$(http_status "http://127.0.0.1:$proxy_port/")" = 200 ]
for i in 1 2 3; do
  check "request $i of 3 under /limited/ (burst 3): 200" [ "$(http_status "http://127.0.0.1:$proxy_port/limited/$i")" = 200 ]
done
status=$(http_status "http://127.0.0.1:$proxy_port/limited/4" "$work/headers")
check "request 4 under /limited/: 429" [ "$status" = 429 ]
check "the 429 carries Retry-After" grep -qiE '^retry-after: *[1-9][0-9]*' "$work/headers"
check "a path outside the limit still passes: 200" [ "$(http_status "http://127.0.0.1:$proxy_port/other")" = 200 ]

say "user and probe inside the container"
# Real, effective, saved and filesystem uid of PID 1, i.e. of sluice itself, not of an exec'd shell.
uid_line=$(timeout 20 "$engine" exec "$proxy_name" grep '^Uid:' /proc/1/status | tr -s '\t ' ' ' || true)
check "PID 1 (sluice) runs as uid 10001, not root: '$uid_line'" [ "$uid_line" = "Uid: 10001 10001 10001 10001" ]
check "sluice --probe /healthz exits 0" timeout 20 "$engine" exec "$proxy_name" sluice --probe "http://127.0.0.1:$admin_port/healthz"
probe_refused() {
  local rc=0
  timeout 20 "$engine" exec "$proxy_name" sluice --probe http://127.0.0.1:1/ || rc=$?
  [ "$rc" -eq 1 ]
}
check "sluice --probe on a closed port exits 1" probe_refused
if [ "$engine" = podman ]; then
  check "podman healthcheck run: healthy" timeout 30 podman healthcheck run "$proxy_name"
else
  health=none
  for _ in $(seq 1 50); do  # 50 x 0.2 s = 10 s at most
    health=$(timeout 20 docker container inspect -f '{{.State.Health.Status}}' "$proxy_name" 2>/dev/null || true)
    [ "$health" = healthy ] && break
    sleep 0.2
  done
  check "docker health status: healthy (was $health)" [ "$health" = healthy ]
fi

say "drain on stop: an in-flight request finishes, then sluice exits 0"
curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://127.0.0.1:$proxy_port/delay/1500" >"$work/inflight" 2>/dev/null &
inflight_pid=$!
sleep 0.5  # let the request reach echo; the proxy now holds it for another ~1 s
stop_start=$(now_ms)
timeout 60 "$engine" stop -t $((drain_timeout_s * 2)) "$proxy_name" >/dev/null
stop_ms=$(($(now_ms) - stop_start))
wait "$inflight_pid" || true
echo "  stop took ${stop_ms} ms"
check "the in-flight request got its 200 during the drain" [ "$(cat "$work/inflight")" = 200 ]
check "stop finished within drain.timeout (${drain_timeout_s}s), not by SIGKILL" [ "$stop_ms" -lt $((drain_timeout_s * 1000)) ]
exit_code=$(timeout 20 "$engine" container inspect -f '{{.State.ExitCode}}' "$proxy_name")
check "sluice exited 0 (was $exit_code)" [ "$exit_code" = 0 ]
check "the listener is closed after stop" [ "$(http_status "http://127.0.0.1:$proxy_port/")" = 000 ]

say "done: $failures failed"
[ "$failures" -eq 0 ]
