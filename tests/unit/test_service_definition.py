"""service.json: what a service was asked, typed (``ServiceSpec.request`` is a
``SubmitRequest``), and the files written before it was typed still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launchers.defaults import (
    SERVICE_COLD_START_WAIT_SECONDS,
    SERVICE_SCALE_DOWN_SECONDS,
    SERVICE_SCALE_UP_SECONDS,
    SERVICE_SCALE_UP_WAITING,
    SLURM_WARNING_SECONDS,
)
from launchers.errors import InputError
from launchers.jobdir.paths import ServiceDir
from launchers.service import store
from launchers.service.controller import replica_request
from launchers.service.definition import (
    SERVICE_FORMAT,
    ServiceSpec,
    ServiceState,
    check_autoscale,
    check_handover,
    check_idle,
)
from launchers.spec.config import SlurmOptions
from launchers.spec.request import SubmitRequest

V1 = Path(__file__).with_name("golden") / "service.v1.json"
V3 = Path(__file__).with_name("golden") / "service.v3.json"
V4 = Path(__file__).with_name("golden") / "service.v4.json"


def test_a_format_1_service_file_reads_as_a_typed_request(tmp_path: Path) -> None:
    directory = tmp_path / "chat"
    directory.mkdir(mode=0o700)
    Path(ServiceDir(str(directory)).spec).write_text(V1.read_text())
    spec = store.read_spec(str(directory))
    assert spec.format == SERVICE_FORMAT
    assert spec.request == SubmitRequest(
        model="llama-3.2-3b-instruct", nodes=1, partition="gpu", time="01:00:00",
        port=8100, job_root="/shared/jobs", registry=("/shared/site-models.yaml",),
        extra_args=("--enable-prefix-caching",), env={"HF_HOME": "/shared/hf"},
    )  # fmt: skip
    assert (spec.name, spec.replicas, spec.front_port) == ("chat", 2, 9000)
    replica = replica_request(spec, 1, 1)
    assert replica.registry == ("/shared/site-models.yaml",) and replica.port == 8103


def test_a_service_file_is_written_and_read_back_whole(tmp_path: Path) -> None:
    directory = tmp_path / "chat"
    directory.mkdir(mode=0o700)
    Path(ServiceDir(str(directory)).spec).write_text(V1.read_text())
    spec = store.read_spec(str(directory))
    store.write_spec(str(directory), spec)
    written = json.loads(Path(ServiceDir(str(directory)).spec).read_text())
    assert written["format"] == SERVICE_FORMAT and "registries" not in written
    assert written["request"]["registry"] == ["/shared/site-models.yaml"]
    assert store.read_spec(str(directory)) == spec


def test_a_format_3_service_file_reads_as_a_service_that_never_idles(tmp_path: Path) -> None:
    directory = tmp_path / "chat"
    directory.mkdir(mode=0o700)
    Path(ServiceDir(str(directory)).spec).write_text(V3.read_text())
    spec = store.read_spec(str(directory))
    assert spec.format == SERVICE_FORMAT
    assert (spec.replicas, spec.min_replicas, spec.least, spec.idles) == (2, None, 2, False)
    assert spec.cold_start_wait_seconds == SERVICE_COLD_START_WAIT_SECONDS
    store.write_spec(str(directory), spec)
    assert store.read_spec(str(directory)) == spec


def test_a_format_4_service_file_reads_as_a_service_that_does_not_autoscale(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "chat"
    directory.mkdir(mode=0o700)
    Path(ServiceDir(str(directory)).spec).write_text(V4.read_text())
    spec = store.read_spec(str(directory))
    assert SERVICE_FORMAT == 5 and spec.format == SERVICE_FORMAT
    assert (spec.replicas, spec.min_replicas, spec.idle_seconds) == (2, 0, 900.0)  # kept
    assert (spec.max_replicas, spec.most, spec.autoscales) == (None, 2, False)
    assert (spec.scale_up_waiting, spec.scale_up_seconds, spec.scale_down_seconds) == (
        SERVICE_SCALE_UP_WAITING, SERVICE_SCALE_UP_SECONDS, SERVICE_SCALE_DOWN_SECONDS)  # fmt: skip
    store.write_spec(str(directory), spec)
    assert store.read_spec(str(directory)) == spec


def test_the_autoscaling_range_is_the_minimum_but_one_to_the_maximum() -> None:
    data = json.loads(V4.read_text())
    for changes, expected in (
        ({"max_replicas": 4}, (1, 4, True)),  # min 0: the load keeps one; idle: zero
        ({"max_replicas": 4, "min_replicas": None}, (2, 4, True)),  # from --replicas
        ({"max_replicas": 2, "min_replicas": None}, (2, 2, False)),
        ({"max_replicas": None}, (1, 2, False)),
        ({"max_replicas": 2}, (1, 2, True)),  # e.g. `service scale` to the maximum
        ({"max_replicas": 1}, (1, 2, True)),  # the maximum is never below replicas
    ):
        spec = ServiceSpec.model_validate({**data, **changes})
        assert (spec.fewest, spec.most, spec.autoscales) == expected, changes
    assert ServiceSpec.model_validate({**data, "scale_up_waiting": 3}).scale_down_waiting == 1.5


def test_a_state_file_from_before_autoscaling_reads_with_nothing_remembered() -> None:
    old = {"format": 1, "name": "chat", "state": "UP", "replicas": []}
    state = ServiceState.model_validate(old)
    assert state.wanted is None and state.scaling.replicas is None and state.scaling.run is None


@pytest.mark.parametrize(
    ("replicas", "most", "given", "message"),
    [
        (2, 1, (), "--max-replicas: 1 is less than --replicas 2 (give --max-replicas 2 to 16)"),
        (2, 17, (), "--max-replicas: 17 is out of range: a service keeps 0 to 16 replicas "
         "(each one a whole job) (give at most 16)"),
        (0, 2, (), "--max-replicas: a service of --replicas 0 has no replica to read its "
         "load from (give --replicas 1 or more (the count it starts with))"),
        (2, None, ("--scale-up-waiting",), "--scale-up-waiting: the service does not "
         "autoscale without --max-replicas above --replicas (add --max-replicas N (at most "
         "16), or leave --scale-up-waiting out)"),
        (2, 2, ("--scale-down-after",), "--scale-down-after: the service does not autoscale "
         "without --max-replicas above --replicas (add --max-replicas N (at most 16), or "
         "leave --scale-down-after out)"),
    ],
)  # fmt: skip
def test_autoscaling_settings_that_make_no_sense_are_refused(
    replicas: int, most: int | None, given: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InputError) as refused:
        check_autoscale(replicas, most, given)
    assert refused.value.one_line() == message
    check_autoscale(2, 4, ("--scale-up-waiting",))
    check_autoscale(2, 2, ())
    check_autoscale(2, None, ())


@pytest.mark.parametrize(
    ("replicas", "least", "message"),
    [
        (2, 3, "--min-replicas: 3 is more than --replicas 2"),
        (2, None, "--idle: the service never idles without --min-replicas below --replicas"),
        (2, 2, "--idle: the service never idles without --min-replicas below --replicas"),
    ],
)
def test_scale_to_zero_settings_that_make_no_sense_are_refused(
    replicas: int, least: int | None, message: str
) -> None:
    with pytest.raises(InputError) as refused:
        check_idle(replicas, least, idle_given=True)
    assert refused.value.one_line().startswith(message)
    check_idle(2, 0, idle_given=True)
    check_idle(2, None, idle_given=False)


def test_a_request_with_an_unknown_field_is_not_a_service_file() -> None:
    data = json.loads(V1.read_text())
    data["request"]["nodez"] = 2
    with pytest.raises(ValueError, match="nodez"):
        ServiceSpec.model_validate(data)


@pytest.mark.parametrize(
    ("slurm", "time_flag", "message"),
    [
        (SlurmOptions(time="00:20:00"), True,
         "--handover: 30m does not leave room in the replicas' time limit 00:20:00 (--time) "
         f"less its {SLURM_WARNING_SECONDS} s time-limit warning (give --handover below "
         "18m, e.g. --handover 9m, or a longer --time)"),
        (SlurmOptions(time="00:20:00", signal_seconds=0), False,
         "--handover: 30m does not leave room in the replicas' time limit 00:20:00 (the "
         "site's default time) (give --handover below 20m, e.g. --handover 10m, or a "
         "longer --time)"),
        (SlurmOptions(time="00:33:00"), True, None),
        (SlurmOptions(), True, None),  # no time limit known: any handover is taken
    ],
)  # fmt: skip
def test_the_handover_must_come_before_the_typed_time_limit_less_its_warning(
    slurm: SlurmOptions, time_flag: bool, message: str | None
) -> None:
    if message is None:
        check_handover(1800.0, slurm, time_flag)
        return
    with pytest.raises(InputError) as refused:
        check_handover(1800.0, slurm, time_flag)
    assert refused.value.one_line() == message
