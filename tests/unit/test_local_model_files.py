"""The embedded model's weights: short names, assembling parts into the cache folder (lock,
temporary file, size and sha256 check, atomic rename, stamp), and where the state lives."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from optillm.settings import LOCAL_MODEL_NAME, Settings
from optillm.upstream import model_files
from optillm.upstream.local_model import (
    MODELS,
    LocalModel,
    LocalModelUnavailable,
    ModelSpec,
    assemble,
    resolve_model,
    state_dir,
)

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second part " * 50, b"tail"]


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three fake part packages on sys.path; returns a ModelSpec of their joined file."""
    root = tmp_path / "site"
    for i, chunk in enumerate(CHUNKS, 1):
        pkg = root / f"fakeparts_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (pkg / "data" / f"part0{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(root))
    whole = b"".join(CHUNKS)
    return ModelSpec("fake-1b", "Fake-1B", tuple((f"fakeparts_part{i}", f"data/part0{i}.bin")
                                                 for i in range(1, 4)),
                     filename="fake.gguf", size=len(whole),
                     sha256=hashlib.sha256(whole).hexdigest(), hint="pip install fakeparts")


def test_assemble_joins_the_parts_in_order_and_stamps_the_check(parts, tmp_path):
    cache = tmp_path / "cache"
    path = assemble(parts, str(cache))
    assert path == str(cache / "fake.gguf")
    assert open(path, "rb").read() == b"".join(CHUNKS)
    stamp = (cache / "fake.gguf.sha256").read_text().split()
    assert stamp[0] == parts.sha256 and int(stamp[1]) == parts.size
    assert sorted(os.listdir(cache)) == ["fake.gguf", "fake.gguf.lock", "fake.gguf.sha256"]


def test_a_stamped_file_is_reused_without_reading_the_parts(parts, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = assemble(parts, cache)
    mtime = os.stat(first).st_mtime_ns
    monkeypatch.setattr(model_files, "part_files",
                        lambda spec: pytest.fail("parts read again for a stamped file"))
    monkeypatch.setattr(model_files, "_file_sha256",
                        lambda path: pytest.fail("stamped file hashed again"))
    assert assemble(parts, cache) == first and os.stat(first).st_mtime_ns == mtime


def test_a_changed_file_is_rebuilt(parts, tmp_path):
    cache = str(tmp_path / "cache")
    path = assemble(parts, cache)
    with open(path, "r+b") as fh:  # same size, other bytes, newer mtime: the stamp no longer fits
        fh.write(b"XXXX")
    os.utime(path, ns=(1, 1))
    assert open(assemble(parts, cache), "rb").read() == b"".join(CHUNKS)


def test_an_unstamped_complete_file_is_hashed_once_and_kept(parts, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"".join(CHUNKS))
    assemble(parts, str(cache))
    assert (cache / "fake.gguf.sha256").read_text().split()[0] == parts.sha256


def test_a_wrong_hash_fails_and_leaves_nothing_at_the_final_name(parts, tmp_path):
    bad = ModelSpec(parts.name, parts.alias, parts.parts, parts.filename, parts.size,
                    "0" * 64, parts.hint)
    cache = tmp_path / "cache"
    with pytest.raises(LocalModelUnavailable, match="sha256.*pip install fakeparts"):
        assemble(bad, str(cache))
    assert sorted(os.listdir(cache)) == ["fake.gguf.lock"]  # no target, no temporary file


def test_a_wrong_total_size_fails_before_copying(parts, tmp_path):
    bad = ModelSpec(parts.name, parts.alias, parts.parts, parts.filename, parts.size + 1,
                    parts.sha256, parts.hint)
    with pytest.raises(LocalModelUnavailable, match="expected"):
        assemble(bad, str(tmp_path / "cache"))
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_a_missing_part_package_is_named(parts, tmp_path):
    missing = ModelSpec(parts.name, parts.alias, parts.parts + (("fakeparts_part9", "x.bin"),),
                        parts.filename, parts.size, parts.sha256, parts.hint)
    with pytest.raises(LocalModelUnavailable, match="fakeparts-part9.*pip install fakeparts"):
        assemble(missing, str(tmp_path / "cache"))


def test_concurrent_first_starts_assemble_once(parts, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    copies = []
    real = model_files.part_files
    monkeypatch.setattr(model_files, "part_files",
                        lambda spec: copies.append(1) or real(spec))
    results, errors = [], []

    def start():
        try:
            results.append(assemble(parts, cache))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(copies) == 1
    assert open(results[0], "rb").read() == b"".join(CHUNKS)


def test_short_names_and_paths():
    assert list(MODELS) == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    assert MODELS["qwen2.5-coder-0.5b"].size == 491_400_064
    assert LocalModel().alias == LOCAL_MODEL_NAME == "Qwen2.5-Coder-0.5B-Instruct"
    assert LocalModel("smollm2-135m").alias == "SmolLM2-135M-Instruct"
    assert LocalModel("/models/My-Model.Q4.gguf").alias == "My-Model.Q4"
    assert LocalModel().key == LocalModel("qwen2.5-coder-0.5b").key
    assert LocalModel().key != LocalModel("smollm2-135m").key != LocalModel("smollm2-135m", 2).key


def test_an_unknown_model_names_the_short_names(tmp_path):
    with pytest.raises(LocalModelUnavailable, match="no such file.*smollm2-135m"):
        resolve_model(str(tmp_path / "nope.gguf"), str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf), str(tmp_path / "cache")) == str(gguf)


def test_settings_feed_the_cache_and_runtime_folders(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xc"), "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    settings = Settings.from_args(["--local-model", "smollm2-135m"], env)
    local = LocalModel.from_settings(settings)
    assert local.cache_dir == str(tmp_path / "xc" / "optillm" / "models")
    assert local.runtime_dir == str(tmp_path / "rt") and local.spec.name == "smollm2-135m"
    assert state_dir(local.runtime_dir) == str(tmp_path / "rt" / "optillm")
    assert os.path.isdir(tmp_path / "rt" / "optillm")
    plain = Settings.from_args([], {})
    assert plain.models_path == os.path.expanduser("~/.cache/optillm/models")
    assert state_dir(None) == f"/tmp/optillm-{os.getuid()}"
    flagged = Settings.from_args(["--model-cache-dir", str(tmp_path / "m")], env)
    assert flagged.models_path == str(tmp_path / "m")


def test_an_unwritable_cache_folder_names_the_flag(parts, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LocalModelUnavailable, match="--model-cache-dir"):
        assemble(parts, str(blocker / "cache"))
