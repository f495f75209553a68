"""Which process of a distributed job this is, read from the launcher's environment (no torch, no collectives).

Every rank of a job runs the whole command (`python -m ftlab ...`); they learn their place from what the
launcher exported, before anything else runs, so rank 0 alone can claim the run dir, print and write files:

  torchrun / torch.distributed.run   RANK, WORLD_SIZE, LOCAL_RANK
  SLURM srun                         SLURM_PROCID, SLURM_NTASKS
  Lightning's own launcher           LOCAL_RANK (and NODE_RANK) in the processes it starts for devices > 1; the
                                     process that starts them is rank 0 and has none of these
"""

import os


def is_main() -> bool:
    """True in the one process that prints, writes the run's files and talks to trackers and the Hub."""
    env = os.environ
    if "RANK" in env:
        return env["RANK"] == "0"
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return env["SLURM_PROCID"] == "0"
    # Lightning's launcher (and a user starting nodes by hand) sets these; the process that starts a node's
    # other ranks has neither before it starts them
    return env.get("NODE_RANK", "0") == "0" and env.get("LOCAL_RANK", "0") == "0"


def local_rank() -> int:
    """This process's index on its machine: the GPU it trains on."""
    env = os.environ
    return int(env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0")))


def launched_externally() -> bool:
    """True when torchrun or srun started several ranks, each of which must agree on one run dir."""
    env = os.environ
    if "RANK" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        return True
    return int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env
