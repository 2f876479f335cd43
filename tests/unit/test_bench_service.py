"""The service benchmark's pure parts (bench/service/run.py): one cold request timed (a
stand-in client), the cold starts' summary and headline, and the results page: a result
without a cold start renders as the recorded page of 2026-12-03, one with it adds its own
section (golden)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.service.run import (
    cold_headline,
    cold_summary,
    markdown,
    one_cold_request,
)

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


class _Stream:
    """What ``create(stream=True)`` returns: chunks to iterate (``fail_after``: raise
    after that many)."""

    def __init__(self, chunks: int, fail_after: int | None) -> None:
        self.chunks, self.fail_after = chunks, fail_after

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("the stream was cut")
            yield {"choices": [{"delta": {"content": "a"}}]}


class _Client:
    """openai.OpenAI as ``one_cold_request`` uses it; ``refuse``: the head is a 503."""

    def __init__(self, chunks: int = 5, fail_after: int | None = None, refuse: bool = False):
        self.chunks, self.fail_after, self.refuse = chunks, fail_after, refuse
        self.asked: list[dict[str, Any]] = []
        self.timeout: float | None = None
        self.chat = self
        self.completions = self

    def with_options(self, timeout: float) -> _Client:
        self.timeout = timeout
        return self

    def create(self, **asked: Any) -> _Stream:
        self.asked.append(asked)
        if self.refuse:
            raise RuntimeError("Error code: 503 - no replica of the service is ready")
        return _Stream(self.chunks, self.fail_after)


def test_one_cold_request_is_one_streamed_request_timed_to_its_head_and_its_end() -> None:
    client = _Client()
    sample = one_cold_request(client, "tiny-llama")  # type: ignore[arg-type]
    assert sample["error"] == "" and sample["chunks"] == 5
    assert 0.0 <= sample["first_byte_s"] <= sample["answer_s"]
    [asked] = client.asked  # one request, no retry
    assert asked["stream"] is True and asked["model"] == "tiny-llama"
    assert client.timeout is not None and client.timeout > 600  # past the cold-start wait


@pytest.mark.parametrize(
    ("client", "head"),
    [(_Client(refuse=True), False), (_Client(fail_after=2), True)],
    ids=["refused", "cut"],
)
def test_a_cold_request_that_fails_is_a_failed_sample_with_its_error(
    client: _Client, head: bool
) -> None:
    sample = one_cold_request(client, "tiny-llama")  # type: ignore[arg-type]
    assert sample["answer_s"] is None and sample["error"]
    assert (sample["first_byte_s"] is not None) is head


def samples() -> list[dict[str, Any]]:
    return [
        {"first_byte_s": 38.21, "answer_s": 38.47, "chunks": 18, "error": "", "idle_s": 71.3},
        {"first_byte_s": 41.02, "answer_s": 41.3, "chunks": 18, "error": "", "idle_s": 68.9},
        {"first_byte_s": None, "answer_s": None, "chunks": 0, "idle_s": 70.2,
         "error": "APIStatusError: Error code: 503"},
        {"first_byte_s": 36.5, "answer_s": 36.81, "chunks": 18, "error": "", "idle_s": 69.5},
    ]  # fmt: skip


def test_the_cold_summary_takes_medians_of_the_answered_and_counts_the_failed() -> None:
    summary = cold_summary(samples())
    assert (summary["requests"], summary["failed"]) == (4, 1)
    assert summary["first_byte_s"] == {"median": 38.21, "min": 36.5, "max": 41.02}
    assert summary["answer_s"] == {"median": 38.47, "min": 36.81, "max": 41.3}
    assert summary["idle_s"]["median"] == 69.5  # of the answered ones
    assert cold_headline(summary) == {
        "cold_start_first_byte_s": 38.21,
        "cold_start_answer_s": 38.47,
        "cold_start_failed_requests": 1,
    }


def test_cold_starts_that_all_failed_have_no_median() -> None:
    failed = [s for s in samples() if s["error"]]
    summary = cold_summary(failed)
    assert (summary["first_byte_s"], summary["answer_s"], summary["failed"]) == (None, None, 1)
    assert cold_headline(summary)["cold_start_first_byte_s"] is None


IDLE_STATUS = """service benchcold: IDLE (idle: 0 replicas, wakes on the next request)
  url:   http://10.77.0.11:8500/v1   front: job 171 on node1
  SLOT  JOB_ID  GENERATION  ROLE  STATE  URL  ENDS
  - front submitted as job 171
  - 14:40:02 UTC slot 0: a new replica
  - 14:42:05 UTC replica 172 (slot 0) drains: idle for 1m (no request yet)
  - 14:42:09 UTC replica 172 (slot 0) drained and ended
"""


def with_cold_start() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((RESULTS / "service-2026-12-03.json").read_text())
    cold = cold_summary(samples())
    cold.update(front_cold_starts=4.0, status_idle=IDLE_STATUS, status_woken="",
                settings={"idle": "60s", "cold_start_wait": "10m", "replicas": 1,
                          "min_replicas": 0})  # fmt: skip
    result["cold_start"] = cold
    return result


def test_a_result_without_a_cold_start_renders_as_the_recorded_page() -> None:
    recorded = json.loads((RESULTS / "service-2026-12-03.json").read_text())
    assert markdown(recorded) == (RESULTS / "service-2026-12-03.md").read_text()


def test_the_cold_start_is_a_section_of_its_own(golden: Callable[[str, str], None]) -> None:
    result = with_cold_start()
    page = markdown(result)
    without = copy.deepcopy(result)
    del without["cold_start"]
    assert page.startswith(markdown(without).rstrip("\n"))  # the rest as it was
    golden("bench-service-cold-start.md", page)
