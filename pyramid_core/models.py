"""Loading a causal LM the engine can drive: the embedded model, a local HF directory, or a hub id.

The engine runs its own loop over the model's modules (see engine.py), so it supports the families
whose decoder layers it knows: Llama, Mistral, Qwen2 and Qwen3. Anything else is refused here, with
the list of what is supported, before any weights are read.

Loading is safe by construction: weights only from safetensors (a pickled .bin can run code when it is
read), remote code never trusted, and a hub id checked against the hub's naming rules before any
network call.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .graphs import GraphStore
from .placement import Placement, placement_of
from .resources import asset

log = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
EMBEDDED_NAME = "embedded"
EMBEDDED_DIR = asset("embedded")
# Every from_pretrained call gets these: weights only from safetensors, no code from the repository.
SAFE_LOADING = dict(use_safetensors=True, trust_remote_code=False)
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The hub's rules for a repo id (huggingface_hub's validate_repo_id, ASCII only): an optional owner, then
# a name; each of letters, digits, '-', '_' and '.', at most 96 characters, not starting or ending with
# '-' or '.', and with no '--' or '..'.
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}")


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says why in words a user can act on."""


@dataclass
class LoadedModel:
    """A model and its tokenizer, with the facts the engine and the UI need about it."""

    model: torch.nn.Module
    tokenizer: object | None
    name: str
    family: str
    # CUDA graphs of decode steps, captured per batch size on first use (graphs.py)
    decode_graphs: GraphStore = field(default_factory=GraphStore, repr=False, compare=False)
    # RecurFormer's recurrences built for this model, per settings (policies/recurformer.py)
    recurrence_cache: dict = field(default_factory=dict, repr=False, compare=False)
    # the last prompt's token ids, {(prompt, chat): ids}: the studio asks for them once a mode and again
    # for its checks and its final view (~3 ms each for a 3,000-token prompt; pipeline.encode_prompt)
    prompt_cache: dict = field(default_factory=dict, repr=False, compare=False)
    # each layer's q/k/v and gate/up as one weight, the modules' parameters views of it (fused_weights.py)
    fused: list = field(default_factory=list, repr=False, compare=False)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def placement(self) -> Placement:
        """Where the embeddings, each layer, the final norm and lm_head sit (placement.py). Read from
        the parameters at each call, not stored: a model moved after loading is never seen stale."""
        return placement_of(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def max_context(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """bf16 on a GPU, fp32 on a CPU (CPU half-precision matmuls are slow), unless asked otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)} or 'auto', got {dtype!r}")
    return names[dtype]


def check_family(config) -> str:
    """Return the config's family name, or raise ModelLoadError naming the supported ones."""
    family = getattr(config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise ModelLoadError(
            f"unsupported architecture {family!r}: the engine drives {', '.join(SUPPORTED_FAMILIES)} models"
        )
    return family


def check_hub_id(name: str) -> str:
    """name if it follows the hub's naming rules (HUB_ID), else ModelLoadError; no network call."""
    if not isinstance(name, str) or not HUB_ID.fullmatch(name) or "--" in name or ".." in name:
        raise ModelLoadError(f"{name!r} is not a valid hub id: an optional owner and a name (owner/name), each "
                             "of letters, digits, '-', '_' and '.', at most 96 characters")
    return name


def is_local_path(name: str) -> bool:
    """Whether name means a directory on this machine rather than a hub id."""
    if name.startswith((".", "/", "~")):
        return True
    try:
        return Path(name).exists()
    except (OSError, ValueError):  # too long for the file system, or a NUL byte: not a path
        return False


def _resolve_source(name_or_path: str) -> str:
    if not isinstance(name_or_path, str):
        raise ModelLoadError(f"a model is named by a string, got {type(name_or_path).__name__}")
    if name_or_path == EMBEDDED_NAME:
        if not (EMBEDDED_DIR / "config.json").exists():
            raise ModelLoadError(f"the embedded model is missing: expected a checkpoint in {EMBEDDED_DIR}")
        return str(EMBEDDED_DIR)
    if is_local_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not (path / "config.json").exists():
            raise ModelLoadError(f"no model at {path}: a local model is a directory holding config.json")
        return str(path)
    return check_hub_id(name_or_path)


def _check_local_weights(source: str) -> None:
    """A local directory must hold safetensors weights: name the pickled file that it holds instead."""
    path = Path(source)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES)
    found = f"it holds {pickled[0]}, pickled weights that are never loaded" if pickled else "it holds none"
    raise ModelLoadError(f"no safetensors weights in {path} ({found}); save the model with safetensors")


def load_config(name_or_path: str):
    """The model's config alone (no weights), with the family checked."""
    from transformers import AutoConfig

    source = _resolve_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {_first_line(err)}") from err
    check_family(config)
    return config


def load_model(name_or_path: str = EMBEDDED_NAME, device: str | None = None,
               dtype: str | torch.dtype | None = None, device_map: str | dict | None = None,
               adapter: str | None = None) -> LoadedModel:
    """Load a supported causal LM and its tokenizer, ready for the engine.

    name_or_path: "embedded" (the model shipped in assets/), a local HF directory, or a hub id.
    device:       "cuda", "cpu", ...; default: the GPU when there is one.
    dtype:        "auto" (bf16 on GPU, fp32 on CPU), "float32", "bfloat16" or "float16".
    device_map:   passed to transformers/accelerate for a model larger than one GPU: "auto", or a map
                  {module name: device}; each decoder layer must stay whole, nothing offloaded to disk
                  (placement.py). `device` is then ignored.
    adapter:      a RecurFormer adapter directory, applied after loading (see pyramid_core.recurformer).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    config = load_config(name_or_path)
    source = _resolve_source(name_or_path)
    _check_local_weights(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, device_map=device_map, attn_implementation="sdpa", **SAFE_LOADING)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load {name_or_path!r}: {_first_line(err)}") from err
    if device_map is None:
        model.to(device)
    model.eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name=name_or_path, family=config.model_type)
    if adapter is not None:
        from .recurformer.adapter import apply_adapter

        apply_adapter(loaded, adapter)
    return loaded


def wrap_model(model: torch.nn.Module, tokenizer=None, name: str = "in-memory") -> LoadedModel:
    """Wrap a model built in memory (tests, benchmarks with random weights) after checking its family."""
    family = check_family(model.config)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, family=family)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
