"""What the tests of hypar.torch's runtime half share: the skip without torch."""

from __future__ import annotations

import pytest

from hypar.torch import TORCH_MISSING, torch_installed


def needs_torch() -> None:
    """Skip the calling test module when torch is missing, saying how to install it (call at
    module level, before importing torch)."""
    if not torch_installed():
        pytest.skip(TORCH_MISSING, allow_module_level=True)
