"""A service-level objective stated as the application's numbers, what it asks of one request, and a
variant measured against it under that concurrency (issue 19, seed 002: Eduardo Alvarez, "Improving
LLM Inference Latency on CPUs with Model Quantization").

The article's Figure 1 is an image; its arithmetic, written out (seed 002's numbers in brackets):

- inference time per session = session target − overhead − requests × think time [180 − 10 − 5 × 30 = 20 s]
- budget per request = inference time per session / requests [20 / 5 = 4 s]
- budget per output token = budget per request / output tokens [4 s / 100 = 40 ms]
- sessions in flight (Little's law, a session lasting its target) = arrival rate × session target
  [300 / 3600 × 180 = 15]
- requests in flight = arrival rate × requests × budget per request [300 / 3600 × 5 × 4 = 1.67, so 2]

A request meets its budget when TTFT + (output tokens − 1) × time per output token fits in it: the
gate takes both at their 95th percentile over the requests sent at once.
"""

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantforge.core.child_process import in_child_process
from quantforge.core.errors import QuantforgeError, truncated
from quantforge.core.records import HostProfile
from quantforge.core.yaml_input import MAX_ECHO, MAX_MESSAGE, read_yaml
from quantforge.tasks.capacity import CapacityPlan, Host, plan_capacity, this_host
from quantforge.tasks.host import describe, host_profile
from quantforge.tasks.resources import PeakSampler

# The text the measured prompts are cut from (token ids sliced to the SLO's `tokens_in`).
PROMPT_TEXT = "The history of the city begins with a small settlement on the river bank. " * 64


class Slo(BaseModel):
    """The application a variant must serve: seed 002's example is the defaults' shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sessions_per_hour: float = Field(gt=0, description="Sessions started per hour.")
    requests_per_session: int = Field(ge=1, le=1000, description="LLM requests in one session.")
    tokens_in: int = Field(ge=1, le=8192, description="Prompt tokens of one request.")
    tokens_out: int = Field(ge=1, le=4096, description="Tokens generated for one request.")
    overhead_s: float = Field(ge=0, description="Per session: authentication, guardrails, network.")
    think_time_s: float = Field(ge=0, description="The user's time to answer, per request.")
    session_target_s: float = Field(gt=0, description="A session's target length, end to end.")
    # One instance answers its requests batched on the host's cores; past a few at once on a small host
    # the measurement is of queueing, so more are served by more instances (the gate says how many).
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Requests one instance answers at once.")

    @model_validator(mode="after")
    def _leaves_time_to_infer(self) -> "Slo":
        waiting = self.overhead_s + self.requests_per_session * self.think_time_s
        if self.session_target_s <= waiting:
            raise ValueError(
                f"`session_target_s` {self.session_target_s:g} leaves no time to infer: overhead_s "
                f"{self.overhead_s:g} + {self.requests_per_session} x think_time_s {self.think_time_s:g} "
                f"= {waiting:g} s"
            )
        return self


class SloDerivation(BaseModel):
    """What the SLO asks of one request and how many are in flight (the module's docstring)."""

    inference_s_per_session: float
    request_budget_s: float
    token_budget_ms: float
    concurrent_sessions: float
    concurrent_requests: float
    required_concurrency: int  # requests in flight, rounded up: what the instances must answer at once


class SloMeasurement(BaseModel):
    """One instance answering `concurrency` requests at once, `rounds` times (openvino_genai's
    per-request perf metrics), and its memory meanwhile."""

    concurrency: int
    requests: int
    ttft_ms_p50: float
    ttft_ms_p95: float
    tpot_ms_p50: float  # time per output token after the first
    tpot_ms_p95: float
    threads: int  # INFERENCE_NUM_THREADS of the instance
    instance_pss_mb: float  # peak PSS of the serving process while it answered
    host: HostProfile | None = None  # the machine measured on, at the CPU plugin's default precision


class SloResult(BaseModel):
    """A variant against an SLO: the derivation, the measurement, the verdict."""

    slo: Slo
    derivation: SloDerivation
    measurement: SloMeasurement
    request_ms_p95: float  # TTFT p95 + (tokens_out - 1) x TPOT p95
    meets: bool
    instances: int | None  # instances serving the required concurrency; None when it does not meet
    reason: str


class SloReport(BaseModel):
    """The run's SLO: its derivation, each quality-passing variant against it, and how many instances of
    each fit on the host that measured (after the default reserve)."""

    slo: Slo
    derivation: SloDerivation
    host: Host
    variants: dict[str, SloResult]  # by recipe
    capacity: dict[str, CapacityPlan]  # by recipe, on `host`


def slo_report(slo: Slo, judged: dict[str, SloResult]) -> SloReport:
    """The report's SLO section's data: the judged variants and their capacity on this host."""
    host = this_host()
    return SloReport(
        slo=slo,
        derivation=derive(slo),
        host=host,
        variants=judged,
        capacity={
            name: plan_capacity(host, result.measurement.instance_pss_mb, result.measurement.threads)
            for name, result in judged.items()
        },
    )


def slo_markdown(report: SloReport) -> list[str]:
    """The SLO section of report.md: the derivation written out, then each variant's verdict and plan."""
    slo, derived, host = report.slo, report.derivation, report.host
    waiting = f"{slo.overhead_s:g} − {slo.requests_per_session} × {slo.think_time_s:g}"
    arrival = f"{slo.sessions_per_hour:g} / 3600"
    memory, reserve = (size.human_readable(decimal=True) for size in (host.host_memory, host.reserve_memory))
    return [
        "## Service-level objective",
        f"- {slo.sessions_per_hour:g} sessions/h of {slo.requests_per_session} requests "
        f"({slo.tokens_in} tokens in, {slo.tokens_out} out), {slo.overhead_s:g} s overhead, "
        f"{slo.think_time_s:g} s think time, sessions within {slo.session_target_s:g} s",
        f"- inference per session: {slo.session_target_s:g} − {waiting} = "
        f"{derived.inference_s_per_session:g} s; per request {derived.request_budget_s:g} s; "
        f"per output token {derived.token_budget_ms:g} ms",
        f"- in flight (Little's law): {arrival} × {slo.session_target_s:g} = "
        f"{derived.concurrent_sessions:g} sessions; {arrival} × {slo.requests_per_session} × "
        f"{derived.request_budget_s:g} s = {derived.concurrent_requests:.2f} requests, so "
        f"{derived.required_concurrency} at once",
        *(
            f"- **{name}**: {result.reason} (on {describe(result.measurement.host)})"
            for name, result in report.variants.items()
        ),
        f"- capacity on this host ({memory}, {host.host_cores} cores; reserve {reserve}, "
        f"{host.reserve_threads} threads):",
        *(
            f"  - **{name}**: {plan.instance_memory_mb:.0f} MiB and {plan.instance_threads} threads an "
            f"instance: {plan.instances} per node ({plan.bound} bound)"
            for name, plan in report.capacity.items()
        ),
    ]


def slo_card_lines(result: SloResult) -> list[str]:
    """The model card's short SLO section: the application, the verdict, one instance's footprint."""
    slo, measured = result.slo, result.measurement
    return [
        "## Service-level objective and capacity",
        "",
        f"Against {slo.sessions_per_hour:g} sessions/h of {slo.requests_per_session} requests "
        f"({slo.tokens_in} tokens in, {slo.tokens_out} out) within {slo.session_target_s:g} s a session: "
        f"{result.reason}.",
        f"One serving instance held {measured.instance_pss_mb:.0f} MiB (PSS) answering "
        f"{measured.concurrency} requests at once with {measured.threads} threads; `quantforge plan "
        "NAME@ALIAS --host-memory 64G --host-cores 32` gives the instances per node of another host.",
    ]


def slo_cell(result: SloResult | None) -> str:
    """The report table's SLO cell: meets with its instance count, does not meet, or not measured."""
    if result is None:
        return "-"
    return f"meets ({result.instances} inst.)" if result.meets else "not met"


def derive(slo: Slo) -> SloDerivation:
    """The per-request and per-token budgets and the concurrency the SLO implies."""
    inference = slo.session_target_s - slo.overhead_s - slo.requests_per_session * slo.think_time_s
    request_budget = inference / slo.requests_per_session
    arrival_per_s = slo.sessions_per_hour / 3600
    in_flight = arrival_per_s * slo.requests_per_session * request_budget
    return SloDerivation(
        inference_s_per_session=inference,
        request_budget_s=request_budget,
        token_budget_ms=request_budget * 1000 / slo.tokens_out,
        concurrent_sessions=arrival_per_s * slo.session_target_s,
        concurrent_requests=in_flight,
        required_concurrency=max(1, math.ceil(in_flight - 1e-9)),
    )


def judge_slo(slo: Slo, measurement: SloMeasurement) -> SloResult:
    """Meets when a request's p95 time fits its budget; instances: the required concurrency over what
    one instance answered at once."""
    derivation = derive(slo)
    request_ms = measurement.ttft_ms_p95 + (slo.tokens_out - 1) * measurement.tpot_ms_p95
    budget_ms = derivation.request_budget_s * 1000
    meets = request_ms <= budget_ms
    instances = math.ceil(derivation.required_concurrency / measurement.concurrency) if meets else None
    verb = "met" if meets else "not met"
    reason = (
        f"SLO {verb}: request p95 {request_ms:.0f} ms (TTFT {measurement.ttft_ms_p95:.0f} ms + "
        f"{slo.tokens_out - 1} x {measurement.tpot_ms_p95:.1f} ms) against {budget_ms:.0f} ms, "
        f"{measurement.concurrency} at once"
    )
    if meets:
        reason += f"; {derivation.required_concurrency} in flight: {instances} instance(s)"
    return SloResult(
        slo=slo,
        derivation=derivation,
        measurement=measurement,
        request_ms_p95=request_ms,
        meets=meets,
        instances=instances,
        reason=reason,
    )


def parse_slo(data: Any, where: str) -> Slo:
    """An `Slo` from YAML data; a problem is one line naming the field and the value given."""
    try:
        return Slo.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if field:
            got = truncated(repr(first["input"]), MAX_ECHO)
            message = f"field `{truncated(field, MAX_ECHO)}`: {message} (got {got})"
        raise QuantforgeError(truncated(f"`slo` in {where}: {message}", MAX_MESSAGE)) from None


def load_slo(path: Path) -> Slo:
    """The SLO in a YAML file (`--slo FILE`), read within the bounds of every YAML input."""
    if not path.is_file():
        raise QuantforgeError(f"`slo`: file {truncated(repr(str(path)), MAX_ECHO)} does not exist")
    return parse_slo(read_yaml(path, "slo"), path.name)


def measure_slo(model_dir: Path, slo: Slo, threads: int | None = None, rounds: int = 3) -> SloMeasurement:
    """Load the variant as a continuous-batching pipeline on CPU and answer `rounds` times as many
    requests at once as the SLO has in flight (at most its `max_concurrency`), after one warm-up; run
    it in a process of its own (`in_child_process`) so its PSS is the instance's."""
    import openvino as ov
    import openvino_genai

    threads = threads or len(os.sched_getaffinity(0))
    concurrency = min(derive(slo).required_concurrency, slo.max_concurrency)
    scheduler = openvino_genai.SchedulerConfig()
    scheduler.max_num_seqs = concurrency
    with PeakSampler(psutil.Process()) as sampler:
        pipe = openvino_genai.ContinuousBatchingPipeline(
            str(model_dir), scheduler, "CPU", {"INFERENCE_NUM_THREADS": threads}
        )
        ids = pipe.get_tokenizer().encode(PROMPT_TEXT).input_ids.data[:, : slo.tokens_in]
        prompt = ov.Tensor(np.ascontiguousarray(ids))
        config = openvino_genai.GenerationConfig(
            max_new_tokens=slo.tokens_out, min_new_tokens=slo.tokens_out, ignore_eos=True, do_sample=False
        )
        _answer(pipe, prompt, config, 1)  # warm-up: the first inference compiles kernels
        metrics = [m for _ in range(rounds) for m in _answer(pipe, prompt, config, concurrency)]
    ttft = [m.get_ttft().mean for m in metrics]
    tpot = [m.get_tpot().mean for m in metrics]
    return SloMeasurement(
        concurrency=concurrency,
        requests=len(metrics),
        ttft_ms_p50=float(np.percentile(ttft, 50)),
        ttft_ms_p95=float(np.percentile(ttft, 95)),
        tpot_ms_p50=float(np.percentile(tpot, 50)),
        tpot_ms_p95=float(np.percentile(tpot, 95)),
        threads=threads,
        instance_pss_mb=sampler.peak / 2**20,
        # no precision hint is passed: the pipeline computes at the plugin's default, recorded as such
        host=host_profile(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(), True),
    )


def _answer(pipe: Any, prompt: Any, config: Any, count: int) -> list[Any]:
    """`count` requests added at once, stepped until all are finished: each one's perf metrics."""
    handles = [pipe.add_request(i, prompt, config) for i in range(count)]
    while pipe.has_non_finished_requests():
        pipe.step()
    return [handle.get_perf_metrics() for handle in handles]


def measure_slo_apart(model_dir: Path, slo: Slo) -> SloMeasurement:
    """`measure_slo` in a child process: the instance's memory is its own, not the flow's."""
    return in_child_process(f"SLO measurement of {model_dir.name}", measure_slo, model_dir, slo)
