"""LARS and LAMB, the large-batch optimizers of the InfoBatch/SeTa/BLS CIFAR scripts.

Both scale each parameter tensor's update by a layer-wise trust ratio
``||w|| / ||update||`` (You et al., 2017 and 2020). Biases and normalisation weights (1-D
tensors) are left unscaled and undecayed, as in the reference implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


def _trust_ratio(weight: torch.Tensor, update: torch.Tensor, eta: float) -> torch.Tensor:
    weight_norm, update_norm = weight.norm(), update.norm()
    ratio = eta * weight_norm / update_norm
    return torch.where((weight_norm > 0) & (update_norm > 0), ratio, torch.ones_like(ratio))


class Lars(Optimizer):
    """SGD with momentum whose per-tensor step is scaled by the LARS trust ratio."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        eta: float = 1e-3,
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                update = weight.grad
                if weight.ndim > 1:
                    update = update.add(weight, alpha=group["weight_decay"])
                    update = update * _trust_ratio(weight, update, group["eta"])
                buffer = self.state[weight].setdefault("momentum", torch.zeros_like(weight))
                buffer.mul_(group["momentum"]).add_(update)
                weight.add_(buffer, alpha=-group["lr"])
        return loss


class Lamb(Optimizer):
    """Adam whose per-tensor step is scaled by the LAMB trust ratio."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                state = self.state[weight]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(weight)
                    state["exp_avg_sq"] = torch.zeros_like(weight)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(weight.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(weight.grad, weight.grad, value=1 - beta2)
                corrected_avg = exp_avg / (1 - beta1 ** state["step"])
                corrected_sq = exp_avg_sq / (1 - beta2 ** state["step"])
                update = corrected_avg / (corrected_sq.sqrt() + group["eps"])
                if weight.ndim > 1:
                    update = update.add(weight, alpha=group["weight_decay"])
                    update = update * _trust_ratio(weight, update, 1.0)
                weight.add_(update, alpha=-group["lr"])
        return loss
