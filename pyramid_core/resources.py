"""Files shipped inside the package (pyramid_core/assets/): the embedded model, its RecurFormer
adapters, the held-out and calibration texts, the reading tasks and the studio's sample prompts.

They are package data, found through importlib.resources, so that they are where the code is whether it
runs from a checkout, an editable install or a regular install in another folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def asset(name: str) -> Path:
    """The path of `name` (a file or a directory) under pyramid_core/assets.

    A Path, not a Traversable: transformers' from_pretrained and the adapter loader want a directory on
    disk. setuptools installs packages unzipped, so the package's files are always on disk.
    """
    found = resources.files(__package__) / "assets" / name
    if not isinstance(found, Path):
        raise RuntimeError(f"pyramid_core is installed in a form whose files are not on disk: {found}")
    return found
