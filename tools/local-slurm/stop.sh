#!/usr/bin/env bash
# Stop every daemon tools/local-slurm/start.sh started, each by the PID in its pid file
# (never by name, so nothing else on the machine is touched). Safe when nothing runs.
set -uo pipefail
DIR=${BRAINSSL_SLURM_DIR:-/tmp/brainssl-slurm}

say() { printf '[local-slurm %(%H:%M:%S)T] %s\n' -1 "$*"; }

stop() {  # stop PIDFILE NAME
  local pidfile=$1 name=$2 pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  if [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$name" ]]; then rm -f "$pidfile"; return 0; fi
  kill "$pid"
  for _ in $(seq 80); do
    kill -0 "$pid" 2>/dev/null || { say "$name stopped"; rm -f "$pidfile"; return 0; }
    sleep 0.25
  done
  kill -9 "$pid" 2>/dev/null
  rm -f "$pidfile"
  say "$name killed"
}

stop "$DIR/run/slurmd.pid" slurmd
stop "$DIR/run/slurmctld.pid" slurmctld
stop "$DIR/run/slurmdbd.pid" slurmdbd
stop /run/mysqld/mysqld.pid mariadbd
stop /run/munge/munged.pid munged
