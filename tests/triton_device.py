"""Where the Triton kernel tests run: compiled on a GPU, else in Triton's interpreter (TRITON_INTERPRET=1, set
in conftest.py before Triton is imported). A test module that imports DEVICE from here is skipped where
neither is possible."""

import os

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (requirements-dev.txt installs it)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton on a CPU needs its interpreter (TRITON_INTERPRET=1, see conftest.py)", allow_module_level=True)
