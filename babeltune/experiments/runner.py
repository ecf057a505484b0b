"""`babeltune run EXPERIMENT.yaml`: grid -> conditions -> mixture -> train -> generate -> evaluate -> judge.

Layout of a run directory:

    RUN_DIR/run.json, config.yaml           what ran (write_run_info)
    RUN_DIR/conditions/NAME/mixture.jsonl   + .summary.json
    RUN_DIR/conditions/NAME/train/          the tuned model (the training stage's run folder)
    RUN_DIR/conditions/NAME/train.config.yaml, train.launch.log   train.launcher accelerate: its config, output
    RUN_DIR/conditions/NAME/generations/{eval,modifiers}.jsonl
    RUN_DIR/conditions/NAME/eval/rows.json  the evaluation stage's metrics as result rows
    RUN_DIR/conditions/NAME/judge/KIND.cache.jsonl, KIND.jsonl   judgements (cache, final)
    RUN_DIR/conditions/NAME/stages.json     finished stages and their fingerprints
    RUN_DIR/results.{json,csv}, samples.json, report.html
    RUN_DIR/claims/UNIT.claim, UNIT.done    `--worker`: who runs what, what is finished (claims.py)

Every stage is skipped on a re-run when it finished before with the same inputs (`stages`), and the
stages themselves resume mid-way from their own caches, so an interrupted run is simply run again.
The stage implementations are behind `Pipeline` (`pipeline.py` has the real one); tests swap in
fast fakes to check the orchestration. With `worker=True` the runner takes a share of the grid beside
other processes (`_work`): conditions, then each condition's judging once its references are finished,
each under a claim; results and the report are left to a plain run afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from babeltune.config import to_dict
from babeltune.data import ChatRecord, build_mixture, load_records, write_jsonl
from babeltune.data.readers import fingerprint_records
from babeltune.experiments.bench import bench_meta, bench_rows, folder_digest
from babeltune.experiments.claims import CLAIMS_DIR, Claims, ClaimSettings
from babeltune.experiments.config import Condition, ExperimentConfig, expand_conditions
from babeltune.experiments.judging import agreement_rows, rubric_rows, sxs_result_rows
from babeltune.experiments.layout import ConditionPaths, move_aside, read_generation_rows
from babeltune.experiments.methods import compute_rows, compute_summary, describe_method, probe_config, steer_config
from babeltune.experiments.progress import ProgressPlan, Unit
from babeltune.experiments.results import ResultRow, difference_rows, write_results
from babeltune.experiments.stages import StageLog, fingerprint
from babeltune.generate.rows import GenerationRow
from babeltune.judge import (
    PairwiseJudge,
    RubricJudge,
    SxSJudgement,
)
from babeltune.judge.pairs import PairPlan, load_judgements, plan_pairs, run_judge, save_judgements
from babeltune.lens.config import SteerConfig

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    """The stage implementations the runner calls (see `babeltune.experiments.pipeline`)."""

    def train(self, config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> dict[str, Any]:
        """Tune `config.model` on the mixture into `out_dir` (resuming from its checkpoints); return at least
        {"model": path of the tuned model, "final_loss": float}."""
        ...

    def generate(
        self, config: ExperimentConfig, model: str, records: Sequence[ChatRecord], out: Path,
    ) -> dict[str, Any]:
        """Generate a response per record into `out` (resuming a partial file); return a summary. A steer
        condition's call adds `steer=SteerConfig` (the steering to apply while generating)."""
        ...

    def probe(self, config: ExperimentConfig, out: Path) -> dict[str, Any]:
        """Probe `config.model`'s language subspace into `out` (`methods.probe_config`); return a summary."""
        ...

    def lens_train(self, config: ExperimentConfig, condition: Condition, subspace: Path, out: Path) -> dict[str, Any]:
        """Lens manipulation training of `config.model` on `subspace` into `out`; return at least {"model": path}."""
        ...

    def evaluate(self, config: ExperimentConfig, condition: str, generations: dict[str, Path]) -> list[ResultRow]:
        """Language fidelity and modifier metrics of the generations, as result rows."""
        ...

    def bench(self, config: ExperimentConfig, model: str, steer: SteerConfig | None, out_dir: Path) -> dict[str, Any]:
        """Run `config.bench`'s lm-eval tasks on `model` (steered by `steer`) into `out_dir` (`babeltune bench`'s
        results.csv, results.json, samples.jsonl); return a summary."""
        ...

    def pairwise_judge(self, kind: str, config: ExperimentConfig) -> PairwiseJudge:
        ...

    def rubric_judge(self, config: ExperimentConfig) -> RubricJudge:
        ...

    def release(self) -> None:
        """Free models held between stages (before judging)."""
        ...


@dataclass
class RunSummary:
    run_dir: Path
    rows: list[ResultRow]
    ran: list[str] = field(default_factory=list)
    """`condition:stage` units that ran in this call."""
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None
    worked: list[str] = field(default_factory=list)
    """Worker mode: the units (conditions, `NAME@judge`) this worker ran."""
    pending: list[str] = field(default_factory=list)
    """Worker mode: units left unfinished when it stopped (held by other workers, or waiting for them)."""


def select_per_language(records: Sequence[ChatRecord], languages: Sequence[str], limit: int | None) -> list[ChatRecord]:
    """Records of `languages`, keeping the first `limit` pids (sorted) per language."""
    out = []
    for lang in languages:
        recs = sorted((r for r in records if r.lang == lang), key=lambda r: r.pid)
        out.extend(recs if limit is None else recs[:limit])
    return out


class ExperimentRunner:
    """Runs one experiment into one run directory; see the module docstring."""

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, pipeline: Pipeline | None = None, *,
                 progress: bool = True, report: bool = True, worker: bool = False,
                 claims: ClaimSettings | None = None) -> None:
        self.config = config
        self.worker = worker
        self.claim_settings = claims or ClaimSettings()
        self.run_dir = Path(run_dir)
        if pipeline is None:
            from babeltune.experiments.pipeline import RealPipeline

            pipeline = RealPipeline()
        self.pipeline = pipeline
        self.make_report = report
        self.conditions = expand_conditions(config)
        self.show_progress = progress
        self.summary = RunSummary(self.run_dir, [])

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        cfg = self.config
        self.train_source = load_records(cfg.data.train)
        self.splits: dict[str, list[ChatRecord]] = {}
        self.data_fingerprints: dict[str, str] = {cfg.data.train: self.train_source.report.fingerprint}
        sources = {"eval": (cfg.data.eval, cfg.data.eval_per_language),
                   "modifiers": (cfg.data.modifiers, cfg.data.modifiers_per_language)}
        for split, (source, limit) in sources.items():
            if source is None:
                continue
            loaded = load_records(source, languages=cfg.eval_languages)
            self.splits[split] = select_per_language(loaded.records, cfg.eval_languages, limit)
            self.data_fingerprints[split] = fingerprint_records(self.splits[split])
        missing = [lang for lang in cfg.eval_languages if not any(r.lang == lang for r in self.splits.get("eval", []))]
        if missing:
            raise ValueError(f"the eval data {cfg.data.eval} has no prompts in {', '.join(missing)} (eval_languages)")

    # ------------------------------------------------------------------ plan
    def _plan(self) -> ProgressPlan:
        cfg = self.config
        epochs = float(cfg.train.get("epochs", 1) or 1)
        max_new = float(cfg.generate.decoding.max_new_tokens)
        units = []
        for cond in self.conditions:
            if cond.method == "tune":
                units.append(Unit(f"{cond.name}:train", f"{cond.name}: tune on {cond.mixture.budget} examples",
                                  "train", cond.mixture.budget * epochs))
            for split, records in self.splits.items():
                units.append(Unit(f"{cond.name}:generate:{split}", f"{cond.name}: generate {len(records)} {split} "
                                  f"responses", "generate", len(records) * max_new))
            units.append(Unit(f"{cond.name}:evaluate", f"{cond.name}: evaluate", "evaluate",
                              sum(len(r) for r in self.splits.values())))
            if cfg.bench is not None:
                units.append(Unit(f"{cond.name}:bench", f"{cond.name}: lm-eval {','.join(cfg.bench.tasks)}", "bench",
                                  len(cfg.bench.tasks)))
        n_pairs = len(self.splits.get("eval", []))
        for kind in cfg.judge.judges():
            for cond in self.conditions:
                units.append(Unit(f"{cond.name}:judge:{kind}", f"{cond.name}: judge side by side ({kind})", "judge",
                                  n_pairs))
        return ProgressPlan(units, enabled=self.show_progress)

    # ------------------------------------------------------------------ stages
    def _stage(self, logbook: StageLog, key: str, stage: str, fp: str, outputs: Sequence[Path],
               fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = logbook.done(stage, fp)
        unit_exists = key in self.plan.units
        if done is not None and all(p.exists() for p in outputs):
            self.summary.skipped.append(key)
            if unit_exists:
                self.plan.skip(key)
            return done.info
        if unit_exists:
            self.plan.start(key)
        start = time.perf_counter()
        info = fn()
        seconds = time.perf_counter() - start
        logbook.mark(stage, fp, seconds, info)
        self.summary.ran.append(key)
        if unit_exists:
            self.plan.finish(key, seconds)
        return info

    def _prepare_model(self, cond: Condition, logbook: StageLog, paths: ConditionPaths,
                       state: dict[str, Any]) -> tuple[str, SteerConfig | None]:
        """The stages that give a condition its model, by its method (see `methods`): sets state["mixture"]
        and state["train"] (the model's record), returns (the model's fingerprint, its steering or None)."""
        cfg = self.config
        state["mixture"] = {"summary": {}}
        state["train"] = {"model": cfg.model, "adapter": None}
        if cond.method == "tune":
            fp_mix = fingerprint("mixture", asdict(cond.mixture), self.data_fingerprints[cfg.data.train])

            def do_mixture() -> dict[str, Any]:
                mixture = build_mixture(self.train_source.records, cond.mixture, source_name=cfg.data.train)
                write_jsonl(mixture.records, paths.mixture)
                paths.mixture.with_name(paths.mixture.name + ".summary.json").write_text(
                    json.dumps(mixture.summary, indent=1, ensure_ascii=False), encoding="utf-8")
                return {"summary": mixture.summary}

            state["mixture"] = self._stage(logbook, f"{cond.name}:mixture", "mixture", fp_mix, [paths.mixture],
                                           do_mixture)
            fp_train = fingerprint("train", fp_mix, cond.train, cfg.model, cfg.seed)
            state["train"] = self._stage(logbook, f"{cond.name}:train", "train", fp_train, [paths.train],
                                         lambda: self.pipeline.train(cfg, cond, paths.mixture, paths.train))
            return fp_train, None
        if cond.method == "base":
            return fingerprint("base", cfg.model), None
        fp_probe = fingerprint("probe", to_dict(probe_config(cfg)), self.data_fingerprints[cfg.data.train])
        self._stage(logbook, f"{cond.name}:probe", "probe", fp_probe, [paths.probe],
                    lambda: self._probe(cond, paths, fp_probe))
        if cond.method == "lens":
            fp_lens = fingerprint("lens", fp_probe, cond.lens, cfg.model, cfg.seed, cfg.data.train)
            state["train"] = self._stage(logbook, f"{cond.name}:lens", "lens", fp_lens, [paths.lens / "final"],
                                         lambda: self.pipeline.lens_train(cfg, cond, paths.probe, paths.lens))
            return fp_lens, None
        steer = steer_config(cond.steer, paths.probe, f"condition {cond.name}")
        return fingerprint("steer", fp_probe, cond.steer, cfg.model), steer

    def _probe(self, cond: Condition, paths: ConditionPaths, fp_probe: str) -> dict[str, Any]:
        """The probe stage: a copy of another condition's finished probe of the same inputs (lens and steer
        conditions probe the same base model), else a fresh one. The copy's record keeps the seconds the
        probe took (`probe_seconds`), which the condition's compute counts."""
        for other in self.conditions:
            source = ConditionPaths.of(self.run_dir, other.name)
            done = StageLog(source.root).done("probe", fp_probe) if other.name != cond.name else None
            if done is not None and source.probe.is_dir():
                if paths.probe.exists():
                    move_aside(paths.probe, "a probe of other inputs")
                shutil.copytree(source.probe, paths.probe)
                return {**done.info, "copied_from": other.name,
                        "probe_seconds": done.info.get("probe_seconds", done.seconds)}
        return self.pipeline.probe(self.config, paths.probe)

    def _run_condition(self, cond: Condition) -> dict[str, Any]:
        cfg = self.config
        paths = ConditionPaths.of(self.run_dir, cond.name)
        logbook = StageLog(paths.root)
        state: dict[str, Any] = {}
        fp_model, steer = self._prepare_model(cond, logbook, paths, state)
        model = generation_model(state["train"], cfg.generate.backend)
        generations: dict[str, Path] = {}
        gen_fps: dict[str, str] = {}
        for split, records in self.splits.items():
            out = paths.generations(split)
            gen_fps[split] = fingerprint("generate", fp_model, cfg.generate.stage_settings(),
                                         self.data_fingerprints[split])
            previous = logbook.records.get(f"generate:{split}")
            if previous is not None and previous.fingerprint != gen_fps[split] and out.exists():
                move_aside(out, "generations of another model or other generation settings")
            self._stage(logbook, f"{cond.name}:generate:{split}", f"generate:{split}", gen_fps[split], [out],
                        lambda records=records, out=out: self.pipeline.generate(  # type: ignore[misc]
                            cfg, model, records, out, **({"steer": steer} if steer else {})))
            generations[split] = out
        fp_eval = fingerprint("evaluate", gen_fps, to_dict(cfg.evaluate))

        def do_evaluate() -> dict[str, Any]:
            rows = self.pipeline.evaluate(cfg, cond.name, generations)
            paths.eval_rows.parent.mkdir(parents=True, exist_ok=True)
            paths.eval_rows.write_text(json.dumps([r.to_dict() for r in rows], indent=1), encoding="utf-8")
            return {"rows": len(rows)}

        self._stage(logbook, f"{cond.name}:evaluate", "evaluate", fp_eval, [paths.eval_rows], do_evaluate)
        if cfg.bench is not None:
            bench_model = str(state["train"]["model"])
            fp_bench = fingerprint("bench", fp_model, to_dict(cfg.bench), folder_digest(cfg.bench.include_path))
            self._stage(logbook, f"{cond.name}:bench", "bench", fp_bench, [paths.bench / "results.json"],
                        lambda: self.pipeline.bench(cfg, bench_model, steer, paths.bench))
        state["generate_fingerprint"] = gen_fps.get("eval")
        return state

    # ------------------------------------------------------------------ judging
    def _reference_rows(self, name: str) -> tuple[str, list[GenerationRow], str] | None:
        """(name, eval generation rows, their stage fingerprint) of a reference condition, or None."""
        root = Path(self.config.judge.reference_run) if self.config.judge.reference_run else self.run_dir
        paths = ConditionPaths(root / "conditions" / name)
        gen = paths.generations("eval")
        if not gen.exists():
            return None
        record = StageLog(paths.root).records.get("generate:eval")
        return name, read_generation_rows(gen), record.fingerprint if record else "unknown"

    def _judge_condition(self, kind: str, judge: PairwiseJudge, cond: Condition, state: dict[str, Any],
                         ref_cache: dict[str, tuple[str, list[GenerationRow], str] | None],
                         ) -> tuple[list[ResultRow], list[SxSJudgement], PairPlan]:
        """Judge one condition's eval responses against its references with `judge` (cached, resumable):
        (result rows, judgements, the pair plan: languages without a reference, unmatched prompts)."""
        cfg = self.config
        paths = ConditionPaths.of(self.run_dir, cond.name)
        candidate = read_generation_rows(paths.generations("eval"))
        references: dict[str, tuple[str, list[GenerationRow]] | None] = {}
        ref_fps = {}
        for lang in cfg.eval_languages:
            name = cfg.judge.reference_for(lang)
            if cfg.judge.skip_self and name == cond.name:
                references[lang] = None
                continue
            if name not in ref_cache:
                ref_cache[name] = self._reference_rows(name)
            found = ref_cache[name]
            references[lang] = (found[0], found[1]) if found else None
            ref_fps[lang] = (name, found[2] if found else None)
        pair_plan = plan_pairs(candidate, references, cfg.eval_languages)
        fp = fingerprint("judge", judge.fingerprint(), state["generate_fingerprint"], ref_fps, cfg.judge.retries)

        def do_judge() -> dict[str, Any]:
            judgements = run_judge(pair_plan, judge, paths.judge_cache(kind), retries=cfg.judge.retries,
                                   batch_size=cfg.judge.batch_size)
            save_judgements(paths.judgements(kind), judgements)
            return {"pairs": len(judgements), "invalid": sum(j.outcome == "invalid" for j in judgements)}

        self._stage(StageLog(paths.root), f"{cond.name}:judge:{kind}", f"judge:{kind}", fp, [paths.judgements(kind)],
                    do_judge)
        judgements = load_judgements(paths.judgements(kind))
        seen = state["mixture"]["summary"].get("seen_languages")
        rows = sxs_result_rows(cond.name, kind, pair_plan, judgements, seen, cfg.seed)
        return rows, judgements, pair_plan

    def _judge_all(self, states: dict[str, dict[str, Any]]) -> tuple[list[ResultRow], dict[str, Any]]:
        cfg = self.config
        rows: list[ResultRow] = []
        meta: dict[str, Any] = {"no_reference": {}}
        all_judgements: dict[str, dict[str, list[SxSJudgement]]] = {}
        ref_cache: dict[str, tuple[str, list[GenerationRow], str] | None] = {}
        for kind in cfg.judge.judges():
            judge = self.pipeline.pairwise_judge(kind, cfg)
            for cond in self.conditions:
                cond_rows, judgements, pair_plan = self._judge_condition(kind, judge, cond, states[cond.name],
                                                                         ref_cache)
                if pair_plan.no_reference:
                    meta["no_reference"][cond.name] = list(pair_plan.no_reference)
                if pair_plan.unmatched():  # conditions generate the same prompts: a difference is a bug, made loud
                    meta.setdefault("unmatched_prompts", {})[cond.name] = pair_plan.unmatched()
                    log.warning("judge %s: %s and its reference cover different prompts (not judged):\n%s", kind,
                                cond.name, pair_plan.unmatched_message(cond.name, "the reference"))
                all_judgements.setdefault(cond.name, {})[kind] = judgements
                rows += cond_rows
        kinds = cfg.judge.judges()
        for cond_name, by_kind in all_judgements.items():
            for other in kinds[1:]:
                rows += agreement_rows(cond_name, kinds[0], by_kind[kinds[0]], other, by_kind[other])
        if cfg.judge.rubric:
            rows += rubric_rows([ConditionPaths.of(self.run_dir, c.name) for c in self.conditions],
                                self.pipeline.rubric_judge(cfg), cfg)
        return rows, meta

    # ------------------------------------------------------------------ workers
    def _condition_fingerprint(self, cond: Condition) -> str:
        """Everything a condition's stages depend on: its done marker must match it."""
        cfg = self.config
        extra = () if cond.method == "tune" and cfg.bench is None else (
            cond.method, cond.lens, cond.steer, cfg.probe, to_dict(cfg.bench) if cfg.bench else None)
        return fingerprint("condition", asdict(cond.mixture), cond.train, cfg.model, cfg.seed,
                           cfg.generate.stage_settings(), to_dict(cfg.evaluate), self.data_fingerprints, *extra)

    def _judging_fingerprint(self, cond: Condition, fps: dict[str, str]) -> str:
        cfg = self.config
        refs = sorted({cfg.judge.reference_for(lang) for lang in cfg.eval_languages})
        return fingerprint("judging", fps[cond.name], {r: fps.get(r) for r in refs}, to_dict(cfg.judge))

    def _judging_ready(self, cond: Condition, claims: Claims, fps: dict[str, str]) -> bool:
        """A condition's judging can run once it and its references in this run are finished."""
        if not claims.is_done(cond.name, fps[cond.name]):
            return False
        if self.config.judge.reference_run:
            return True
        refs = {self.config.judge.reference_for(lang) for lang in self.config.eval_languages}
        return all(claims.is_done(r, fps[r]) for r in refs if r in fps)

    def _judge_one(self, cond: Condition) -> None:
        """All judging of one condition (each SxS judge, the rubric), as a worker does it."""
        cfg = self.config
        state = self._run_condition(cond)  # finished: every stage is skipped; gives its fingerprints
        ref_cache: dict[str, tuple[str, list[GenerationRow], str] | None] = {}
        for kind in cfg.judge.judges():
            self._judge_condition(kind, self.pipeline.pairwise_judge(kind, cfg), cond, state, ref_cache)
        if cfg.judge.rubric:
            rubric_rows([ConditionPaths.of(self.run_dir, cond.name)], self.pipeline.rubric_judge(cfg), cfg)

    def _work(self) -> None:
        """Worker mode: claim and run pending conditions, then the judging whose inputs are complete,
        until a whole pass finds nothing this worker can take (see `claims`)."""
        claims = Claims(self.run_dir, self.claim_settings)
        fps = {c.name: self._condition_fingerprint(c) for c in self.conditions}
        judging = {c.name: self._judging_fingerprint(c, fps) for c in self.conditions}
        while True:
            progressed = False
            for cond in self.conditions:
                if claims.is_done(cond.name, fps[cond.name]):
                    continue
                with claims.try_claim(cond.name) or contextlib.nullcontext() as claim:
                    if claim is None or claims.is_done(cond.name, fps[cond.name]):
                        continue
                    print(f"worker: condition {cond.name}", flush=True)
                    self._run_condition(cond)
                    claims.mark_done(cond.name, fps[cond.name])
                    self.summary.worked.append(cond.name)
                    progressed = True
            for cond in self.conditions:
                unit = f"{cond.name}@judge"
                if claims.is_done(unit, judging[cond.name]) or not self._judging_ready(cond, claims, fps):
                    continue
                with claims.try_claim(unit) or contextlib.nullcontext() as claim:
                    if claim is None or claims.is_done(unit, judging[cond.name]):
                        continue
                    self.pipeline.release()
                    print(f"worker: judging {cond.name}", flush=True)
                    self._judge_one(cond)
                    claims.mark_done(unit, judging[cond.name])
                    self.summary.worked.append(unit)
                    progressed = True
            if not progressed:
                break
        self.pipeline.release()
        self.summary.pending = sorted(
            [c.name for c in self.conditions if not claims.is_done(c.name, fps[c.name])]
            + [f"{c.name}@judge" for c in self.conditions if not claims.is_done(f"{c.name}@judge", judging[c.name])])

    def _refuse_live_workers(self) -> None:
        live = Claims(self.run_dir, self.claim_settings).live_claims()
        if live:
            held = ", ".join(f"{unit} ({info.get('host', '?')} pid {info.get('pid', '?')})"
                             for unit, info in live.items())
            raise RuntimeError(f"workers are still running in {self.run_dir}: {held}. Run this again when they have "
                               f"finished, or join them with --worker (claims: {self.run_dir / CLAIMS_DIR})")

    # ------------------------------------------------------------------ main
    def run(self) -> RunSummary:
        from babeltune.runinfo import write_run_info

        start = time.perf_counter()
        self._load_data()
        self.plan = self._plan()
        if self.worker:
            self._work()
            self.summary.seconds = time.perf_counter() - start
            return self.summary
        self._refuse_live_workers()
        write_run_info(self.run_dir, config=self.config, seed=self.config.seed, data=self.data_fingerprints,
                       extra={"conditions": [c.name for c in self.conditions]})
        states = {}
        for cond in self.conditions:
            states[cond.name] = self._run_condition(cond)
        self.pipeline.release()
        rows: list[ResultRow] = []
        for cond in self.conditions:
            paths = ConditionPaths.of(self.run_dir, cond.name)
            rows += [ResultRow.from_dict(r) for r in json.loads(paths.eval_rows.read_text(encoding="utf-8"))]
            if self.config.bench is not None:
                rows += bench_rows(cond.name, paths.bench)
            rows += compute_rows(cond.name, compute_summary(paths.root))
            loss = states[cond.name]["train"].get("final_loss")
            if loss is not None:
                rows.append(ResultRow(cond.name, "all", "train_loss", float(loss), n=cond.mixture.budget))
        judge_rows, judge_meta = self._judge_all(states)
        rows += judge_rows
        names = [c.name for c in self.conditions]
        rows += difference_rows(rows, self.run_dir, names, self.config.baseline or self.config.judge.reference,
                                seed=self.config.seed)
        meta = self._meta(states, judge_meta)
        write_results(rows, self.run_dir, meta)
        self._write_samples()
        self.summary.rows = rows
        if self.make_report:
            from babeltune.report import build_report

            self.summary.report = build_report(self.run_dir)
        self.summary.seconds = time.perf_counter() - start
        return self.summary

    def _meta(self, states: dict[str, dict[str, Any]], judge_meta: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        info = {}
        for cond in self.conditions:
            summary = states[cond.name]["mixture"]["summary"]
            refs = sorted({cfg.judge.reference_for(lang) for lang in cfg.eval_languages})
            info[cond.name] = {"mixture": _describe(cond), "per_language": summary.get("per_language", {}),
                               "seen_languages": summary.get("seen_languages", []),
                               "reference": refs[0] if len(refs) == 1 else cfg.judge.reference,
                               "varied": cond.varied}
        kinds = cfg.judge.judges()
        return {"experiment": cfg.name, "model": cfg.model, "conditions": [c.name for c in self.conditions],
                "languages": list(cfg.eval_languages), "primary_judge": kinds[0] if kinds else None,
                "judges": kinds, "condition_info": info,
                "compute": {c.name: compute_summary(ConditionPaths.of(self.run_dir, c.name).root)
                            for c in self.conditions},
                "bench": {c.name: bench_meta(ConditionPaths.of(self.run_dir, c.name).bench)
                          for c in self.conditions} if cfg.bench is not None else {},
                "reference_note": f"Reference per language: {cfg.judge.reference}"
                                  + (f" from {cfg.judge.reference_run}" if cfg.judge.reference_run else "") + ".",
                **judge_meta}

    def _write_samples(self) -> None:
        from babeltune.report import SAMPLES_JSON

        eval_records = self.splits.get("eval", [])
        responses = {c.name: {r.id: r for r in read_generation_rows(ConditionPaths.of(self.run_dir, c.name)
                                                                        .generations("eval"))}
                     for c in self.conditions}
        out: dict[str, list[dict[str, Any]]] = {}
        for lang in self.config.eval_languages:
            recs = [r for r in eval_records if r.lang == lang][: self.config.samples_per_language]
            out[lang] = [{"id": r.id, "pid": r.pid, "prompt": r.prompt, "reference": r.response,
                          "responses": {c: _response_text(responses[c].get(r.id)) for c in responses}}
                         for r in recs]
        (self.run_dir / SAMPLES_JSON).write_text(json.dumps({"languages": out}, ensure_ascii=False, indent=1),
                                                 encoding="utf-8")


def generation_model(train_info: dict[str, Any], backend: str) -> str:
    """The tuned model a condition generates with: a LoRA run's adapter on the vllm and endpoint
    backends (served on the shared base model), else the model the train stage reported (merged if
    written)."""
    adapter = train_info.get("adapter")
    return str(adapter if adapter and backend != "local" else train_info["model"])


def _describe(cond: Condition) -> str:
    if cond.method != "tune":
        return describe_method(cond)
    m = cond.mixture
    if m.recipe == "monolingual":
        return f"monolingual {m.lang}"
    if m.recipe == "pinch":
        count = m.pinch_count if m.pinch_count is not None else 40
        amount = f"{m.pinch_percent}%" if m.pinch_percent is not None else f"{count} examples"
        return f"pinch {amount} over {len(m.languages)} languages, base {m.lang or 'en'}"
    return f"{m.recipe} over {','.join(m.languages)}"


def run_experiment(config: ExperimentConfig, run_dir: str | Path, pipeline: Pipeline | None = None, *,
                   progress: bool = True, report: bool = True, worker: bool = False,
                   claims: ClaimSettings | None = None) -> RunSummary:
    """Run (or resume) `config` into `run_dir`; see `ExperimentRunner`. With `worker`, take a share of
    the grid beside other workers (see `babeltune.experiments.claims`) and leave results and report to
    a plain run afterwards."""
    return ExperimentRunner(config, run_dir, pipeline, progress=progress, report=report, worker=worker,
                            claims=claims).run()


def _response_text(row: GenerationRow | None) -> str:
    """A row's answer for the samples table ("" for a missing or failed one)."""
    return (row.response if row is not None else None) or ""
