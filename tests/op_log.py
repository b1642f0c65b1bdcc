"""A dispatch mode that knows which region of the code an op runs in, for the op-count tests and CPU
benchmarks (tests/test_h2o_step_kernel.py, tests/test_pyramid_decode_ops.py, benchmarks/pyramid_decode_ops_cpu.py):
`with log.region("cache.apply"): ...` marks a stretch, `log.where[-1]` is the innermost one."""

from contextlib import contextmanager

from torch.utils._python_dispatch import TorchDispatchMode


class RegionLog(TorchDispatchMode):
    def __init__(self, outermost: str):
        super().__init__()
        self.where = [outermost]

    @contextmanager
    def region(self, name):
        self.where.append(name)
        try:
            yield
        finally:
            self.where.pop()
