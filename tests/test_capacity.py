"""The capacity plan's arithmetic (tasks/capacity.py): instances per node after the system's reserve."""

import pytest
from pydantic import ValidationError

from quantforge.tasks.capacity import DEFAULT_RESERVE_MEMORY, DEFAULT_RESERVE_THREADS, Host, plan_capacity


def test_the_reserve_defaults_to_seed_004s_4_gb_and_4_threads():
    host = Host(host_memory="64G", host_cores=32)
    assert (host.reserve_memory, host.reserve_threads) == (4 * 10**9, 4)
    assert (DEFAULT_RESERVE_MEMORY, DEFAULT_RESERVE_THREADS) == (4 * 10**9, 4)


def test_threads_bound_a_small_instance_on_a_large_node():
    # (64e9 - 4e9) B / 1000 MiB = 57.2 -> 57 by memory; (32 - 4) / 4 = 7 by threads
    plan = plan_capacity(Host(host_memory="64G", host_cores=32), 1000, 4)
    assert (plan.by_memory, plan.by_threads, plan.instances, plan.bound) == (57, 7, 7, "threads")


def test_memory_bounds_a_large_instance_and_the_reserve_counts():
    # 64 GiB - 4 GiB = 61440 MiB / 10240 MiB = 6 by memory; (32 - 0) / 2 = 16 by threads
    host = Host(host_memory="64GiB", host_cores=32, reserve_memory="4GiB", reserve_threads=0)
    plan = plan_capacity(host, 10240, 2)
    assert (plan.by_memory, plan.by_threads, plan.instances, plan.bound) == (6, 16, 6, "memory")
    # without a reserve the same node holds 6.4 -> 6 by memory too, but the threads' reserve bites:
    assert plan_capacity(Host(host_memory="64GiB", host_cores=6), 10240, 2).instances == 1  # (6 - 4) / 2


def test_a_reserve_larger_than_the_node_leaves_no_instance():
    plan = plan_capacity(Host(host_memory="2G", host_cores=2), 100, 1)
    assert (plan.by_memory, plan.by_threads, plan.instances) == (0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"host_memory": "lots", "host_cores": 4}, "host_memory"),
        ({"host_memory": "8G", "host_cores": 0}, "host_cores"),
    ],
)
def test_a_bad_host_names_its_field(fields, field):
    with pytest.raises(ValidationError) as error:
        Host(**fields)
    assert error.value.errors()[0]["loc"] == (field,)
