"""SLURM's time syntax has one parser: the site/flag check and the submitit minutes."""

from __future__ import annotations

import pytest

from launchers.errors import InputError
from launchers.spec import slurmtime
from launchers.spec.config import SlurmOptions
from launchers.submit.slurm import slurm_minutes


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("30:01", 31), ("04:00:00", 240), ("1-0", 1440), ("1-02:30", 1590),
     ("2-00:00:30", 2881)],
)  # fmt: skip
def test_every_form_slurm_accepts(text: str, minutes: int) -> None:
    assert slurmtime.minutes(text) == minutes == slurm_minutes(text)
    assert SlurmOptions(time=text).time == text


@pytest.mark.parametrize("text", ["4h", "1:2:3:4", "", "-5", "1-", "10:123"])
def test_what_is_no_slurm_time_is_refused_alike(text: str) -> None:
    with pytest.raises(ValueError, match="is not a SLURM time"):
        slurmtime.minutes(text)
    with pytest.raises(ValueError, match="is not a SLURM time"):
        SlurmOptions(time=text)
    with pytest.raises(InputError):
        slurm_minutes(text)
