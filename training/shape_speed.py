"""CPU decode speed of candidate shapes for the next embedded model (random weights, the embedded
tokenizer's vocabulary): the model card's floor is 30 tokens/s at batch 1 on a 2-core CPU after a
1000-token prompt, and the size limit 64 MB. Run from the repository root:

    PYTHONPATH=. python3 training/shape_speed.py training/shape_speed_cpu.json
"""
import json, sys, tempfile, torch
from transformers import LlamaConfig, LlamaForCausalLM, AutoTokenizer
from pyramid_core.models import load_model
from pyramid_core.pipeline import run_generation
from pyramid_core.engine import Sampling
from pyramid_core.policies.full import FullPolicy
from pyramid_core.resources import asset
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(str(asset("embedded")))
text = asset("heldout.txt").read_text()
ids = tok(text, add_special_tokens=False).input_ids[:999]
prompt = tok.decode(ids)
shapes = {"shipped 12x384": None,
          "16 layers x 384, MLP 1024": dict(hidden_size=384, num_hidden_layers=16, num_attention_heads=6, num_key_value_heads=2, intermediate_size=1024),
          "12 layers x 448, MLP 1216": dict(hidden_size=448, num_hidden_layers=12, num_attention_heads=7, num_key_value_heads=1, intermediate_size=1216),
          "14 layers x 384, MLP 1280": dict(hidden_size=384, num_hidden_layers=14, num_attention_heads=6, num_key_value_heads=2, intermediate_size=1280)}
out = {}
for name, shape in shapes.items():
    if shape is None:
        path = "embedded"
    else:
        base = LlamaConfig.from_pretrained(str(asset("embedded")))
        cfg = base.to_dict(); cfg.update(shape)
        model = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16)
        path = tempfile.mkdtemp(); model.save_pretrained(path); tok.save_pretrained(path)
    lm = load_model(path, device="cpu", dtype="float32")
    params = sum(p.numel() for p in lm.model.parameters())
    rates = []
    for _ in range(2):
        s = run_generation(lm, prompt, FullPolicy(), 48, Sampling())
        rates.append(s["decode_tokens_per_s"])
    out[name] = {"params_M": round(params / 1e6, 1), "bf16_MB": round(params * 2 / 1e6, 1), "decode_tok_s": [round(r, 1) for r in rates]}
    print(name, out[name], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
