"""pyramid_core: a decoder loop over Hugging Face causal LMs with switchable KV-cache policies.

Imports nothing of gradio, plotly or visual: it runs on GPU machines that have neither.
"""

from .engine import Sampling, generate
from .models import LoadedModel, ModelLoadError, load_model, wrap_model
from .trace import LayerAttention, RecencyReport, StepRecord

__all__ = ["Sampling", "generate", "LoadedModel", "ModelLoadError", "load_model", "wrap_model",
           "LayerAttention", "RecencyReport", "StepRecord"]
