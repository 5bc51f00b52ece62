#!/usr/bin/env bash
# Stop exactly the daemons tests/slurm/up.sh started (newest first), by the PIDs it recorded.
SLURM_DIR=${SLURM_DIR:?set SLURM_DIR}
PIDS="$SLURM_DIR/pids"
[ -f "$PIDS" ] || exit 0
for pid in $(tac "$PIDS"); do
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 40); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(ps -o stat= -p "$pid" 2>/dev/null)" = Z ] && break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
done
: > "$PIDS"
# the /etc/slurm/slurm.conf symlink up.sh made
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null || true)" = "$SLURM_DIR/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
