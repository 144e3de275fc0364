"""The records every floor passes around: what was measured, what it cost, how it was judged, and what
the registry remembers of it. Plain pydantic models, no behaviour beyond their own fields."""

from pydantic import BaseModel


class Perplexity(BaseModel):
    """Token-level perplexity over non-overlapping windows."""

    ppl: float
    mean_nll: float
    tokens_scored: int
    windows: int


class Speed(BaseModel):
    """Greedy decode speed with a fixed prompt and new-token count."""

    tokens_per_second: float
    ttft_ms: float
    new_tokens: int


class WeightShares(BaseModel):
    """Share of weight elements stored as 4-bit, 8-bit and floating point."""

    int4: float
    int8: float
    float: float


class Metrics(BaseModel):
    """Everything measured on one model directory."""

    perplexity: Perplexity
    speed: Speed | None
    size_mb: float
    weights: WeightShares
    seconds: float = 0.0  # wall time of the whole measurement


class StepUsage(BaseModel):
    """What one step cost."""

    seconds: float = 0.0
    peak_pss_mb: float = 0.0  # `tree_memory` at its peak (the IPEX worker: its own max RSS, one process)


class Verdict(BaseModel):
    """Pass or fail, with one reason per rule checked."""

    passed: bool
    reasons: list[str]


class Lineage(BaseModel):
    """What a flow run measured a variant against: the same for every variant of one runtime in a run."""

    source_repo: str
    source_sha: str
    evaluation: str
    evaluation_hash: str
    baseline: Metrics


class RecordedVariant(BaseModel):
    """A variant already made, measured and judged by an earlier flow run."""

    identity: str
    run_id: str
    recipe_name: str
    metrics: Metrics
    ppl_increase_pct: float
    verdict: Verdict
    lineage: Lineage
    quantize_seconds: float | None  # None when the recording run quantized nothing (its cache had it)
    quantize_peak_pss_mb: float | None
    model_name: str | None  # set when it passed and was registered
    model_version: int | None
