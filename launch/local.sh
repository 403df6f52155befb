#!/usr/bin/env bash
# N processes of one command on this machine, wired to one JAX coordinator: multi-host on a laptop.
#
#   launch/local.sh 2 -- python -m alitok_jax.main --config=configs/ar.py:tiny --workdir=runs/mp
#
# Every process gets JAX_COORDINATOR_ADDRESS (localhost and a free port), JAX_NUM_PROCESSES=N and
# its JAX_PROCESS_ID; `alitok_jax/parallel/distributed.py` reads them and calls
# jax.distributed.initialize (with gloo collectives on CPU). JAX_PLATFORMS defaults to cpu, so
# each process owns one CPU device (more with XLA_FLAGS=--xla_force_host_platform_device_count=K).
# Output lines are prefixed with the process id ([0] ..., [1] ...). If one process fails, the
# others are stopped (they would otherwise wait at the next collective forever); the exit status
# is the first non-zero one, or 0.
#
# Optional environment: LOCAL_PORT (coordinator port; default: a free one), LOCAL_LOG_DIR (also
# write each process's output to LOCAL_LOG_DIR/process_<i>.log).
set -euo pipefail

usage() {
  echo "usage: $0 N -- COMMAND [ARGS...]   (N >= 1 processes of COMMAND on this machine)" >&2
  exit 2
}

[[ $# -ge 3 && "$1" =~ ^[1-9][0-9]*$ && "$2" == "--" ]] || usage
num_processes=$1
shift 2

if [[ -n "${LOCAL_PORT:-}" ]]; then
  port=$LOCAL_PORT
else
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi

export JAX_COORDINATOR_ADDRESS="localhost:${port}"
export JAX_NUM_PROCESSES="$num_processes"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export PYTHONUNBUFFERED=1
if [[ -n "${LOCAL_LOG_DIR:-}" ]]; then
  mkdir -p "$LOCAL_LOG_DIR"
fi

pids=()
pid_index() {
  local i
  for i in "${!pids[@]}"; do
    [[ "${pids[$i]}" == "$1" ]] && echo "$i" && return
  done
  echo '?'
}
cleanup() {  # SIGTERM first (a trainer saves if it can), SIGKILL after 10 s
  local pid t
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for ((t = 0; t < 20; t++)); do
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || return 0
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

prefix() {  # copies stdin to stdout line by line as "[i] line" (and to a log file if given)
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    printf '[%s] %s\n' "$1" "$line"
    if [[ -n "${2:-}" ]]; then
      printf '%s\n' "$line" >> "$2"
    fi
  done
}

for ((i = 0; i < num_processes; i++)); do
  log=''
  if [[ -n "${LOCAL_LOG_DIR:-}" ]]; then
    log="$LOCAL_LOG_DIR/process_$i.log"
    : > "$log"
  fi
  JAX_PROCESS_ID=$i "$@" > >(prefix "$i" "$log") 2>&1 &
  pids+=("$!")
done

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  left=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      left+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code != 0 && status == 0)); then
      status=$code
      echo "local.sh: process $(pid_index "$pid") (pid $pid) exited with status $code;" \
        "stopping the others" >&2
      cleanup
    fi
  done
  running=("${left[@]+"${left[@]}"}")
  ((${#running[@]} == 0)) || sleep 0.2
done
wait  # let the output filters drain
exit "$status"
