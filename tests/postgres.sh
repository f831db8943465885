#!/usr/bin/env bash
# A local PostgreSQL for the sweep's tests, as root on Debian: installs the server if missing, starts its cluster,
# creates a role and a database of their own (password login over 127.0.0.1), and prints the URL to export as
# SWEEP_POSTGRES_URL. Run again, it changes nothing but starting a stopped cluster.
set -euo pipefail
exec 3>&1 1>&2  # stdout holds the URL alone; what the tools print goes to stderr
if ! command -v pg_lsclusters >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if [ -z "$(pg_lsclusters --no-header)" ]; then
  pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >/dev/null
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -1)
# The server keeps every file the shell that starts it holds open: started with fd 3 (the pipe of
# `$(bash tests/postgres.sh)`) it would keep that pipe open, and the caller would wait for its end forever.
# So it starts with nothing open but stdin, stdout and stderr. (pg_ctl refuses root; pg_ctlcluster does not.)
start_server() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
  exec pg_ctlcluster "$version" "$cluster" start
}
[ "$status" = online ] || (start_server)
sql() { runuser -u postgres -- psql -p "$port" -qtAc "$1"; }
[ "$(sql "SELECT 1 FROM pg_roles WHERE rolname = 'mnist'")" = 1 ] || sql "CREATE ROLE mnist"
sql "ALTER ROLE mnist WITH LOGIN PASSWORD 'sweeps-only'"  # a password found nowhere else in what the tests print
[ "$(sql "SELECT 1 FROM pg_database WHERE datname = 'mnist_sweep'")" = 1 ] ||
  runuser -u postgres -- createdb -p "$port" -O mnist mnist_sweep
echo "postgresql+psycopg://mnist:sweeps-only@127.0.0.1:$port/mnist_sweep" >&3
