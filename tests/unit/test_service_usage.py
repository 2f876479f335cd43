"""Usage per key (launchers.service.usage): tokens from the answers' own usage, a
stream asked for its usage chunk when the client did not ask, and that chunk taken out
of what the client gets; the counters saved for `service key list`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from launchers.jobdir.safe import private_dir
from launchers.service.usage import (
    StreamScanner,
    UsageBook,
    ask_for_usage,
    read_usage,
    tokens_in_body,
    tokens_of,
)


@pytest.mark.parametrize(
    ("data", "tokens"),
    [
        ({"usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}, (7, 3)),
        ({"usage": {"prompt_tokens": 5, "total_tokens": 5}}, (5, 0)),  # embeddings
        ({"usage": {"input_tokens": 4, "output_tokens": 9}}, (4, 9)),  # responses
        ({"type": "response.completed", "response": {"usage": {"input_tokens": 2,
                                                               "output_tokens": 1}}}, (2, 1)),
        ({"usage": None}, None),
        ({"choices": []}, None),
        ({"usage": {"prompt_tokens": -1, "completion_tokens": True}}, (0, 0)),
        ({"usage": {"prompt_tokens": "7"}}, (0, 0)),
        ([], None),
    ],
)  # fmt: skip
def test_tokens_come_from_the_answers_usage(data: object, tokens: tuple[int, int] | None) -> None:
    assert tokens_of(data) == tokens


def chat(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": [], **fields}).encode()


@pytest.mark.parametrize(
    ("path", "body", "asked", "strip"),
    [
        # a stream whose client did not ask: asked for, and the chunk is the front's
        ("/v1/chat/completions", chat(stream=True), {"include_usage": True}, True),
        ("/v1/completions", chat(stream=True, stream_options={"include_usage": False}),
         {"include_usage": True}, True),
        ("/v1/chat/completions", chat(stream=True, stream_options={"continuous_usage_stats": True}),
         {"continuous_usage_stats": True, "include_usage": True}, True),
        # a client that asked keeps its chunk; nothing else is touched
        ("/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True}),
         None, False),
        ("/v1/chat/completions", chat(stream=False), None, False),
        ("/v1/chat/completions", chat(), None, False),
        ("/v1/chat/completions", chat(stream="true"), None, False),
        ("/v1/chat/completions", chat(stream=True, stream_options="x"), None, False),
        ("/v1/responses", json.dumps({"stream": True}).encode(), None, False),
        ("/v1/chat/completions", b'{"stream": tru', None, False),
        ("/v1/chat/completions", b'["stream"]', None, False),
        ("/v1/chat/completions", None, None, False),
    ],
)  # fmt: skip
def test_a_stream_is_asked_for_its_usage_only_when_the_client_did_not(
    path: str, body: bytes | None, asked: dict[str, bool] | None, strip: bool
) -> None:
    sent, stripped = ask_for_usage(path, body)
    assert stripped is strip
    if asked is None:
        assert sent is body
    else:
        assert sent is not None
        data = json.loads(sent)
        assert data["stream_options"] == asked
        assert {k: v for k, v in data.items() if k != "stream_options"} == {
            k: v for k, v in json.loads(body or b"{}").items() if k != "stream_options"
        }


def sse(*events: object) -> list[bytes]:
    return [f"data: {json.dumps(e) if not isinstance(e, str) else e}\n\n".encode() for e in events]


DELTA = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE = {"id": "c", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}}


def scan(scanner: StreamScanner, chunks: list[bytes]) -> bytes:
    out = b"".join(scanner.feed(c) for c in chunks)
    return out + scanner.finish()


@pytest.mark.parametrize("split", [1, 3, 7, 1000])
def test_the_usage_chunk_is_taken_out_however_the_stream_is_cut(split: int) -> None:
    whole = b"".join(sse(DELTA, DELTA, USAGE, "[DONE]"))
    chunks = [whole[i : i + split] for i in range(0, len(whole), split)]
    scanner = StreamScanner(strip=True)
    assert scan(scanner, chunks) == b"".join(sse(DELTA, DELTA, "[DONE]"))
    assert scanner.tokens == (11, 2)


def test_a_client_that_asked_gets_the_usage_chunk_and_it_is_counted() -> None:
    scanner = StreamScanner(strip=False)
    events = sse(DELTA, USAGE, "[DONE]")
    assert scan(scanner, events) == b"".join(events)
    assert scanner.tokens == (11, 2)


def test_continuous_usage_counts_the_last_and_keeps_the_chunks_with_choices() -> None:
    running = [{**DELTA, "usage": {"prompt_tokens": 11, "completion_tokens": n}} for n in (1, 2)]
    scanner = StreamScanner(strip=True)
    out = scan(
        scanner,
        sse(*running, {**USAGE, "usage": {"prompt_tokens": 11, "completion_tokens": 2}}, "[DONE]"),
    )
    assert out == b"".join(sse(*running, "[DONE]"))
    assert scanner.tokens == (11, 2)


def test_crlf_events_a_responses_stream_and_junk_pass_as_they_came() -> None:
    completed = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 3, "output_tokens": 4}},
    }
    chunks = [
        b"event: response.completed\r\ndata: " + json.dumps(completed).encode() + b"\r\n\r\n",
        b"data: {not json, usage}\n\n",
        b": a comment\n\n",
        b"data: [DONE]",
    ]
    scanner = StreamScanner(strip=True)
    assert scan(scanner, chunks) == b"".join(chunks)  # the unfinished last event too
    assert scanner.tokens == (3, 4)


def test_an_event_past_the_limit_is_passed_on_unread() -> None:
    scanner = StreamScanner(strip=True, max_event=64)
    big = b"data: " + b"x" * 100
    assert scanner.feed(big) == big  # passed on at once, not held
    assert scanner.feed(b"\n\n") == b"\n\n"
    assert scanner.tokens is None


def test_a_whole_answers_usage_is_found_without_parsing_it_whole() -> None:
    answer = {"id": "x", "data": [{"embedding": [0.5] * 1000}],
              "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 99}'}}],
              "usage": {"prompt_tokens": 8, "completion_tokens": 5}}  # fmt: skip
    assert tokens_in_body(json.dumps(answer).encode()) == (8, 5)
    assert tokens_in_body(json.dumps(answer, separators=(",", ":")).encode()) == (8, 5)
    assert tokens_in_body(b'{"usage": null}') is None
    assert tokens_in_body(b'{"x": 1}') is None
    assert tokens_in_body(b'{"usage": {"prompt_tok') is None
    assert tokens_in_body(b"\xff\xfe") is None


def test_the_book_counts_per_label_and_saves_only_what_changed(tmp_path: Path) -> None:
    private_dir(tmp_path / "svc", "service directory")
    path = str(tmp_path / "svc" / "usage.json")
    book = UsageBook()
    assert book.save(path) is False  # nothing counted yet: nothing written

    def count() -> None:
        for _ in range(500):
            book.record("a", 200, (1, 2), now=5.0)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    book.record("b", 401, None, now=6.0)
    assert book.save(path) is True
    assert book.save(path) is False
    saved = read_usage(path)
    assert saved.keys["a"].requests == 2000 and saved.keys["a"].tokens_out == 4000
    assert (saved.keys["b"].requests, saved.keys["b"].errors, saved.keys["b"].last_used) == (
        1, 1, 6.0)  # fmt: skip
    assert Path(path).stat().st_mode & 0o777 == 0o600
    # the next front goes on from there
    again = UsageBook.load(path)
    again.record("a", 200, (1, 1), now=7.0)
    assert again.snapshot().keys["a"].requests == 2001
