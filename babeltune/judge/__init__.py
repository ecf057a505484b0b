"""Judging: study A's side-by-side protocol, study B's rubric, and the judges behind one interface.

- `side_by_side(items, judge, cache)` judges every pair in both orders and `sxs_scores` turns the
  outcomes into 0-100 scores per language with bootstrap CIs (`protocol`).
- Judges: `LLMPairwiseJudge` / `LLMRubricJudge` over any chat backend (`llm`), the offline
  `ReferenceJudge` (sentence embeddings + chrF + language check, `reference`).
- `run_rubric` / `rubric_scores` (`rubric`), `judge_agreement` (`agreement`), `JudgementCache` (`cache`),
  `plan_pairs` (pairs from two generation files, `pairs`); chat backends over the generation stage
  (`backends`); `babeltune judge sxs|rubric` (`cli`).
"""

from babeltune.judge.agreement import Agreement, judge_agreement
from babeltune.judge.base import (
    RUBRIC_CRITERIA,
    PairQuery,
    PairVerdict,
    PairwiseJudge,
    RubricJudge,
    RubricQuery,
    RubricVerdict,
)
from babeltune.judge.cache import JudgementCache, judgement_key
from babeltune.judge.chrf import chrf
from babeltune.judge.llm import (
    ChatBackend,
    FunctionBackend,
    LLMPairwiseJudge,
    LLMRubricJudge,
    parse_pairwise_verdict,
    parse_rubric,
)
from babeltune.judge.pairs import PairPlan, load_judgements, plan_pairs, save_judgements
from babeltune.judge.protocol import (
    SxSItem,
    SxSJudgement,
    SxSScore,
    combine_orders,
    side_by_side,
    sxs_scores,
)
from babeltune.judge.reference import ReferenceJudge, ReferenceJudgeConfig, ReferenceScore, USEEncoder
from babeltune.judge.rubric import RubricItem, RubricJudgement, RubricScore, rubric_scores, run_rubric

__all__ = [
    "RUBRIC_CRITERIA",
    "Agreement",
    "ChatBackend",
    "FunctionBackend",
    "JudgementCache",
    "LLMPairwiseJudge",
    "LLMRubricJudge",
    "PairPlan",
    "PairQuery",
    "PairVerdict",
    "PairwiseJudge",
    "ReferenceJudge",
    "ReferenceJudgeConfig",
    "ReferenceScore",
    "RubricItem",
    "RubricJudge",
    "RubricJudgement",
    "RubricQuery",
    "RubricScore",
    "RubricVerdict",
    "SxSItem",
    "SxSJudgement",
    "SxSScore",
    "USEEncoder",
    "chrf",
    "combine_orders",
    "judge_agreement",
    "judgement_key",
    "load_judgements",
    "parse_pairwise_verdict",
    "parse_rubric",
    "plan_pairs",
    "rubric_scores",
    "run_rubric",
    "save_judgements",
    "side_by_side",
    "sxs_scores",
]
