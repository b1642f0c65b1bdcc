"""The fused decode steps' switches: each is read once, when its module is imported, from the environment.
Each is on unless the variable says 0 (RecurFormer's since its first GPU run, H2O's since its kernels were
spread over KV heads, H2O's whole steady step as a graph and the reserved whole step since they were made,
RecurFormer's joint q/k/v projection since its first GPU run, work on a side stream since it was made); a fresh process shows what a user who sets the variable gets."""

import os
import subprocess
import sys

import pytest

SWITCHES = [("PYRAMID_FUSED_RNN_STEP", "pyramid_core.recurformer.stacked", "FUSED_STEP"),
            ("PYRAMID_FUSED_H2O_STEP", "pyramid_core.policies.h2o", "FUSED_STEP"),
            ("PYRAMID_EVICT_GRAPHS", "pyramid_core.evict_graphs", "FUSED_STEP"),
            ("PYRAMID_STEP_GRAPHS", "pyramid_core.step_graphs", "FUSED_STEP"),
            ("PYRAMID_JOINT_QKV", "pyramid_core.joint_projection", "JOINT_QKV"),
            ("PYRAMID_BESIDE", "pyramid_core.side_stream", "BESIDE")]


@pytest.mark.parametrize("variable, module, switch", SWITCHES)
@pytest.mark.parametrize("setting, on", [(None, True), ("0", False), ("1", True)])
def test_a_switch_is_on_unless_turned_off(variable, module, switch, setting, on):
    env = {k: v for k, v in os.environ.items() if k != variable}
    if setting is not None:
        env[variable] = setting
    code = f"import {module} as m; print(m.{switch})"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(on)
