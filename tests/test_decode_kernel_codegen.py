"""The decode kernel as compiled for the GPU it runs on (sm_90: H100, H200), checked on any machine: Triton's
compiler and the ptxas it ships need no GPU.

Every interpreter test passed while the kernel's compiled loop spilled registers to local memory when it also
wrote PyramidInfer's voter logits (NEWEST_ROWS): 136 bytes of stack, the step of its 40 layers 17.0 ms against
11.5 ms without them at Table 1's 160 rows (benchmarks/decode_newest_sweep_2026-12-03.json). So the kernel at
its default block (BLOCK_T, the setting below SHORT_T slots and wherever rows x heads fill the GPU) must use no
stack, with the voters' logits and without, split and whole.
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
# Table 1's 13B shape: 40 heads of 128, no GQA, over a reserved cache (WRITTEN)
const = dict(H=40, G=1, D=128, BT=decode_triton.BLOCK_T, WINDOWED=False, SPLIT=split, LOGITS=False,
             HEAD_MAP=False, WRITTEN=True, NEWEST_ROWS=newest)
signature = {name: "constexpr" if name in const else pointers.get(name, "i32") for name in kernel.arg_names}
source = ASTSource(fn=kernel, signature=signature,
                   constexprs={(kernel.arg_names.index(name),): value for name, value in const.items()})
compiled = compile(source, target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=decode_triton.NUM_WARPS, num_stages=1))
open(sys.argv[1], "wb").write(compiled.asm["cubin"])
"""


def stack_bytes(tmp_path: Path, split: bool, newest: bool) -> int:
    """The compiled kernel's stack (spilled registers live there), from the cubin's resource usage."""
    cubin = tmp_path / f"decode_{split}_{newest}.cubin"
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    subprocess.run([sys.executable, "-c", COMPILE, str(cubin), str(int(split)), str(int(newest))], env=env,
                   check=True, cwd=Path(__file__).parent.parent)
    usage = subprocess.run([str(CUOBJDUMP), "-res-usage", str(cubin)], capture_output=True, text=True, check=True)
    return int(usage.stdout.split("STACK:")[1].split()[0])


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="this Triton ships no CUDA toolchain (cuobjdump)")
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("newest", [False, True])
def test_the_decode_kernel_spills_nothing_with_or_without_the_voters_logits(tmp_path, split, newest):
    assert stack_bytes(tmp_path, split, newest) == 0
