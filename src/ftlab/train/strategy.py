"""How the ranks of a job share the work: Lightning's strategy built from trainer.strategy and trainer.fsdp.

ftlab launches nothing and communicates nothing by itself: Lightning starts the ranks (or finds the ones torchrun
or srun started) and torch.distributed moves the tensors. What is ftlab's is the choice of strategy for a LoRA
model and the settings that make it correct:

  ddp   every rank holds the whole model; LoRA gradients are averaged over ranks after each backward.
  fsdp  parameters, gradients and optimizer state are sharded. Each decoder layer is an FSDP unit (the model's
        _no_split_modules) and each LoRA weight one of its own (PEFT's wrapping policy), use_orig_params for units
        that hold frozen and trainable weights, optional activation checkpointing on the decoder layers, and full
        state dicts gathered to rank 0 for the checkpoint and the adapter (adapter_state_dict).
"""

from typing import Optional

from ftlab.model.load import decoder_layer_classes


def make_strategy(t, model):
    """`t`: the trainer options. Returns what L.Trainer(strategy=...) takes."""
    ranks = t.devices * t.num_nodes
    if t.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy
        from peft.utils.other import fsdp_auto_wrap_policy

        layers = decoder_layer_classes(model)
        return FSDPStrategy(
            # PEFT's policy: each decoder layer a unit, and each trainable LoRA leaf a unit of its own, since PEFT
            # keeps adapter weights in float32 beside a bfloat16 base and a unit flattens one dtype
            auto_wrap_policy=fsdp_auto_wrap_policy(model),
            activation_checkpointing_policy=layers if t.fsdp.activation_checkpointing else None,
            sharding_strategy=t.fsdp.sharding_strategy,
            cpu_offload=t.fsdp.cpu_offload,
            use_orig_params=True,  # LoRA: trainable and frozen weights in one unit
            state_dict_type="full",  # checkpoints and the adapter as one file each, written by rank 0
            limit_all_gathers=True,
        )
    if t.strategy == "ddp" or ranks > 1:
        from lightning.pytorch.strategies import DDPStrategy

        # gradient checkpointing re-runs the forward in the backward; DDP must then not hook each parameter
        # twice, which static_graph handles (the graph of a LoRA step is the same every step)
        return DDPStrategy(static_graph=True) if model.is_activation_checkpointing else DDPStrategy()
    return "auto"


def adapter_state_dict(trainer) -> Optional[dict]:
    """For PeftModel.save_pretrained(state_dict=...): under FSDP, the model's whole state dict gathered to rank 0
    (every rank must call this: the shards are collected); None elsewhere, where the model holds its weights whole
    and save_pretrained reads them itself."""
    strategy = trainer.strategy
    if type(strategy).__name__ != "FSDPStrategy":
        return None
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    wrapped = strategy.model
    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, config):
        full = wrapped.state_dict()
    prefix = "model."  # the LightningModule holds the PEFT model as .model
    return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)} if trainer.is_global_zero else None


def all_ranks(trainer, tensor) -> list:
    """`tensor` of every rank, in rank order, on the CPU (a collective: every rank calls it with one of the same
    shape and dtype). torch.distributed directly: Lightning's all_gather goes through a deprecated path."""
    import torch

    if trainer.world_size == 1:
        return [tensor.cpu()]
    device = trainer.strategy.root_device
    gathered = [torch.empty_like(tensor, device=device) for _ in range(trainer.world_size)]
    torch.distributed.all_gather(gathered, tensor.to(device))
    return [g.cpu() for g in gathered]


def per_rank(trainer, value: float) -> list:
    """`value` of every rank, in rank order (a collective: every rank calls it)."""
    import torch

    return [float(g) for g in all_ranks(trainer, torch.tensor(value, dtype=torch.float64))]
