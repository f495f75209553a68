"""Ranks that torchrun or srun started agree on one run dir before Hydra makes it.

Each rank runs the whole command, and each would pick its own outputs/DATE/TIME. Rank 0's choice is broadcast
over the process group Lightning then trains with (Lightning reuses an initialised group), found through the
same cluster environments Lightning uses to detect the launcher. Lightning's own launcher needs none of this: it
passes the run dir to the processes it starts.
"""

import atexit
import os

import torch
import torch.distributed as dist


def agree_on_run_dir(proposal: str, accelerator: str) -> str:
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    env = TorchElasticEnvironment() if TorchElasticEnvironment.detect() else SLURMEnvironment()
    gpu = accelerator in ("gpu", "auto") and torch.cuda.is_available()
    if gpu:  # NCCL moves objects through the rank's own GPU
        torch.cuda.set_device(env.local_rank())
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo", rank=env.global_rank(), world_size=env.world_size())
        # Lightning tears down only the groups it made itself; a gloo group still alive when the interpreter exits
        # lets its worker threads be destroyed while joinable, and that rank dies with SIGABRT after a good run
        atexit.register(_leave)
    box = [proposal]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
