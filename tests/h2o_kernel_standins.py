"""CPU stand-ins for h2o_step_triton's two launches, for code that runs the kernels' host code as on CUDA
without a GPU (tests/test_h2o_step_kernel.py, benchmarks/h2o_slot_step_cpu.py): the first keeps its
inputs, the second computes the step with the twin from them and its own."""

from pyramid_core.kernels.h2o_step import h2o_step_torch


def slot_kernels():
    """(first, second): functions taking the two kernels' arguments."""
    seen = {}

    def first(q, q_pos, keys, positions, logits, m, s, scale, *_):
        seen.update(q=q, q_pos=q_pos, keys=keys, scale=scale)

    def second(logits, m, s, positions, scores, last, q_pos, recent, out, *_):
        q = seen["q"][:, :, None]
        out.copy_(h2o_step_torch(q, q_pos[:, None], seen["keys"], positions, scores, last, recent[:, None],
                                 seen["scale"]))
    return first, second
