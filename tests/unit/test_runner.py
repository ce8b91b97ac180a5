"""The shared streaming engine (``optillm.web.runner``) with a recording encoder: the order of
events and ``on_done``, keep-alives, failures mapped to errors, cancellation on close."""

from __future__ import annotations

import threading
import time

import pytest

from optillm.concurrency import BoundedExecutor
from optillm.errors import BadRequestError, OptillmError
from optillm.plan.pipeline import PipelineResult
from optillm.toolkit.context import Cancelled
from optillm.types import Choice, Completion, Message
from optillm.web import runner


class Recorder:
    """An encoder that writes each call as one readable event, and logs ``on_done``."""

    def __init__(self):
        self.log: list[str] = []

    def start(self):
        yield b"start"

    def delta(self, text):
        yield b"delta:" + text.encode()

    def final(self, result):
        yield b"final:" + runner.unsent(result).encode()

    def end(self, result):
        yield b"end"

    def error(self, exc: OptillmError):
        yield f"error:{exc.status}:{exc.code}:{exc.message}".encode()

    def keepalive(self):
        return b"ka"

    def on_done(self, completion, error):
        self.log.append(f"done:{completion.text if completion else None}:"
                        f"{type(error).__name__ if error else None}")


@pytest.fixture
def executor():
    return BoundedExecutor(2)


def _result(text: str, sent: str = "") -> PipelineResult:
    return PipelineResult(Completion(choices=(Choice(0, Message("assistant", text), "stop"),)),
                          sent=sent)


def _events(gen, rec: Recorder) -> list[str]:
    out = []
    for b in gen:
        out.append(b.decode())
        rec.log.append("sent:" + b.decode())
    return out


def test_streamed_pieces_then_the_unsent_rest_then_on_done_before_the_end(executor):
    rec = Recorder()

    def run(sink, cancelled):
        sink("Hel")
        sink("lo")
        return _result("Hello world", sent="Hello")

    out = _events(runner.stream(run, executor, rec, keepalive=5, on_done=rec.on_done), rec)
    assert out == ["start", "delta:Hel", "delta:lo", "final: world", "end"]
    assert rec.log.index("done:Hello world:None") == rec.log.index("sent:final: world") + 1
    assert rec.log[-1] == "sent:end"


def test_an_answer_that_does_not_begin_with_what_was_streamed_sends_no_rest(executor):
    rec = Recorder()

    def run(sink, cancelled):
        sink("Abc")
        return _result("Xyz", sent="Abc")

    out = _events(runner.stream(run, executor, rec, keepalive=5, on_done=rec.on_done), rec)
    assert out == ["start", "delta:Abc", "final:", "end"]


def test_keepalive_while_the_run_works(executor):
    rec = Recorder()

    def run(sink, cancelled):
        time.sleep(0.25)
        return _result("ok")

    out = _events(runner.stream(run, executor, rec, keepalive=0.05, on_done=rec.on_done), rec)
    assert out[0] == "start" and out[-2:] == ["final:ok", "end"]
    assert out[1:-2] and set(out[1:-2]) == {"ka"}


def test_an_optillm_error_is_reported_as_it_is(executor):
    rec = Recorder()

    def run(sink, cancelled):
        sink("partial")
        raise BadRequestError("bad option", code="bad")

    out = _events(runner.stream(run, executor, rec, keepalive=5, on_done=rec.on_done), rec)
    assert out == ["start", "delta:partial", "error:400:bad:bad option"]
    assert "done:None:BadRequestError" in rec.log
    assert rec.log.index("done:None:BadRequestError") < rec.log.index("sent:" + out[-1])


def test_any_other_failure_is_a_500_approach_error_without_its_trace(executor, caplog):
    rec = Recorder()

    def run(sink, cancelled):
        raise KeyError("boom")

    out = _events(runner.stream(run, executor, rec, keepalive=5, on_done=rec.on_done), rec)
    assert out[-1] == "error:500:approach_error:approach failed: 'boom'"
    assert "done:None:UpstreamError" in rec.log
    assert any(r.exc_info for r in caplog.records)  # the trace is logged, not sent


def test_closing_the_stream_cancels_the_run_and_reports_client_closed(executor):
    rec = Recorder()
    seen = threading.Event()
    stopped = threading.Event()

    def run(sink, cancelled):
        sink("first")
        seen.set()
        assert cancelled.wait(5)
        try:
            sink("after close")
        except Cancelled:
            stopped.set()
            raise
        return _result("never")

    gen = runner.stream(run, executor, rec, keepalive=5, on_done=rec.on_done)
    assert next(gen) == b"start"
    assert next(gen) == b"delta:first"
    gen.close()
    assert stopped.wait(5)  # the run's next piece raised Cancelled
    assert rec.log == ["done:None:ClientClosed"]
    assert runner.ClientClosed.status == 499


def test_on_done_is_called_once_even_when_closed_after_the_end(executor):
    rec = Recorder()
    gen = runner.stream(lambda sink, cancelled: _result("x"), executor, rec, keepalive=5,
                        on_done=rec.on_done)
    assert list(gen) == [b"start", b"final:x", b"end"]
    gen.close()
    assert rec.log == ["done:x:None"]
