"""Run a benchmark's measuring child in another checkout, for figures side by side.

A benchmark script that takes ``--old TREE`` runs its own measuring part
(``SCRIPT --child ARGS``) once per tree and run, alternating, so both trees
see the same machine. The child prints one JSON line last, with
``imported``: where it imported the code it measured from, checked here so
that an installed copy never stands in for the tree asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def trees(old: str | None, this: Path) -> dict[str, Path]:
    """``{"this": this}``, with ``"old"`` first when ``--old`` was given."""
    if old is None:
        return {"this": this}
    return {"old": Path(old).resolve(), "this": this}


def run_child(script: Path, tree: Path, args: list[str]) -> dict[str, Any]:
    """``script --child ARGS`` with ``tree`` first on the path; its last line, decoded."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(script), "--child", *args]
    out = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(result["imported"]).resolve() != tree.resolve():
        raise SystemExit(f"{tree}: the code was imported from {result['imported']} instead")
    return result


def alternate(
    script: Path,
    checkouts: dict[str, Path],
    runs: int,
    args: list[str],
    line: Callable[[dict[str, Any]], str],
) -> dict[str, list[dict[str, Any]]]:
    """``runs`` rounds of ``script --child ARGS``, each checkout in turn; every result
    printed as it comes (``line``: what to say of it), all of them returned by checkout."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
    for run in range(1, runs + 1):
        for name, tree in checkouts.items():
            result = run_child(script, tree, args)
            results[name].append(result)
            print(f"run {run} {name}: {line(result)}", flush=True)
    return results
