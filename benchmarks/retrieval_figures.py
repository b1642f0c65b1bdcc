"""Draw the retrieval suite's figures from its JSON: HTML (plotly.js from the CDN, a few KB each) and,
when kaleido and a Chromium are installed, PNG.

    python3 -m pyramid_core eval --suite retrieval --out benchmarks/retrieval_embedded
    python3 benchmarks/retrieval_figures.py benchmarks/retrieval_embedded.json

writes benchmarks/retrieval_embedded_figures/{retrieval_curve,needle_<mode>}.{html,png}. pyramid_core draws
nothing (it never imports plotly), so the figures are this separate step.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import visual  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="the suite's <out>.json")
    ap.add_argument("--out", default=None, help="folder (default: <result>_figures next to the JSON)")
    ap.add_argument("--no-png", action="store_true", help="HTML only")
    args = ap.parse_args()
    result = Path(args.result)
    out = Path(args.out) if args.out else result.with_name(result.stem + "_figures")
    figs = visual.retrieval_figures(json.loads(result.read_text()))
    paths = visual.figures_to_files(figs, out, plotlyjs="cdn")
    if not args.no_png:
        try:
            paths += visual.figures_to_png(figs, out)
        except ModuleNotFoundError as err:
            print(f"PNG skipped: {err}", file=sys.stderr)
    for p in paths:
        print(f"{p} ({p.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
