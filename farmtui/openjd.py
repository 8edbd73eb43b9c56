"""Open Job Description job templates in: a template and its parameters -> farmtui jobs.

``farm submit job.template.yaml --param Frames=1-100`` reads the template (YAML or
JSON) and instantiates it with openjd-model, the specification's own library, so
a template means here what it means to every other OpenJD tool. Each step then
becomes one farmtui job:

- its one ``INT`` task parameter is the job's frame list (one frame per chunk, as
  OpenJD runs one task per value); a ``CHUNK[INT]`` one (TASK_CHUNKING) gives the
  chunk size from ``defaultTaskCount``;
- ``{{Task.Param.<frame>}}`` in the command becomes ``{start}`` (INT), ``{start}-{end}``
  (CONTIGUOUS chunks) or ``{start}-{end}:{step}`` (NONCONTIGUOUS: an OpenJD range
  expression of the chunk); ``{{Param.X}}`` becomes the parameter's value;
- ``dependencies`` become ``after`` (steps are submitted in dependency order);
- ``hostRequirements`` attributes become tags (every value of ``allOf``, or the one
  value of ``anyOf``: a node must carry every tag a job asks for);
- environment ``variables`` become the job's environment, and the action's
  ``timeout`` its maximum render time.

Anything else that changes what runs (a second task parameter, a STRING frame
parameter, an environment with a script, embedded files, an amount a node must
have) is refused with one line that names the field, and nothing is submitted.
The other direction, a job as a template, is ``farmtui.openjd_export``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farmtui.errors import InputError
from farmtui.frames import chunk_frames, format_frames
from farmtui.jobfields import Given
from farmtui.protocol import MAX_NAME_LENGTH, JobSpec

if TYPE_CHECKING:
    from openjd.model import Job, JobParameterValues, JobTemplate, SymbolTable
    from openjd.model.v2023_09 import Step

# Extensions whose meaning farmtui keeps. REDACTED_ENV_VARS needs a runtime that
# hides values in logs; EXPR and WRAP_ACTIONS need an expression engine and
# wrapping environments that farmtui's agents do not have.
SUPPORTED_EXTENSIONS = ("TASK_CHUNKING", "FEATURE_BUNDLE_1")
# What a template decides for each of its jobs; flags may not override them.
TEMPLATE_DECIDES = ("frames", "chunk", "renderer", "scene", "scout", "argv")
TEMPLATE_SUFFIXES = (".yaml", ".yml", ".json")

# Stands for the frame parameter while a command is resolved, so the resolved text
# can have its braces escaped for farmtui before the frame tokens go in.
_FRAME_MARK = "\ue000frame\ue000"
_MAX_REASONS = 3
# Values (mappings, lists and scalars) a template may hold once YAML aliases are
# expanded: hundreds of steps fit many times over, while a "billion laughs" of
# nested aliases, which openjd-model would walk for hours, is refused at once.
MAX_TEMPLATE_VALUES = 200_000


class TemplateError(InputError):
    """An OpenJD template that is invalid, or that farmtui cannot run as written."""


@dataclass(frozen=True)
class PlannedJob:
    """One step of a template as a checked farmtui job, waiting to be submitted."""

    step: str
    spec: JobSpec
    # Steps whose jobs this one waits for (their ids go into ``after`` at submit).
    after_steps: tuple[str, ...]
    notes: tuple[str, ...] = ()


def is_template(path: Path) -> bool:
    """Whether ``farm submit PATH`` names an OpenJD template rather than a TOML job file."""
    return path.suffix.lower() in TEMPLATE_SUFFIXES


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``["Frames=1-10", "Scene=/x"]`` -> ``{"Frames": "1-10", "Scene": "/x"}``."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise TemplateError(f"--param {item!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


def _one_line(text: str) -> str:
    """openjd-model's multi-line messages as one line: the first few reasons."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and re.match(r"\d+ validation errors? for ", lines[0]):
        lines = lines[1:]
    reasons: list[str] = []
    at = 0
    while at < len(lines):
        line = lines[at]
        if line.endswith(":") and at + 1 < len(lines):
            reasons.append(f"{line.replace(' -> ', '.')} {lines[at + 1]}")
            at += 2
        else:
            reasons.append(line)
            at += 1
    shown = "; ".join(reasons[:_MAX_REASONS])
    more = len(reasons) - _MAX_REASONS
    return shown + (f" (and {more} more)" if more > 0 else "")


def _values_over(document: object, limit: int) -> bool:
    """Whether ``document`` holds more than ``limit`` values, every alias counted again.

    Stops counting at ``limit``: the cost is bounded however far aliases nest.
    """
    pending: list[object] = [document]
    seen = 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


# Deepest nesting of lists and maps a YAML template may have: openjd-model's C loader
# recursed a level a nesting with no check (100,000 deep: a segmentation fault).
MAX_YAML_NESTING = 200


def _check_yaml_nesting(text: str) -> None:
    """RecursionError if the template nests deeper than ``MAX_YAML_NESTING``.

    Counted on the parser's events (libyaml's, when PyYAML has it: the same
    parser as openjd-model's, which builds no tree and keeps its own stack),
    so the template is then read by openjd-model itself, exactly as before.
    Not readable: said by that read.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    opened = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    closed = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, opened):
                depth += 1
                if depth > MAX_YAML_NESTING:
                    raise RecursionError(f"nested more than {MAX_YAML_NESTING} deep")
            elif isinstance(event, closed):
                depth -= 1
    except yaml.YAMLError:
        return


def load_template(path: Path) -> JobTemplate:
    """The template at ``path``, validated by openjd-model; TemplateError otherwise."""
    try:
        return _load_template(path)
    except RecursionError:
        raise TemplateError(f"template {path}: nested too deeply; refused") from None


def _load_template(path: Path) -> JobTemplate:
    from openjd.model import (
        DecodeValidationError,
        DocumentType,
        decode_job_template,
        document_string_to_object,
    )

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TemplateError(f"template {path} is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            kind = DocumentType.JSON
        else:
            kind = DocumentType.YAML
            _check_yaml_nesting(text)
        document = document_string_to_object(document=text, document_type=kind)
    except DecodeValidationError as exc:
        raise TemplateError(f"template {path}: {_one_line(str(exc))}") from None
    if _values_over(document, MAX_TEMPLATE_VALUES):
        raise TemplateError(
            f"template {path}: more than {MAX_TEMPLATE_VALUES} values once its YAML "
            "aliases are expanded; refused"
        )
    extensions = document.get("extensions") or []
    if isinstance(extensions, list):
        for name in extensions:
            if name not in SUPPORTED_EXTENSIONS:
                raise TemplateError(
                    f"template {path}: extensions: {name} cannot run on farmtui "
                    f"(it runs {', '.join(SUPPORTED_EXTENSIONS)})"
                )
    try:
        return decode_job_template(template=document, supported_extensions=SUPPORTED_EXTENSIONS)
    except (DecodeValidationError, NotImplementedError) as exc:
        raise TemplateError(f"template {path}: {_one_line(str(exc))}") from None
    except IndexError as exc:
        # openjd-model fails to word an error about the whole template (an empty
        # location), e.g. "Step dependencies form a cycle": word it from pydantic's.
        reasons = _validation_reasons(exc.__context__)
        if reasons is None:
            raise
        raise TemplateError(f"template {path}: {reasons}") from None


def _validation_reasons(error: BaseException | None) -> str | None:
    """A pydantic ValidationError's reasons in one line, or None for anything else."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return None
    reasons = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        message = str(detail["msg"]).removeprefix("Value error, ")
        reasons.append(f"{where}: {message}" if where else message)
    return _one_line("\n".join(reasons))


def instantiate(
    template: JobTemplate, path: Path, params: Mapping[str, str], cwd: Path
) -> tuple[Job, JobParameterValues]:
    """The template made a Job with these parameter values (defaults filled, constraints
    checked, relative PATH values made absolute against ``cwd``, as OpenJD says)."""
    from openjd.model import DecodeValidationError, create_job, preprocess_job_parameters

    try:
        values = preprocess_job_parameters(
            job_template=template,
            job_parameter_values=dict(params),
            job_template_dir=path.resolve().parent,
            current_working_dir=cwd.resolve(),
        )
    except ValueError as exc:
        raise TemplateError(f"template {path}: {_one_line(str(exc))}") from None
    try:
        job = create_job(job_template=template, job_parameter_values=values)
    except DecodeValidationError as exc:
        raise TemplateError(f"template {path}: {_one_line(str(exc))}") from None
    return job, values


def plan_jobs(
    path: Path,
    params: Mapping[str, str],
    flags: Given | None = None,
    cwd: Path | None = None,
) -> list[PlannedJob]:
    """Every step of the template at ``path`` as a checked JobSpec, in dependency order.

    ``flags`` (the other ``farm submit`` flags) are laid over each job: a name, a
    priority, timeouts, tags (added to the step's). Refuses with TemplateError, or
    the job checks' InputError, before anything could be submitted.
    """
    from farmtui import jobfile

    flags = flags or Given()
    for key in TEMPLATE_DECIDES:
        if key in flags.values:
            label = "the command after --" if key == "argv" else flags.labels.get(key, key)
            raise TemplateError(
                f"{label}: an OpenJD template's steps set the frames, chunks and command "
                "(give its job parameters with --param NAME=VALUE)"
            )
    template = load_template(path)
    job, values = instantiate(template, path, params, cwd or Path.cwd())
    symbols = _symbols(values)
    job_env = _environment(job.jobEnvironments, "jobEnvironments", symbols)
    steps = _in_dependency_order(job.steps)
    base_name = str(flags.values.get("name") or job.name)
    plans: list[PlannedJob] = []
    for index, step in steps:
        where = f"steps[{index}] ({step.name})"
        mapped = _map_step(step, where, symbols)
        name = base_name if len(steps) == 1 else f"{base_name}: {step.name}"
        given_values: dict[str, Any] = {
            "name": name[:MAX_NAME_LENGTH],
            "frames": mapped.frames,
            "chunk": mapped.chunk,
            "renderer": "generic",
            "argv": mapped.argv,
        }
        env = {**job_env, **_environment(step.stepEnvironments, f"{where}.stepEnvironments",
                                         symbols)}  # fmt: skip
        if env:
            given_values["env"] = env
        if mapped.tags:
            given_values["tags"] = mapped.tags
        if mapped.gpus:
            given_values["gpus"] = mapped.gpus
        if mapped.gpu_memory:
            given_values["gpu-memory"] = mapped.gpu_memory
        if mapped.timeout is not None:
            given_values["timeout-max"] = mapped.timeout
        from_template = jobfile.normalize(given_values, _labeller(f"{path}: {where}"))
        given = flags.over(from_template)
        tags = [*mapped.tags, *flags.values.get("tags", [])]
        if tags:
            given.values["tags"] = list(dict.fromkeys(tags))
        given.values["name"] = name[:MAX_NAME_LENGTH]
        spec = jobfile.build_spec(given)
        after = tuple(str(dep.dependsOn) for dep in step.dependencies or ())
        plans.append(PlannedJob(str(step.name), spec, after, mapped.notes))
    return plans


def _labeller(prefix: str) -> Callable[[str], str]:
    """How a step's values are named in a refusal: ``t.yaml: steps[0] (Render): env``."""
    return lambda key: f"{prefix}: {key}"


@dataclass(frozen=True)
class _MappedStep:
    frames: str
    chunk: int
    argv: list[str]
    tags: list[str]
    timeout: int | None
    notes: tuple[str, ...]
    gpus: int = 0
    gpu_memory: int = 0  # MiB


def _symbols(values: JobParameterValues) -> SymbolTable:
    """``Param.X`` and ``RawParam.X`` for every job parameter, as farmtui runs them.

    A PATH parameter's value goes in as given: a farmtui node maps paths in the
    argv by the leader's path mapping rules, not by OpenJD's session rules.
    """
    from openjd.model import SymbolTable

    symbols = SymbolTable()
    for name, value in values.items():
        symbols[f"Param.{name}"] = value.value
        symbols[f"RawParam.{name}"] = value.value
    return symbols


def _in_dependency_order(steps: Sequence[Step]) -> list[tuple[int, Step]]:
    """Steps with each after the steps it depends on; otherwise in the template's order."""
    pending = list(enumerate(steps))
    done: set[str] = set()
    ordered: list[tuple[int, Step]] = []
    while pending:
        for at, (index, step) in enumerate(pending):
            needs = {str(dep.dependsOn) for dep in step.dependencies or ()}
            if needs <= done:
                ordered.append((index, step))
                done.add(str(step.name))
                del pending[at]
                break
        else:  # openjd-model refuses cycles; this is only a guard
            raise TemplateError(f"steps {pending[0][1].name!r}: dependencies form a cycle")
    return ordered


def _resolve(text: Any, where: str, symbols: SymbolTable) -> str:
    """A format string resolved with the job's parameters (and the frame mark)."""
    from openjd.model import FormatStringError

    for info in getattr(text, "expressions", ()):
        expression = info.expression
        name = expression.expr.strip() if expression is not None else ""
        if name not in symbols:
            raise TemplateError(f"{where}: {{{{{name}}}}} has no value on farmtui ({_why(name)})")
    try:
        return str(text.resolve(symtab=symbols)) if hasattr(text, "resolve") else str(text)
    except FormatStringError as exc:
        raise TemplateError(f"{where}: {_one_line(str(exc))}") from None


def _why(name: str) -> str:
    if name.startswith(("Task.File.", "Env.File.")):
        return "embedded files cannot run on farmtui"
    if name.startswith("Session."):
        return "farmtui runs a command, not an OpenJD session"
    if name.startswith("Task.Param."):
        return "only the frame parameter is a task parameter"
    return "give Param.NAME, RawParam.NAME or the frame's Task.Param"


def _environment(environments: Any, where: str, symbols: SymbolTable) -> dict[str, str]:
    """Environments that only set variables, as an env table; any with a script refused."""
    env: dict[str, str] = {}
    for index, environment in enumerate(environments or ()):
        here = f"{where}[{index}] ({environment.name})"
        if environment.script is not None:
            raise TemplateError(
                f"{here}: an environment with a script (onEnter/onExit) cannot run on "
                "farmtui; only its variables would"
            )
        for key, value in (environment.variables or {}).items():
            env[str(key)] = _resolve(value, f"{here}.variables.{key}", symbols)
    return env


def _map_step(step: Step, where: str, symbols: SymbolTable) -> _MappedStep:
    from openjd.model.v2023_09 import TaskChunksRangeConstraint, TaskParameterType

    notes: list[str] = []
    frames: list[int] = [1]
    chunk = 1
    frame_token = "{start}"
    frame_param: str | None = None
    space = step.parameterSpace
    if space is not None:
        definitions = space.taskParameterDefinitions
        if len(definitions) != 1:
            raise TemplateError(
                f"{where}.parameterSpace: {len(definitions)} task parameters "
                f"({', '.join(definitions)}); farmtui runs one frame parameter per step"
            )
        frame_param, definition = next(iter(definitions.items()))
        here = f"{where}.parameterSpace.{frame_param}"
        if definition.type not in (TaskParameterType.INT, TaskParameterType.CHUNK_INT):
            raise TemplateError(
                f"{here}: type {definition.type.value}; farmtui runs an INT or CHUNK[INT] "
                "frame parameter"
            )
        try:
            frames = list(dict.fromkeys(int(value) for value in definition.range))
        except (TypeError, ValueError):
            raise TemplateError(f"{here}: range has a value that is not a whole number") from None
        if definition.type == TaskParameterType.CHUNK_INT and definition.chunks is not None:
            chunk = int(definition.chunks.defaultTaskCount)
            if definition.chunks.rangeConstraint == TaskChunksRangeConstraint.CONTIGUOUS:
                frame_token = "{start}-{end}"
                if any(
                    len(part) > 1 and abs(part[1] - part[0]) != 1
                    for part in chunk_frames(frames, chunk)
                ):
                    chunk = 1
                    notes.append(
                        f"{here}: CONTIGUOUS chunks of a stepped or gapped frame list are "
                        "one frame each"
                    )
            else:
                frame_token = "{start}-{end}:{step}"
    symbols = _with_frame(symbols, frame_param)
    script = step.script
    if script.embeddedFiles:
        raise TemplateError(
            f"{where}.script.embeddedFiles: farmtui runs one command line per chunk, "
            "not embedded files"
        )
    action = script.actions.onRun
    argv = [
        _to_farmtui(_resolve(action.command, f"{where}.script.actions.onRun.command", symbols),
                    frame_token),
        *(
            _to_farmtui(
                _resolve(arg, f"{where}.script.actions.onRun.args[{at}]", symbols), frame_token
            )
            for at, arg in enumerate(action.args or ())
        ),
    ]  # fmt: skip
    timeout: int | None = None
    if action.timeout is not None:
        text = _resolve(action.timeout, f"{where}.script.actions.onRun.timeout", symbols)
        try:
            timeout = int(text)
        except ValueError:
            raise TemplateError(
                f"{where}.script.actions.onRun.timeout: {text!r} is not whole seconds"
            ) from None
    tags = _tags(step, where)
    gpus, gpu_memory = _gpus(step)
    return _MappedStep(
        format_frames(frames), chunk, argv, tags, timeout, tuple(notes), gpus, gpu_memory
    )


def _with_frame(symbols: SymbolTable, frame_param: str | None) -> SymbolTable:
    from openjd.model import SymbolTable

    if frame_param is None:
        return symbols
    table = SymbolTable(source=symbols)
    table[f"Task.Param.{frame_param}"] = _FRAME_MARK
    table[f"Task.RawParam.{frame_param}"] = _FRAME_MARK
    return table


def _to_farmtui(text: str, frame_token: str) -> str:
    """A resolved argument as a farmtui argv template: braces kept literal, frames as tokens."""
    escaped = text.replace("{", "{{").replace("}", "}}")
    return escaped.replace(_FRAME_MARK, frame_token)


# OpenJD's standard amounts that a farmtui job asks for itself: GPUs per chunk (a
# count) and the least memory of each (MiB, as OpenJD counts it).
GPU_COUNT = "amount.worker.gpu"
GPU_MEMORY = "amount.worker.gpu.memory"
GPU_AMOUNTS = (GPU_COUNT, GPU_MEMORY)


def _gpus(step: Step) -> tuple[int, int]:
    """(GPUs, MiB each) from the step's ``amount.worker.gpu[.memory]`` minimums."""
    requirements = step.hostRequirements
    found = {GPU_COUNT: 0, GPU_MEMORY: 0}
    for amount in (requirements.amounts or ()) if requirements is not None else ():
        if amount.name in found and amount.min is not None:
            found[amount.name] = math.ceil(amount.min)
    return found[GPU_COUNT], found[GPU_MEMORY]


def _tags(step: Step, where: str) -> list[str]:
    """The step's host requirements as node tags; what tags cannot say is refused."""
    requirements = step.hostRequirements
    if requirements is None:
        return []
    for index, amount in enumerate(requirements.amounts or ()):
        if amount.name in GPU_AMOUNTS:
            continue  # a chunk's GPUs (``_gpus``)
        if (amount.min is not None and amount.min > 0) or amount.max is not None:
            raise TemplateError(
                f"{where}.hostRequirements.amounts[{index}] ({amount.name}): farmtui does not "
                "match nodes by amounts; use an attribute (a node tag) instead"
            )
    tags: list[str] = []
    for index, attribute in enumerate(requirements.attributes or ()):
        here = f"{where}.hostRequirements.attributes[{index}] ({attribute.name})"
        if attribute.anyOf is not None and len(attribute.anyOf) > 1:
            raise TemplateError(
                f"{here}: anyOf with {len(attribute.anyOf)} values; a farmtui node must "
                "carry every tag a job asks for, so only allOf or one anyOf value map to tags"
            )
        tags.extend(str(value) for value in (attribute.allOf or attribute.anyOf or ()))
    return tags
