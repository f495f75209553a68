"""PreferenceModule: DPO, IPO, hinge, ORPO, SimPO and KTO on the LoRA model, as a LoRAModule whose step scores
whole answers instead of tokens.

One forward pass scores a micro-batch: the collator puts the chosen and the rejected answers (KTO: the answers and
the mismatched pairs) in one batch of rows (data/batching.py). The reference, for DPO and KTO, is the same loaded
weights with the adapter switched off, run without gradients on the same rows: no second copy of the model.

A step's loss is the mean over the step's examples on every rank (data/steps.py counts them, as it counts tokens
for SFT). Logged per step and per validation: the loss, the chosen and rejected rewards, their margin and the
accuracy (the share of pairs whose chosen reward beats the rejected one; KTO: of examples whose reward has the
sign its label asks for).
"""

import torch

from ftlab.train import preference_losses as losses
from ftlab.train.module import LoRAModule
from ftlab.use.logprobs import answer_logps

# the sums a step or a validation pass collects, in this order, before the ratios are logged
_SUMS = ("loss", "chosen_reward", "rejected_reward", "correct", "examples", "chosen", "rejected")
REFERENCED = ("dpo", "kto")  # the methods whose rewards are relative to the reference model


class PreferenceModule(LoRAModule):
    def __init__(
        self,
        model,
        *,
        method: str,
        loss: str,
        beta: float,
        label_smoothing: float,
        odds_ratio_weight: float,
        gamma: float,
        desirable_weight: float,
        undesirable_weight: float,
        **optim,
    ):
        """`method` and the rest: the method options (config.schema.MethodOptions); `optim`: LoRAModule's."""
        super().__init__(model, **optim)
        self.method, self.loss_name, self.beta, self.label_smoothing = method, loss, beta, label_smoothing
        self.odds_ratio_weight, self.gamma = odds_ratio_weight, gamma
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight
        self._step_sums = self._val_sums = None

    def sequence_logps(self, batch, reference: bool = False) -> tuple:
        """(summed log-probability of each row's labelled tokens, their number): under the adapter model, or with
        `reference` under the base weights with the adapter off (no gradients)."""
        self._set_casting(not torch.is_autocast_enabled(batch["input_ids"].device.type))
        if not reference:
            return answer_logps(self.model, batch, self._keeps_logits)
        with torch.no_grad(), self.model.disable_adapter():
            return answer_logps(self.model, batch, self._keeps_logits)

    def score(self, batch) -> tuple:
        """(loss of each example, its sums for logging as a vector in _SUMS order) for one micro-batch."""
        policy, count = self.sequence_logps(batch)
        reference = self.sequence_logps(batch, reference=True)[0] if self.method in REFERENCED else None
        half = policy.shape[0] // 2
        real = count[:half] > 0  # a filler row (a rank with no share of a short last batch) scores nothing
        if self.method == "kto":
            desirable = batch["desirable"]
            kl = (policy[half:] - reference[half:]).detach()
            kl = (kl * real).sum() / real.sum().clamp(min=1)
            per, reward = losses.kto(
                policy[:half],
                reference[:half],
                desirable,
                kl,
                self.beta,
                self.desirable_weight,
                self.undesirable_weight,
            )
            good, bad = desirable & real, ~desirable & real
            correct = torch.where(desirable, reward > 0, reward < 0) & real
            sums = [per[real].sum(), reward[good].sum(), reward[bad].sum(), correct.sum(), real.sum()]
            sums += [good.sum(), bad.sum()]
            return per * real, torch.stack([torch.as_tensor(s, dtype=torch.float64) for s in sums])
        if self.method == "dpo":
            per, chosen, rejected = losses.dpo(
                policy[:half],
                policy[half:],
                reference[:half],
                reference[half:],
                self.beta,
                self.loss_name,
                self.label_smoothing,
            )
        else:
            mean = policy / count.clamp(min=1)
            if self.method == "orpo":
                per, chosen, rejected = losses.orpo(mean[:half], mean[half:], self.odds_ratio_weight)
            else:
                per, chosen, rejected = losses.simpo(mean[:half], mean[half:], self.beta, self.gamma)
        n = real.sum()
        sums = [per[real].sum(), chosen[real].sum(), rejected[real].sum(), ((chosen > rejected) & real).sum(), n, n, n]
        return per * real, torch.stack([torch.as_tensor(s, dtype=torch.float64) for s in sums])

    def training_step(self, batch, batch_idx):
        per, sums = self.score(batch)
        count = max(int(batch["step_units"]), 1)
        self._step_sums = sums.detach() if self._step_sums is None else self._step_sums + sums.detach()
        if batch["step_end"]:
            # one collective per optimizer step: every rank's sums, so the logged figures cover the whole step
            totals = self.trainer.strategy.reduce(self._step_sums.to(self.device), reduce_op="sum").tolist()
            self._step_sums = None
            metrics = ratios(dict(zip(_SUMS, totals)))
            self.step_loss = metrics["loss"]
            self.log("train/loss", self.step_loss, prog_bar=True, on_step=True, batch_size=1)
            for k in ("rewards_chosen", "rewards_rejected", "margin", "accuracy"):
                self.log(f"train/{k}", metrics[k], on_step=True, batch_size=1)
        # the step's loss is the mean over its examples on all ranks: undo Lightning's and DDP's averaging
        return per.sum() * (self.trainer.accumulate_grad_batches * self.trainer.world_size / count)

    def on_validation_epoch_start(self):
        self._val_sums = None

    def validation_step(self, batch, batch_idx):
        _, sums = self.score(batch)
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums

    def on_validation_epoch_end(self):
        sums = self._val_sums if self._val_sums is not None else torch.zeros(len(_SUMS), dtype=torch.float64)
        totals = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").tolist()
        metrics = ratios(dict(zip(_SUMS, totals)))
        self.log("val/loss", metrics["loss"], prog_bar=True)
        self.log("val/accuracy", metrics["accuracy"])
        self.log("val/margin", metrics["margin"])


def ratios(sums: dict) -> dict:
    """Means from the sums: loss and accuracy over examples, rewards over the answers of each kind."""
    chosen = sums["chosen_reward"] / max(sums["chosen"], 1)
    rejected = sums["rejected_reward"] / max(sums["rejected"], 1)
    n = max(sums["examples"], 1)
    return dict(
        loss=sums["loss"] / n,
        rewards_chosen=chosen,
        rewards_rejected=rejected,
        margin=chosen - rejected,
        accuracy=sums["correct"] / n,
    )
