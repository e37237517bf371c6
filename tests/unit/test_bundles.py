"""Code bundles: exactly the project modules a component imports, deterministic, safe to unpack."""

from __future__ import annotations

import io
import tarfile

import pytest

from conveyor._runtime.bundles import unpack
from conveyor.engine.bundles import Bundler, bundle_key
from conveyor.engine.store import ArtifactStore

COMPONENT = """
import json                      # the standard library: never bundled
import pandas                    # an installed package: never bundled
from steps.helpers import scale
from . import sibling

def step(x):
    import steps.lazy as lazy    # imported inside the body: bundled too
    from steps.pkg import inner
    return lazy.go(scale(x))
"""


@pytest.fixture
def tree(tmp_path):
    files = {
        "steps/__init__.py": "",
        "steps/train.py": COMPONENT,
        "steps/helpers.py": "from steps.deep import k\ndef scale(x):\n    return x * k\n",
        "steps/deep.py": "k = 2\n",
        "steps/lazy.py": "def go(x):\n    return x\n",
        "steps/sibling.py": "",
        "steps/pkg/__init__.py": "",
        "steps/pkg/inner.py": "",
        "steps/unused.py": "raise SystemExit('never imported')\n",
        "steps/data.csv": "a,b\n1,2\n",
        "pandas.py": "",  # a project file shadowing nothing: reached only by name
        ".conveyor/conveyor.db": "secret",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_bundle_holds_exactly_the_modules_an_import_reaches(tree):
    bundle = Bundler(tree).build("steps.train")
    assert set(bundle.files) == {
        "steps/__init__.py", "steps/train.py", "steps/helpers.py", "steps/deep.py",
        "steps/lazy.py", "steps/sibling.py", "steps/pkg/__init__.py", "steps/pkg/inner.py",
        "pandas.py",
    }  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
        assert sorted(tar.getnames()) == sorted(bundle.files)
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_the_same_code_is_the_same_bundle_and_a_change_is_a_new_one(tree):
    first = Bundler(tree).build("steps.train")
    assert Bundler(tree).build("steps.train").sha256 == first.sha256
    (tree / "steps" / "data.csv").write_text("changed\n")  # not code: no new bundle
    assert Bundler(tree).build("steps.train").sha256 == first.sha256
    (tree / "steps" / "deep.py").write_text("k = 3\n")
    assert Bundler(tree).build("steps.train").sha256 != first.sha256


def test_a_published_bundle_is_in_the_store_and_unpacked_once(tree, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    bundler = Bundler(tree)
    bundle = bundler.build("steps.train")
    folder = bundler.publish(store, bundle, tmp_path / "bundles")
    assert folder == tmp_path / "bundles" / bundle.sha256
    assert (folder / "steps" / "helpers.py").read_text().endswith("x * k\n")
    assert not (folder / "steps" / "unused.py").exists()
    assert (tmp_path / "store" / bundle_key(bundle.sha256)).read_bytes() == bundle.data
    assert bundler.publish(store, bundle, tmp_path / "bundles") == folder


@pytest.mark.parametrize("kind", ["escape", "absolute", "symlink"])
def test_unpack_refuses_members_that_leave_the_folder(tmp_path, kind):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo({"escape": "../outside.py", "absolute": "/etc/x.py",
                                "symlink": "link.py"}[kind])  # fmt: skip
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="refusing member"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "outside.py").exists()
