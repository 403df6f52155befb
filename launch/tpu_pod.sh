#!/usr/bin/env bash
# The same command on every worker of a Cloud TPU VM slice (v4-32, v5p-64, v6e-64, ...).
#
#   launch/tpu_pod.sh TPU_NAME ZONE -- python -m alitok_jax.main --config=configs/ar.py:XL \
#       --workdir=/mnt/shared/runs/ar_xl --config.data.codes_dir=/mnt/shared/codes/train
#
# Each worker runs `cd $REPO_DIR && . $VENV/bin/activate && ALITOK_DISTRIBUTED=1 COMMAND`;
# ALITOK_DISTRIBUTED=1 makes alitok_jax call jax.distributed.initialize() with no arguments, and
# JAX finds the slice's coordinator, process count and process ids from the TPU metadata by
# itself. Every worker feeds its own part of each global batch (launch/README.md).
#
# Before the first run: the repository and its virtual environment (requirements.txt plus
# jax[tpu]) at the same path on every worker, e.g.
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all \
#       --command 'git clone <this repository> ~/alitok_jax && cd ~/alitok_jax && \
#                  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt "jax[tpu]"'
# and a workdir that every worker sees at the same path (Filestore NFS or a gcsfuse-mounted
# bucket): checkpoints are written by all workers together, logs by worker 0.
#
# Optional environment: PROJECT (gcloud --project), REPO_DIR (default ~/alitok_jax), VENV
# (default $REPO_DIR/.venv; empty: none), EXTRA_ENV (more VAR=value pairs for the workers, e.g.
# "XLA_FLAGS=--xla_tpu_enable_latency_hiding_scheduler=true"), DRY_RUN=1 (print the gcloud
# command instead of running it).
set -euo pipefail

usage() {
  echo "usage: $0 TPU_NAME ZONE -- COMMAND [ARGS...]" >&2
  exit 2
}

[[ $# -ge 4 && "$3" == "--" ]] || usage
tpu_name=$1
zone=$2
shift 3

repo_dir=${REPO_DIR:-'~/alitok_jax'}
venv=${VENV-"$repo_dir/.venv"}

# The remote command line: the repository, the environment, then COMMAND with its arguments
# quoted for the remote shell.
remote="cd $repo_dir"
if [[ -n "$venv" ]]; then
  remote+=" && . $venv/bin/activate"
fi
remote+=" && env ALITOK_DISTRIBUTED=1 ${EXTRA_ENV:-}"
for arg in "$@"; do
  remote+=" $(printf '%q' "$arg")"
done

cmd=(gcloud compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker=all --command "$remote")
if [[ -n "${PROJECT:-}" ]]; then
  cmd+=(--project "$PROJECT")
fi

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
