"""The host profile that goes with every measured figure: CPU model, the ISA extensions that change what a
quantized model computes or how fast, cores, memory, OpenVINO's version and the precision it ran at.

The same recipe on the same model gave ppl 88.2 on an AVX2-only host and 24.9 on an AVX-512 one (issue 19):
figures made on different hosts are not compared as one (`same_machine`).
"""

import os
from pathlib import Path

from quantforge.core.records import HostProfile

# /proc/cpuinfo's flag -> the name the report shows, in the order shown
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx_vnni": "AVX-VNNI",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}
CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")


def cpu_of(cpuinfo: str) -> tuple[str, list[str]]:
    """The model name and the ISA extensions of `ISA_FLAGS` in a /proc/cpuinfo text (its first CPU's)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", "unknown"), [name for flag, name in ISA_FLAGS.items() if flag in flags]


def memory_gib(meminfo: str) -> float:
    """MemTotal of a /proc/meminfo text, in GiB to one decimal."""
    kib = next(int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:"))
    return round(kib / 2**20, 1)


def host_profile(inference_precision: str | None, openvino: bool) -> HostProfile:
    """This host's profile; with `openvino`, the version and what its CPU plugin reports too."""
    cpu, isa = cpu_of(CPUINFO.read_text())
    profile = HostProfile(
        cpu=cpu,
        isa=isa,
        cores=len(os.sched_getaffinity(0)),
        memory_gib=memory_gib(MEMINFO.read_text()),
        inference_precision=inference_precision,
    )
    if not openvino:
        return profile
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return profile.model_copy(update={"openvino": ov.get_version(), "openvino_capabilities": capabilities})


def same_machine(a: HostProfile | None, b: HostProfile | None) -> bool:
    """Whether two figures come from the same kind of machine (CPU, ISA, cores, memory); two records made
    before host profiles existed count as one (nothing says otherwise), one without and one with do not."""
    machine = {"cpu", "isa", "cores", "memory_gib"}
    if a is None or b is None:
        return a is b
    return a.model_dump(include=machine) == b.model_dump(include=machine)


def describe(host: HostProfile | None) -> str:
    """One line: `AMD EPYC (AVX2), 2 cores, 7.7 GiB, OpenVINO 2026.4.1, f32`."""
    if host is None:
        return "host not recorded (made before issue 19)"
    parts = [
        f"{host.cpu} ({', '.join(host.isa) or 'no AVX2'})",
        f"{host.cores} cores",
        f"{host.memory_gib} GiB",
        *([f"OpenVINO {host.openvino.split('-')[0]}"] if host.openvino else []),
        *([host.inference_precision] if host.inference_precision else []),
    ]
    return ", ".join(parts)
