"""pytest: this package's doctests need torch in the modules that import it; without torch they
are not collected (tests/torch skips with the install hint, hypar.torch.TORCH_MISSING)."""

from hypar.torch import torch_installed

collect_ignore = [] if torch_installed() else ["apply.py", "comms.py", "examples.py", "local.py", "reduce.py", "step.py"]
