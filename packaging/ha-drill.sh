#!/usr/bin/env bash
# A fire drill for a highly available tf (docs/operations.md, "High availability"), all on
# this machine's loopback, in a temporary directory removed at the end:
#
#   a PostgreSQL primary and its streaming standby (pg_basebackup -R),
#   three `tf serve` replicas on them (one data dir, a multi-host database URL with
#   target_session_attrs=read-write), HAProxy in front checking GET /healthz;
#
# then, with every request going through HAProxy as agents and users would:
#   1. kill -9 a replica while an agent long-polls, and submit a job: one agent gets it;
#   2. stop the primary and promote the standby, saying what a client is answered
#      meanwhile; the job acknowledged before the switch and one after are both served.
#
# Usage: packaging/ha-drill.sh [path/to/tf]   (default: tf on PATH)
# Needs PostgreSQL's server programs (Debian's postgresql), haproxy and curl. As root,
# PostgreSQL's programs run as the postgres user. Exits 0 when the drill passed.
set -euo pipefail

tf=$(command -v "${1:-tf}") || { echo "ha-drill: no tf binary (give its path)" >&2; exit 2; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pg_bin/initdb" ] || { echo "ha-drill: PostgreSQL's server programs are missing (apt install postgresql)" >&2; exit 2; }
command -v haproxy >/dev/null || { echo "ha-drill: haproxy is missing (apt install haproxy)" >&2; exit 2; }
command -v curl >/dev/null || { echo "ha-drill: curl is missing" >&2; exit 2; }

work=$(mktemp -d /tmp/tf-ha-drill.XXXXXX)
pids=()
as_postgres=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$work"
  as_postgres=(runuser -u postgres --)
fi
pg() { "${as_postgres[@]}" "$pg_bin/$1" "${@:2}"; }

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for cluster in primary standby; do
    [ -d "$work/$cluster" ] && pg pg_ctl stop -m immediate -D "$work/$cluster" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_cluster() { # name port
  pg pg_ctl start -w -D "$work/$1" -l "$work/$1.log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$2 -c unix_socket_directories=$work" >/dev/null
}

say "PostgreSQL primary and streaming standby"
primary_port=$(free_port); standby_port=$(free_port)
pg initdb -D "$work/primary" -U tf --auth trust --encoding UTF8 >/dev/null
start_cluster primary "$primary_port"
pg psql -h 127.0.0.1 -p "$primary_port" -U tf -d postgres -qc "CREATE DATABASE lab"
pg pg_basebackup -h 127.0.0.1 -p "$primary_port" -U tf -D "$work/standby" -R -X stream --checkpoint fast
start_cluster standby "$standby_port"
export TF_DATABASE="postgres://tf@127.0.0.1:$primary_port,127.0.0.1:$standby_port/lab?target_session_attrs=read-write"
echo "database: $TF_DATABASE"

say "three tf serve replicas on one data dir, HAProxy in front"
data="$work/data"
mkdir -p "$data"
printf %s 'drill-agent-secret-0123456789' > "$work/agent.secret"
"$tf" clients --data-dir "$data" add drill-agent --role agent --secret-file "$work/agent.secret" >/dev/null
replica_ports=()
for n in 1 2 3; do
  port=$(free_port)
  replica_ports+=("$port")
  "$tf" serve --bind "127.0.0.1:$port" --data-dir "$data" >"$work/replica$n.log" 2>&1 &
  pids+=($!)
done
front=$(free_port)
{
  printf 'defaults\n  mode http\n  option http-server-close\n  timeout connect 2s\n'
  printf '  timeout client 120s\n  timeout server 120s\n  timeout queue 30s\n'
  printf 'frontend testflinger\n  bind 127.0.0.1:%s\n  default_backend tf_replicas\n' "$front"
  printf 'backend tf_replicas\n  balance leastconn\n  option httpchk GET /healthz\n'
  printf '  http-check expect status 200\n'
  printf '  default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions\n'
  printf '  retries 2\n  option redispatch 1\n'
  for n in 1 2 3; do printf '  server replica%s 127.0.0.1:%s check\n' "$n" "${replica_ports[$((n-1))]}"; done
} > "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
url="http://127.0.0.1:$front"
for _ in $(seq 100); do curl -fs "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "HAProxy at $url, replicas on ports ${replica_ports[*]}"

token=$(curl -fs -u "drill-agent:$(cat "$work/agent.secret")" -X POST "$url/v1/oauth2/token" \
  | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "ha-drill: the agent could not log in" >&2; exit 1; }
submit() { curl -s -o "$work/answer" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"job_queue\": \"$1\"}" "$url/v1/job"; }
job_id() { sed -n 's/.*"job_id": *"\([^"]*\)".*/\1/p' "$work/answer"; }
submit_until_acknowledged() { # queue: retries like a client, printing what it is answered
  local status
  for _ in $(seq 600); do
    status=$(submit "$1") || status=000
    [ "$status" = 200 ] && { job_id; return; }
    echo "  a submit was answered $status" >&2
    sleep 0.2
  done
  echo "ha-drill: no submit was acknowledged" >&2; exit 1
}
claim() { # queue: as an agent, long-polling, retrying after errors
  local status answer="$work/claimed.$BASHPID"
  for _ in $(seq 300); do
    status=$(curl -s -o "$answer" -w '%{http_code}' -H "Authorization: Bearer $token" \
      -b agent_name=drill-agent "$url/v1/job?queue=$1&wait=5") || status=000
    [ "$status" = 200 ] && { sed -n 's/.*"job_id": *"\([^"]*\)".*/\1/p' "$answer"; return; }
    sleep 0.2
  done
  echo "ha-drill: the agent got no job" >&2; exit 1
}

say "1. kill -9 replica 1 while an agent long-polls"
claim drill > "$work/first-claim" &
poller=$!
sleep 0.5
kill -9 "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
echo "replica 1 killed"
first=$(submit_until_acknowledged drill)
echo "submitted $first"
wait "$poller"
got=$(cat "$work/first-claim")
echo "the agent got $got"
[ "$got" = "$first" ] || { echo "ha-drill: FAILED: the agent got '$got', not $first" >&2; exit 1; }

say "2. stop the primary, promote the standby"
before=$(submit_until_acknowledged drill)
echo "submitted $before before the switch"
pg pg_ctl stop -m fast -D "$work/primary" >/dev/null
echo "primary stopped; a client submitting now is answered:"
echo "  $(submit drill) $(head -c 200 "$work/answer")"
pg pg_ctl promote -w -D "$work/standby" >/dev/null
echo "standby promoted"
after=$(submit_until_acknowledged drill)
echo "submitted $after after the switch"
claimed="$(claim drill) $(claim drill)"
for id in "$before" "$after"; do
  case " $claimed " in *" $id "*) ;; *) echo "ha-drill: FAILED: $id was not served after the switch" >&2; exit 1 ;; esac
done
echo "the agent got $claimed"

say "PASSED: no acknowledged job lost, each served once, through a dead replica and a failover"
