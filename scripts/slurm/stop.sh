#!/usr/bin/env bash
# Stop the daemons scripts/slurm/start.sh STATE_DIR started (by their recorded PIDs only).
#   scripts/slurm/stop.sh STATE_DIR
set -uo pipefail
state=${1:?usage: stop.sh STATE_DIR}
for name in slurmd slurmctld munged; do
    file="$state/$name.pid"
    [ -s "$file" ] || continue
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$file"
done
if [ -s "$state/etc_link" ]; then
    link=$(cat "$state/etc_link")
    [ -L "$link" ] && [ "$(readlink "$link")" = "$state/slurm.conf" ] && rm -f "$link"
    rm -f "$state/etc_link"
fi
echo "stop.sh: stopped the test cluster in $state"
