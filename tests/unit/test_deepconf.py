"""DeepConf (``deepconf``, and the ``tts_*`` strategies it serves) over a scripted upstream that
returns token logprobs: the confidence formulas on hand-computed numbers, the filters, the
confidence-weighted vote, the online cut-off and consensus stop, ``tts_metadata``, the 400
for an upstream without logprobs, per-request options and exact usage."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from optillm.approaches.deepconf import Options, parse_filter
from optillm.errors import BadRequestError
from optillm.toolkit.confidence import (
    WindowMonitor,
    bottom_percent_confidence,
    default_window,
    group_confidences,
    lowest_group_confidence,
    mean_confidence,
    percentile,
    tail_confidence,
    threshold,
    token_confidence,
    token_confidences,
    trace_confidence,
)
from optillm.types import ChatRequest, Choice, Chunk, Completion, Message, Usage
from optillm.upstream.base import NO_META, CallMeta

from ..conftest import chat
from ..fakes import FakeUpstream, words

REQUIRED_METADATA = {"strategy", "mode", "num_traces", "confidence", "agreement",
                     "traces_stopped_early", "tokens_generated"}


# -- a fake upstream whose traces carry logprobs ------------------------------------------

@dataclass(frozen=True)
class Scripted:
    """A trace the fake generates: its tokens and each token's confidence (nats)."""

    tokens: tuple[str, ...]
    confs: tuple[float, ...]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def say(text: str, conf: float | Sequence[float] = 5.0) -> Scripted:
    """A trace of ``text``, one token per word, each with confidence ``conf`` (or the list)."""
    pieces = text.split(" ")
    tokens = tuple(p + " " for p in pieces[:-1]) + (pieces[-1],)
    confs = tuple(conf) if isinstance(conf, (list, tuple)) else (float(conf),) * len(tokens)
    assert len(confs) == len(tokens)
    return Scripted(tokens, confs)


def entry(token: str, conf: float) -> dict:
    """An OpenAI logprobs entry whose three alternatives average to ``-conf``."""
    spread = min(conf, 0.5)
    return {"token": token, "logprob": -(conf - spread), "bytes": None,
            "top_logprobs": [{"token": token, "logprob": -(conf - spread), "bytes": None},
                             {"token": "x", "logprob": -conf, "bytes": None},
                             {"token": "y", "logprob": -(conf + spread), "bytes": None}]}


@dataclass
class StreamRecord:
    trace: Scripted
    yielded: int = 0
    closed_early: bool = False
    finished: bool = False
    request: ChatRequest | None = field(default=None, repr=False)


class LogprobUpstream(FakeUpstream):
    """``FakeUpstream`` whose replies are ``Scripted`` traces (or lists of them, one per
    choice) and whose answers and streams carry logprobs when asked for (and when
    ``logprobs`` is True). ``streams`` records each stream: tokens yielded, closed early."""

    def __init__(self, *args, logprobs: bool = True, **kwargs):
        kwargs.setdefault("default", say("The answer is 4"))
        super().__init__(*args, **kwargs)
        self.logprobs = logprobs
        self.streams: list[StreamRecord] = []

    def _scripted(self, request: ChatRequest) -> list[Scripted] | Completion:
        reply = self._next(request)
        if callable(reply) and not isinstance(reply, Scripted):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        if isinstance(reply, str):
            reply = say(reply)
        return list(reply) if isinstance(reply, (list, tuple)) else [reply]

    def _wants_logprobs(self, request: ChatRequest) -> bool:
        return self.logprobs and bool(request.params.get("logprobs"))

    def _reply(self, request: ChatRequest) -> Completion:
        scripted = self._scripted(request)
        if isinstance(scripted, Completion):
            return scripted
        n = request.n
        traces = (scripted * n)[:n]
        choices = []
        for i, t in enumerate(traces):
            logprobs = None
            if self._wants_logprobs(request):
                content = [entry(tok, c) for tok, c in zip(t.tokens, t.confs, strict=True)]
                logprobs = {"content": content, "refusal": None}
            choices.append(Choice(i, Message("assistant", t.text), "stop", logprobs))
        prompt = sum(words(m.text) for m in request.messages)
        return Completion(tuple(choices), Usage(prompt, sum(len(t.tokens) for t in traces)),
                          model=request.model)

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        with self._lock:
            self.history.append(request)
            self.metas.append(meta)
        (trace, *_) = self._scripted(request)
        record = StreamRecord(trace, request=request)
        with self._lock:
            self.streams.append(record)
        return self._stream_chunks(record, request)

    def _stream_chunks(self, record: StreamRecord, request: ChatRequest) -> Iterator[Chunk]:
        trace = record.trace
        try:
            for token, conf in zip(trace.tokens, trace.confs, strict=True):
                choice = {"index": 0, "delta": {"content": token}, "finish_reason": None}
                if self._wants_logprobs(request):
                    choice["logprobs"] = {"content": [entry(token, conf)]}
                record.yielded += 1
                yield Chunk((choice,))
            yield Chunk(({"index": 0, "delta": {}, "finish_reason": "stop"},))
            prompt = sum(words(m.text) for m in request.messages)
            yield Chunk((), usage=Usage(prompt, len(trace.tokens)))
            record.finished = True
        except GeneratorExit:
            record.closed_early = True  # the consumer closed the stream before its end
            raise


@pytest.fixture
def up() -> LogprobUpstream:
    return LogprobUpstream()


@pytest.fixture
def dc(make_app, up):
    return make_app(upstream=up).test_client()


def tts(client, content: str = "What is 3+4?", model: str = "fake-model", **body):
    """A request with tts_* fields; returns (status, JSON)."""
    response = chat(client, model=model, content=content, **body)
    return response.status_code, response.get_json()


def metadata(data: dict) -> dict:
    return data["choices"][0]["tts_metadata"]


def prompt_words(content: str = "What is 3+4?") -> int:
    return words(content)


# -- the formulas --------------------------------------------------------------------------

def test_token_confidence_is_minus_mean_top_logprob():
    e = {"token": "4", "logprob": -0.1,
         "top_logprobs": [{"token": "4", "logprob": -0.1}, {"token": "5", "logprob": -2.3},
                          {"token": "6", "logprob": -4.6}]}
    assert token_confidence(e) == pytest.approx((0.1 + 2.3 + 4.6) / 3)
    # no alternatives: the sampled token's own -logprob (k = 1); nothing known: 0
    assert token_confidence({"token": "4", "logprob": -0.7, "top_logprobs": []}) == \
        pytest.approx(0.7)
    assert token_confidence({"token": "4", "logprob": None}) == 0.0
    assert token_confidences([entry("a", 2.0), entry("b", 7.0)]) == \
        pytest.approx([2.0, 7.0])


def test_group_confidences_slide_by_one_token():
    assert group_confidences([1, 2, 3, 4, 5], 2) == pytest.approx([1.5, 2.5, 3.5, 4.5])
    assert group_confidences([1, 2, 3, 4, 5], 5) == pytest.approx([3.0])
    assert group_confidences([1, 2, 3], 10) == pytest.approx([2.0])  # shorter: one group
    assert group_confidences([], 4) == [0.0]
    with pytest.raises(ValueError):
        group_confidences([1.0], 0)


def test_trace_confidences_lowest_bottom10_tail_mean():
    confs = [5, 5, 1, 1, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 3]
    # 21 groups of 2: lowest is (1+1)/2 = 1; the lowest 10% is 2 groups: 1 and 3 -> 2
    assert lowest_group_confidence(confs, 2) == pytest.approx(1.0)
    assert bottom_percent_confidence(confs, 2) == pytest.approx((1.0 + 3.0) / 2)
    assert tail_confidence(confs, 2) == pytest.approx(4.0)
    assert mean_confidence(confs) == pytest.approx(sum(confs) / len(confs))
    assert trace_confidence(confs, 2, "lowest") == pytest.approx(1.0)
    assert trace_confidence(confs, 2, "tail") == pytest.approx(4.0)
    with pytest.raises(ValueError):
        trace_confidence(confs, 2, "median")


def test_percentile_and_threshold_follow_the_paper():
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 90) == pytest.approx(9.1)  # NumPy's linear interpolation
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert threshold(values, 0.1) == pytest.approx(9.1)   # DeepConf-low: keep top 10%
    assert threshold(values, 0.9) == pytest.approx(1.9)   # DeepConf-high: keep top 90%
    with pytest.raises(ValueError):
        threshold([], 0.5)


def test_window_monitor_trips_once_the_window_mean_falls_below():
    m = WindowMonitor(3, threshold=2.0)
    assert [m.push(0.0), m.push(9.0)] == [False, False]  # not full yet: never judged
    assert m.push(9.0) is False and m.lowest == pytest.approx(6.0)
    assert m.push(0.0) is False          # 9, 9, 0 -> 6
    assert m.push(0.0) is False          # 9, 0, 0 -> 3
    assert m.push(0.0) is True           # 0, 0, 0 -> 0 < 2
    assert m.tripped and m.count == 6 and m.lowest == 0.0
    edge = WindowMonitor(2, threshold=2.0)
    assert [edge.push(2.0), edge.push(2.0)] == [False, False]  # equal to s is not below


def test_default_window_scales_with_answer_length():
    assert default_window([100, 200, 300]) == 25
    assert default_window([20, 30]) == 16
    assert default_window([10 ** 6]) == 2048
    assert default_window([]) == 16


def test_parse_filter_and_option_validation():
    assert parse_filter("top5") == (5, None)
    assert parse_filter("top10%") == (None, pytest.approx(0.1))
    assert parse_filter("TOP90%") == (None, pytest.approx(0.9))
    for bad in ("best", "top0", "top0%", "top150%", "top2.5"):
        with pytest.raises(ValueError):
            parse_filter(bad)
    assert Options().warmup == 4 and Options(tts_budget=64).warmup == 16
    assert Options(tts_budget=1).warmup == 1
    assert Options(tts_budget=10, tts_filter_method="top10%").keep_count(10) == 1
    assert Options(tts_budget=10, tts_filter_method="top90%").keep_count(10) == 9
    assert Options(tts_budget=8, tts_filter_method="top5").keep_share() == pytest.approx(5 / 8)


@pytest.mark.parametrize("body", [
    {"tts_strategy": "beam"},  # chosen by tts_strategy, then refused by it
    {"tts_strategy": "deepconf", "tts_filter_method": "best"},
    {"tts_strategy": "deepconf", "tts_budget": 4, "tts_warmup": 5},
    {"tts_strategy": "deepconf", "top_logprobs": 0},
    {"tts_strategy": "deepconf", "top_logprobs": 21}])
def test_invalid_options_are_400(dc, up, body):
    status, data = tts(dc, **body)
    assert status == 400, data
    assert data["error"]["type"] == "invalid_request_error"
    assert up.history == []


# -- routing, calls, options ---------------------------------------------------------------

def test_offline_is_one_call_with_n_and_logprobs(dc, up, openapi):
    status, data = tts(dc, tts_strategy="deepconf", tts_budget=6)
    assert status == 200, data
    (call,) = up.history
    assert call.n == 6 and call.model == "fake-model"
    assert call.params["logprobs"] is True and call.params["top_logprobs"] == 20
    assert call.params["temperature"] == 0.7
    assert not any(k.startswith("tts_") for k in call.params)  # never sent upstream
    meta = metadata(data)
    assert REQUIRED_METADATA <= set(meta)
    assert meta["strategy"] == "deepconf" and meta["mode"] == "offline"
    assert meta["num_traces"] == 6 and meta["traces_stopped_early"] == 0
    assert meta["agreement"] == 1.0 and meta["confidence"] == pytest.approx(5.0)
    assert meta["filter_method"] == "top5" and meta["traces_voted"] == 5
    assert data["choices"][0]["message"]["content"] == "The answer is 4"
    assert data["choices"][0]["logprobs"] is None  # the client did not ask for them
    openapi(data, "CreateChatCompletionResponse")


def test_model_prefix_selects_deepconf_with_defaults(dc, up):
    status, data = tts(dc, model="deepconf-fake-model")
    assert status == 200, data
    (call,) = up.history
    assert call.model == "fake-model" and call.n == 8
    assert metadata(data)["strategy"] == "deepconf" and metadata(data)["mode"] == "offline"


def test_client_top_logprobs_temperature_and_logprobs_apply(dc, up):
    status, data = tts(dc, tts_strategy="deepconf", tts_budget=2, top_logprobs=5,
                       temperature=0.3, logprobs=True)
    assert status == 200, data
    assert up.history[0].params["top_logprobs"] == 5
    assert up.history[0].params["temperature"] == 0.3
    content = data["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["The ", "answer ", "is ", "4"]


def test_options_never_leak_between_requests(dc, up):
    results = {}

    def ask(name, **body):
        results[name] = tts(dc, model="deepconf-fake-model", **body)

    threads = [threading.Thread(target=ask, args=("small",), kwargs={"tts_budget": 3}),
               threading.Thread(target=ask, args=("sc",),
                                kwargs={"tts_strategy": "self_consistency", "tts_budget": 5})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ask("plain")
    assert metadata(results["small"][1])["num_traces"] == 3
    assert metadata(results["sc"][1])["strategy"] == "self_consistency"
    plain = metadata(results["plain"][1])
    assert plain["strategy"] == "deepconf" and plain["num_traces"] == 8
    assert sorted(c.n for c in up.history) == [3, 5, 8]


def test_n_choices_each_carry_metadata(dc, up):
    status, data = tts(dc, tts_strategy="deepconf", tts_budget=2, n=2)
    assert status == 200, data
    assert len(data["choices"]) == 2 and len(up.history) == 2
    assert all(c["tts_metadata"]["num_traces"] == 2 for c in data["choices"])


# -- filters and votes -----------------------------------------------------------------------

def ten_traces() -> list[Scripted]:
    """Confidences 10..1: answer 1 (10), 2 (9, 8), 3 (7..1)."""
    answers = ["1", "2", "2"] + ["3"] * 7
    return [say(f"The answer is {a}", 10 - i) for i, a in enumerate(answers)]


@pytest.mark.parametrize("method, winner, voted, agreement", [
    ("top10%", "1", 1, 1.0),                      # DeepConf-low: the single best trace
    ("top3", "2", 3, 17 / 27),                    # 1: 10 against 2: 9 + 8
    ("top90%", "3", 9, 27 / 54),                  # 1: 10, 2: 17, 3: 7+6+5+4+3+2 = 27
])
def test_filters_keep_the_most_confident(dc, up, method, winner, voted, agreement):
    up.enqueue(ten_traces())
    status, data = tts(dc, tts_strategy="deepconf", tts_budget=10, tts_filter_method=method)
    assert status == 200, data
    meta = metadata(data)
    assert meta["answer"] == winner and meta["traces_voted"] == voted
    assert meta["agreement"] == pytest.approx(agreement, abs=1e-4)


def test_vote_is_weighted_by_confidence_but_self_consistency_is_not(dc, up):
    traces = [say("The answer is 7", 9.0), say("The answer is 8", 2.0),
              say("The answer is 8", 2.0)]
    up.enqueue(traces, traces)
    _, weighted = tts(dc, tts_strategy="deepconf", tts_budget=3, tts_filter_method="top3")
    _, plain = tts(dc, tts_strategy="self_consistency", tts_budget=3)
    assert weighted["choices"][0]["message"]["content"] == "The answer is 7"
    assert metadata(weighted)["agreement"] == pytest.approx(9 / 13, abs=1e-4)
    assert metadata(weighted)["confidence"] == pytest.approx(9.0)
    assert plain["choices"][0]["message"]["content"] == "The answer is 8"
    sc = metadata(plain)
    assert sc["strategy"] == "self_consistency" and sc["confidence"] is None
    assert sc["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert "top_logprobs" not in up.history[1].params  # plain majority needs none


def test_best_of_n_returns_the_most_confident_trace(dc, up):
    up.enqueue([say("The answer is 8", 3.0), say("The answer is 7", 6.0),
                say("The answer is 8", 4.0)])
    status, data = tts(dc, tts_strategy="best_of_n", tts_budget=3)
    assert status == 200, data
    assert data["choices"][0]["message"]["content"] == "The answer is 7"
    meta = metadata(data)
    assert meta["strategy"] == "best_of_n" and meta["confidence"] == pytest.approx(6.0)
    assert meta["agreement"] == pytest.approx(1 / 3, abs=1e-4)


def test_lowest_group_confidence_judges_the_weakest_stretch(dc, up):
    # the shaky trace is more confident on average, but doubts in the middle
    steady = say("a b c d e f The answer is 1", [4.0] * 10)
    shaky = say("a b c d e f The answer is 2", [6.0] * 3 + [0.5] * 3 + [6.0] * 4)
    up.enqueue([shaky, steady], [shaky, steady])
    _, lowest = tts(dc, tts_strategy="best_of_n", tts_budget=2, tts_window=3)
    _, mean = tts(dc, tts_strategy="best_of_n", tts_budget=2, tts_window=3,
                  tts_confidence="mean")
    assert metadata(lowest)["answer"] == "1" and metadata(mean)["answer"] == "2"


# -- online: cut-off, consensus, usage ----------------------------------------------------

def test_online_cuts_a_trace_and_closes_its_stream(dc, up):
    warm = [say("The answer is 7", c) for c in (4.0, 5.0, 6.0)] + [say("The answer is 8", 7.0)]
    # confident at first (it would win the vote), then doubt: cut when the window mean of
    # its last 4 tokens falls below s = 10th percentile of (4, 5, 6, 7) = 4.3
    doubtful = say("The answer is 99 " + " ".join(["hmm"] * 16),
                   [50.0] * 4 + [6.0] * 4 + [1.0] * 12)
    good = say("The answer is 7", 6.0)
    up.enqueue(warm, doubtful, good)
    status, data = tts(dc, tts_strategy="deepconf", tts_mode="online", tts_budget=6,
                       tts_warmup=4, tts_window=4, tts_wave=1)
    assert status == 200, data
    cut, finished = up.streams
    # window means at tokens 8, 9, 10: 6, (6*3+1)/4 = 4.75, (6*2+2)/4 = 3.5 < 4.3: cut
    assert cut.yielded == 10 and cut.closed_early and not cut.finished
    assert finished.finished and not finished.closed_early
    meta = metadata(data)
    assert meta["mode"] == "online" and meta["num_traces"] == 6
    assert meta["traces_stopped_early"] == 1 and meta["threshold"] == pytest.approx(4.3)
    assert meta["warmup"] == 4 and meta["traces_voted"] == 4  # 5, 6, 7 and the good one
    assert meta["answer"] == "7" and data["choices"][0]["message"]["content"] == \
        "The answer is 7"
    assert meta["agreement"] == pytest.approx((5 + 6 + 6) / (5 + 6 + 7 + 6), abs=1e-4)
    # exact usage: the warm-up call, one finished stream, one cut after 10 tokens
    prompt = prompt_words()
    usage = data["usage"]
    assert usage["prompt_tokens"] == 3 * prompt
    assert usage["completion_tokens"] == 4 * 4 + 10 + 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert meta["tokens_generated"] == usage["completion_tokens"]
    assert all(c.params["logprobs"] and c.params["top_logprobs"] == 20 for c in up.history)


def test_online_cut_traces_get_prompt_tokens_when_every_stream_is_cut(dc, up):
    warm = [say("The answer is 7", c) for c in (4.0, 5.0, 6.0)] + [say("The answer is 8", 7.0)]
    doubtful = say("a b c d e f g h", [1.0] * 8)
    up.enqueue(warm, doubtful, doubtful)
    status, data = tts(dc, tts_strategy="deepconf", tts_mode="online", tts_budget=6,
                       tts_warmup=4, tts_window=2, tts_wave=2)
    assert status == 200, data
    assert all(s.closed_early and s.yielded == 2 for s in up.streams)
    assert metadata(data)["traces_stopped_early"] == 2
    assert data["usage"] == {"prompt_tokens": 3 * prompt_words(),
                             "completion_tokens": 16 + 2 + 2,
                             "total_tokens": 3 * prompt_words() + 20,
                             "completion_tokens_details": {"reasoning_tokens": 0}}


def test_online_stops_at_consensus_after_warmup(dc, up):
    up.enqueue([say("The answer is 7", 6.0)] * 3 + [say("The answer is 8", 1.0)])
    status, data = tts(dc, tts_strategy="deepconf", tts_mode="online", tts_budget=16,
                       tts_warmup=4)
    assert status == 200, data
    assert len(up.history) == 1 and up.streams == []  # 8 is below s: 7 holds all the weight
    meta = metadata(data)
    assert meta["num_traces"] == 4 and meta["agreement"] == 1.0
    assert meta["traces_stopped_early"] == 0


def test_online_stops_at_consensus_after_a_wave(dc, up):
    up.enqueue([say("The answer is 7", 6.0)] * 3 + [say("The answer is 8", 6.0)])
    up.default = say("The answer is 7", 6.0)
    status, data = tts(dc, tts_strategy="deepconf", tts_mode="online", tts_budget=10,
                       tts_warmup=4, tts_consensus=0.8, tts_wave=1)
    assert status == 200, data
    assert len(up.streams) == 1  # 3/4 after the warm-up, 4/5 after one streamed trace
    assert metadata(data)["num_traces"] == 5 and metadata(data)["agreement"] == 0.8


def test_online_without_consensus_spends_the_budget_in_waves(dc, up):
    up.enqueue([say("The answer is 7", 6.0)] * 2 + [say("The answer is 8", 6.0)] * 2)
    up.default = say("The answer is 9", 6.0)
    status, data = tts(dc, tts_strategy="deepconf", tts_mode="online", tts_budget=9,
                       tts_wave=2)
    assert status == 200, data
    meta = metadata(data)
    assert meta["warmup"] == 4 and meta["num_traces"] == 9 and len(up.streams) == 5
    assert all(s.finished for s in up.streams)
    assert meta["answer"] == "9"
    usage = data["usage"]
    assert usage["prompt_tokens"] == 6 * prompt_words()
    assert usage["completion_tokens"] == 9 * 4 == meta["tokens_generated"]


def test_offline_usage_is_exact(dc, up):
    up.enqueue([say("The answer is 7"), say("So it is 7 then")])
    _, data = tts(dc, tts_strategy="deepconf", tts_budget=2)
    assert data["usage"] == {"prompt_tokens": prompt_words(), "completion_tokens": 4 + 5,
                             "total_tokens": prompt_words() + 9,
                             "completion_tokens_details": {"reasoning_tokens": 0}}
    assert metadata(data)["tokens_generated"] == 9


# -- upstreams without logprobs -----------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"tts_strategy": "deepconf"}, {"tts_strategy": "deepconf", "tts_mode": "online"},
    {"tts_strategy": "best_of_n"}])
def test_upstream_without_logprobs_is_a_clear_400(make_app, body):
    client = make_app(upstream=LogprobUpstream(logprobs=False)).test_client()
    status, data = tts(client, **body)
    assert status == 400, data
    error = data["error"]
    assert error["code"] == "unsupported_capability" and "logprobs" in error["message"]
    assert error["param"] == "tts_strategy"


def test_streams_without_logprobs_are_a_clear_400(make_app):
    fake = FakeUpstream(default="The answer is 4")  # answers carry logprobs, streams none
    fake.enqueue(["The answer is 4", "The answer is 5"])
    client = make_app(upstream=fake).test_client()
    status, data = tts(client, tts_strategy="deepconf", tts_mode="online", tts_budget=4)
    assert status == 400, data
    assert data["error"]["code"] == "unsupported_capability"
    assert "logprobs" in data["error"]["message"]


def test_upstream_refusing_logprobs_is_a_clear_400(make_app):
    up = LogprobUpstream(default=BadRequestError("upstream: logprobs are not supported"))
    client = make_app(upstream=up).test_client()
    status, data = tts(client, tts_strategy="deepconf")
    assert status == 400 and data["error"]["code"] == "unsupported_capability"


def test_self_consistency_needs_no_logprobs(make_app):
    client = make_app(upstream=LogprobUpstream(logprobs=False)).test_client()
    status, data = tts(client, tts_strategy="self_consistency", tts_budget=3)
    assert status == 200, data
    assert metadata(data)["num_traces"] == 3 and metadata(data)["agreement"] == 1.0
