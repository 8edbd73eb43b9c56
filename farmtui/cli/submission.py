"""``farm submit``: a job from flags and a TOML job file, or the jobs of an OpenJD template."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from farmtui.cli import shared
from farmtui.cli.shared import emit, emit_json
from farmtui.errors import FarmError, InputError
from farmtui.printable import printable

if TYPE_CHECKING:
    from farmtui.jobfields import Given
    from farmtui.protocol import JobView


def cmd_submit(args: argparse.Namespace) -> int:
    from farmtui import jobfile
    from farmtui.jobfields import FIELDS
    from farmtui.openjd import is_template

    template = bool(args.jobfile) and is_template(Path(args.jobfile))
    base = jobfile.Given()
    if args.jobfile and not template:
        base = jobfile.load_jobfile(Path(args.jobfile))
    flags: dict[str, object] = {
        field.key: getattr(args, field.key.replace("-", "_"))
        for field in FIELDS
        if field.metavar != ""  # a flag, not a job file key only
    }
    flags["argv"] = args.argv or None
    if template or args.param:
        return submit_template(args, jobfile.normalize(flags, lambda key: f"--{key}"))
    given = jobfile.normalize(flags, lambda key: f"--{key.replace('_', '-')}").over(base)
    spec = jobfile.build_spec(given)
    with shared.connect(args) as farm:
        if spec.after:
            spec.after = farm.resolve_jobs(spec.after)
        job = farm.submit(spec)
    if args.json:
        emit_json(job)
    else:
        emit(job.id)
    return 0


def submit_template(args: argparse.Namespace, flags: Given) -> int:
    """``farm submit job.template.yaml --param K=V``: one job per step, in dependency order.

    Every step is mapped and checked before the first is sent (``farmtui.openjd``).
    """
    from farmtui import openjd

    if not args.jobfile:
        raise InputError("--param goes with an OpenJD template: farm submit T.yaml --param K=V")
    plans = openjd.plan_jobs(Path(args.jobfile), openjd.parse_params(args.param or []), flags)
    for plan in plans:
        for note in plan.notes:
            sys.stderr.write(f"farm submit: note: {printable(note)}\n")
    submitted: list[JobView] = []
    with shared.connect(args) as farm:
        extra = farm.resolve_jobs(plans[0].spec.after) if plans and plans[0].spec.after else []
        ids: dict[str, str] = {}
        for plan in plans:
            plan.spec.after = [*extra, *(ids[step] for step in plan.after_steps)]
            try:
                job = farm.submit(plan.spec)
            except FarmError:
                if submitted:  # say what exists, so a retry does not submit it twice
                    done = printable(", ".join(f"{j.id} ({j.name})" for j in submitted))
                    sys.stderr.write(f"farm submit: submitted before the error: {done}\n")
                raise
            ids[plan.step] = job.id
            submitted.append(job)
    if args.json:
        emit_json(submitted)
    else:
        emit("\n".join(f"{job.id}  {job.name}" for job in submitted))
    return 0
