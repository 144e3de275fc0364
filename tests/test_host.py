"""The host profile of every measured figure: parsed from /proc/cpuinfo texts, records without one still load,
a figure from another machine is marked and never ranked with this run's, the request's precision."""

import pytest
from pydantic import ValidationError

from quantforge.core.records import HostProfile, Lineage, Metrics
from quantforge.tasks.backends.base import Baseline
from quantforge.tasks.host import cpu_of, describe, host_profile, memory_gib, same_machine
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.report import RunReport, best_passing, compared, markdown, pareto_front
from quantforge.tasks.request import QuantizeRequest
from tests.test_report import variant

AVX2_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2
"""
SAPPHIRE_RAPIDS_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx_vnni avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
MEMINFO = "MemTotal:        8039208 kB\nMemFree:          123456 kB\n"
AVX2_HOST = HostProfile(cpu="AMD EPYC", isa=["AVX2"], cores=2, memory_gib=7.7, inference_precision="f32")
AMX_HOST = HostProfile(
    cpu="Intel(R) Xeon(R) Platinum 8480+",
    isa=["AVX2", "AVX-VNNI", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16", "AMX-BF16", "AMX-INT8"],
    cores=56,
    memory_gib=251.6,
    inference_precision="f32",
)


def test_an_avx2_only_cpu_and_an_amx_one_are_told_apart():
    assert cpu_of(AVX2_CPUINFO) == ("AMD EPYC", ["AVX2"])
    assert cpu_of(SAPPHIRE_RAPIDS_CPUINFO) == (AMX_HOST.cpu, AMX_HOST.isa)
    assert memory_gib(MEMINFO) == 7.7
    assert describe(AMX_HOST) == (
        "Intel(R) Xeon(R) Platinum 8480+ (AVX2, AVX-VNNI, AVX-512F, AVX-512 VNNI, AVX-512 BF16, AMX-BF16, "
        "AMX-INT8), 56 cores, 251.6 GiB, f32"
    )
    assert not same_machine(AVX2_HOST, AMX_HOST)
    # the precision is the protocol's business (the lookup's), not the machine's
    assert same_machine(AVX2_HOST, AVX2_HOST.model_copy(update={"inference_precision": "bf16"}))


def test_this_host_profile_says_what_openvino_reports():
    import openvino as ov

    host = host_profile("f32", openvino=True)
    assert host.openvino == ov.get_version()
    assert host.openvino_capabilities == ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert host.cores >= 1 and host.memory_gib > 0 and host.cpu
    assert host_profile(None, openvino=False).openvino is None


def test_records_made_before_host_profiles_load():
    metrics = variant("a", 10, 20, 5).metrics.model_dump(mode="json", exclude={"host"})
    assert "host" not in metrics and Metrics.model_validate(metrics).host is None
    lineage = Lineage.model_validate(
        {
            "source_repo": "o/m",
            "source_sha": "a" * 40,
            "evaluation": "e",
            "evaluation_hash": "h",
            "baseline": metrics,
        }
    )
    assert (
        lineage.inference_precision is None and describe(None) == "host not recorded (made before issue 19)"
    )


def on(host: HostProfile | None, result):
    return result.model_copy(update={"metrics": result.metrics.model_copy(update={"host": host})})


def test_a_record_from_another_host_is_marked_and_never_ranked():
    """The AMX host's record is the smallest and best; next to this AVX2 run's it is shown, marked, with
    its Δppl against its own baseline, and left out of best and Pareto front."""
    here = [on(AVX2_HOST, variant("int8", 80, 21, 30)), on(AVX2_HOST, variant("int4", 60, 24, 40))]
    there = on(AMX_HOST, variant("int8-static-sq", 50, 20.5, 50)).model_copy(update={"reused": True})
    baseline = Baseline(
        runtime="openvino", label="original", metrics=on(AVX2_HOST, variant("b", 1, 20, 3)).metrics
    )
    results = [*here, there]
    assert best_passing(results) == "int8-static-sq"  # what ranking them as one would say
    ranked = compared(results, {"openvino": baseline})
    assert [r.recipe for r in ranked] == ["int8", "int4"]
    report = RunReport(
        source_repo="o/m",
        source_sha="a" * 40,
        toolchain={},
        evaluation="wikitext2",
        evaluation_hash="h",
        eval_tokens=1024,
        calibration=None,
        baselines={"openvino": baseline},
        mlflow_run_id="r",
        variants=results,
        best=best_passing(ranked),
        pareto_front=pareto_front(ranked),
        wall_seconds=1.0,
    )
    lines = markdown(report).splitlines()
    hosts = lines[lines.index("## Hosts") + 1 : lines.index("## Target devices") - 1]
    assert hosts == [
        f"- {describe(AVX2_HOST)}: baseline (openvino), int8, int4",
        f"- {describe(AMX_HOST)}: int8-static-sq (reused)",
        f"- **int8-static-sq** measured on another host ({describe(AMX_HOST)}) than this run's baseline "
        f"({describe(AVX2_HOST)}): its Δppl is against its own baseline, measured there; left out of the "
        "best pick and the Pareto front",
    ]
    assert report.best == "int4" and "int8-static-sq" not in report.pareto_front
    (row,) = [line for line in lines if line.startswith("| int8-static-sq |")]
    assert "| PASS (other host) |" in row
    # a record without a profile next to a run with one is not known to be the same machine either
    assert compared([on(None, here[0])], {"openvino": baseline}) == []


def test_the_protocol_precision_is_f32_unless_asked_and_checked():
    recipe = Recipe(name="a", bits=4, group_size=128)
    assert QuantizeRequest(model="m", recipe=recipe).inference_precision == "f32"
    assert QuantizeRequest(model="m", recipe=recipe, inference_precision="bf16").inference_precision == "bf16"
    with pytest.raises(ValidationError, match="inference_precision"):
        QuantizeRequest(model="m", recipe=recipe, inference_precision="int8")
