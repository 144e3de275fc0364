"""The records every floor passes around: what was measured, what it cost, how it was judged, and what
the registry remembers of it. Plain pydantic models, no behaviour beyond their own fields."""

from typing import Any, Literal

from pydantic import BaseModel, model_validator

Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]


class Perplexity(BaseModel):
    """Token-level perplexity over non-overlapping windows."""

    ppl: float
    mean_nll: float
    tokens_scored: int
    windows: int
    # Summed NLL of each window, so a variant's and its baseline's can be paired window by window
    # (empty in records made before issue 18, and in MLflow's tags, which keep no per-window figures).
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


class GenerationAgreement(BaseModel):
    """Greedy continuations of fixed prompts (tasks/generation.py), a variant's against its baseline's."""

    prompts: int
    new_tokens: int  # every continuation's length (EOS ignored)
    token_agreement: float  # share of tokens identical to the baseline's at the same position
    mean_first_divergence: float  # mean position of the first differing token (new_tokens: none differs)
    first_divergence: list[int]  # each prompt's


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


class HostProfile(BaseModel):
    """The machine a figure was measured on, and the inference precision it ran at (tasks/host.py)."""

    cpu: str  # /proc/cpuinfo's model name
    isa: list[str]  # the extensions that change results or speed: AVX2, AVX-512F, AMX-BF16...
    cores: int  # the cores this process may run on
    memory_gib: float
    openvino: str | None = None  # OpenVINO's version, where OpenVINO measured
    openvino_capabilities: list[str] = []  # the CPU plugin's OPTIMIZATION_CAPABILITIES (FP32, BF16, INT8...)
    inference_precision: str | None = None  # as the compiled model reports it (f32, bf16, f16); None: unknown


class Metrics(BaseModel):
    """Everything measured on one model directory."""

    perplexity: Perplexity
    speed: Speed | None
    size_mb: float
    weights: WeightShares
    seconds: float = 0.0  # wall time of the whole measurement
    divergence: Divergence | None = None  # None for a baseline, and where not measured (IPEX, older runs)
    host: HostProfile | None = None  # None in records made before issue 19
    # None for a baseline, and where not measured (the PyTorch runtimes, older records)
    generation: GenerationAgreement | None = None


class StepUsage(BaseModel):
    """What one step cost."""

    seconds: float = 0.0
    peak_pss_mb: float = 0.0  # `tree_memory` at its peak (the IPEX worker: its own max RSS, one process)


class Interval(BaseModel):
    """A figure with its 95 % interval; none where it could not be estimated (a single window, or a
    record kept without its windows' figures)."""

    value: float
    low: float | None = None
    high: float | None = None


class Estimates(BaseModel):
    """The figures a verdict compares with its limits, each with its interval (paired bootstrap over
    the evaluation windows)."""

    ppl_increase_pct: Interval
    mean_kld: Interval | None = None  # None where divergence was not measured
    top1_agreement: Interval | None = None
    tokens: int  # scored, which the intervals' widths are for


class Verdict(BaseModel):
    """PASS, FAIL or INCONCLUSIVE (an interval straddles a limit), with one reason per rule checked and
    the estimates it compared. `passed` is PASS: only that registers."""

    passed: bool
    reasons: list[str]
    outcome: Outcome
    estimates: Estimates | None = None  # None in records made before issue 18
    tokens_needed: int | None = None  # INCONCLUSIVE: the tokens its undecided rules need (None: unknown)

    @model_validator(mode="before")
    @classmethod
    def _either_names_the_outcome(cls, data: Any) -> Any:
        """Records made before issue 18 say `passed` only; a new verdict may say `outcome` only."""
        if isinstance(data, dict) and "outcome" not in data and "passed" in data:
            return {**data, "outcome": "PASS" if data["passed"] else "FAIL"}
        if isinstance(data, dict) and "passed" not in data and "outcome" in data:
            return {**data, "passed": data["outcome"] == "PASS"}
        return data

    @model_validator(mode="after")
    def _passed_is_pass(self) -> "Verdict":
        if self.passed != (self.outcome == "PASS"):
            raise ValueError(f"`passed` is {self.passed} but `outcome` is {self.outcome}")
        return self


class Lineage(BaseModel):
    """What a flow run measured a variant against: the same for every variant of one runtime in a run."""

    source_repo: str
    source_sha: str
    evaluation: str
    evaluation_hash: str
    baseline: Metrics
    # how the baseline was scored (e.g. "original (OpenVINO IR, INT8 weight-only)"); None in older records
    baseline_label: str | None = None
    # the precision the perplexity protocol asked for (QuantizeRequest.inference_precision): part of what a
    # record is reused for; None in records made before issue 19, which ran at OpenVINO's default
    inference_precision: str | None = None
    # the perplexity protocol (QuantizeRequest.protocol): records made before it had one are quantforge's
    protocol: str = "quantforge"


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
