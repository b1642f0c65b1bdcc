"""The modes the studio offers, in pane order, and the one every other mode is compared with."""

import visual

MODES = visual.MODES
BASELINE = "baseline"
DEFAULT_MODES = [BASELINE, "pyramid"]
