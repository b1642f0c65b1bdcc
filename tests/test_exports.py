"""Exports are written only under the app's own temporary folder, with names the app makes: the
session hash (sent by the client) and mode names never become paths."""

import tempfile
from pathlib import Path

import pytest
from types import SimpleNamespace

from studio import export, sessions


def test_each_session_exports_into_the_apps_own_private_folder():
    root = sessions.export_root()
    assert root.parent == Path(tempfile.gettempdir()) and root.name.startswith("pyramid_studio-")
    assert root.stat().st_mode & 0o077 == 0  # mkdtemp: no one else can read or plant files there
    a, b = (sessions.export_dir(SimpleNamespace(session_hash=h)) for h in ("abc", "abd"))
    assert a.parent == root == b.parent and a != b


@pytest.mark.parametrize("hostile", ["../../etc", "/tmp/x", "..", "a/../../b", "\x00", "é" * 300])
def test_a_hostile_session_hash_stays_inside_the_export_folder(hostile):
    out = sessions.export_dir(SimpleNamespace(session_hash=hostile))
    assert out.parent == sessions.export_root() and len(out.name) == 24 and out.name.isalnum()


def test_a_run_under_a_name_the_app_did_not_make_is_not_exported(tmp_path):
    with pytest.raises(ValueError, match="unknown modes"):
        export.export_run({"../../evil": []}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
