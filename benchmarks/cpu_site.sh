#!/usr/bin/env bash
# Gradio, Plotly and what they need beyond the GPU machine's image, as one archive for the device tool
# to carry (.cpusite/site.tgz, git-ignored), so that benchmarks/app_overhead.py can run on that machine's
# CPU too: a second CPU to check the development machines' numbers on (it turned out as noisy: single
# runs move by ±25% there as well).
#   bash benchmarks/cpu_site.sh [PYTHON_VERSION]   (3.12 by default: the GPU machine's)
# The browser bundles are left out (the benchmark drives the server with gradio_client, which never
# asks for them), so that the archive and the working tree fit the tool's 64 MiB.
set -euo pipefail
VERSION=${1:-3.12}
SITE=$(mktemp -d)
# everything Gradio and Plotly need, less what the GPU machine's image already holds (its KINDS.md list)
PRESENT=(numpy pandas pillow huggingface_hub hf_xet yaml jinja2 markupsafe fsspec filelock
         packaging tqdm certifi idna httpx httpcore h11 anyio click typer rich pygments markdown_it mdurl
         shellingham dateutil six PIL pillow.libs numpy.libs _yaml pyyaml markdown_it_py)
python3 -m pip install -q --only-binary=:all: --python-version "$VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --no-compile --target "$SITE/site" \
  gradio==6.31.0 plotly==7.1.0
for name in "${PRESENT[@]}"; do rm -rf "$SITE/site/$name" "$SITE"/site/"$name"-*.dist-info "$SITE"/site/python_"$name"-*.dist-info; done
rm -rf "$SITE"/site/gradio/templates/node "$SITE"/site/gradio/media_assets "$SITE"/site/gradio/test_data \
       "$SITE"/site/plotly/package_data/*.js "$SITE"/site/plotly/labextension "$SITE"/site/share "$SITE"/site/bin
find "$SITE"/site/gradio/templates/frontend -type f ! -name '*.html' -delete  # directories stay: Gradio mounts them
mkdir -p .cpusite
tar -C "$SITE/site" -czf .cpusite/site.tgz .
rm -rf "$SITE"
du -h .cpusite/site.tgz
