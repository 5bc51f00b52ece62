#!/bin/bash
# properties = {properties}
# crossmodal job script for PBS Pro on Polaris (profiles/polaris/jobscript.sh).
# qsub options come from `python -m crossmodal.cluster.pbs submit` (see crossmodal/cluster/pbs.py).
set -e
cd "${{PBS_O_WORKDIR:-$PWD}}"
echo "crossmodal: PBS job ${{PBS_JOBID:-?}} on $(hostname) in $PWD, $(date -Is)" >&2
# the training steps stop with a checkpoint before the walltime (crossmodal.training reads this)
if [ -n "${{CROSSMODAL_WALLTIME_S:-}}" ]; then
  export CROSSMODAL_JOB_END=$(( $(date +%s) + CROSSMODAL_WALLTIME_S ))
fi
# site setup (modules, proxies for downloads): a file named by CROSSMODAL_PBS_SETUP, if any
if [ -n "${{CROSSMODAL_PBS_SETUP:-}}" ]; then
  # shellcheck disable=SC1090
  source "$CROSSMODAL_PBS_SETUP"
fi
# preemptable jobs are killed without warning: training also checkpoints every 30 min
export CROSSMODAL_CHECKPOINT_EVERY_S=${{CROSSMODAL_CHECKPOINT_EVERY_S:-1800}}
# the node's 4 GPUs: the jobs of a group job each claim their own (crossmodal.training.claim_gpus)
export CROSSMODAL_GPU_SLOTS=${{CROSSMODAL_GPU_SLOTS:-4}}
{exec_job}
