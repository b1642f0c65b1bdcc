"""The RecurFormer adapters in assets/ were converted for the embedded model as it ships: each fits it, replaces
its share of the KV groups, and reads held-out text near the full model, far from its untrained initialisation."""

import pytest

from pyramid_core.evaluate import continuation_nll
from pyramid_core.models import load_model
from pyramid_core.policies import RecurFormerPolicy
from pyramid_core.recurformer.adapter import check_adapter, load_adapter
from pyramid_core.resources import asset

SHARES = (25, 50)


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded", device="cpu")


@pytest.fixture(scope="module")
def heldout(embedded):
    """448 tokens of held-out text to read and the 48 after them to predict."""
    ids = embedded.tokenizer(asset("heldout.txt").read_text()[:20000], return_tensors="pt").input_ids
    return ids[:, 1000:1448], ids[:, 1448:1496]


@pytest.mark.parametrize("share", SHARES)
def test_each_shipped_adapter_fits_the_embedded_model(embedded, share):
    adapter = load_adapter(asset(f"recurformer-embedded-{share}"))
    check_adapter(adapter, embedded)  # raises when the shape differs
    assert adapter.base_model == embedded.name == "embedded"
    groups = {tuple(g) for g in adapter.groups}
    cfg = embedded.config
    assert len(groups) == len(adapter.groups) == cfg.num_hidden_layers * cfg.num_key_value_heads * share // 100


@pytest.mark.parametrize("share", SHARES)
def test_each_shipped_adapter_reads_near_the_full_model(embedded, heldout, share):
    adapter = str(asset(f"recurformer-embedded-{share}"))
    full = continuation_nll(embedded, *heldout)
    trained = continuation_nll(embedded, *heldout, RecurFormerPolicy(adapter=adapter))
    untrained = continuation_nll(embedded, *heldout, RecurFormerPolicy(adapter=adapter, variant="untrained"))
    # benchmarks/recurformer_quality.md: trained 1.03-1.09x the full model's perplexity, untrained 36-42x
    assert trained < full + 0.3 and untrained > full + 2.0  # nats a token; here ~0.0-0.16 and ~3.6
