"""The supervised next-token loss, computed only where it is needed.

gemma-3-270m's LM head (262,144 x 640) holds 63% of its parameters: computing logits for every
position costs more than the rest of the network, and the (tokens x vocab) float logits tensor is the
largest allocation of a training step. Instruction tuning only trains on response tokens, so:

1. the decoder runs on the packed rows and returns hidden states (R, T, D);
2. only the supervised positions are gathered (N, D), N = number of trained tokens;
3. `linear_cross_entropy` walks the vocabulary in tiles with an online softmax and computes the
   summed loss and, in the same pass, the gradient with respect to the hidden states (and to the
   head weight when it is trained), so no (N x vocab) float tensor is ever materialised.

`SupervisedLMLoss` wraps a causal LM in a module whose forward returns that summed loss: wrapping the
loss in the module (rather than calling submodules from outside) keeps DDP/FSDP's hooks in the path.
`reference_loss` is the plain transformers computation, kept for tests and for the start-up check.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from babeltune.models.anatomy import decoder_of, lm_head
from babeltune.models.chat import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(h_i @ W^T), t_i); gradients are computed in the forward, tile by tile.

    The vocabulary is walked in tiles of `vocab_tile` rows of W with an online softmax (running max
    and sum, as flash attention does), so a tile's logits are produced, exponentiated and multiplied
    back by the same W rows while they are still in cache: one pass over W gives the loss and the
    gradient with respect to the hidden states, and no (rows x vocab) tensor is ever materialised.
    Only a trained head (full fine-tuning) needs a second pass, for its own gradient, after the
    normaliser is known; its tiles' logits are kept in the compute dtype for that pass.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
        softcap: float | None, compute_dtype: torch.dtype, weight_lowp: torch.Tensor | None, vocab_tile: int,
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight_lowp if weight_lowp is not None else weight.to(compute_dtype)  # (V, D)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, D)
        # (V, D): every row is written by the first row chunk, so zero-filled only when there is none
        fill = torch.empty_like if hidden.shape[0] else torch.zeros_like
        grad_w = fill(weight, dtype=torch.float32) if need_w else None
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk].to(compute_dtype)  # (n, D)
            t = targets[start:start + chunk]  # (n,)
            part = _chunk_loss(h, w, t, softcap, vocab_tile, want_grad_h=need_h, keep_tiles=need_w)
            loss += part.loss
            if grad_h is not None and part.grad_h is not None:
                grad_h[start:start + h.shape[0]] = part.grad_h.to(hidden.dtype)
            if grad_w is not None:
                _head_gradient(grad_w, h, t, part, softcap, first=start == 0)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.has = (grad_h is not None, grad_w is not None)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> Any:
        # Scaled in place: the saved gradients are used once (no retain_graph), and a new (V, D) buffer
        # per step would cost more than the multiplication itself (fresh pages).
        saved = [g.mul_(grad_loss) for g in ctx.saved_tensors]
        grad_h = saved.pop(0) if ctx.has[0] else None
        grad_w = saved.pop(0) if ctx.has[1] else None
        return grad_h, grad_w, None, None, None, None, None, None


class _ChunkLoss(NamedTuple):
    loss: torch.Tensor
    grad_h: torch.Tensor | None
    lse: torch.Tensor
    tiles: list[tuple[int, torch.Tensor]]


def _softcapped(z: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(capped float32 logits, tanh values or None) of a logits tile."""
    zf = z.float()
    if not softcap:
        return zf, None
    squash = torch.tanh(zf / softcap)
    return squash * softcap, squash


def _chunk_loss(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, softcap: float | None, vocab_tile: int, *,
                want_grad_h: bool, keep_tiles: bool) -> _ChunkLoss:
    """Loss (and gradient w.r.t. h) of n rows through W, one vocabulary tile at a time (online softmax)."""
    n = h.shape[0]
    device = h.device
    running_max = torch.full((n,), float("-inf"), device=device)  # (n,)
    running_sum = torch.zeros(n, device=device)  # (n,)
    acc = torch.zeros(n, w.shape[1], device=device) if want_grad_h else None  # (n, D): sum_v e_v s_v w_v
    target_logit = torch.zeros(n, device=device)  # (n,)
    target_slope = torch.ones(n, device=device)  # (n,): d capped / d raw logit at the target
    tiles: list[tuple[int, torch.Tensor]] = []
    for a in range(0, w.shape[0], vocab_tile):
        w_tile = w[a:a + vocab_tile]  # (v, D)
        z = h @ w_tile.T  # (n, v) compute dtype
        if keep_tiles:
            tiles.append((a, z))
        zf, squash = _softcapped(z, softcap)  # (n, v) float32
        if keep_tiles and zf.data_ptr() == z.data_ptr():
            zf = zf.clone()  # float32 compute: the kept tile must survive the in-place softmax below
        inside = ((t >= a) & (t < a + w_tile.shape[0])).nonzero().squeeze(1)
        if inside.numel():
            cols = t[inside] - a
            target_logit[inside] = zf[inside, cols]
            if squash is not None:
                target_slope[inside] = 1.0 - squash[inside, cols] ** 2
        new_max = torch.maximum(running_max, zf.amax(dim=1))  # (n,)
        rescale = torch.exp(running_max - new_max)  # (n,)
        e = zf.sub_(new_max.unsqueeze(1)).exp_()  # (n, v): exp(logit - running max), in place
        running_sum = running_sum * rescale + e.sum(dim=1)
        running_max = new_max
        if acc is not None:
            if squash is not None:
                e.mul_(1.0 - squash * squash)
            acc.mul_(rescale.unsqueeze(1)).add_((e.to(w.dtype) @ w_tile).float())
    lse = running_max + running_sum.log()  # (n,)
    grad_h = None
    if acc is not None:
        # d loss / d h = sum_v softmax_v s_v w_v - s_t w_t, with s the softcap slope (1 without softcap)
        grad_h = acc / running_sum.unsqueeze(1) - target_slope.unsqueeze(1) * w[t].float()  # (n, D)
    return _ChunkLoss((lse - target_logit).sum(), grad_h, lse, tiles)


def _head_gradient(grad_w: torch.Tensor, h: torch.Tensor, t: torch.Tensor, part: _ChunkLoss,
                   softcap: float | None, *, first: bool) -> None:
    """Write (`first` row chunk) or add d loss / d W of one row chunk, from its kept logits tiles and
    final normaliser."""
    rows = torch.arange(h.shape[0], device=h.device)
    for a, z in part.tiles:
        zf, squash = _softcapped(z, softcap)  # (n, v)
        probs = zf.sub_(part.lse.unsqueeze(1)).exp_()  # (n, v): softmax
        inside = (t >= a) & (t < a + z.shape[1])
        probs[rows[inside], t[inside] - a] -= 1.0
        if squash is not None:
            probs.mul_(1.0 - squash * squash)
        tile = probs.to(h.dtype).T @ h  # (v, D)
        if first:
            grad_w[a:a + z.shape[1]].copy_(tile)
        else:
            grad_w[a:a + z.shape[1]].add_(tile)


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, chunk: int = 1024,
    softcap: float | None = None, compute_dtype: torch.dtype | None = None, weight_lowp: torch.Tensor | None = None,
    vocab_tile: int = 16384,
) -> torch.Tensor:
    """Summed cross-entropy of `hidden` (N, D) through the output matrix `weight` (V, D) against
    `targets` (N,). Matrix products run in `compute_dtype`, softmax statistics in float32;
    `weight_lowp` is an optional pre-cast copy of `weight` (a frozen head). Rows are processed
    `chunk` at a time (memory: chunk x vocab_tile floats)."""
    dtype = compute_dtype or hidden.dtype
    loss: torch.Tensor = _LinearCrossEntropy.apply(hidden, weight, targets, chunk, softcap, dtype, weight_lowp,
                                                   vocab_tile)
    return loss


class SupervisedLMLoss(nn.Module):
    """A causal LM whose forward returns the summed next-token loss at supervised positions.

    forward(input_ids (R, T), position_ids (R, T), target_index (N,), targets (N,)) -> loss sum (fp32).
    `target_index` indexes the flattened (R*T) positions whose next token is trained.
    """

    def __init__(self, lm: Any, *, chunk: int = 1024, compute_dtype: torch.dtype | None = None,
                 vocab_tile: int = 16384, sparse_embedding_grad: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.sparse_embedding_grad = sparse_embedding_grad
        self.chunk = chunk
        self.vocab_tile = vocab_tile
        self.compute_dtype = compute_dtype
        config = lm.config
        self.softcap: float | None = getattr(config, "final_logit_softcapping", None) or None
        self._head_lowp: torch.Tensor | None = None

    @property
    def head(self) -> Any:
        head = lm_head(self.lm)
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

    def _decode(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (R, T, D) of the decoder.

        A trained head tied to the input embeddings (gemma) gets a dense (V, D) gradient from the loss
        anyway; the lookups' own gradient then only needs the rows they used. So the lookups run sparse
        for this call: their gradient is added into the dense one, instead of zero-filling and adding
        another (V, D) table every step (a full-tuning step of gemma-3-270m on 2 cores went from 7.2 to
        6.7 s). Not for an untied or frozen table (its gradient alone would be sparse), nor under FSDP.
        """
        table = self.lm.get_input_embeddings() if hasattr(self.lm, "get_input_embeddings") else None
        embeddings: nn.Embedding | None = table if isinstance(table, nn.Embedding) else None
        if embeddings is not None and not (self.sparse_embedding_grad and embeddings.weight.requires_grad
                                           and embeddings.weight is getattr(self.head, "weight", None)):
            embeddings = None
        if embeddings is not None:
            embeddings.sparse = True
        try:
            out = decoder_of(self.lm)(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        finally:
            if embeddings is not None:
                embeddings.sparse = False
        hidden: torch.Tensor = out.last_hidden_state
        return hidden

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, target_index: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        hidden = self._decode(input_ids, position_ids)  # (R, T, D)
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, target_index)  # (N, D)
        weight = self.head.weight  # (V, D)
        if self._head_lowp is not None and self._head_lowp.device != weight.device:
            self._head_lowp = self._head_lowp.to(weight.device)
        loss = linear_cross_entropy(
            selected, weight, targets, chunk=self.chunk, softcap=self.softcap, vocab_tile=self.vocab_tile,
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
