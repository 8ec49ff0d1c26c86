#!/usr/bin/env bash
# Launch the same `gopher-jax ...` command on every worker of a Cloud TPU VM slice (or of several
# slices over DCN), with the code copied from this checkout and installed on each worker.
#
#   ./launch_tpu.sh --name=gopher --zone=us-central2-b --accelerator=v4-16 [--create] [--delete] \
#       [--num_slices=2] [--project=P] [--version=tpu-ubuntu2204-base] [--python=python3.11] [--env=K=V]... \
#       [--dry-run] [--requeue] [--print-worker-setup] \
#       -- gopher-jax train --gin_file=gin_configs/parallel/chinchilla_70b_v4.gin --workdir=gs://BUCKET/run
#   (each parallel/*_v*.gin recipe includes its paper run file, gin_configs/runs/, and so sets the whole run)
#
# Python: jax>=0.10 and flax>=0.12 need Python >= 3.11 (their wheels' Requires-Python), but the
# runtime Google lists for v4 and older (tpu-ubuntu2204-base, Ubuntu 22.04) ships python3 = 3.10.
# The worker set-up therefore uses --python (default python3.11; Ubuntu 22.04's universe has the
# python3.11 and python3.11-venv packages, apt-installed when the interpreter is missing), checks its
# version before installing anything, and installs into a venv at ~/gopher_jax_venv whose bin/ is put
# first on PATH for the command. A wrong version stops with an error naming --python.
# --print-worker-setup prints that set-up script (what runs on every worker) and exits.
#
# Steps: [create] -> copy code (tpu-vm scp) -> worker set-up (Python check, venv, pip install -e .[tpu])
# -> run on --worker=all (one gcloud ssh per slice, in parallel; output streamed here and saved in
# --logdir) -> collect each worker's log -> [delete]. The workdir must be shared by all hosts (a gs:// bucket): every host
# writes its part of each orbax checkpoint there. On TPU VMs jax.distributed configures itself
# (gopher_jax/distributed.py, GOPHER_JAX_DISTRIBUTED=auto); multi-slice runs also get MEGASCALE_*.
# --dry-run prints every command instead of running it. --delete without a command only deletes.
# --requeue: rerun the command (with --resume) on every worker while it exits 75 (preempted).
set -euo pipefail

NAME="" ZONE="" ACCELERATOR="" PROJECT="" VERSION="tpu-ubuntu2204-base"
NUM_SLICES=1 CREATE=0 DELETE=0 DRY_RUN=0 REQUEUE=0 LOGDIR="tpu_logs" PYTHON="python3.11" PRINT_SETUP=0
MIN_PYTHON="3.11"                  # setup.py python_requires: jax>=0.10 / flax>=0.12 need it
VENV_DIR="gopher_jax_venv"         # under each worker's home
EXIT_PREEMPTED=75                  # gopher_jax/train/signals.py: checkpoint written, rerun with --resume
ENVS=()
CMD=()
REMOTE_DIR="gopher_jax"            # under each worker's home
MEGASCALE_PORT=8080

die() { echo "launch_tpu.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --accelerator=*) ACCELERATOR="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --python=*) PYTHON="${1#*=}" ;;
    --print-worker-setup) PRINT_SETUP=1 ;;
    --num_slices=*) NUM_SLICES="${1#*=}" ;;
    --logdir=*) LOGDIR="${1#*=}" ;;
    --env=*) ENVS+=("${1#*=}") ;;
    --create) CREATE=1 ;;
    --delete) DELETE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --requeue) REQUEUE=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    --) shift; CMD=("$@"); break ;;
    *) die "unknown argument '$1' (flags use --flag=value; put the command after --)" ;;
  esac
  shift
done

[[ "$PYTHON" =~ ^[A-Za-z0-9_./-]+$ ]] || die "--python=$PYTHON must be an interpreter name or path, e.g. --python=python3.11"

# The script every worker runs before the command: find or install --python, check its version (before
# installing anything), make the venv, install this checkout into it.
worker_setup() {
  cat <<SETUP
set -euo pipefail
py="$PYTHON"
if ! command -v "\$py" >/dev/null 2>&1 && [[ "\$py" == python3.11 ]]; then
  echo "worker \$(hostname): \$py not found; installing Ubuntu's python3.11 python3.11-venv" >&2
  sudo DEBIAN_FRONTEND=noninteractive apt-get -qq update
  sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3.11 python3.11-venv
fi
command -v "\$py" >/dev/null 2>&1 || { echo "launch_tpu.sh: worker \$(hostname) has no '\$py'; pass --python=python3.11 (apt-installed when missing) or the path of a Python >= $MIN_PYTHON" >&2; exit 3; }
version="\$("\$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
IFS=. read -r major minor <<<"\$version"
if (( major < ${MIN_PYTHON%%.*} || (major == ${MIN_PYTHON%%.*} && minor < ${MIN_PYTHON#*.}) )); then
  echo "launch_tpu.sh: worker \$(hostname): \$py is Python \$version but gopher_jax needs >= $MIN_PYTHON (jax and flax wheels); pass --python=python3.11 (apt-installed when missing) or --python=/path/to/python3.11+" >&2
  exit 3
fi
mkdir -p ~/$REMOTE_DIR
tar -xzf ~/gopher_jax.tgz -C ~/$REMOTE_DIR
"\$py" -m venv ~/$VENV_DIR
~/$VENV_DIR/bin/python -m pip install -q -e ~/$REMOTE_DIR'[tpu]'
SETUP
}

if [[ $PRINT_SETUP -eq 1 ]]; then worker_setup; exit 0; fi

[[ -n "$NAME" ]] || die "--name=NAME is required (the TPU VM or queued-resource name)"
[[ -n "$ZONE" ]] || die "--zone=ZONE is required, e.g. --zone=us-central2-b"
[[ "$NUM_SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num_slices=$NUM_SLICES must be a positive integer"
if [[ $CREATE -eq 1 && -z "$ACCELERATOR" ]]; then
  die "--create needs --accelerator=TYPE, e.g. --accelerator=v4-16 or v3-2048"
fi
if [[ ${#CMD[@]} -eq 0 && $DELETE -eq 0 && $CREATE -eq 0 ]]; then
  die "nothing to do: give a command after --, or --create / --delete"
fi
for kv in "${ENVS[@]+"${ENVS[@]}"}"; do
  [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env=$kv must look like --env=NAME=value"
done

COMMON=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project="$PROJECT")

# Runs a command, or prints it (shell-quoted) under --dry-run.
run() {
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

# Node names: one VM for a single slice; queued resources name theirs PREFIX-0 .. PREFIX-(N-1).
NODES=()
if [[ $NUM_SLICES -eq 1 ]]; then
  NODES=("$NAME")
else
  for ((i = 0; i < NUM_SLICES; i++)); do NODES+=("$NAME-$i"); done
fi

if [[ $CREATE -eq 1 ]]; then
  if [[ $NUM_SLICES -eq 1 ]]; then
    run gcloud compute tpus tpu-vm create "$NAME" "${COMMON[@]}" --accelerator-type="$ACCELERATOR" \
      --version="$VERSION"
  else
    run gcloud compute tpus queued-resources create "$NAME" "${COMMON[@]}" --accelerator-type="$ACCELERATOR" \
      --runtime-version="$VERSION" --node-count="$NUM_SLICES" --node-prefix="$NAME"
    if [[ $DRY_RUN -eq 0 ]]; then
      # Queued resources are granted asynchronously; wait until every slice is up.
      until [[ "$(gcloud compute tpus queued-resources describe "$NAME" "${COMMON[@]}" \
                  --format='value(state.state)')" == "ACTIVE" ]]; do
        echo "waiting for queued resource $NAME to become ACTIVE ..." >&2
        sleep 30
      done
    fi
  fi
fi

if [[ ${#CMD[@]} -gt 0 ]]; then
  # Copy this checkout (without .git and local runs) to every worker, then install it there.
  REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  TARBALL="${TMPDIR:-/tmp}/gopher_jax-$NAME.tgz"
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files: never a local .venv, runs/ or caches.
    FILELIST="${TMPDIR:-/tmp}/gopher_jax-$NAME.files"
    git -C "$REPO" ls-files --cached --others --exclude-standard > "$FILELIST"
    run tar -czf "$TARBALL" -C "$REPO" --ignore-failed-read --exclude="$LOGDIR" -T "$FILELIST"
  else
    run tar -czf "$TARBALL" -C "$REPO" --exclude=.git --exclude=.venv --exclude=venv --exclude=runs \
      --exclude="$LOGDIR" --exclude='*.egg-info' --exclude=__pycache__ .
  fi
  for node in "${NODES[@]}"; do
    run gcloud compute tpus tpu-vm scp "$TARBALL" "$node:~/gopher_jax.tgz" "${COMMON[@]}" --worker=all
    run gcloud compute tpus tpu-vm ssh "$node" "${COMMON[@]}" --worker=all --command="$(worker_setup)"
  done

  COORDINATOR=""
  if [[ $NUM_SLICES -gt 1 ]]; then
    if [[ $DRY_RUN -eq 1 ]]; then
      COORDINATOR="<ip-of-${NODES[0]}-worker-0>"
      run gcloud compute tpus tpu-vm describe "${NODES[0]}" "${COMMON[@]}" --format='value(networkEndpoints[0].ipAddress)'
    else
      COORDINATOR="$(gcloud compute tpus tpu-vm describe "${NODES[0]}" "${COMMON[@]}" \
                     --format='value(networkEndpoints[0].ipAddress)')"
    fi
  fi

  [[ $DRY_RUN -eq 1 ]] || mkdir -p "$LOGDIR"
  if [[ $REQUEUE -eq 1 && " ${CMD[*]} " != *" --resume "* ]]; then
    CMD+=(--resume)  # requeued runs continue from the newest checkpoint (a fresh workdir starts at 0)
  fi
  QUOTED_CMD="$(printf '%q ' "${CMD[@]}")"
  PIDS=()
  for i in "${!NODES[@]}"; do
    node="${NODES[$i]}"
    # pipefail: the worker's exit status is gopher-jax's, not tee's. GOPHER_JAX_DISTRIBUTED=auto:
    # every worker calls jax.distributed.initialize(), which reads the slice from the TPU metadata.
    exports="set -o pipefail; export PATH=\$HOME/$VENV_DIR/bin:\$PATH GOPHER_JAX_DISTRIBUTED=auto; "
    for kv in "${ENVS[@]+"${ENVS[@]}"}"; do exports+="export $(printf '%q' "$kv"); "; done
    if [[ $NUM_SLICES -gt 1 ]]; then
      exports+="export MEGASCALE_COORDINATOR_ADDRESS=$COORDINATOR:$MEGASCALE_PORT MEGASCALE_NUM_SLICES=$NUM_SLICES "
      exports+="MEGASCALE_SLICE_ID=$i MEGASCALE_PORT=$MEGASCALE_PORT; "
    fi
    remote="${exports}cd ~/$REMOTE_DIR && mkdir -p logs && ${QUOTED_CMD}2>&1 | tee logs/train-\$(hostname).log"
    if [[ $REQUEUE -eq 1 ]]; then
      # SIGTERM (preemption) makes the trainer checkpoint and exit 75: run it again until another code.
      remote="${exports}cd ~/$REMOTE_DIR && mkdir -p logs && while true; do ${QUOTED_CMD}2>&1 | tee -a logs/train-\$(hostname).log; \
code=\$?; [ \$code -eq $EXIT_PREEMPTED ] || exit \$code; echo 'preempted (exit $EXIT_PREEMPTED): resuming'; done"
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
      run gcloud compute tpus tpu-vm ssh "$node" "${COMMON[@]}" --worker=all --command="$remote"
    else
      # One ssh per slice, all in parallel; workers' output interleaves here and lands in LOGDIR.
      gcloud compute tpus tpu-vm ssh "$node" "${COMMON[@]}" --worker=all --command="$remote" \
        2>&1 | tee "$LOGDIR/$node.log" &
      PIDS+=($!)
    fi
  done
  STATUS=0
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$pid" || STATUS=1; done
  for node in "${NODES[@]}"; do
    run gcloud compute tpus tpu-vm scp "$node:~/$REMOTE_DIR/logs/*" "$LOGDIR/" "${COMMON[@]}" --worker=all || STATUS=1
  done
  [[ $STATUS -eq 0 ]] || echo "launch_tpu.sh: a worker failed; see $LOGDIR/" >&2
fi

if [[ $DELETE -eq 1 ]]; then
  if [[ $NUM_SLICES -eq 1 ]]; then
    run gcloud compute tpus tpu-vm delete "$NAME" "${COMMON[@]}" --quiet
  else
    run gcloud compute tpus queued-resources delete "$NAME" "${COMMON[@]}" --force --quiet
  fi
fi
exit "${STATUS:-0}"
