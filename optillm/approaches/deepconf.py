"""DeepConf: sample reasoning traces, weigh them by the model's own confidence, vote.

Fu, Wang, Tian, Zhao, "Deep Think with Confidence", arXiv 2508.15260; the formulas live in
``optillm.toolkit.confidence``. Served for ``deepconf-<model>`` and for any request carrying the
test-time-scaling service's ``tts_strategy`` field (``optillm.plan.planner``):

- ``deepconf``, ``tts_mode: "offline"``: ``tts_budget`` traces in one call with ``n`` (and
  ``logprobs``, ``top_logprobs=k``), each scored by its confidence (``tts_confidence``:
  lowest group by default); the most confident are kept (``tts_filter_method``: ``topK``
  keeps K traces, ``top10%`` / ``top90%`` a share, the paper's DeepConf-low / -high) and vote,
  weighted by confidence.
- ``deepconf``, ``tts_mode: "online"`` (the paper's Algorithm 2): ``tts_warmup`` traces in one
  call set the threshold ``s`` (the percentile of their confidences that keeps the filter's
  share); the warm-up traces at or above ``s`` vote. Then traces are streamed in small
  concurrent waves (``tts_wave``); each is cut, its upstream stream closed, as soon as the mean
  confidence of its last ``tts_window`` tokens falls below ``s``; cut traces do not vote.
  After the warm-up and after each wave, generation stops once the leading answer holds
  ``tts_consensus`` of the vote weight, or when ``tts_budget`` traces were started.
- ``best_of_n``: the single most confident of ``tts_budget`` traces.
- ``self_consistency``: a plain majority over ``tts_budget`` traces (no logprobs needed).

Every answer carries ``choices[0].tts_metadata`` = ``{strategy, mode, num_traces, confidence,
agreement, traces_stopped_early, tokens_generated, ...}``: ``confidence`` is the mean
confidence (nats) of the voting traces behind the answer (of the chosen trace for best-of-N;
null for self-consistency), ``agreement`` the winner's share of the vote, ``tokens_generated``
the completion tokens of every call. An upstream that returns no logprobs although they were
asked for is a 400 (``CapabilityError``) naming the missing capability.

Options (request body): ``tts_strategy`` (deepconf), ``tts_mode`` (offline), ``tts_budget``
(8 traces, 1-64), ``tts_filter_method`` (``top5`` offline, as the service had it; ``top90%``
online, DeepConf-high; in online mode ``topK`` keeps the share K/budget), ``tts_warmup``
(min(16, budget/2)), ``tts_window`` (an eighth of the median answer length, 16-2048 tokens),
``tts_consensus`` (0.95), ``tts_confidence`` (``lowest``, ``bottom10``, ``tail``, ``mean``;
online mode always uses ``lowest``, its stopping criterion), ``tts_wave`` (2 traces). The
client's ``temperature`` (default 0.7) and ``top_logprobs`` (k, 1-20, default 20) apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadRequestError, CapabilityError
from ..options import opt
from ..toolkit.answers import Vote, extract_answer, vote
from ..toolkit.confidence import (
    METHODS,
    WindowMonitor,
    default_window,
    lowest_group_confidence,
    threshold,
    token_confidence,
    token_confidences,
    trace_confidence,
)
from ..toolkit.context import Answer, RunContext
from ..types import Usage

SLUG = "deepconf"

STRATEGIES = ("deepconf", "best_of_n", "self_consistency")
MODES = ("offline", "online")
MAX_BUDGET = 64
MAX_TOP_LOGPROBS = 20
DEFAULT_TEMPERATURE = 0.7
DEFAULT_FILTER = {"offline": "top5", "online": "top90%"}

_FILTER = re.compile(r"top(\d+(?:\.\d+)?)(%?)")


def parse_filter(method: str) -> tuple[int | None, float | None]:
    """``"top5"`` -> (5, None): keep 5 traces; ``"top10%"`` -> (None, 0.1): keep a share.

    Raises: ValueError for anything else (K < 1, a share outside (0, 100]).
    """
    match = _FILTER.fullmatch(method.strip().lower())
    if not match:
        raise ValueError(f"tts_filter_method must look like 'top5' or 'top10%', got {method!r}")
    number, percent = float(match.group(1)), match.group(2)
    if percent:
        if not 0 < number <= 100:
            raise ValueError("tts_filter_method's share must be in (0, 100]%")
        return None, number / 100.0
    if number < 1 or not number.is_integer():
        raise ValueError("tts_filter_method's count must be a whole number of traces >= 1")
    return int(number), None


@dataclass(frozen=True)
class Options:
    tts_strategy: str | None = opt(None, choices=STRATEGIES)
    tts_mode: str = opt("offline", choices=MODES)
    tts_budget: int = opt(8, ge=1, le=MAX_BUDGET)
    tts_filter_method: str | None = None
    tts_warmup: int | None = opt(None, ge=1)  # and at most tts_budget
    tts_window: int | None = opt(None, ge=1, le=4 * 2048, unit="tokens")
    tts_consensus: float = opt(0.95, gt=0, le=1)
    tts_confidence: str = opt("lowest", choices=METHODS)
    tts_wave: int = opt(2, ge=1, le=16)

    def __post_init__(self):
        if self.tts_filter_method is not None:
            parse_filter(self.tts_filter_method)
        if self.tts_warmup is not None and self.tts_warmup > self.tts_budget:
            raise ValueError("tts_warmup must be between 1 and tts_budget")

    @property
    def strategy(self) -> str:
        return self.tts_strategy or "deepconf"

    @property
    def filter_method(self) -> str:
        return self.tts_filter_method or DEFAULT_FILTER[self.tts_mode]

    @property
    def warmup(self) -> int:
        return self.tts_warmup or max(1, min(16, self.tts_budget // 2))

    def keep_count(self, n: int) -> int:
        """How many of ``n`` traces the filter keeps (at least one)."""
        count, share = parse_filter(self.filter_method)
        return max(1, min(n, count) if count else int(n * share + 1e-9))

    def keep_share(self) -> float:
        """The share of traces the filter keeps, against the budget (online threshold)."""
        count, share = parse_filter(self.filter_method)
        return min(1.0, count / self.tts_budget) if count else share


@dataclass
class Trace:
    """One sampled reasoning trace. ``confidence`` in nats; ``prompt_tokens`` is what the
    upstream reported for a streamed trace (None when its usage chunk never came)."""

    text: str
    finish_reason: str
    logprobs: list
    answer: str | None
    confs: list
    confidence: float = 0.0
    cut: bool = False
    prompt_tokens: int | None = None

    @property
    def tokens(self) -> int:
        return len(self.logprobs)


def run(ctx: RunContext) -> Answer:
    options: Options = ctx.options
    temperature = ctx.sampling.get("temperature", DEFAULT_TEMPERATURE)
    if options.strategy == "self_consistency":
        return _self_consistency(ctx, temperature)
    k = _top_k(ctx)
    if options.strategy == "best_of_n":
        return _best_of_n(ctx, k, temperature)
    if options.tts_mode == "online":
        return _online(ctx, k, temperature)
    return _offline(ctx, k, temperature)


# -- strategies --------------------------------------------------------------------------

def _offline(ctx: RunContext, k: int, temperature: float) -> Answer:
    options: Options = ctx.options
    traces, _ = _sample(ctx, options.tts_budget, k, temperature)
    window = options.tts_window or default_window(t.tokens for t in traces)
    for t in traces:
        t.confidence = trace_confidence(t.confs, window, options.tts_confidence)
    ranked = sorted(traces, key=lambda t: -t.confidence)  # stable: earlier first among ties
    kept = ranked[:options.keep_count(len(traces))]
    chosen, result, confidence = _weighted_vote(kept)
    return _answer(ctx, chosen, traces, confidence, result.share, cut=0, window=window,
                   traces_voted=len(kept), answer=result.answer,
                   filter_method=options.filter_method)


def _online(ctx: RunContext, k: int, temperature: float) -> Answer:
    options: Options = ctx.options
    warm, warm_usage = _sample(ctx, options.warmup, k, temperature)
    window = options.tts_window or default_window(t.tokens for t in warm)
    for t in warm:
        t.confidence = lowest_group_confidence(t.confs, window)
    bar = threshold([t.confidence for t in warm], options.keep_share())
    voters = [t for t in warm if t.confidence >= bar]
    streamed: list[Trace] = []
    while len(warm) + len(streamed) < options.tts_budget \
            and _consensus(voters) < options.tts_consensus:
        size = min(options.tts_wave, options.tts_budget - len(warm) - len(streamed))
        wave = ctx.map(lambda _: _stream_trace(ctx, k, temperature, window, bar), range(size))
        streamed.extend(wave)
        voters.extend(t for t in wave if not t.cut and t.confidence >= bar)
    _account_prompts(ctx, streamed, warm_usage.prompt_tokens)
    chosen, result, confidence = _weighted_vote(voters or warm)
    return _answer(ctx, chosen, warm + streamed, confidence, result.share,
                   cut=sum(t.cut for t in streamed), window=window, threshold=round(bar, 4),
                   warmup=len(warm), traces_voted=len(voters), answer=result.answer,
                   filter_method=options.filter_method)


def _best_of_n(ctx: RunContext, k: int, temperature: float) -> Answer:
    options: Options = ctx.options
    traces, _ = _sample(ctx, options.tts_budget, k, temperature)
    window = options.tts_window or default_window(t.tokens for t in traces)
    for t in traces:
        t.confidence = trace_confidence(t.confs, window, options.tts_confidence)
    chosen = max(traces, key=lambda t: t.confidence)  # the first of equal confidences
    agreeing = sum(1 for t in traces if chosen.answer is not None and t.answer == chosen.answer)
    return _answer(ctx, chosen, traces, chosen.confidence, max(1, agreeing) / len(traces),
                   cut=0, window=window, traces_voted=1, answer=chosen.answer)


def _self_consistency(ctx: RunContext, temperature: float) -> Answer:
    budget = ctx.options.tts_budget
    completion = ctx.complete(n=budget, answer=True, temperature=temperature)
    choices = completion.choices[:budget]
    answers = [extract_answer(c.text) for c in choices]
    result = vote(answers)
    chosen = choices[max(result.index, 0)]
    metadata = _metadata(ctx, len(choices), None, result.share, 0, answer=result.answer,
                         traces_voted=len(choices))
    return Answer(chosen.text, finish_reason=chosen.finish_reason or "stop",
                  metadata={"tts_metadata": metadata},
                  logprobs=chosen.logprobs if ctx.params.get("logprobs") else None)


# -- traces ------------------------------------------------------------------------------

def _top_k(ctx: RunContext) -> int:
    k = ctx.params.get("top_logprobs")
    if k is None:
        return MAX_TOP_LOGPROBS
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_LOGPROBS:
        raise BadRequestError(f"{ctx.options.strategy} needs top_logprobs between 1 and "
                              f"{MAX_TOP_LOGPROBS}", param="top_logprobs")
    return k


def _no_logprobs(detail: str) -> CapabilityError:
    return CapabilityError(f"the upstream does not support logprobs ({detail}); tts_strategy "
                           f"'deepconf' and 'best_of_n' need token logprobs with top_logprobs "
                           f"to measure confidence; use tts_strategy 'self_consistency' or an "
                           f"upstream that returns logprobs", param="tts_strategy")


def _sample(ctx: RunContext, n: int, k: int, temperature: float) -> tuple[list[Trace], Usage]:
    """``n`` finished traces with logprobs from one call with ``n``, and that call's usage.

    Raises: CapabilityError when the upstream refuses or omits logprobs.
    """
    if ctx.capabilities.logprobs is False:
        raise _no_logprobs("it said so")
    try:
        completion = ctx.complete(n=n, answer=True, logprobs=True, top_logprobs=k,
                                  temperature=temperature)
    except CapabilityError:
        raise
    except BadRequestError as exc:
        if "logprob" in exc.message.lower():
            raise _no_logprobs(f"it refused them: {exc.message}") from exc
        raise
    traces = []
    for choice in completion.choices[:n]:
        logprobs = choice.logprobs if isinstance(choice.logprobs, dict) else {}
        entries = logprobs.get("content") or []
        if not entries and choice.text.strip():
            raise _no_logprobs("its answer carried none although they were requested")
        traces.append(Trace(choice.text, choice.finish_reason or "stop", list(entries),
                            extract_answer(choice.text), token_confidences(entries)))
    return traces, completion.usage


def _stream_trace(ctx: RunContext, k: int, temperature: float, window: int,
                  bar: float) -> Trace:
    """One streamed trace, cut (its upstream stream closed) as soon as the confidence of its
    last ``window`` tokens falls below ``bar``.

    Raises: CapabilityError when the stream carries text without logprobs.
    """
    monitor = WindowMonitor(window, bar)
    reported: Usage | None = None
    with ctx.stream(answer=True, logprobs=True, top_logprobs=k,
                    temperature=temperature) as stream:
        seen = 0
        for chunk in stream:
            if chunk.usage is not None:
                reported = chunk.usage
            for entry in stream.logprobs[seen:]:
                if monitor.push(token_confidence(entry)):
                    break
            seen = len(stream.logprobs)
            if monitor.tripped:
                break
    if not stream.cut and stream.text.strip() and not stream.logprobs:
        raise _no_logprobs("its streamed answer carried none although they were requested")
    entries = list(stream.logprobs)
    confs = token_confidences(entries)
    if stream.cut:
        confidence = monitor.lowest if monitor.lowest is not None else 0.0
    else:
        confidence = lowest_group_confidence(confs, window)
    return Trace(stream.text, stream.finish_reason or "stop", entries,
                 None if stream.cut else extract_answer(stream.text), confs, confidence,
                 cut=stream.cut, prompt_tokens=reported.prompt_tokens if reported else None)


def _account_prompts(ctx: RunContext, streamed: list[Trace], warm_prompt: int) -> None:
    """Add the prompt tokens of streams that ended without a usage chunk (cut ones): the
    prompt of a stream that reported it, else the warm-up call's (exact when the upstream
    served its ``n`` in one call, as OpenAI and llama-server within its slots do)."""
    missing = sum(1 for t in streamed if t.prompt_tokens is None)
    if not missing:
        return
    known = next((t.prompt_tokens for t in streamed if t.prompt_tokens is not None), None)
    per_call = known if known is not None else warm_prompt
    ctx.add_usage(Usage(per_call * missing, 0), calls=0)


# -- voting and the answer ---------------------------------------------------------------

def _consensus(voters: list[Trace]) -> float:
    """The leading answer's share of the voters' confidence (0 with no voters)."""
    if not voters:
        return 0.0
    return vote([t.answer for t in voters], [t.confidence for t in voters]).share


def _weighted_vote(voters: list[Trace]) -> tuple[Trace, Vote, float]:
    """The confidence-weighted vote; returns the most confident trace behind the winner
    (the most confident voter when no trace stated an answer), the vote, and the mean
    confidence of the winner's voters."""
    result = vote([t.answer for t in voters], [t.confidence for t in voters])
    backers = [t for t in voters if t.answer == result.answer] if result.answer is not None \
        else voters
    chosen = max(backers, key=lambda t: t.confidence)
    return chosen, result, sum(t.confidence for t in backers) / len(backers)


def _metadata(ctx: RunContext, num_traces: int, confidence: float | None, agreement: float,
              cut: int, **extra) -> dict:
    options: Options = ctx.options
    mode = options.tts_mode if options.strategy == "deepconf" else "offline"
    return {"strategy": options.strategy, "mode": mode, "num_traces": num_traces,
            "confidence": None if confidence is None else round(confidence, 4),
            "agreement": round(agreement, 4), "traces_stopped_early": cut,
            "tokens_generated": ctx.usage.completion_tokens, **extra}


def _answer(ctx: RunContext, chosen: Trace, traces: list[Trace], confidence: float,
            agreement: float, cut: int, **extra) -> Answer:
    metadata = _metadata(ctx, len(traces), confidence, agreement, cut, **extra)
    logprobs = {"content": chosen.logprobs, "refusal": None} \
        if ctx.params.get("logprobs") and chosen.logprobs else None
    return Answer(chosen.text, finish_reason=chosen.finish_reason,
                  metadata={"tts_metadata": metadata}, logprobs=logprobs)
