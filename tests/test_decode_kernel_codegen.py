"""The decode kernel as compiled for the GPU it runs on (sm_90: H100, H200), checked on any machine: Triton's
compiler and the ptxas it ships need no GPU.

Every interpreter test passed while the kernel's compiled loop spilled registers to local memory when it also
wrote PyramidInfer's voter logits (NEWEST_ROWS): 136 bytes of stack under Triton 3.6, the step of Table 1's 40
layers 17.0 ms against 11.5 ms without them at 160 rows (benchmarks/decode_newest_sweep_2026-12-03.json). Which
form spills depends on the compiler (that store form spilled 8 bytes under Triton 3.9, 136 under 3.6; a form
with two loops spilled under 3.9 alone), so the kernel at its default block (BLOCK_T, the setting below SHORT_T
slots and wherever rows x heads fill the GPU) must use no stack under the Triton installed, with the voters'
logits and without, split and whole, at head dims 128 and 64.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"

# run apart: the tests' process defines its kernels for Triton's interpreter (conftest.py), which cannot compile
COMPILE = r"""
import sys
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile
from pyramid_core.kernels import decode_triton

kernel = decode_triton.decode_attention_kernel
pointers = dict(q="*fp16", k="*fp16", v="*fp16", k_pos="*i64", q_pos="*i64", out="*fp16", out_heads="*fp16",
                part_m="*fp32", part_l="*fp32", part_acc="*fp32", logits="*fp32", written="*i64", newest="*fp32",
                newest_lse="*fp32", scale="fp32")
split, newest = sys.argv[2] == "1", sys.argv[3] == "1"
H, G, D = (int(x) for x in sys.argv[4:7])
# over a reserved cache (WRITTEN), as the step graphs run it
const = dict(H=H, G=G, D=D, BT=decode_triton.BLOCK_T, WINDOWED=False, SPLIT=split, LOGITS=False,
             HEAD_MAP=False, WRITTEN=True, NEWEST_ROWS=newest)
signature = {name: "constexpr" if name in const else pointers.get(name, "i32") for name in kernel.arg_names}
source = ASTSource(fn=kernel, signature=signature,
                   constexprs={(kernel.arg_names.index(name),): value for name, value in const.items()})
compiled = compile(source, target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=decode_triton.NUM_WARPS, num_stages=1))
open(sys.argv[1], "wb").write(compiled.asm["cubin"])
"""


def stack_bytes(tmp_path: Path, split: bool, newest: bool, shape: tuple[int, int, int]) -> int:
    """The compiled kernel's stack (spilled registers live there), from the cubin's resource usage, for heads,
    query heads per key head and head dim `shape`."""
    cubin = tmp_path / f"decode_{split}_{newest}.cubin"
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    arguments = [str(cubin), str(int(split)), str(int(newest)), *map(str, shape)]
    subprocess.run([sys.executable, "-c", COMPILE, *arguments], env=env, check=True, cwd=Path(__file__).parent.parent)
    usage = subprocess.run([str(CUOBJDUMP), "-res-usage", str(cubin)], capture_output=True, text=True, check=True)
    return int(usage.stdout.split("STACK:")[1].split()[0])


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="this Triton ships no CUDA toolchain (cuobjdump)")
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("newest", [False, True])
@pytest.mark.parametrize("shape", [(40, 1, 128), (32, 4, 64)], ids=["13B", "1B-GQA"])
def test_the_decode_kernel_spills_nothing_with_or_without_the_voters_logits(tmp_path, split, newest, shape):
    """Table 1's 13B shape (40 heads of 128) and Llama 3.2 1B's (32 query heads on 8 key heads of 64)."""
    assert stack_bytes(tmp_path, split, newest, shape) == 0
