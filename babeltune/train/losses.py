"""The supervised next-token loss, computed only where it is needed.

gemma-3-270m's LM head (262,144 x 640) holds 63% of its parameters: computing logits for every
position costs more than the rest of the network, and the (tokens x vocab) float logits tensor is the
largest allocation of a training step. Instruction tuning only trains on response tokens, so:

1. the decoder runs on the packed rows and returns hidden states (R, T, D);
2. only the supervised positions are gathered (N, D), N = number of trained tokens;
3. `linear_cross_entropy` computes logits for a chunk of those rows at a time, the summed loss, and,
   in the same pass, the gradients with respect to the hidden states (and to the head weight when it
   is trained), so no (N x vocab) tensor is ever stored for the backward pass.

`SupervisedLMLoss` wraps a causal LM in a module whose forward returns that summed loss: wrapping the
loss in the module (rather than calling submodules from outside) keeps DDP/FSDP's hooks in the path.
`reference_loss` is the plain transformers computation, kept for tests and for the start-up check.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from babeltune.models.chat import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(h_i @ W^T), t_i), with gradients computed chunk by chunk in the forward."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
        softcap: float | None, compute_dtype: torch.dtype, weight_lowp: torch.Tensor | None,
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight_lowp if weight_lowp is not None else weight.to(compute_dtype)  # (V, D)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, D)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # (V, D)
        rows = torch.arange(min(chunk, hidden.shape[0]), device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk].to(compute_dtype)  # (n, D)
            t = targets[start:start + chunk]  # (n,)
            n = h.shape[0]
            logits = (h @ w.T).float()  # (n, V)
            squash = None
            if softcap:
                squash = torch.tanh(logits / softcap)  # (n, V)
                logits = squash * softcap
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            loss += (lse - logits[rows[:n], t]).sum()
            if not (need_h or need_w):
                continue
            probs = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place: (n, V)
            probs[rows[:n], t] -= 1.0  # d loss / d logits
            if squash is not None:
                probs.mul_(1.0 - squash * squash)
            g = probs.to(compute_dtype)  # (n, V)
            if grad_h is not None:
                grad_h[start:start + n] = (g @ w).to(hidden.dtype)  # (n, D)
            if grad_w is not None:
                grad_w += (g.T @ h).float()  # (V, D)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.has = (grad_h is not None, grad_w is not None)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> Any:
        saved = list(ctx.saved_tensors)
        grad_h = saved.pop(0) * grad_loss if ctx.has[0] else None
        grad_w = (saved.pop(0) * grad_loss) if ctx.has[1] else None
        return grad_h, grad_w, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, chunk: int = 256,
    softcap: float | None = None, compute_dtype: torch.dtype | None = None, weight_lowp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of `hidden` (N, D) through the output matrix `weight` (V, D) against
    `targets` (N,). The logits (and their softmax) are computed in float32 from `compute_dtype`
    matrix products; `weight_lowp` is an optional pre-cast copy of `weight` (a frozen head)."""
    dtype = compute_dtype or hidden.dtype
    loss: torch.Tensor = _LinearCrossEntropy.apply(hidden, weight, targets, chunk, softcap, dtype, weight_lowp)
    return loss


def output_embeddings(lm: Any) -> Any:
    """The LM head module (None if the model has none)."""
    return lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None


def decoder_of(lm: Any) -> Any:
    """The transformer body of a causal LM (under a PEFT wrapper too): it returns hidden states."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    if decoder is None:
        raise ValueError(f"{type(base).__name__}: cannot find the decoder (no get_decoder() or .model)")
    return decoder


class SupervisedLMLoss(nn.Module):
    """A causal LM whose forward returns the summed next-token loss at supervised positions.

    forward(input_ids (R, T), position_ids (R, T), target_index (N,), targets (N,)) -> loss sum (fp32).
    `target_index` indexes the flattened (R*T) positions whose next token is trained.
    """

    def __init__(self, lm: Any, *, chunk: int = 256, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.chunk = chunk
        self.compute_dtype = compute_dtype
        config = lm.config
        self.softcap: float | None = getattr(config, "final_logit_softcapping", None) or None
        self._head_lowp: torch.Tensor | None = None

    @property
    def head(self) -> Any:
        head = output_embeddings(self.lm)
        if head is None or getattr(head, "bias", None) is not None:
            raise ValueError("the model's LM head is missing or has a bias: not supported by the fused loss")
        return head

    def cache_frozen_head(self) -> None:
        """With a frozen head (LoRA), cast it to the compute dtype once instead of every step."""
        weight = self.head.weight
        if weight.requires_grad or self.compute_dtype in (None, weight.dtype):
            self._head_lowp = None
            return
        self._head_lowp = weight.detach().to(self.compute_dtype)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, target_index: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        out = decoder_of(self.lm)(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state  # (R, T, D)
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, target_index)  # (N, D)
        weight = self.head.weight  # (V, D)
        if self._head_lowp is not None and self._head_lowp.device != weight.device:
            self._head_lowp = self._head_lowp.to(weight.device)
        loss = linear_cross_entropy(
            selected, weight, targets, chunk=self.chunk, softcap=self.softcap,
            compute_dtype=self.compute_dtype if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype,
            weight_lowp=self._head_lowp if torch.is_autocast_enabled(hidden.device.type) else None,
        )
        # An empty share (no targets) still touches every parameter, so DDP's gradient hooks all fire.
        return loss + 0.0 * hidden.sum() if target_index.numel() == 0 else loss


def reference_loss(lm: nn.Module, input_ids: list[int], targets: list[int]) -> tuple[float, int]:
    """(summed loss, supervised tokens) of one example through the model's own forward and full
    logits: the naive computation the fused path must reproduce."""
    ids = torch.tensor([input_ids])  # (1, L)
    logits = lm(input_ids=ids, use_cache=False).logits.float()[0]  # (L, V)
    tgt = torch.tensor(targets)  # (L,)
    loss = torch.nn.functional.cross_entropy(logits, tgt, ignore_index=IGNORE_INDEX, reduction="sum")
    return float(loss.detach()), int((tgt != IGNORE_INDEX).sum())
