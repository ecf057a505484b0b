"""Greedy decoding with a bfloat16 LM head that still picks the float32 head's token.

gemma-3-270m's tied LM head (262,144 x 640) is 62% of the model's multiply-adds per generated token.
On a CPU with AVX512-BF16 a bfloat16 matrix product runs about twice as fast as a float32 one, but a
bfloat16 model changes many greedy outputs. This head keeps the float32 model and only scores the
vocabulary in bfloat16, then decides exactly:

1. approximate logits: bf16(h) @ bf16(W).T, with the repetition penalty (and soft-capping) applied;
2. the K best candidates are rescored in float32 from h and their rows of W;
3. the best exact candidate wins if it provably beats every token outside the candidates: a token's
   approximate logit is within `err` of its exact one, where err bounds the bfloat16 rounding
   (|h.w - approx| <= 0.0061 ||h|| ||w||: the inputs' and the output's rounding to bfloat16 and float32
   accumulation); so a candidate whose exact score exceeds the K-th approximate score by more than
   `err` (times the repetition penalty, the steepest slope it applies) cannot be beaten;
4. rows where the margin is too thin fall back to the full float32 head.

The tokens are those of the float32 head up to float32 summation order (a tie closer than ~1e-6
could resolve differently, as it can between two batch sizes). Used for greedy decoding of float32
models whose head is a plain bias-free Linear; anything else uses the model's own head.
"""

from __future__ import annotations

from typing import Any

import torch

from babeltune.generate.decoding import apply_repetition_penalty, penalise
from babeltune.models.anatomy import decoder_of, lm_head

# |h.w - out| <= _ERROR_SCALE * ||h|| * ||w||: rounding h and w to bfloat16 (2^-9 each, so 2^-8 for the
# product, by Cauchy-Schwarz over the terms), float32 accumulation (640 terms: < 2^-14), and the
# product's own rounding to bfloat16 on output (2^-9 of |h.w| <= ||h|| ||w||); 2^-12 of slack.
_ERROR_SCALE = 2.0 ** -8 + 2.0 ** -9 + 2.0 ** -12


def split_head(model: Any) -> tuple[Any, torch.nn.Linear] | None:
    """(decoder, lm_head) of a causal LM whose head can be replaced, or None. A head with hooks is not
    replaced: the hooks would be bypassed."""
    try:
        decoder = decoder_of(model)
    except ValueError:
        return None
    head = lm_head(model)
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    if head._forward_hooks or head._forward_pre_hooks:
        return None
    if head.weight.dtype != torch.float32:
        return None
    return decoder, head


class Bf16GreedyHead:
    """The exact-greedy bfloat16 head of one model (holds a bfloat16 copy of the head's weights)."""

    def __init__(self, model: Any, candidates: int = 64) -> None:
        parts = split_head(model)
        if parts is None:
            raise ValueError("this model's LM head cannot be replaced (needs a float32 bias-free Linear head)")
        self.decoder, head = parts
        self.weight = head.weight  # (V, D) float32, tied with the embeddings: not copied
        self.weight_bf16 = head.weight.detach().to(torch.bfloat16)  # (V, D)
        self.version = head.weight._version  # in-place updates (training steps, loading) bump it
        self.max_row_norm = float(head.weight.detach().norm(dim=-1).max())
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.candidates = min(candidates, self.weight.shape[0])
        self.fallbacks = 0
        """Rows decided by the full float32 head because the margin was too thin (for diagnostics)."""
        self.decided = 0

    def is_current(self, model: Any) -> bool:
        """Whether this head still matches `model`'s head weights (same tensor, not modified since)."""
        parts = split_head(model)
        return parts is not None and parts[1].weight is self.weight and self.weight._version == self.version

    def hidden(self, **forward_kwargs: Any) -> torch.Tensor:
        """Run the decoder; the last position's hidden state (B, D)."""
        with torch.inference_mode():
            out = self.decoder(**forward_kwargs)
        return out.last_hidden_state[:, -1, :]

    def _cap(self, logits: torch.Tensor) -> torch.Tensor:
        if self.softcap:
            return torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def greedy(self, hidden: torch.Tensor, seen: torch.Tensor | None, penalty: float) -> torch.Tensor:
        """The float32 head's greedy tokens (B,) for hidden states (B, D); `seen` (B, S): the ids the
        repetition penalty applies to."""
        with torch.inference_mode():
            approx = self._cap((hidden.to(torch.bfloat16) @ self.weight_bf16.T).float())  # (B, V)
            if seen is not None:
                approx = apply_repetition_penalty(approx, seen, penalty)
            top = torch.topk(approx, self.candidates, dim=-1)  # (B, K)
            rows = self.weight[top.indices]  # (B, K, D)
            exact = self._cap(torch.einsum("bd,bkd->bk", hidden.float(), rows))  # (B, K)
            if seen is not None:
                is_seen = (top.indices[:, :, None] == seen[:, None, :]).any(-1)  # (B, K)
                exact = torch.where(is_seen, penalise(exact, penalty), exact)
            best = exact.max(dim=-1)  # (B,)
            tokens = top.indices.gather(1, best.indices[:, None])[:, 0]  # (B,)
            slope = max(penalty, 1.0) if seen is not None else 1.0
            err = _ERROR_SCALE * hidden.float().norm(dim=-1) * self.max_row_norm * slope  # (B,)
            unsure = best.values <= top.values[:, -1] + err  # (B,)
            if bool(unsure.any()):
                rows_unsure = unsure.nonzero()[:, 0]
                full = self._cap(hidden[rows_unsure].float() @ self.weight.T)  # (U, V)
                if seen is not None:
                    full = apply_repetition_penalty(full, seen[rows_unsure], penalty)
                tokens[rows_unsure] = full.argmax(-1)
                self.fallbacks += int(rows_unsure.numel())
            self.decided += int(hidden.shape[0])
        return tokens
