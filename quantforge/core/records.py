"""The records every floor passes around: what was measured, what it cost, how it was judged, and what
the registry remembers of it. Plain pydantic models, no behaviour beyond their own fields."""

from pydantic import BaseModel


class Perplexity(BaseModel):
    """Token-level perplexity over non-overlapping windows."""

    ppl: float
    mean_nll: float
    tokens_scored: int
    windows: int
    # Summed NLL of each window, so a variant's and its baseline's can be paired window by window
    # (empty in records made before issue 18).
    window_nll: list[float] = []


class Divergence(BaseModel):
    """How far a variant's next-token distributions are from its baseline's on the same windows:
    KL(baseline || variant) per token and top-1 agreement, as llama.cpp's `perplexity --kl-divergence`."""

    mean_kld: float
    p99_kld: float
    top1_agreement: float  # share of tokens whose most likely next token is the baseline's
    # the baseline's distributions were kept as their top_k log-probs, rest_samples tokens drawn from the
    # rest and the rest's mass (tasks/torch_runtime.py's `compact`)
    top_k: int
    rest_samples: int
    window_kld: list[float] = []  # summed KLD of each window (empty where not kept, as window_nll)
    window_top1: list[int] = []  # tokens of each window whose top-1 agrees


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
    divergence: Divergence | None = None  # None for a baseline, and where not measured (IPEX, older runs)


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
