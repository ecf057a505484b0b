"""Standard benchmarks through EleutherAI's lm-evaluation-harness (`babeltune bench`).

Heavy imports (torch, lm_eval) happen inside the functions of `babeltune.bench.harness`."""
