#!/usr/bin/env bash
# Starts the services the tests talk to, if they are not running already:
# PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres) and NATS with
# JetStream on 127.0.0.1:4222. Waits until both accept connections.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    sleep 0.1
  done
  echo "services.sh: $1 did not come up on 127.0.0.1:$2" >&2
  return 1
}

if ! port_open 5432; then
  echo "services.sh: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_for PostgreSQL 5432 60
if command -v pg_isready >/dev/null; then
  for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.1; done
fi

if ! port_open 4222; then
  echo "services.sh: starting NATS"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
wait_for NATS 4222 30
