"""The repository stands alone: nothing in it reads a file outside it at run or test time.

A clone of the committed tree in a temporary folder, with nothing beside it, runs the tests that
validate responses against OpenAI's schemas (the vendored copy in ``optillm/web/vendor/``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Test files whose cases use the ``openapi`` fixture (the vendored OpenAI schemas).
SPEC_TESTS = ("tests/unit/test_routes.py", "tests/unit/test_types_errors.py",
              "tests/unit/test_reasoning_tokens.py")


def tracked_files() -> list[str]:
    return subprocess.check_output(["git", "ls-files"], cwd=ROOT, text=True).split()


def test_no_tracked_file_points_outside_the_repository():
    # spelled in parts so that this file, which names them, is no match for scans like it
    shared = "shared"
    needles = (f"{shared}/reference", f'parent / "{shared}"', f"../{shared}",
               "OPTILLM_" + "OPENAPI_SPEC")
    offenders = []
    for name in tracked_files():
        if not name.endswith((".py", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".ini")):
            continue
        text = (ROOT / name).read_text(errors="replace")
        offenders += [f"{name}: {n}" for n in needles if n in text]
    assert not offenders, offenders


def test_the_vendored_schemas_are_in_the_package():
    vendor = ROOT / "optillm" / "web" / "vendor"
    assert (vendor / "openai-schemas.yaml").stat().st_size > 100_000
    assert "MIT License" in (vendor / "LICENSE-openai-openapi").read_text()
    listed = set(tracked_files())
    assert {"optillm/web/vendor/openai-schemas.yaml",
            "optillm/web/vendor/LICENSE-openai-openapi"} <= listed


@pytest.mark.timeout(300)
def test_a_clone_with_nothing_beside_it_passes_the_spec_tests(tmp_path):
    if shutil.which("git") is None:
        pytest.fail("git is needed to clone the repository")
    alone = tmp_path / "alone"  # no shared/ (nor anything else) beside the clone
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT),
                    str(alone / "optillm")], check=True)
    clone = alone / "optillm"
    assert sorted(p.name for p in alone.iterdir()) == ["optillm"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OPTILLM_"))}
    env["PYTHONPATH"] = str(clone)  # the clone's optillm, not this checkout's
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SPEC_TESTS,
         "--basetemp", str(tmp_path / "pt")],
        cwd=clone, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
    probe = subprocess.run([sys.executable, "-c", "import optillm; print(optillm.__file__)"],
                           cwd=clone, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(clone))
