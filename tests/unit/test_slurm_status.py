from __future__ import annotations

import pytest

from launchers.errors import InputError, SubmitError
from launchers.slurm import (
    parse_sbatch_parsable,
    parse_scontrol_record,
    parse_state,
    slurm_minutes,
)
from launchers.status import combine


def test_sbatch_parsable() -> None:
    assert parse_sbatch_parsable("1234\n") == "1234"
    assert parse_sbatch_parsable("1234;cluster2\n") == "1234"
    with pytest.raises(SubmitError, match="sbatch printed no job id"):
        parse_sbatch_parsable("sbatch: error: bad\n")


def test_scontrol_record_and_states() -> None:
    rec = parse_scontrol_record(
        "JobId=7 JobName=vllm JobState=CANCELLED Reason=None NodeList=node[1-2]"
    )
    assert rec["JobState"] == "CANCELLED" and rec["NodeList"] == "node[1-2]"
    assert parse_state("CANCELLED by 0") == "CANCELLED"
    assert parse_state("RUNNING") == "RUNNING"
    assert parse_state("COMPLETED+") == "ENDED"
    assert parse_state("") is None
    assert parse_state("WEIRD") is None


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("04:00:00", 240),
        ("1-00:00:00", 1440),
        ("2-12", 3600),
        ("10:30", 11),
        ("01:00:01", 61),
    ],
)
def test_slurm_minutes(text: str, minutes: int) -> None:
    assert slurm_minutes(text) == minutes


def test_slurm_minutes_rejects() -> None:
    with pytest.raises(InputError):
        slurm_minutes("4h")


def test_combine_states() -> None:
    assert combine("1", "PENDING", "PENDING", None).state == "PENDING"
    assert combine("1", "RUNNING", "RUNNING", None).state == "STARTING"
    ready = combine("1", "RUNNING", "RUNNING", {"state": "READY", "message": "serving", "url": "u"})
    assert (ready.state, ready.url) == ("READY", "u")
    gone = combine("1", "CANCELLED", "CANCELLED by 0", {"state": "READY", "message": "serving"})
    assert gone.state == "STOPPED" and "CANCELLED" in gone.message
    died = combine("1", "FAILED", "FAILED", {"state": "LOADING", "message": "x"})
    assert died.state == "FAILED"
    assert combine("1", "TIMEOUT", "TIMEOUT", None).state == "FAILED"
    failed = combine("1", "RUNNING", "RUNNING", {"state": "FAILED", "message": "vllm exited"})
    assert failed.final and failed.message == "vllm exited"
