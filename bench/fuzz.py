"""The full-size fuzz campaign: ten thousand and more bent inputs against a real leader.

Each seed starts a fresh leader subprocess on loopback (tokens for every role,
a few jobs owned by different users), then sends REST requests, console
WebSocket messages and agent WebSocket messages made by
``tests/helpers/fuzzing.py``. It reports, per seed and in total, what came
back and every finding: a 5xx, a crash, a refusal that changed something, a
secret or a server path in an answer, a traceback or a token in the log.

    python bench/fuzz.py [--seeds 3] [--rest 3000] [--console 1000] [--agent 500]

The bounded version that runs with the tests is ``tests/server/test_fuzz.py``.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from farmtui.localfarm import LocalFarm, free_port  # noqa: E402 (the repository root first)
from tests.helpers.fuzzing import Fuzzer, log_findings  # noqa: E402
from tests.server.test_fuzz import seeded_target  # noqa: E402


def campaign(seed: int, rest: int, console: int, agent: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="farmtui-fuzz-") as tmp:
        farm = LocalFarm(Path(tmp) / "data", Path(tmp) / "root", port=free_port())
        farm.data.mkdir(parents=True)
        (farm.data / "leader.toml").write_text("console_updates_per_second = 1000.0\n")
        farm.start_leader()
        try:
            target = seeded_target(farm)
            fuzzer = Fuzzer(target, seed)
            try:
                tally = fuzzer.run(rest=rest, console=console, agent=agent)
            finally:
                fuzzer.close()
            alive = farm.leader is not None and farm.leader.alive()
            findings = tally.findings + log_findings(target)
        finally:
            farm.stop(grace=5.0)
    return {
        "seed": seed,
        "inputs": dict(tally.inputs),
        "total": tally.total,
        "answers": dict(sorted(tally.answers.items())),
        "seconds": round(tally.seconds, 2),
        "per_second": round(tally.total / tally.seconds, 1),
        "leader_alive": alive,
        "findings": [str(finding) for finding in findings],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--rest", type=int, default=3000)
    parser.add_argument("--console", type=int, default=1000)
    parser.add_argument("--agent", type=int, default=500)
    args = parser.parse_args()
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run = campaign(seed, args.rest, args.console, args.agent)
        runs.append(run)
        print(
            f"seed {seed}: {run['total']} inputs in {run['seconds']} s "
            f"({run['per_second']}/s), {len(run['findings'])} findings, "  # type: ignore[arg-type]
            f"leader alive: {run['leader_alive']}"
        )
        for finding in run["findings"][:10]:  # type: ignore[index]
            print("   ", finding)
    answers: collections.Counter[str] = collections.Counter()
    for run in runs:
        answers.update(run["answers"])  # type: ignore[arg-type]
    total = sum(int(run["total"]) for run in runs)  # type: ignore[call-overload]
    findings = sum(len(run["findings"]) for run in runs)  # type: ignore[arg-type]
    print(f"total: {total} inputs, {findings} findings")
    for answer, count in sorted(answers.items()):
        print(f"  {answer:28} {count}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    report = {
        "machine": {"python": platform.python_version(), "system": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
        "total": total,
        "findings": findings,
        "answers": dict(sorted(answers.items())),
        "runs": runs,
    }
    (results / "fuzz.json").write_text(json.dumps(report, indent=1) + "\n")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
