import os

# Tests never reach a model hub: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Without a GPU, Triton kernels run in Triton's CPU interpreter (tests/test_decode_kernel.py). The flag is
# read when a kernel is defined, so it is set here, before any test imports one.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
