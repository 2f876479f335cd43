"""What the leader tells: ``endpoint.json`` (its one writer) and the READY banner."""

from __future__ import annotations

from launchers import jobdir
from launchers.jobdir import jobfiles
from launchers.plan.commands import WILDCARD_HOSTS
from launchers.runtime.context import NodeContext
from launchers.runtime.tasks import LeaderTask


class EndpointWriter:
    """The one writer of ``endpoint.json``: the job's state as the leader sees it."""

    def __init__(self, ctx: NodeContext, task: LeaderTask) -> None:
        self.path = ctx.endpoint_file
        self.node_ip = ctx.node_ip
        self.record = jobfiles.Endpoint(
            state="PENDING",
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            hostname=ctx.hostname,
            leader_ip=ctx.node_ip,
            port=task.api_port,
            url=f"http://{ctx.node_ip}:{task.api_port}/v1",
            model=task.served_model_name,
            nodes=task.expected_nodes,
            api_key_file=task.api_key_file,
            started=jobdir.now(),
        )

    @property
    def state(self) -> str:
        return self.record.state

    def set(self, state: jobfiles.State, message: str, **facts: object) -> None:
        self.note(state=state, message=message, **facts)

    def note(self, **facts: object) -> None:
        """Record more facts (kept across state changes) and rewrite the file."""
        update = {**facts, "updated": jobdir.now()}
        self.record = jobfiles.Endpoint.model_validate({**self.record.model_dump(), **update})
        jobfiles.write(self.path, self.record)

    def moved_port(self, port: int) -> None:
        self.note(port=port, url=f"http://{self.node_ip}:{port}/v1")


def banner(ctx: NodeContext, task: LeaderTask, seconds: float) -> str:
    from launchers.render.text import curl_example

    url = f"http://{ctx.node_ip}:{task.api_port}/v1"
    return (
        f"READY after {seconds:.1f} s: {url} serves {task.served_model_name!r} "
        f"(on {ctx.hostname})\n"
        f"  {curl_example(url, task.served_model_name, task.api_key_file)}\n"
        f"  {who_can_reach(ctx, task)}"
    )


def who_can_reach(ctx: NodeContext, task: LeaderTask) -> str:
    """Say plainly who can call the API: the bound address and whether a key guards it."""
    host = task.api_host()
    if host in WILDCARD_HOSTS:
        where = (
            f"every interface of {ctx.hostname}: anyone who reaches {ctx.hostname}:{task.api_port}"
        )
    elif host in ("127.0.0.1", "localhost", "::1"):
        where = f"loopback only: processes on {ctx.hostname}"
    else:
        where = f"{host}: anyone who reaches {host}:{task.api_port}"
    guard = (
        f"with the API key in {task.api_key_file}"
        if task.api_key_file
        else "with no API key (anyone who reaches it can use the model)"
    )
    return f"reachable on {where}, {guard}"
