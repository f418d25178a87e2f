#!/usr/bin/env bash
# Side-by-side benchmark of sluice against nginx and HAProxy doing the same job (per-IP rate limit in front
# of one upstream), with the reference configurations in this folder. See tests/bench/README.md.
#
# usage: tests/bench/run.sh BUILD_DIR
# environment (defaults in brackets):
#   WORKERS [1]  worker processes/threads of every proxy     DUR [5]     seconds per wrk run
#   ROUNDS [3]   alternating rounds per scenario              CONNS [64]  wrk connections
#   SCENARIOS ["pass shed keys latency"]                      SKIP_SLUICE [0]  1 = measure only the anchors
#   LAT_RATE [10000] total req/s of the latency scenario      LAT_CLIENTS [16] its connections
#   BENCH_SMOKE [0]  1 = DUR=1 ROUNDS=1, checks only warn (CI: fails only if a proxy does not start)
#   REPORT [BUILD_DIR/bench-report.txt]                       KEEP_TMP [0]  1 = keep configs and logs
#   UPSTREAM [auto]  nginx | echo (BUILD_DIR/sluice-echo) | auto (nginx when installed, else echo)
#   NGINX_LOG_REJECTS [1]  0 = add "limit_req_log_level info;" so nginx stops writing an [error] line per
#                          429 (the reference config logs them; sluice and HAProxy log none)
# Only 127.0.0.1 is ever contacted. Every process started here is stopped on exit.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
build=$(realpath -m "$1")
mkdir -p "$build"

smoke=${BENCH_SMOKE:-0}
if [[ $smoke == 1 ]]; then
  dur=${DUR:-1}
  rounds=${ROUNDS:-1}
else
  dur=${DUR:-5}
  rounds=${ROUNDS:-3}
fi
workers=${WORKERS:-1}
conns=${CONNS:-64}
scenarios=${SCENARIOS:-pass shed keys latency}
skip_sluice=${SKIP_SLUICE:-0}
lat_rate=${LAT_RATE:-10000}
lat_clients=${LAT_CLIENTS:-16}
report=${REPORT:-$build/bench-report.txt}
keep_tmp=${KEEP_TMP:-0}
nginx_log_rejects=${NGINX_LOG_REJECTS:-1}
upstream_choice=${UPSTREAM:-auto}
case $upstream_choice in auto | nginx | echo) ;; *)
  echo "run.sh: UPSTREAM must be auto, nginx or echo, got '$upstream_choice'" >&2
  exit 2
  ;;
esac

for v in dur rounds workers conns lat_rate lat_clients; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: ${v^^} must be a positive integer, got '${!v}'" >&2
    exit 2
  fi
done
for s in $scenarios; do
  case $s in pass | shed | keys | latency) ;; *)
    echo "run.sh: unknown scenario '$s' (allowed: pass shed keys latency)" >&2
    exit 2
    ;;
  esac
done

readonly host=127.0.0.1
readonly upstream_port=9000 admin_port=9901
declare -A port=([sluice]=8080 [nginx]=8081 [haproxy]=8082)
readonly proxies=(sluice nginx haproxy)

# Limits of each scenario: "rate burst". pass: far above the load; shed and keys: 10/s per client.
declare -A scen_limit=([pass]="10000000 10000000" [shed]="10 10" [keys]="10 10" [latency]="10000000 10000000")
# Entries each proxy's table can hold (caps "distinct addresses sent" for nginx and HAProxy).
# nginx: 256 MiB zone, ~16000 limit_req states per MiB (nginx docs); HAProxy: stick table size 2m.
readonly nginx_table=$((256 * 16000)) haproxy_table=2097152 xff_cycle=16777216
readonly sluice_max_keys=2097152

tmp=""

declare -A pid=()        # name -> pid (a session leader: its process group is everything it started)
declare -A status=()     # proxy -> ok | skipped | failed: reason
poller_pid=""
failures=0
check_failures=0

out() { tee -a "$report"; }
say() { printf '%s\n' "$*" | out; }
warn() { say "WARNING: $*"; }
die() {
  say "ERROR: $*"
  exit 1
}

# Records a command for the report, then runs it.
logged() {
  printf '$ %s\n' "$*" >>"$tmp/commands"
  "$@"
}

# True while any process of group $1 is alive (zombies of exited members count as gone).
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { n++ } END { exit n == 0 }'
}

# True while process $1 exists and has not exited (a zombie has).
proc_alive() {
  local st
  st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

# Stops everything started under name $1: TERM the group, KILL it after 5 s, reap the leader.
stop() {
  local name=$1 p=${pid[$1]:-}
  [[ -n $p ]] || return 0
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    group_alive "$p" || break
    sleep 0.1
  done
  if group_alive "$p"; then
    kill -KILL -- "-$p" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
      group_alive "$p" || break
      sleep 0.1
    done
  fi
  wait "$p" 2>/dev/null || true
  unset "pid[$name]"
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $poller_pid ]]; then
    kill "$poller_pid" 2>/dev/null
    wait "$poller_pid" 2>/dev/null
  fi
  local n
  for n in "${!pid[@]}"; do stop "$n"; done
  if [[ -z $tmp ]]; then
    :
  elif [[ $keep_tmp == 1 ]]; then
    echo "configs and logs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d /tmp/sluice-bench.XXXXXX)
mkdir -p "$tmp/logs" "$tmp/res" "$(dirname "$report")"
: >"$report"
: >"$tmp/commands"

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# spawn NAME LOG CMD...: runs CMD as the leader of a new session (so stop() can end all it forks),
# stdout and stderr to LOG.
spawn() {
  local name=$1 log=$2
  shift 2
  printf '$ %s\n' "$*" >>"$tmp/commands"
  setsid "$@" >"$log" 2>&1 </dev/null &
  pid[$name]=$!
}

# Waits (at most 10 s) until process $1 listens on every port given; fails early if it exits.
wait_ports() {
  local name=$1 i p
  shift
  for ((i = 0; i < 100; i++)); do
    proc_alive "${pid[$name]}" || return 1
    local all=1
    for p in "$@"; do port_open "$p" || all=0; done
    ((all)) && return 0
    sleep 0.1
  done
  return 1
}

# Fails unless nothing listens on the port: never measure or kill someone else's process.
ensure_free() {
  local p=$1 i
  for ((i = 0; i < 50; i++)); do
    port_open "$p" || return 0
    sleep 0.1
  done
  die "port $p on $host is in use by a process this script did not start; stop it and rerun"
}

log_tail() {
  say "  last lines of $(basename "$1"):"
  tail -n 15 "$1" 2>/dev/null | sed 's/^/    | /' | out
}

# --- HTTP helpers over bash's /dev/tcp (no curl needed) ---------------------------------------------

# shellcheck disable=SC2016 # the inner script expands its own arguments
http_get() { # port path -> whole response on stdout
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
    cat <&3' "$host" "$1" "$2" 2>/dev/null
}

# shellcheck disable=SC2016
http_status() { # port -> status code of one GET /
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$0" >&3
    head -n 1 <&3' "$host" "$1" 2>/dev/null | awk '{ print $2 }'
}

sluice_tracked_keys() {
  http_get "$admin_port" /metrics | awk '$1 == "sluice_tracked_keys" { printf "%d\n", $2 + 0; f = 1 } END { exit !f }'
}

# --- configurations --------------------------------------------------------------------------------------

# The shared configs write pid and log files to /tmp/bench-*; each proxy gets its own directory instead.
render() { # template dir rate burst -> file in dir
  local tpl=$1 dir=$2 rate=$3 burst=$4
  sed -e "s/WORKERS/$workers/g" -e "s/RATE/$rate/g" -e "s/BURST/$burst/g" -e "s#/tmp/bench-#$dir/#g" "$tpl"
}

# nginx-light's compiled-in temp paths live under /var/lib/nginx; keep them in the run directory.
nginx_temp_paths() {
  local d=$1 t
  for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/%s;\n' "$t" "$d" "$t"; done
}

write_nginx_conf() { # template dir rate burst
  local dir=$2 extra
  mkdir -p "$dir"
  extra=$(nginx_temp_paths "$dir")
  [[ $nginx_log_rejects == 0 ]] && extra+=$'\n  limit_req_log_level info;'
  render "$@" | awk -v extra="$extra" '{ print } /^http \{/ { print extra }' >"$dir/nginx.conf"
}

write_sluice_conf() { # dir rate burst
  mkdir -p "$1"
  cat >"$1/sluice.yaml" <<EOF
listen: "$host:${port[sluice]}"
threads: $workers
server:
  trusted_proxies: ["127.0.0.1/32"]
upstream:
  servers: ["$host:$upstream_port"]
  max_connections: 64
  max_idle: 64
limits:
  - name: per-ip
    key: ip
    rate: $2/s
    burst: $3
max_tracked_keys: $sluice_max_keys
drain:
  delay: 0s
  timeout: 2s
admin:
  listen: "$host:$admin_port"
log:
  level: warn
  access_log: false
EOF
}

# --- processes ------------------------------------------------------------------------------------------

start_upstream() {
  ensure_free "$upstream_port"
  local dir=$tmp/upstream kind=$upstream_choice
  mkdir -p "$dir"
  if [[ $kind == auto ]]; then
    if command -v nginx >/dev/null; then kind="nginx"; else kind="echo"; fi
  fi
  if [[ $kind == nginx ]]; then
    command -v nginx >/dev/null || die "UPSTREAM=nginx but nginx is not installed"
    upstream_kind="nginx (1 worker, fixed 20-byte body)"
    write_nginx_conf "$here/upstream-nginx.conf" "$dir" 0 0
    spawn upstream "$tmp/logs/upstream.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
  else
    [[ -x $build/sluice-echo ]] || die "no upstream: nginx is not installed (or UPSTREAM=echo) and $build/sluice-echo is missing"
    upstream_kind="sluice-echo (1 thread)"
    spawn upstream "$tmp/logs/upstream.log" "$build/sluice-echo" --listen "$host:$upstream_port" --threads 1
  fi
  if ! wait_ports upstream "$upstream_port"; then
    log_tail "$tmp/logs/upstream.log"
    die "the upstream ($upstream_kind) did not start listening on $host:$upstream_port"
  fi
  [[ $(http_status "$upstream_port") == 200 ]] || die "the upstream on $host:$upstream_port does not answer 200"
}

# Starts proxy $1 with limit rate $2 burst $3; on failure marks it failed (with the reason) and returns 1.
start_proxy() {
  local name=$1 rate=$2 burst=$3 dir=$tmp/$1 log=$tmp/logs/$1.log
  [[ ${status[$name]} == ok ]] || return 1
  mkdir -p "$dir"
  local ports=("${port[$name]}")
  case $name in
    sluice)
      ports+=("$admin_port")
      if [[ ! -x $build/sluice ]]; then
        status[$name]="failed: $build/sluice is missing (build it first)"
        say "sluice: ${status[$name]}"
        return 1
      fi
      write_sluice_conf "$dir" "$rate" "$burst"
      if ! logged timeout 10 "$build/sluice" --check --config "$dir/sluice.yaml" >"$dir/check.out" 2>&1; then
        status[$name]="failed: sluice --check rejected the benchmark config"
        say "sluice: ${status[$name]}"
        log_tail "$dir/check.out"
        return 1
      fi
      for p in "${ports[@]}"; do ensure_free "$p"; done
      spawn sluice "$log" "$build/sluice" --config "$dir/sluice.yaml"
      ;;
    nginx)
      write_nginx_conf "$here/proxy-nginx.conf" "$dir" "$rate" "$burst"
      ensure_free "${port[nginx]}"
      spawn nginx "$log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
      ;;
    haproxy)
      render "$here/proxy-haproxy.cfg" "$dir" "$rate" "$burst" >"$dir/haproxy.cfg"
      ensure_free "${port[haproxy]}"
      spawn haproxy "$log" haproxy -db -f "$dir/haproxy.cfg"
      ;;
  esac
  if ! wait_ports "$name" "${ports[@]}"; then
    if proc_alive "${pid[$name]}"; then
      status[$name]="failed: not listening on ${ports[*]} after 10 s"
    else
      status[$name]="failed: exited at startup"
    fi
    say "$name: ${status[$name]}"
    log_tail "$log"
    [[ -f $dir/error.log ]] && log_tail "$dir/error.log"
    stop "$name"
    return 1
  fi
  return 0
}

# (Re)starts every proxy that is still ok with the limit of scenario $1.
restart_all() {
  local p
  for p in "${proxies[@]}"; do
    stop "$p"
    # shellcheck disable=SC2086
    start_proxy "$p" ${scen_limit[$1]} || true
  done
}

# After a run: a proxy that died is failed for the rest of the benchmark.
check_alive() {
  local name=$1 what=$2
  if [[ -n ${pid[$name]:-} ]] && ! proc_alive "${pid[$name]}"; then
    status[$name]="failed: exited during $what"
    say "$name: ${status[$name]}"
    log_tail "$tmp/logs/$name.log"
    stop "$name"
  fi
}

# VmHWM (peak RSS, KiB) of a proxy: nginx's worker processes, otherwise the process itself.
peak_rss_kib() {
  local name=$1 p=${pid[$1]} pids
  if [[ $name == nginx ]]; then
    pids=$(ps -e -o pid=,ppid=,stat= | awk -v m="$p" '$2 == m && $3 !~ /^Z/ { print $1 }')
  else
    pids=$p
  fi
  local total=0 q kib
  for q in $pids; do
    kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$q/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# --- measurement ----------------------------------------------------------------------------------------

to_ms() { # wrk duration (12.3us / 1.2ms / 1.02s / 1.00m) -> milliseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}

# Parses a wrk output file into key=value lines: rps total non2xx errors p50 p99 issued.
parse_wrk() {
  local f=$1
  local rps total non2xx errors p50 p99 issued
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  total=$(awk '/requests in/ { print $1 }' "$f")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
  errors=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$f")
  p50=$(awk '$1 == "50%" { print $2 }' "$f")
  p99=$(awk '$1 == "99%" { print $2 }' "$f")
  issued=$(awk '/^xff addresses issued:/ { print $4 }' "$f")
  printf 'rps=%s\ntotal=%s\nnon2xx=%s\nerrors=%s\np50=%s\np99=%s\nissued=%s\n' \
    "${rps:-0}" "${total:-0}" "${non2xx:-0}" "${errors:-0}" \
    "$( [[ -n $p50 ]] && to_ms "$p50" || echo -)" "$( [[ -n $p99 ]] && to_ms "$p99" || echo -)" "${issued:-0}"
}

get() { awk -F= -v k="$2" '$1 == k { print $2 }' "$1"; }

# run_wrk SCEN ROUND PROXY [SECONDS [XFF_START [TAG]]]: one wrk run -> $tmp/res/SCEN.PROXY.ROUND[TAG]
# (keys uses xff.lua, whose addresses start after XFF_START).
run_wrk() {
  local scen=$1 r=$2 name=$3 secs=${4:-$dur} xff_start=${5:-0} tag=${6:-}
  local res=$tmp/res/$scen.$name.$r$tag url="http://$host:${port[$name]}/"
  local args=(-t1 "-c$conns" "-d${secs}s" --latency)
  [[ $scen == keys ]] && args+=(-s "$here/xff.lua")
  args+=("$url")
  [[ $scen == keys ]] && args+=(-- "$xff_start")
  if ! logged timeout $((secs + 20)) wrk "${args[@]}" >"$res.wrk" 2>&1; then
    say "  $name round $r: wrk failed"
    sed 's/^/    | /' "$res.wrk" | out
  fi
  parse_wrk "$res.wrk" >"$res"
  check_alive "$name" "$scen round $r"
}

# Percentile $2 (0-100) of the numbers in file $1 (nearest rank).
percentile() {
  sort -n "$1" | awk -v q="$2" '{ a[NR] = $1 } END { if (!NR) { print "-"; exit }
    i = int(NR * q / 100); if (i < NR * q / 100) i++; if (i < 1) i = 1; print a[i] }'
}

# One h2load run at a fixed rate: LAT_RATE req/s over LAT_CLIENTS connections for DUR seconds.
# h2load --rps paces each connection; its --log-file has every request's latency (us), from which
# p50/p99 are exact (h2load 1.52 prints only min/max/mean/sd).
run_latency() {
  local r=$1 name=$2 res=$tmp/res/latency.$2.$1
  local per=$(( (lat_rate + lat_clients - 1) / lat_clients )) n=$((lat_rate * dur))
  local raw=$tmp/res/latency.$name.$r.h2load log=$tmp/res/latency.$name.$r.tsv
  if ! logged timeout $((dur * 3 + 20)) h2load --h1 -n "$n" -c "$lat_clients" --rps "$per" \
    --log-file="$log" "http://$host:${port[$name]}/" >"$raw" 2>&1; then
    say "  $name round $r: h2load failed"
    tail -n 5 "$raw" | sed 's/^/    | /' | out
  fi
  local lat=$tmp/res/lat.us completed non200 achieved
  touch "$log"
  awk -F'\t' '{ print $3 }' "$log" >"$lat"
  completed=$(wc -l <"$lat")
  non200=$(awk -F'\t' '$2 != 200 { n++ } END { print n + 0 }' "$log")
  achieved=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$raw")
  {
    echo "completed=$completed"
    echo "non200=$non200"
    echo "achieved=${achieved:-0}"
    echo "p50=$(awk '{ printf "%.3f", $1 / 1000 }' <<<"$(percentile "$lat" 50)")"
    echo "p99=$(awk '{ printf "%.3f", $1 / 1000 }' <<<"$(percentile "$lat" 99)")"
  } >"$res"
  check_alive "$name" "latency round $r"
}

# The order of round $1 (0-based): sluice, nginx, haproxy rotated left by r.
round_order() {
  local r=$1 i
  for ((i = 0; i < 3; i++)); do printf '%s ' "${proxies[$(((i + r) % 3))]}"; done
}

# Polls sluice_tracked_keys in the background (bounded), keeping the largest value in $1.
start_poller() {
  local file=$1 limit=$(((dur + 5) * 4))
  echo 0 >"$file"
  (
    for ((i = 0; i < limit; i++)); do
      v=$(sluice_tracked_keys || echo 0)
      [[ $v -gt $(<"$file") ]] && echo "$v" >"$file"
      sleep 0.25
    done
  ) &
  poller_pid=$!
}

stop_poller() {
  [[ -n $poller_pid ]] || return 0
  kill "$poller_pid" 2>/dev/null || true
  wait "$poller_pid" 2>/dev/null || true
  poller_pid=""
}

# keys: each proxy is restarted before each of its runs, then warmed up for 1 s with the same load from
# other addresses, so that its connection buffers and upstream pool already count in "before". The memory
# delta is then the measured run's table growth: (VmHWM after - VmHWM before) / keys the run added.
readonly warm_xff_start=8388608 # the measured run's addresses start at 1; the warm-up's are disjoint
run_keys_round() {
  local r=$1 name=$2 res=$tmp/res/keys.$2.$1
  stop "$name"
  # shellcheck disable=SC2086
  if ! start_proxy "$name" ${scen_limit[keys]}; then
    return 0
  fi
  run_wrk keys "$r" "$name" 1 "$warm_xff_start" .warm
  [[ ${status[$name]} == ok ]] || return 0
  local before after keys=0 tracked_before=0 how polled=$tmp/res/keys.polled warm
  warm=$(get "$res.warm" issued)
  [[ $name == sluice ]] && tracked_before=$(sluice_tracked_keys || echo 0)
  before=$(peak_rss_kib "$name")
  [[ $name == sluice ]] && start_poller "$polled"
  run_wrk keys "$r" "$name"
  if [[ $name == sluice ]]; then
    stop_poller
    local last
    last=$(sluice_tracked_keys || echo 0)
    keys=$(<"$polled")
    ((last > keys)) && keys=$last
    keys=$((keys - tracked_before))
  fi
  [[ ${status[$name]} == ok ]] || return 0
  after=$(peak_rss_kib "$name")
  local issued room
  issued=$(get "$res" issued)
  case $name in
    sluice)
      how="sluice_tracked_keys: max polled on /metrics every 0.25 s during and after the run ($((keys + tracked_before))), minus its value after the warm-up ($tracked_before)"
      if ((keys <= 0)); then
        keys=$issued
        how="addresses issued by xff.lua (sluice_tracked_keys unavailable or not growing)"
      fi
      ;;
    nginx)
      room=$((nginx_table - warm))
      keys=$((issued < room ? issued : room))
      how="addresses issued by xff.lua, capped at the room left in the zone (~$nginx_table states) after the warm-up's $warm"
      ;;
    haproxy)
      room=$((haproxy_table - warm))
      keys=$((issued < room ? issued : room))
      how="addresses issued by xff.lua, capped at the room left in the stick table ($haproxy_table entries) after the warm-up's $warm"
      ;;
  esac
  ((keys > xff_cycle)) && keys=$xff_cycle
  local bpk=-
  ((keys > 0)) && bpk=$(awk -v a="$after" -v b="$before" -v k="$keys" 'BEGIN { printf "%.1f", (a - b) * 1024 / k }')
  {
    echo "rss_before=$before"
    echo "rss_after=$after"
    echo "keys=$keys"
    echo "bpk=$bpk"
    echo "how=$how"
  } >>"$res"
}

# --- report ---------------------------------------------------------------------------------------------

median() { # numbers as arguments ("-" ignored)
  printf '%s\n' "$@" | awk '$1 != "-" && $1 != ""' | sort -g |
    awk '{ a[NR] = $1 } END { if (!NR) { print "-"; exit }
      if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Values of field $3 of scenario $1 proxy $2 over every round ("-" for a missing run).
values() {
  local r f
  for ((r = 1; r <= rounds; r++)); do
    f=$tmp/res/$1.$2.$r
    if [[ -f $f ]]; then get "$f" "$3"; else echo -; fi
  done
}

fmt() { # number -> fixed decimals ($2), "-" passes through
  [[ $1 == - || -z $1 ]] && { echo -; return; }
  awk -v v="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, v }'
}

ratio_line() { # label sluice_value nginx_value haproxy_value higher|lower
  local label=$1 s=$2 n=$3 h=$4 better=$5
  awk -v l="$label" -v s="$s" -v n="$n" -v h="$h" -v b="$better" 'BEGIN {
    best = "-"; who = ""
    if (n != "-") { best = n; who = "nginx" }
    if (h != "-" && (best == "-" || (b == "higher" ? h + 0 > best + 0 : h + 0 < best + 0))) { best = h; who = "haproxy" }
    if (s == "-" || best == "-" || best + 0 == 0) { printf "%s: n/a (sluice or both anchors missing)\n", l; exit }
    printf "%s: %.3f (best anchor: %s; %s is better)\n", l, s / best, who, b }'
}

throughput_table() { # scenario title
  local scen=$1
  say ""
  say "== $scen: $2"
  printf '%-8s %12s  %-30s %10s %10s %12s %8s\n' proxy "median req/s" "rounds req/s" "p50 ms" "p99 ms" \
    "non-2xx" "sock err" | out
  declare -A med=()
  local p
  for p in "${proxies[@]}"; do
    local rps p50 p99 non total err
    mapfile -t rps < <(values "$scen" "$p" rps)
    mapfile -t p50 < <(values "$scen" "$p" p50)
    mapfile -t p99 < <(values "$scen" "$p" p99)
    mapfile -t non < <(values "$scen" "$p" non2xx)
    mapfile -t total < <(values "$scen" "$p" total)
    mapfile -t err < <(values "$scen" "$p" errors)
    med[$p]=$(median "${rps[@]}")
    if [[ ${med[$p]} == - ]]; then
      printf '%-8s %12s  %s\n' "$p" - "${status[$p]}" | out
      continue
    fi
    local rounds_s="" x
    for x in "${rps[@]}"; do rounds_s+="$(fmt "$x" 0) "; done
    local nsum tsum esum
    nsum=$(printf '%s\n' "${non[@]}" | awk '$1 != "-" { s += $1 } END { print s + 0 }')
    tsum=$(printf '%s\n' "${total[@]}" | awk '$1 != "-" { s += $1 } END { print s + 0 }')
    esum=$(printf '%s\n' "${err[@]}" | awk '$1 != "-" { s += $1 } END { print s + 0 }')
    printf '%-8s %12s  %-30s %10s %10s %12s %8s\n' "$p" "$(fmt "${med[$p]}" 0)" "$rounds_s" \
      "$(fmt "$(median "${p50[@]}")" 3)" "$(fmt "$(median "${p99[@]}")" 3)" "$nsum/$tsum" "$esum" | out
    [[ ${status[$p]} == ok ]] || say "         (${status[$p]})"
  done
  ratio_line "sluice / best req/s" "${med[sluice]}" "${med[nginx]}" "${med[haproxy]}" higher | out
  if [[ $scen == shed && $nginx_log_rejects == 1 ]]; then
    say "nginx (reference config) writes an [error] line per 429 to its error log; NGINX_LOG_REJECTS=0 stops that."
  fi
  say "p50/p99: wrk's latency at saturation (all $conns connections busy), medians over rounds."
}

# Checks a scenario's responses: pass, keys and latency must be 2xx, shed mostly non-2xx (429).
check_responses() {
  local scen=$1 p r f non total frac
  for p in "${proxies[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
      f=$tmp/res/$scen.$p.$r
      [[ -f $f ]] || continue
      if [[ $scen == latency ]]; then
        non=$(get "$f" non200) total=$(get "$f" completed)
      else
        non=$(get "$f" non2xx) total=$(get "$f" total)
      fi
      if ((total == 0)); then
        check_fail "$scen: $p round $r completed no request"
        continue
      fi
      frac=$(awk -v a="$non" -v b="$total" 'BEGIN { printf "%.4f", a / b }')
      if [[ $scen == shed ]]; then
        awk -v f="$frac" 'BEGIN { exit !(f >= 0.9) }' ||
          check_fail "shed: $p round $r answered only $(awk -v f="$frac" 'BEGIN { printf "%.1f", f * 100 }')% non-2xx (expected >= 90% 429s)"
      else
        awk -v f="$frac" 'BEGIN { exit !(f <= 0.01) }' ||
          check_fail "$scen: $p round $r answered $non of $total requests non-2xx (expected all 2xx)"
      fi
    done
  done
}

check_fail() {
  if [[ $smoke == 1 ]]; then
    warn "$* (smoke run: not a failure)"
  else
    say "CHECK FAILED: $*"
    check_failures=$((check_failures + 1))
  fi
}

# wrk counts every non-2xx/3xx alike; ask each shedding proxy directly that they really are 429s.
probe_shed() {
  local p i code n429 n200 other
  for p in "${proxies[@]}"; do
    [[ ${status[$p]} == ok ]] || continue
    n429=0 n200=0 other=""
    for ((i = 0; i < 20; i++)); do
      code=$(http_status "${port[$p]}" || true)
      case $code in
        429) n429=$((n429 + 1)) ;;
        200) n200=$((n200 + 1)) ;;
        *) other+="${code:-none} " ;;
      esac
    done
    say "shed probe: 20 requests to $p -> $n429 x 429, $n200 x 200${other:+, other: $other}"
    ((n429 > 0)) || check_fail "shed: $p answered no 429 to 20 quick requests"
    [[ -z $other ]] || check_fail "shed: $p answered statuses other than 200/429: $other"
  done
}

keys_memory_table() {
  say ""
  say "== keys: memory per tracked key (peak RSS = VmHWM from /proc/PID/status; nginx: sum over its workers)"
  printf '%-8s %6s %12s %12s %12s %10s %10s\n' proxy round "KiB before" "KiB after" "delta KiB" keys "bytes/key" | out
  declare -A med=()
  local p r f
  for p in "${proxies[@]}"; do
    local all=()
    for ((r = 1; r <= rounds; r++)); do
      f=$tmp/res/keys.$p.$r
      [[ -f $f && -n $(get "$f" bpk) ]] || continue
      local b a k v
      b=$(get "$f" rss_before) a=$(get "$f" rss_after) k=$(get "$f" keys) v=$(get "$f" bpk)
      printf '%-8s %6s %12s %12s %12s %10s %10s\n' "$p" "$r" "$b" "$a" "$((a - b))" "$k" "$v" | out
      all+=("$v")
    done
    med[$p]=$(median "${all[@]}")
    if [[ ${med[$p]} == - ]]; then
      printf '%-8s %6s %s\n' "$p" - "${status[$p]}" | out
    else
      say "$p: median $(fmt "${med[$p]}" 1) bytes/key; keys = $(get "$tmp/res/keys.$p.1" how 2>/dev/null || echo "?")"
    fi
  done
  say "bytes/key = (VmHWM after - VmHWM before the run) * 1024 / keys the run added. Each run starts on a freshly"
  say "started proxy warmed up for 1 s with the same load from other addresses, so connection buffers are already in"
  say "\"before\"; what is left may still hold allocator slack: compare, don't read as exact."
  ratio_line "sluice / best bytes per key" "${med[sluice]}" "${med[nginx]}" "${med[haproxy]}" lower | out
}

latency_table() {
  say ""
  say "== latency: fixed rate $lat_rate req/s over $lat_clients connections for ${dur}s (pass limit), h2load --rps"
  printf '%-8s %10s %10s  %-28s %-28s %10s %8s\n' proxy "p50 ms" "p99 ms" "rounds p50" "rounds p99" "req/s" "non-200" | out
  declare -A med=()
  local p
  for p in "${proxies[@]}"; do
    local p50 p99 ach non
    mapfile -t p50 < <(values latency "$p" p50)
    mapfile -t p99 < <(values latency "$p" p99)
    mapfile -t ach < <(values latency "$p" achieved)
    mapfile -t non < <(values latency "$p" non200)
    med[$p]=$(median "${p99[@]}")
    if [[ ${med[$p]} == - ]]; then
      printf '%-8s %10s  %s\n' "$p" - "${status[$p]}" | out
      continue
    fi
    local s50="" s99="" x
    for x in "${p50[@]}"; do s50+="$(fmt "$x" 3) "; done
    for x in "${p99[@]}"; do s99+="$(fmt "$x" 3) "; done
    printf '%-8s %10s %10s  %-28s %-28s %10s %8s\n' "$p" "$(fmt "$(median "${p50[@]}")" 3)" \
      "$(fmt "${med[$p]}" 3)" "$s50" "$s99" "$(fmt "$(median "${ach[@]}")" 0)" \
      "$(printf '%s\n' "${non[@]}" | awk '$1 != "-" { s += $1 } END { print s + 0 }')" | out
  done
  ratio_line "sluice p99 / best p99" "${med[sluice]}" "${med[nginx]}" "${med[haproxy]}" lower | out
  local r f a
  for p in "${proxies[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
      f=$tmp/res/latency.$p.$r
      [[ -f $f ]] || continue
      a=$(get "$f" achieved)
      if awk -v a="$a" -v t="$lat_rate" 'BEGIN { exit !(a < 0.9 * t) }'; then
        warn "latency: $p round $r reached only $(fmt "$a" 0) of $lat_rate req/s: the proxy or the machine was saturated, so this is not latency below saturation"
      fi
    done
  done
  say "Percentiles are exact (nearest rank) over every request of h2load's --log-file; req/s is h2load's achieved rate."
}

version_of() {
  local v
  case $1 in
    sluice)
      [[ -x $build/sluice ]] || { echo missing; return; }
      v=$(timeout 5 "$build/sluice" --version 2>&1 || true)
      ;;
    nginx) v=$(nginx -v 2>&1 || true) ;;
    haproxy) v=$(haproxy -v 2>&1 || true) ;;
    wrk) v=$(wrk --version 2>&1 || true) ;;
    h2load) v=$(h2load --version 2>&1 || true) ;;
  esac
  v=${v%%$'\n'*}
  echo "${v:-unknown}"
}

# --- main -----------------------------------------------------------------------------------------------

for tool in wrk ps setsid timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (make bench-deps installs what the benchmark needs)"
done
if [[ " $scenarios " == *" latency "* ]] && ! command -v h2load >/dev/null; then
  die "h2load is not installed (package nghttp2-client; make bench-deps)"
fi

# The copies here must match the reference configurations the anchors' figures were measured with.
for shared in "$here/../../../shared/bench" /work/shared/bench; do
  if [[ -d $shared ]]; then
    for f in upstream-nginx.conf proxy-nginx.conf proxy-haproxy.cfg; do
      cmp -s "$here/$f" "$shared/$f" || warn "tests/bench/$f differs from $shared/$f"
    done
    break
  fi
done

for p in "${proxies[@]}"; do status[$p]=ok; done
[[ $skip_sluice == 1 ]] && status[sluice]="skipped (SKIP_SLUICE=1)"
command -v nginx >/dev/null || status[nginx]="failed: nginx is not installed"
command -v haproxy >/dev/null || status[haproxy]="failed: haproxy is not installed"

say "sluice benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([[ $smoke == 1 ]] && echo ' (SMOKE RUN: figures meaningless)')"
say "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)"
for t in sluice nginx haproxy wrk h2load; do say "$(printf '%-8s' "$t") $(version_of "$t")"; done
say "settings: UPSTREAM=$upstream_choice NGINX_LOG_REJECTS=$nginx_log_rejects WORKERS=$workers DUR=${dur}s ROUNDS=$rounds CONNS=$conns SCENARIOS='$scenarios' LAT_RATE=$lat_rate LAT_CLIENTS=$lat_clients"

start_upstream
say "upstream: $upstream_kind on $host:$upstream_port"
say "proxies: sluice $host:${port[sluice]} (admin $host:$admin_port), nginx $host:${port[nginx]}, haproxy $host:${port[haproxy]}"

declare -A titles=(
  [pass]="forwarding cost, limit ${scen_limit[pass]% *}/s burst ${scen_limit[pass]#* } (never reached)"
  [shed]="rejection cost, limit ${scen_limit[shed]% *}/s burst ${scen_limit[shed]#* } (almost every request 429)"
  [keys]="a new client address per request (X-Forwarded-For from trusted 127.0.0.1), limit ${scen_limit[keys]% *}/s burst ${scen_limit[keys]#* } each"
)

ran=()
# latency runs on the pass configuration, so it follows pass without a restart.
ordered=()
for s in pass latency shed keys; do [[ " $scenarios " == *" $s "* ]] && ordered+=("$s"); done
current=""
for scen in "${ordered[@]}"; do
  say ""
  say "-- running $scen ($rounds rounds x ${dur}s per proxy)"
  if [[ $scen == keys ]]; then
    for p in "${proxies[@]}"; do stop "$p"; done
    for ((r = 1; r <= rounds; r++)); do
      for p in $(round_order $((r - 1))); do
        [[ ${status[$p]} == ok ]] && run_keys_round "$r" "$p"
      done
    done
    current=""
  else
    limit_key=$scen
    [[ $scen == latency ]] && limit_key=pass
    if [[ $current != "$limit_key" ]]; then
      restart_all "$limit_key"
      current=$limit_key
    fi
    for ((r = 1; r <= rounds; r++)); do
      for p in $(round_order $((r - 1))); do
        [[ ${status[$p]} == ok ]] || continue
        if [[ $scen == latency ]]; then run_latency "$r" "$p"; else run_wrk "$scen" "$r" "$p"; fi
      done
    done
    [[ $scen == shed ]] && probe_shed
  fi
  ran+=("$scen")
done
for p in "${proxies[@]}"; do stop "$p"; done

say ""
say "== commands (every one this run executed, in order)"
out <"$tmp/commands"

for scen in pass shed keys latency; do
  [[ " ${ran[*]} " == *" $scen "* ]] || continue
  case $scen in
    latency)
      latency_table
      check_responses latency
      ;;
    *)
      throughput_table "$scen" "${titles[$scen]}"
      check_responses "$scen"
      [[ $scen == keys ]] && keys_memory_table
      ;;
  esac
done

say ""
if [[ -x $build/sluice_microbench ]]; then
  say "== limiter microbenchmark ($build/sluice_microbench)"
  mb_args=()
  [[ $smoke == 1 ]] && mb_args+=(--benchmark_min_time=0.01)
  if ! logged timeout 600 "$build/sluice_microbench" "${mb_args[@]}" 2>&1 | out; then
    say "sluice_microbench FAILED"
    failures=$((failures + 1))
  fi
else
  say "== limiter microbenchmark: $build/sluice_microbench not built (SLUICE_BUILD_BENCH=ON and libbenchmark-dev)"
fi

say ""
say "== summary"
for p in "${proxies[@]}"; do
  say "$(printf '%-8s' "$p") ${status[$p]}"
  case ${status[$p]} in ok | skipped*) ;; *) failures=$((failures + 1)) ;; esac
done
((check_failures == 0)) || say "$check_failures response check(s) failed: those figures are not valid"
say "report written to $report"
((failures == 0 && check_failures == 0))
