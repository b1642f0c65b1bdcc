import os

# Tests never reach a model hub: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Without a GPU, Triton kernels run in Triton's CPU interpreter (tests/test_decode_kernel.py). The flag is
# read when a kernel is defined, so it is set here, before any test imports one.
import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny llama checkpoint without an EOS: random weights may sample it at any step, and the tests
    count steps."""
    from transformers import GenerationConfig

    from tests.tiny_models import save_tiny_checkpoint

    path = save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama"))
    config = GenerationConfig.from_pretrained(path)
    config.eos_token_id = None
    config.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory):
    """A tiny llama whose tokenizer has a chat template (tests/tiny_models.py)."""
    from tests.tiny_models import save_chat_checkpoint

    return save_chat_checkpoint(tmp_path_factory.mktemp("tiny-chat"))
