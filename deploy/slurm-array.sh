#!/bin/bash
# afterimage on Slurm: one shared run, one worker per array task, exactly num_dialogs
# rows. Every task runs the same command; the first creates the run in PostgreSQL, the
# others join it. A preempted or failed task loses its leases after --lease seconds and
# the other tasks take its dialogs over; --requeue lets Slurm start it again.
#
#   sbatch deploy/slurm-array.sh
#   afterimage status "$AFTERIMAGE_DB" --run support-v3      # from the login node
#   afterimage cancel "$AFTERIMAGE_DB" --run support-v3      # stop the fleet cleanly
#
# One worker is usually enough for one API key: the key's rate limit, which the workers
# share, bounds the run. More workers pay off with local model servers (one per GPU
# node), several keys or providers, or preemptible partitions.
#SBATCH --job-name=afterimage-support-v3
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --time=12:00:00
#SBATCH --requeue
# Slurm sends SIGTERM this long before the kill at the time limit or on preemption;
# afterimage's own grace (--grace, default 25 s) fits inside it.
#SBATCH --signal=TERM@30
set -euo pipefail

# The key and the database URL come from the environment (for example a file only
# you can read, sourced here), never from this script.
: "${OPENAI_API_KEY:?export OPENAI_API_KEY (or source your key file) before sbatch}"
: "${AFTERIMAGE_DB:?export AFTERIMAGE_DB=postgres://user:password@host:5432/db}"

exec afterimage generate \
    --config run.yaml \
    --out "$AFTERIMAGE_DB" \
    --run support-v3 \
    --join \
    --lease 30
