"""training/train_embedded.py --doc-mask: the tasks and documents packed into one training row attend only
within themselves, so a task is trained as it is evaluated, alone (issue 15: facts of the same relation from
the row's earlier tasks competed with the asked one)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))
import train_embedded as te  # noqa: E402

BOS = 1


def test_the_mask_is_causal_within_each_document():
    ids = torch.tensor([[7, BOS, 5, 6, BOS, 8]])  # a row starts mid-document, then two documents
    yes = True
    expected = torch.tensor([
        [yes, 0, 0, 0, 0, 0],
        [0, yes, 0, 0, 0, 0],
        [0, yes, yes, 0, 0, 0],
        [0, yes, yes, yes, 0, 0],
        [0, 0, 0, 0, yes, 0],
        [0, 0, 0, 0, yes, yes],
    ], dtype=torch.bool)
    mask = te.document_mask(ids, BOS)
    assert mask.shape == (1, 1, 6, 6)
    assert torch.equal(mask[0, 0], expected)


def tiny_llama():
    from transformers import LlamaForCausalLM

    config = te.build_config(te.SMOKE_SHAPE, 64, BOS, 2, 0, 128)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("implementation, make_mask", [("sdpa", "document_mask"),
                                                        ("flex_attention", "document_block_mask")])
def test_a_packed_task_reads_as_if_it_were_alone(implementation, make_mask):
    """Under SDPA the dense mask, under FlexAttention (--attention flex) the block mask: a packed task gets
    the logits it has alone (flex's forward runs on the CPU; training with it needs a GPU)."""
    model = tiny_llama()
    model.set_attn_implementation(implementation)
    torch.manual_seed(1)
    first, second = torch.randint(3, 64, (20,)), torch.randint(3, 64, (15,))
    row = torch.cat([torch.tensor([BOS]), first, torch.tensor([BOS]), second])[None]
    alone = torch.cat([torch.tensor([BOS]), second])[None]
    with torch.no_grad():
        masked = model(input_ids=row, attention_mask=getattr(te, make_mask)(row, BOS)).logits[0, 21:]
        plain = model(input_ids=row).logits[0, 21:]
        reference = model(input_ids=alone).logits[0]
    assert torch.allclose(masked, reference, atol=1e-5)  # RoPE is relative: the offset does not matter
    assert not torch.allclose(plain, reference, atol=1e-2)  # without the mask the first task is read too


class SpyModel(torch.nn.Module):
    """Logits from one bias vector; remembers the attention mask each call was given."""

    def __init__(self, vocab):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.masks = []

    def forward(self, input_ids, attention_mask=None):
        self.masks.append(attention_mask)
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1))


def test_train_step_passes_the_mask_only_when_asked():
    stream = torch.tensor([BOS, 5, 6, 7, 2] * 40, dtype=torch.int32)
    data = SimpleNamespace(train_dev=stream, n_task=0, loader=None, bos=BOS)
    proc = te.Process(rank=0, world=1, device=torch.device("cpu"))
    for doc_mask in (True, False):
        args = SimpleNamespace(batch=2, seq=16, doc_mask=doc_mask, answer_weight=4.0, doc_weight=1.0, clip=1.0,
                               attention="sdpa")
        model = SpyModel(8)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(0)
        te.train_step(args, proc, model, model, opt, data)
        (mask,) = model.masks
        if doc_mask:
            torch.manual_seed(0)
            inputs = te.natural_rows(stream, 2, 16, "cpu")[:, :-1]
            assert torch.equal(mask, te.document_mask(inputs, BOS))
            assert not mask[0, 0].tril().all()  # the rows do hold several documents
        else:
            assert mask is None


def test_the_flag_parses():
    args = te.parse_args(["--data", "d", "--tokenizer", "t", "--out", "o", "--doc-mask"])
    assert args.doc_mask and not te.parse_args(["--data", "d", "--tokenizer", "t", "--out", "o"]).doc_mask


def test_train_step_passes_a_block_mask_under_flex():
    from torch.nn.attention.flex_attention import BlockMask

    stream = torch.tensor([BOS, 5, 6, 7, 2] * 40, dtype=torch.int32)
    data = SimpleNamespace(train_dev=stream, n_task=0, loader=None, bos=BOS)
    proc = te.Process(rank=0, world=1, device=torch.device("cpu"))
    args = SimpleNamespace(batch=2, seq=16, doc_mask=True, answer_weight=4.0, doc_weight=1.0, clip=1.0,
                           attention="flex")
    model = SpyModel(8)
    te.train_step(args, proc, model, model, torch.optim.SGD(model.parameters(), lr=0.1), data)
    (mask,) = model.masks
    assert isinstance(mask, BlockMask) and mask.shape[0] == 2 and mask.shape[-1] == 16


def test_flex_is_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: flex is allowed")
    with pytest.raises(SystemExit):
        te.parse_args(["--data", "d", "--tokenizer", "t", "--out", "o", "--attention", "flex"])
