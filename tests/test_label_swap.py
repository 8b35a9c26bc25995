"""edgekd.gst.label_swap: label sets built off the caller's thread, newest request wins, refusals change nothing."""

from __future__ import annotations

import threading
import time

from edgekd import EdgekdError
from edgekd.gst.label_swap import LabelRequest, LabelSwap


def test_request_returns_at_once_and_take_hands_over_once():
    gate = threading.Event()
    swap = LabelSwap(lambda r: (gate.wait(5), f"set:{r.labels}")[1], lambda r, e: None)
    t0 = time.perf_counter()
    swap.request(LabelRequest("a,b"))
    assert time.perf_counter() - t0 < 0.05 and swap.pending() and swap.take() is None
    gate.set()
    assert swap.wait(5)
    ready = swap.take()
    assert ready.labels == "set:a,b" and ready.request.labels == "a,b" and ready.build_ms >= 0
    assert swap.take() is None
    swap.close()


def test_newest_request_wins_and_intermediate_ones_are_skipped():
    started, gate, built = threading.Event(), threading.Event(), []

    def build(r: LabelRequest) -> str:
        built.append(r.labels)
        started.set()
        gate.wait(5)
        return r.labels

    swap = LabelSwap(build, lambda r, e: None)
    swap.request(LabelRequest("first"))
    assert started.wait(5)
    for value in ("second", "third", "fourth"):
        swap.request(LabelRequest(value))
    gate.set()
    assert swap.wait(5)
    assert built == ["first", "fourth"]  # second and third were replaced before their turn
    assert swap.take().labels == "fourth"
    swap.close()


def test_a_refused_request_changes_nothing_and_later_ones_still_run():
    refused = []

    def build(r: LabelRequest) -> str:
        if r.labels == "bad":
            raise EdgekdError("no such label")
        return r.labels

    swap = LabelSwap(build, lambda r, e: refused.append((r.labels, str(e))))
    swap.request(LabelRequest("good"))
    assert swap.wait(5) and swap.take().labels == "good"
    swap.request(LabelRequest("bad"))
    assert swap.wait(5) and swap.take() is None and refused == [("bad", "no such label")]
    swap.request(LabelRequest("good again", threshold=0.2, threshold_set=True))
    assert swap.wait(5)
    ready = swap.take()
    assert ready.labels == "good again" and ready.request.threshold == 0.2
    swap.close()


def test_an_unexpected_error_does_not_wedge_the_queue():
    calls = []

    def build(r: LabelRequest) -> str:
        calls.append(r.labels)
        if r.labels == "boom":
            raise KeyError("a bug")
        return r.labels

    swap = LabelSwap(build, lambda r, e: None)
    swap.request(LabelRequest("boom"))
    assert swap.wait(5)  # the failure was raised in the worker, the queue is free again
    swap.request(LabelRequest("fine"))
    assert swap.wait(5) and swap.take().labels == "fine"
    swap.close()
