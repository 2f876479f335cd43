"""``vllm-hpc doctor --network`` as a person reads it: the nodes' ``pair`` rows (each
from the pair's lower rank: ``runtime.doctor.check_pairs``) drawn as one table row per
pair (reachable or not, the median TCP round trip of a small message, the rate of one
large TCP transfer), and a warning for a pair far below the others. Pure: rows in, text
and rows out.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PAIR, SLOW = "pair", "pair speed"
TABLED = (PAIR, SLOW)  # drawn by ``table``, not as lines of their own
SLOW_FIX = "a slower link, port or route between these two: compare their interfaces' speed"
SLOW_FIX += " (ethtool, ibstat) and where they sit on the fabric"


@dataclass(frozen=True)
class PairResult:
    """One pair as its lower rank measured it: ``outcome`` is ok, timeout, refused, large
    (a small message passes, a large one does not) or unreachable."""

    a: int
    b: int
    a_host: str
    b_host: str
    a_ip: str
    b_ip: str
    outcome: str
    rtt_ms: float | None = None
    gb_per_s: float | None = None
    mib: int = 0
    detail: str = ""
    fix: str = ""

    @property
    def name(self) -> str:
        return f"{self.a_host} - {self.b_host}"


def pairs_of(rows: Sequence[Mapping[str, Any]]) -> list[PairResult]:
    """The pairs in the nodes' rows, by rank (rows without a readable ``pair``: none)."""
    found = []
    for row in rows:
        pair = row.get("pair")
        if row.get("check") != PAIR or not isinstance(pair, Mapping):
            continue
        try:
            found.append(
                PairResult(
                    a=int(pair["a"]),
                    b=int(pair["b"]),
                    a_host=str(pair["a_host"]),
                    b_host=str(pair["b_host"]),
                    a_ip=str(pair["a_ip"]),
                    b_ip=str(pair["b_ip"]),
                    outcome=str(pair["outcome"]),
                    rtt_ms=_number(pair.get("rtt_ms")),
                    gb_per_s=_number(pair.get("gb_per_s")),
                    mib=int(pair.get("mib") or 0),
                    detail=str(row.get("detail", "")),
                    fix=str(row.get("fix", "")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(found, key=lambda p: (p.a, p.b))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _rates(pairs: Sequence[PairResult]) -> list[float]:
    return [p.gb_per_s for p in pairs if p.outcome == "ok" and p.gb_per_s is not None]


def slow(pairs: Sequence[PairResult], factor: float) -> tuple[list[PairResult], float | None]:
    """The ok pairs whose rate is under ``factor`` x the median of all ok pairs, and that
    median (none: fewer than 3 ok pairs, too few to say which is the odd one)."""
    rates = _rates(pairs)
    if len(rates) < 3:
        return [], None
    median = statistics.median(rates)
    under = [p for p in pairs if p.outcome == "ok" and (p.gb_per_s or 0.0) < factor * median]
    return under, median


def warnings(pairs: Sequence[PairResult], factor: float) -> list[dict[str, Any]]:
    """A ``warn`` row (as the nodes' rows are) for each pair far below the others."""
    under, median = slow(pairs, factor)
    count = len(_rates(pairs))
    return [
        {
            "rank": p.a,
            "host": p.a_host,
            "check": SLOW,
            "level": "warn",
            "detail": (
                f"{p.name}: {p.gb_per_s:.2f} GB/s, under {factor:g} x the median "
                f"{median:.2f} GB/s of the {count} pairs that passed"
            ),
            "fix": SLOW_FIX,
            "pair": {"a": p.a, "b": p.b},
        }
        for p in under
    ]


def _cell(value: float | None, unit: str, places: int = 2) -> str:
    return "-" if value is None else f"{value:.{places}f} {unit}"


def table(pairs: Sequence[PairResult], factor: float) -> str:
    """The pairs as a table: a heading that says what was measured, a row per pair
    (FAILED or SLOW at its end when so), a summary line, then what failed and what to
    do (the nodes' words) and the warnings."""
    if not pairs:
        return ""
    mib = max(p.mib for p in pairs)
    under, median = slow(pairs, factor)
    marked = {(p.a, p.b) for p in under}
    head = ("pair", "addresses", "reach", "latency", "bandwidth", "")
    body = [
        (
            p.name,
            f"{p.a_ip} - {p.b_ip}",
            p.outcome,
            _cell(p.rtt_ms, "ms", 3),
            _cell(p.gb_per_s, "GB/s"),
            "FAILED" if p.outcome != "ok" else "SLOW" if (p.a, p.b) in marked else "",
        )
        for p in pairs
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = [
        "network, every pair of nodes over TCP: latency = the median round trip of a small",
        f"message, bandwidth = one {mib} MiB transfer from the first node to the second",
    ]
    for cells in (head, *body):
        padded = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells[:-1], widths[:-1], strict=True))
        ]
        lines.append("  ".join(padded) + (f"  {cells[-1]}" if cells[-1] else ""))
    failed = sum(p.outcome != "ok" for p in pairs)
    summary = f"{len(pairs)} pairs: {len(pairs) - failed} ok, {failed} failed"
    if median is not None:
        summary += f"; median {median:.2f} GB/s"
    lines.append(summary)
    for p in pairs:
        if p.outcome != "ok":
            lines.append(f"fail  {p.name}: {p.detail}" + (f"  -> {p.fix}" if p.fix else ""))
    for warned in warnings(pairs, factor):
        lines.append(f"warn  {warned['detail']}  -> {warned['fix']}")
    return "\n".join(lines)


__all__ = ["PAIR", "SLOW", "TABLED", "PairResult", "pairs_of", "slow", "table", "warnings"]
