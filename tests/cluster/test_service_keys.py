"""Keys per user and the front's own metrics on the mini cluster (issue 34, items 1 and 4).

One 1-replica service of the tiny model (a 1-node replica job, the front a small CPU
job), keys made with `vllm-hpc service key add` as its owner would, driven with the real
`openai` client through the real front, vllm-router and vLLM. The tests share the one
service and run in order:

1. alice's and bob's keys (the printed key; bob's from `--json`) are both answered: each
   sends a whole answer, a stream with `stream_options.include_usage` (its last chunk is
   the usage) and one without (no usage chunk at all); `service key list` counts, per
   key, the requests and the tokens in and out that the answers' own usage says (the
   stream without usage is the stream with it token for token, so its usage is that one's);
2. the front's `/metrics`: 401 without a key, 403 with alice's or bob's key (and a
   scrape key gets 403 on a model route), 200 with a `--scrape` key; the text parses with
   prometheus-client's parser, its answers by key label, route and code are exactly what
   this module sent, its tokens per key and its histograms' counts agree, and `service
   metrics` sums the same;
3. `service key revoke NAME alice`: her next request gets 401 at the front while bob's
   is answered; her key gets 401 at the replica's own URL (before the revoke too: a
   user's key never reaches a replica); her usage stays as it was, and the front counts
   her refused request under `none`.

Cost (expected, not yet measured): about 1.5 minutes on the bed, most of it `service
up` (one vLLM start of the tiny model, ~40-60 s) and `service down` (a drain with nothing
in flight); the ~20 requests take a few seconds, and each usage check waits at most two
front heartbeats (5 s).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from launchers import waits
from launchers.service.frontmetrics import DURATION, IN_FLIGHT, REQUESTS, ROUTED, TOKENS, TTFB

from . import api, bed
from .services import REPLICA_ARGS, client, front_get, key_of, svc

pytestmark = pytest.mark.cluster

NAME = "keyed"
FRONT_PORT = "8300"  # not the other service modules' (8100, 8200)
CHAT = "/v1/chat/completions"  # the front's route labels
MODELS = "/v1/models"
METRICS = "/metrics"
NO_KEY = "none"  # the label of a request without a live key
USERS = ("alice", "bob")
# Each user's prompt and max_tokens: different, so their counts can be told apart.
ASKS = {"alice": ("Hello", 4), "bob": ("Tell me about the sea, the wind and the sky", 9)}
SAVED_WITHIN = 30.0  # the front saves usage.json with each heartbeat (every 5 s)


@dataclass
class Sent:
    """What this module sent through the front, as the front must count it."""

    answers: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (key, route, code)
    forwarded: Counter[str] = field(default_factory=Counter)  # key label -> requests passed on
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)  # key label -> (in, out)

    def passed(self, label: str, route: str, tokens: tuple[int, int]) -> None:
        """A request the front passed on and vLLM answered (200), with its usage."""
        self.answers[(label, route, "200")] += 1
        self.forwarded[label] += 1
        was = self.tokens.get(label, (0, 0))
        self.tokens[label] = (was[0] + tokens[0], was[1] + tokens[1])

    def answered(self, label: str, route: str, code: int) -> None:
        """An answer of the front's own (a refusal, or its /metrics)."""
        self.answers[(label, route, str(code))] += 1


@dataclass
class Keyed:
    row: dict[str, Any]  # `service up --json`
    model: str
    keys: dict[str, str]  # key label -> key
    sent: Sent = field(default_factory=Sent)

    def as_user(self, label: str) -> openai.OpenAI:
        """The `openai` client of the front with ``label``'s key."""
        return client(self.row, self.keys[label])


@pytest.fixture(scope="module")
def keyed(minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path) -> Iterator[Keyed]:
    left = Path(env["VLLM_HPC_JOB_ROOT"], "services", NAME)
    if left.exists():  # from an earlier run on a kept bed
        api.cli(env, "service", "down", NAME, timeout=300)
        shutil.rmtree(left)
    try:
        row = svc(
            env, "up", NAME, "--model", str(tiny_model), "--nodes", "1", "--gpus-per-node", "1",
            "--partition", "debug", "--time", "00:20:00", "--handover", "15m",  # below 20-2 min
            "--replicas", "1", "--front-time",
            "00:20:00", "--front-port", FRONT_PORT, "--wait", "--wait-timeout",
            str(bed.READY_TIMEOUT), "--", *REPLICA_ARGS,
            timeout=bed.READY_TIMEOUT + 120,
        )  # fmt: skip
        assert row["state"] == "UP", row
        # alice's key as `key add` prints it (stdout: the key alone; the note on stderr)
        done = api.cli(env, "service", "key", "add", NAME, "alice")
        assert done.returncode == 0, done.stderr[-2000:]
        printed = done.stdout.splitlines()
        assert len(printed) == 1 and len(printed[0]) >= 40 and " " not in printed[0], printed
        assert "shown this once" in done.stderr, done.stderr
        keys = {"alice": printed[0]}
        more: tuple[tuple[str, tuple[str, ...]], ...] = (("bob", ()), ("scraper", ("--scrape",)))
        for label, flags in more:
            added = svc(env, "key", "add", NAME, label, *flags)
            assert added["label"] == label and added["key"] not in keys.values(), added
            keys[label] = added["key"]
        yield Keyed(row=row, model=tiny_model.name, keys=keys)
    finally:
        api.cli(env, "service", "down", NAME, timeout=300)
        for r in svc(env, "status", NAME)["replicas"]:
            minicluster.slurm(["scancel", r["job_id"]], check=False)


def _messages(prompt: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": prompt}]


def whole(c: openai.OpenAI, model: str, label: str) -> ChatCompletion:
    """``label``'s question, answered whole (temperature 0)."""
    prompt, max_tokens = ASKS[label]
    return c.chat.completions.create(
        model=model, messages=_messages(prompt), temperature=0, max_tokens=max_tokens
    )


def streamed(c: openai.OpenAI, model: str, label: str, usage: bool) -> list[ChatCompletionChunk]:
    """``label``'s question as a stream (temperature 0), every chunk; with ``usage``, the
    client asks for the usage chunk (``stream_options.include_usage``)."""
    prompt, max_tokens = ASKS[label]
    if usage:
        stream = c.chat.completions.create(
            model=model, messages=_messages(prompt), temperature=0, max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
    else:
        stream = c.chat.completions.create(
            model=model, messages=_messages(prompt), temperature=0, max_tokens=max_tokens,
            stream=True,
        )  # fmt: skip
    return list(stream)


def usage_of(answer: ChatCompletion | ChatCompletionChunk) -> tuple[int, int]:
    assert answer.usage is not None, answer
    return answer.usage.prompt_tokens, answer.usage.completion_tokens


def text_of(chunks: Iterable[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def wait_usage_saved(env: dict[str, str], sent: Sent) -> dict[str, dict[str, Any]]:
    """`service key list --json` by label, once usage.json (saved with the front's
    heartbeat) counts every request sent to each user."""

    def saved() -> dict[str, dict[str, Any]] | None:
        rows = {r["label"]: r for r in svc(env, "key", "list", NAME)}
        caught_up = all(rows[u]["requests"] >= sent.forwarded[u] for u in USERS)
        return rows if caught_up else None

    return waits.wait_for(
        saved, what="usage.json counting every request", timeout=SAVED_WITHIN, interval=1.0,
        detail=lambda: f"; sent {dict(sent.forwarded)}, key list: {svc(env, 'key', 'list', NAME)}",
    ).value  # fmt: skip


def assert_usage(rows: dict[str, dict[str, Any]], sent: Sent) -> None:
    """Each user's row: the requests sent, no error, the tokens of the answers' usage."""
    for user in USERS:
        got = rows[user]
        counted = (got["requests"], got["errors"], got["tokens_in"], got["tokens_out"])
        assert counted == (sent.forwarded[user], 0, *sent.tokens[user]), (user, got, sent)
        assert got["kind"] == "user" and got["last_used"] is not None, got
    assert rows["scraper"]["kind"] == "scrape" and rows["scraper"]["requests"] == 0, rows
    assert rows["default"]["requests"] == 0, rows  # the owner's key made no request


def scrape(keyed: Keyed) -> list[Metric]:
    """The front's /metrics with the scrape key, parsed with prometheus-client's parser
    (the front counts a scrape before it answers it: this one is in the text)."""
    keyed.sent.answered("scraper", METRICS, 200)
    status, text = front_get(keyed.row, METRICS, keyed.keys["scraper"])
    assert status == 200, text[:2000]
    return list(text_string_to_metric_families(text))


def samples(families: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    """The values of sample ``name``, by their labels' values (in label-name order)."""
    return {
        tuple(v for _, v in sorted(s.labels.items())): s.value
        for family in families
        for s in family.samples
        if s.name == name
    }


def assert_metrics_count_what_was_sent(families: list[Metric], sent: Sent) -> None:
    """Every answer by (key, route, code) is what was sent, nothing else; each user's
    tokens are the answers' usage; each forwarded request is timed once."""
    answers = samples(families, f"{REQUESTS}_total")  # labels: code, key, route
    got = {(key, route, code): int(n) for (code, key, route), n in answers.items()}
    assert got == dict(sent.answers)
    tokens = samples(families, f"{TOKENS}_total")  # labels: direction, key
    for user in USERS:
        assert (tokens[("in", user)], tokens[("out", user)]) == sent.tokens[user], tokens
        for histogram in (TTFB, DURATION):
            timed = samples(families, f"{histogram}_count")[(user, CHAT)]  # labels: key, route
            assert timed == sent.forwarded[user], (histogram, user, timed)
    assert samples(families, ROUTED) == {(): 1.0}


def test_two_users_keys_are_answered_and_counted_from_the_answers_usage(
    keyed: Keyed, env: dict[str, str]
) -> None:
    sent = keyed.sent
    for user in USERS:
        c = keyed.as_user(user)
        answer = whole(c, keyed.model, user)
        assert answer.choices[0].message.content, answer
        usage = usage_of(answer)
        assert usage[0] > 0 and usage[1] > 0, answer
        sent.passed(user, CHAT, usage)

        asked = streamed(c, keyed.model, user, usage=True)
        *chunks, last = asked
        assert last.choices == [], asked  # the usage chunk comes last, on its own
        assert all(ch.usage is None and ch.choices for ch in chunks), asked
        assert usage_of(last) == usage, (last, answer)  # the same question at temperature 0
        sent.passed(user, CHAT, usage_of(last))

        plain = streamed(c, keyed.model, user, usage=False)
        assert plain and all(ch.usage is None and ch.choices for ch in plain), (
            f"a usage chunk reached a client that did not ask for one: {plain}"
        )
        assert text_of(plain) == text_of(chunks)  # the same tokens: the same usage
        sent.passed(user, CHAT, usage_of(last))
    assert sent.tokens["alice"] != sent.tokens["bob"]

    rows = wait_usage_saved(env, sent)
    assert_usage(rows, sent)
    # The table shows the same counts: LABEL KIND CREATED(2) LAST_USED(2) REQUESTS ERRORS
    # TOKENS_IN TOKENS_OUT REVOKED
    table = api.cli(env, "service", "key", "list", NAME)
    assert table.returncode == 0, table.stderr[-2000:]
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["LABEL", "KIND"], lines
    for user in USERS:
        words = next(line.split() for line in lines if line.split()[0] == user)
        shown = (int(words[6]), int(words[7]), int(words[8]), int(words[9]), words[10])
        assert shown == (sent.forwarded[user], 0, *sent.tokens[user], "-"), (user, lines)


def test_the_fronts_metrics_need_a_scrape_key_and_count_each_key(
    keyed: Keyed, env: dict[str, str]
) -> None:
    sent = keyed.sent
    status, body = front_get(keyed.row, METRICS)
    assert status == 401, body
    sent.answered(NO_KEY, METRICS, 401)
    for user in USERS:
        status, body = front_get(keyed.row, METRICS, keyed.keys[user])
        assert status == 403, body
        sent.answered(user, METRICS, 403)
    with pytest.raises(openai.PermissionDeniedError):  # a scrape key reads /metrics only
        keyed.as_user("scraper").models.list()
    sent.answered("scraper", MODELS, 403)

    families = scrape(keyed)
    assert_metrics_count_what_was_sent(families, sent)
    assert samples(families, IN_FLIGHT) == {(): 0.0}

    # `service metrics` asks with the owner's key (the key labelled `default`)
    sent.answered("default", METRICS, 200)
    summary = svc(env, "metrics", NAME)
    for user in USERS:
        mine = {(route, code): n for (key, route, code), n in sent.answers.items() if key == user}
        expected = {
            "requests": sum(mine.values()),
            "errors": sum(n for (_, code), n in mine.items() if int(code) >= 400),
            "tokens_in": sent.tokens[user][0],
            "tokens_out": sent.tokens[user][1],
        }
        assert summary["keys"][user] == expected, (user, summary)
    assert summary["routed"] == 1 and summary["in_flight"] == 0, summary


def test_a_revoked_key_is_refused_at_the_front_and_at_the_replica(
    keyed: Keyed, env: dict[str, str]
) -> None:
    sent = keyed.sent
    row = svc(env, "status", NAME)
    (replica,) = [r for r in row["replicas"] if r["state"] == "READY"]
    direct = f"{str(replica['url']).removesuffix('/')}/v1"
    # The replica answers the service's own key; a user's key never gets through.
    owner = openai.OpenAI(base_url=direct, api_key=key_of(row), max_retries=0)
    assert [m.id for m in owner.models.list().data] == [keyed.model]
    alice_direct = openai.OpenAI(base_url=direct, api_key=keyed.keys["alice"], max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        alice_direct.models.list()

    revoked = svc(env, "key", "revoke", NAME, "alice")
    assert revoked["label"] == "alice" and revoked["revoked_at"], revoked
    # From her next request on: no wait, no restart.
    with pytest.raises(openai.AuthenticationError):
        whole(keyed.as_user("alice"), keyed.model, "alice")
    sent.answered(NO_KEY, CHAT, 401)
    answer = whole(keyed.as_user("bob"), keyed.model, "bob")
    assert answer.choices[0].message.content, answer
    sent.passed("bob", CHAT, usage_of(answer))
    with pytest.raises(openai.AuthenticationError):
        alice_direct.models.list()
    status, body = front_get(keyed.row, METRICS, keyed.keys["alice"])
    assert status == 401, body  # revoked: no key at all now, not a user's key
    sent.answered(NO_KEY, METRICS, 401)

    rows = wait_usage_saved(env, sent)
    assert rows["alice"]["revoked_at"] is not None and rows["bob"]["revoked_at"] is None, rows
    assert_usage(rows, sent)  # her refused request is not hers: her usage stays
    assert_metrics_count_what_was_sent(scrape(keyed), sent)
