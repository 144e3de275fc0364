"""Capacity plan (issue 19, seed 004): how many serving instances of a variant fit on one node, from the
memory and threads one instance was measured with, after the reserve the system keeps.

instances per node = floor(min((host memory − reserve memory) / memory per instance,
                               (host cores − reserve threads) / threads per instance))
"""

import math
import os

import psutil
from pydantic import BaseModel, ByteSize, ConfigDict, Field

# Seed 004 ("deploying several inference services"): leave ~4 GB of memory and ~4 threads per node to
# the background processes.
DEFAULT_RESERVE_MEMORY = ByteSize(4 * 10**9)
DEFAULT_RESERVE_THREADS = 4


class Host(BaseModel):
    """The node a plan is for; sizes as pydantic's ByteSize reads them (64G = 64e9 bytes, 64GiB = 2^36)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host_memory: ByteSize = Field(gt=0, description="The node's memory, e.g. 64G.")
    host_cores: int = Field(ge=1, le=4096, description="The node's cores (threads the instances may use).")
    reserve_memory: ByteSize = Field(
        default=DEFAULT_RESERVE_MEMORY, description="Memory kept for the system."
    )
    reserve_threads: int = Field(
        default=DEFAULT_RESERVE_THREADS, ge=0, description="Threads kept for the system."
    )


class CapacityPlan(BaseModel):
    """Instances of one variant on one node, and which of memory or threads bounds them."""

    instance_memory_mb: float
    instance_threads: int
    by_memory: int
    by_threads: int
    instances: int
    bound: str  # "memory" or "threads": the smaller


def this_host() -> Host:
    """The host running quantforge, with the default reserve."""
    return Host(host_memory=psutil.virtual_memory().total, host_cores=len(os.sched_getaffinity(0)))


def plan_capacity(host: Host, instance_memory_mb: float, instance_threads: int) -> CapacityPlan:
    """Instances per node after the reserve (none when the reserve leaves too little)."""
    free_mb = (host.host_memory - host.reserve_memory) / 2**20
    by_memory = max(0, math.floor(free_mb / instance_memory_mb))
    by_threads = max(0, (host.host_cores - host.reserve_threads) // instance_threads)
    return CapacityPlan(
        instance_memory_mb=instance_memory_mb,
        instance_threads=instance_threads,
        by_memory=by_memory,
        by_threads=by_threads,
        instances=min(by_memory, by_threads),
        bound="memory" if by_memory < by_threads else "threads",
    )
