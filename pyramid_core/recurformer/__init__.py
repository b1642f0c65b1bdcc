"""RecurFormer: KV groups whose heads attend locally run as linear RNNs with a fixed-size state.

- recency.py: per-head recency scores and the choice of KV groups (docs/recurformer.md, "Choosing groups");
- rnn.py:     GroupRNN, the replacement for one KV group, with its chunked scan, one-step decode and
              the naive reference loop;
- stacked.py: a layer's GroupRNNs run as one (the engine's prefill and decode);
- convert.py: attention transfer, training each GroupRNN on the model's own attention outputs;
- distill.py: end-to-end distillation of the model's next-token distribution (convert's stage B);
- adapter.py: saving, loading and attaching the trained GroupRNNs (lm.recurrent).

Only rnn and adapter are imported here: recency, convert and distill import the engine, which may
itself import this package.
"""

from .adapter import Adapter, apply_adapter, load_adapter, save_adapter
from .rnn import GroupRNN, RNNConfig

__all__ = ["Adapter", "apply_adapter", "load_adapter", "save_adapter", "GroupRNN", "RNNConfig"]
