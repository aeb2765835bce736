"""Kill `lstm-trading train` at chosen points, then resume it (run by tests/test_crash_safety.py).

    python tests/train_kill_runner.py SPEC.json

SPEC holds `args` (the train command line without --out), `work` (a folder), `seed` and `kills`. The runner
imports the package once, then forks one process per run, so each run costs its training and not the imports:

1. a reference run to the end, recording its events in order: every file it moves into place (through
   `lstm_trading.core.atomic`, the one way the tool writes) and every training step;
2. for each chosen event, a run killed with SIGKILL at that event (a file killed half-written: its temporary file
   is cut to half its size first), a copy of its folder as the kill left it, then `--resume` (or, when no
   checkpoint exists yet, the restart with `--overwrite` that the error message asks for).

It writes `work/summary.json`; the test then checks every folder. Runs are deterministic, so event k of a
killed run is event k of the reference run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _child(args: list[str], log: Path, on_event: Callable[..., None], run_dir: Path) -> None:
    """In the forked process: hook writes and training steps, run the CLI, exit with its code."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    code = 1
    try:
        from lstm_trading.cli import app
        from lstm_trading.core import atomic as atomic
        from lstm_trading.models.lstm import training as training

        replace = atomic.os.replace

        def hooked_replace(source: Any, target: Any) -> None:
            target_path = Path(target).resolve()
            if run_dir in target_path.parents:
                on_event("write", str(target_path.relative_to(run_dir)), source)
            replace(source, target)

        step = training.LSTMTrainingModule.training_step

        def hooked_step(self: Any, batch: Any, batch_idx: int) -> Any:
            on_event("step", f"epoch {self.current_epoch} batch {batch_idx}", None)
            return step(self, batch, batch_idx)

        atomic.os.replace = hooked_replace  # type: ignore[assignment]  (this forked process only)
        training.LSTMTrainingModule.training_step = hooked_step  # type: ignore[method-assign]
        app(args, prog_name="lstm-trading")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fork(args: list[str], log: Path, on_event: Callable[..., None], run_dir: Path) -> int:
    """Run the CLI in a forked process; its exit code, or minus the signal that ended it."""
    pid = os.fork()
    if pid == 0:
        _child(args, log, on_event, run_dir)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"]).resolve()
    base_args: list[str] = spec["args"]

    import torch

    torch.set_num_threads(1)  # before any fork: every run computes alike
    import lstm_trading.cli  # noqa: F401  (imported once, shared by every forked run)
    import lstm_trading.models.lstm.training  # noqa: F401

    events_file = work / "events.jsonl"

    def record(kind: str, what: str, source: Any) -> None:
        with open(events_file, "a") as handle:
            handle.write(json.dumps([kind, what]) + "\n")

    reference = work / "reference"
    code = _fork([*base_args, "--out", str(reference)], work / "reference.log", record, reference)
    if code != 0:
        raise SystemExit(f"the reference run failed ({code}); see {work / 'reference.log'}")
    events = [tuple(json.loads(line)) for line in events_file.read_text().splitlines()]

    # Kill points: between the bundle's weights and its bundle.json, a training step before the first checkpoint
    # and one after it (drawn at random, seeded), then events drawn at random from the whole run.
    rng = random.Random(spec["seed"])
    first_checkpoint = next(i for i, e in enumerate(events) if e[0] == "write" and e[1].endswith(".ckpt"))
    steps = [i for i, e in enumerate(events) if e[0] == "step"]
    points = [
        events.index(("write", "model/bundle.json")),
        rng.choice([i for i in steps if i < first_checkpoint]),
        rng.choice([i for i in steps if i > first_checkpoint]),
    ]
    while len(points) < spec["kills"]:
        choice = rng.randrange(len(events))
        if choice not in points:
            points.append(choice)

    runs = []
    for number, point in enumerate(points):
        run_dir = work / f"killed_{number}"
        seen = [0]

        def kill_at(kind: str, what: str, source: Any, point: int = point, seen: list[int] = seen) -> None:
            if seen[0] == point:
                if source is not None:  # a write: leave its temporary file half-written, as a crash would
                    size = os.path.getsize(source)
                    os.truncate(source, size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            seen[0] += 1

        killed = _fork([*base_args, "--out", str(run_dir)], work / f"killed_{number}.log", kill_at, run_dir)
        after_kill = work / f"killed_{number}.after_kill"
        if run_dir.exists():
            shutil.copytree(run_dir, after_kill)
        else:
            after_kill.mkdir()

        def noop(*event: Any) -> None:
            pass

        resumed = _fork(
            [*base_args, "--out", str(run_dir), "--resume"], work / f"killed_{number}.resume.log", noop, run_dir
        )
        restarted = None
        if resumed != 0:
            restarted = _fork(
                [*base_args, "--out", str(run_dir), "--overwrite"], work / f"killed_{number}.restart.log", noop, run_dir
            )
        runs.append(
            {
                "event": list(events[point]),
                "killed": killed,
                "folder": str(run_dir),
                "after_kill": str(after_kill),
                "resumed": resumed,
                "resume_log": (work / f"killed_{number}.resume.log").read_text(),
                "restarted": restarted,
            }
        )
    summary = {"reference": str(reference), "events": [list(e) for e in events], "runs": runs}
    (work / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
