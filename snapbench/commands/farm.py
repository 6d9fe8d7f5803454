"""`snapbench farm join`: make this Mac a node of a device farm (Ray) offering its phones and itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from snapbench.commands.common import JsonOpt, out, print_json
from snapbench.errors import SnapbenchError
from snapbench.profilers.readiness import TEAM_ID_ENV

farm_app = typer.Typer(help="A device farm on Ray: Macs with phones attached measure for "
                       "`snapbench profile --ray-address ADDR --device A --device B`.", no_args_is_help=True)


@farm_app.command("join")
def join_command(
    ctx: typer.Context,
    address: str = typer.Option(..., "--address", help="The farm's Ray head, host:port (`ray start --head` there)."),
    team_id: str | None = typer.Option(None, "--team-id", envvar=TEAM_ID_ENV,
                                          help="Apple Developer team id that signs the runner app on this node."),
    as_json: bool = JsonOpt,
) -> None:
    """Check this Mac as `doctor` does, then start a Ray node whose resources are the catalog ids of its ready
    iPhones and of this Mac (one each), so that `profile --ray-address` sends them their packages."""
    import dataclasses

    from snapbench.profilers.farm import join_argv, node_resources
    from snapbench.profilers.readiness import Machine
    from snapbench.ray_cluster import check_ray_address

    machine = ctx.obj if isinstance(ctx.obj, Machine) else Machine.this(team_id=team_id)
    if team_id:
        machine = dataclasses.replace(machine, team_id=team_id)
    held = node_resources(machine)
    check_ray_address(address)
    if machine.team_id:  # the node's workers (children of `ray start`) sign with it
        os.environ[TEAM_ID_ENV] = machine.team_id
    ray_bin = Path(sys.executable).with_name("ray")
    argv = join_argv(str(ray_bin) if ray_bin.exists() else "ray", address, held)
    code, stdout, stderr = machine.shell.run(argv, timeout_s=180)
    if code != 0:
        last = (stderr.strip().splitlines() or stdout.strip().splitlines() or [f"exit code {code}"])[-1]
        raise SnapbenchError(f"`ray start --address {address}` failed: {last}")
    if as_json:
        print_json({"address": address, "resources": held})
        return
    out.print(f"joined the farm at {address} offering {', '.join(sorted(held))}; stop with `ray stop`",
              markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(farm_app, name="farm")
