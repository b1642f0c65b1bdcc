"""Tiny random models of each supported family, built from configs (no network)."""

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from pyramid_core import wrap_model

COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)

CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**COMMON, tie_word_embeddings=True),  # q/k/v biases, tied embeddings
    "qwen3": lambda: Qwen3Config(**COMMON, head_dim=32),  # q/k norms, head_dim != hidden/heads
}


def tiny_model(family: str = "llama", seed: int = 0, layers: int | None = None, **overrides):
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    if layers is not None:
        config.num_hidden_layers = layers
        if hasattr(config, "layer_types") and config.layer_types is not None:
            config.layer_types = config.layer_types[:1] * layers
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float()
    if family == "qwen2":  # biases start at zero: make them matter
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.2)
    return wrap_model(model, name=f"tiny-{family}")


def tiny_tokenizer():
    """A byte-level BPE tokenizer over the tiny vocabulary, trained on a few sentences (no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the cat sat on the mat", "a dog ran far away"]
    # 94 symbols + 3 specials = the tiny models' 97 ids. The text's own symbols come first and the rest
    # in sorted order: ByteLevel.alphabet() has a different order in every process, and with a random
    # 94 of it the ids (and whether any exceeded the vocabulary) changed from run to run.
    seen = sorted({c for line in text for word, _ in tok.pre_tokenizer.pre_tokenize_str(line) for c in word})
    alphabet = seen + sorted(set(pre_tokenizers.ByteLevel.alphabet()) - set(seen))
    trainer = trainers.BpeTrainer(vocab_size=97, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=alphabet[:94], limit_alphabet=94)
    tok.train_from_iterator(text * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def save_tiny_checkpoint(directory, family: str = "llama"):
    """A tiny model and tokenizer saved as a standard HF checkpoint directory."""
    lm = tiny_model(family)
    tokenizer = tiny_tokenizer()
    if len(tokenizer) > lm.config.vocab_size:  # BPE training adds the characters it saw to the vocab
        lm.model.resize_token_embeddings(len(tokenizer))
    lm.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# One user turn between role markers, opened by the BOS as Llama 3's template is: tokenizing the
# templated text with the tokenizer's own special tokens would give two.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def save_chat_checkpoint(directory):
    """A tiny llama with the embedded model's tokenizer (which adds a BOS) given CHAT_TEMPLATE, saved as
    an HF directory: an instruct model in miniature. No EOS, so runs take every step asked."""
    from transformers import AutoTokenizer, GenerationConfig

    from pyramid_core.resources import asset

    tokenizer = AutoTokenizer.from_pretrained(asset("embedded"))
    tokenizer.chat_template = CHAT_TEMPLATE
    lm = tiny_model("llama", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    lm.model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    lm.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
