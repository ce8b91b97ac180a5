"""Answer extraction: the final answer a completion states (``extract_answer``), normalised.

Formats (``ANSWER_FORMATS``, chosen per request as ``answer_format``): ``boxed`` the last
``\\boxed{...}`` (nested braces kept); ``number`` the stated or else the last number; ``choice`` a
multiple-choice letter A-J (stated, else the last "(X)"); ``code`` the last fenced code block;
``text`` the whole reply; ``auto`` tries, in order: the last ``\\boxed{}``, GSM8K's ``#### X``,
"the (final) answer is X" / "**Final Answer:** X" / "Answer: (B)", a choice letter stated as
the answer, a closing code block, then the last number in the text. Every pattern here runs in
linear time.
"""

from __future__ import annotations

import re

from .normalization import (
    _is_mathy,
    _is_number_with_unit,
    _normalize_code,
    _strip_delimiters,
    _unmark,
    normalize,
)

ANSWER_FORMATS = ("auto", "boxed", "number", "choice", "code", "text")

#: Longest prose accepted as a stated answer ("the answer is Paris") in ``auto`` format.
MAX_STATED_PROSE = 60

_HASHES = re.compile(r"####[ \t]*([^\n]+)")
_STATED = re.compile(
    r"(?:\bfinal[ \t]+answer|\bthe[ \t]+(?:correct[ \t]+|final[ \t]+)?answer|^[ \t>*#_]*answer)"
    r"[ \t*_]*(?:is\b|[:=\uff1a])[ \t*_:\uff1a]*([^\n]+)",
    re.IGNORECASE | re.MULTILINE)
# "answer (C)", "option [B]"; a bare letter only after "is" or ":" ("answer is B.", "Answer: C")
# so that a listing like "Option A: 5 apples" is not read as a choice
_CHOICE = re.compile(
    r"(?i:\b(?:answer|option|choice))[ \t]*(?:(?i:is)\b[ \t]*)?(?:[:\uff1a*]+[ \t]*)?"
    r"(?:\(([A-J])\)|\[([A-J])\])"
    r"|(?i:\b(?:answer|option|choice))[ \t]*(?:(?i:is)\b|[:\uff1a])[ \t]*(?:[:\uff1a][ \t]*)?"
    r"(?:\*+[ \t]*)?([A-J])(?=[).:,*]|[ \t]*$)", re.MULTILINE)
_CHOICE_ONLY = re.compile(r"[(\[]?([A-J])(?:[)\]](?:[ \t].*)?|[.:][ \t].*)?")
_PAREN_CHOICE = re.compile(r"\(([A-J])\)")
_LEADING_CHOICE = re.compile(r"[(\[]?([A-J])\b")
_NUMBER = re.compile(r"(?:(?<![\w)])[-\u2212])?(?<![\w.])\$?"
                     r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?![\d.]))?")
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_EQUALS = re.compile(r"(?<![<>!=])=(?!=)")
_LEADING_NUMBER = re.compile(r"([-\u2212]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)[ \t]+[a-zA-Z]")


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    Returns None when there is none or its braces never close. Linear in ``len(text)``.
    """
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    j = i
    while j < len(text) and depth:
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
        j += 1
    return text[i:j - 1].strip() if depth == 0 else None


def last_code_block(text: str) -> str | None:
    """The body of the last fenced (```) code block; an unclosed last fence runs to the end."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


def extract_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer stated in ``text``, normalised (see ``normalize``).

    ``answer_format`` is one of ``ANSWER_FORMATS`` (see the module docstring). Returns None
    when nothing answer-like is found (``text`` format: when the text is blank).

    Raises:
        ValueError: ``answer_format`` is not one of ``ANSWER_FORMATS``.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, "
                         f"got {answer_format!r}")
    if not text or not text.strip():
        return None
    if answer_format == "boxed":
        boxed = last_boxed(text)
        return normalize(boxed) if boxed else None
    if answer_format == "code":
        block = last_code_block(text)
        return _normalize_code(block) if block and block.strip() else None
    if answer_format == "text":
        return normalize(" ".join(text.split()))
    if answer_format == "number":
        return _number_answer(text)
    if answer_format == "choice":
        return _choice_answer(text)
    return _auto_answer(text)


def _stated(text: str) -> str | None:
    """The text after the last "#### " or, failing that, the last "the answer is"."""
    for pattern in (_HASHES, _STATED):
        matches = pattern.findall(text)
        if matches:
            stated = matches[-1].strip()
            inner = _STATED.findall(stated)  # "Final answer: the answer is 5"
            return inner[-1].strip() if inner else stated
    return None


def _clean_stated(stated: str) -> str:
    """A stated answer without the rest of its sentence, markdown and math delimiters."""
    boxed = last_boxed(stated)
    if boxed:
        return boxed
    s = _unmark(stated)
    cut = _SENTENCE_END.search(s)
    if cut:
        s = s[:cut.start()]
    s = _strip_delimiters(s.strip().rstrip(".;,").strip())
    return s


def _auto_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed:
        answer = normalize(boxed)
        letter = _CHOICE_ONLY.fullmatch(answer)  # \boxed{(B)}
        return letter.group(1) if letter else answer
    stated = _stated(text)
    if stated is not None:
        answer = _interpret_stated(_clean_stated(stated))
        if answer and (len(answer) <= MAX_STATED_PROSE or _is_mathy(answer)):
            return answer  # longer prose is a sentence about the answer, not the answer
    choice = _last_choice(text)
    if choice:
        return choice
    block = last_code_block(text)
    if block and block.strip():
        tail = text[text.rfind("```") + 3:] if text.count("```") % 2 == 0 else ""
        if not re.search(r"\d", tail):
            return _normalize_code(block)
    return _last_number(text)


def _interpret_stated(s: str) -> str | None:
    """A cleaned stated answer -> a choice letter, a number, the value assigned, or the text."""
    if not s:
        return None
    letter = _CHOICE_ONLY.fullmatch(s)
    if letter:
        return letter.group(1)
    rhs = _EQUALS.split(s)[-1].strip()  # "x = 5", "3 + 4 = 7" -> the value after the last =
    if rhs:
        s = rhs
    leading = _LEADING_NUMBER.match(s)
    if leading and not _is_number_with_unit(s):
        return normalize(leading.group(1))  # "42 apples, because ..." -> 42
    answer = normalize(s)
    if not _is_mathy(answer):
        numbers = _NUMBER.findall(s)  # "I think it is 5 in total" -> 5
        if numbers:
            return normalize(numbers[0])
    return answer


def _number_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    for source in (boxed, _stated(text)):
        if source:
            numbers = _NUMBER.findall(_clean_stated(source))
            if numbers:
                return normalize(numbers[0])
    return _last_number(text)


def _choice_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    for source in (boxed, _stated(text)):
        if source:
            letter = _LEADING_CHOICE.match(_clean_stated(source))
            if letter:
                return letter.group(1)
    choice = _last_choice(text)
    if choice:
        return choice
    last_line = text.strip().rsplit("\n", 1)[-1]
    letter = _CHOICE_ONLY.fullmatch(_clean_stated(last_line))
    if letter:
        return letter.group(1)
    marked = _PAREN_CHOICE.findall(text)  # "I think (B), since ..."
    return marked[-1] if marked else None


def _last_choice(text: str) -> str | None:
    matches = _CHOICE.findall(text)
    if not matches:
        return None
    return next(g for g in matches[-1] if g)


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return normalize(numbers[-1]) if numbers else None
