"""tests/torch: the runtime half of hypar.torch. Without torch these tests skip with the install hint
(``torch_runtime.needs_torch``); test_placements.py needs no torch and always runs.

``fake_world`` is a single-process "fake" process group of 8 ranks (this process is rank 0;
collectives return at once): enough for DTensor to plan and issue every collective, so errors,
placements and the redistribution rule are checked without spawning processes. The gloo tests
(test_gloo_steps.py) spawn their own groups.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fake_world():
    """A fake process group of 8 ranks in this process (rank 0); torch.distributed as the value."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=8)
    yield dist
    dist.destroy_process_group()


@pytest.fixture
def fake_mesh(fake_world):
    """``fake_mesh((2, 2))``: a CPU DeviceMesh of ranks 0..n-1 of the fake group."""
    import torch
    from torch.distributed.device_mesh import DeviceMesh

    return lambda shape: DeviceMesh("cpu", torch.arange(int(torch.tensor(shape).prod())).reshape(shape))
