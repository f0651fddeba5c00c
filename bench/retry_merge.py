"""Benchmark: the retry passes' memory against the number of lines (issue #14).

Run from the repository root::

    .venv/bin/python -m bench.retry_merge [--sizes 10000,100000,1000000] [--json out.json]

For each size it writes a chat input of that many requests and the result files of three
attempts in Mistral's line shape (attempt 1: 10 % of the lines fail with a 500 and 2 % with a
422; attempt 2 runs the 500s again and a tenth of them fail again; attempt 3 runs those),
then, in a fresh child process each, runs the daemon's two file passes:
``write_retry_input`` (which lines attempt 2 runs) and ``merge_attempts`` (one answer per
request, in input order). The child reports its peak RSS (``ru_maxrss``): with the on-disk
index it stays flat as the line count grows, where a dict of every line would not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import emit, machine, machine_line, run_measured, table, work_folder
from bench._common import write_chat_input as write_input


def _line(custom_id: str, status: int) -> str:
    body: dict[str, Any] = (
        {"id": "c", "object": "chat.completion", "choices": [{"message": {"content": "ok"}}]}
        if status == 200
        else {"object": "error", "message": "failed", "type": "server_error", "code": "x"}
    )
    record = {"id": "l", "custom_id": custom_id, "response": {"status_code": status, "body": body},
              "error": None}  # fmt: skip
    return json.dumps(record, separators=(",", ":")) + "\n"


def write_attempts(folder: Path, lines: int) -> list[list[Path]]:
    """The result files of three attempts over ``req-0 .. req-{lines-1}``."""

    def status(number: int, i: int) -> int | None:
        transient, permanent = i % 10 == 0, i % 50 == 7
        if number == 1:
            return 500 if transient else 422 if permanent else 200
        if number == 2:
            return (500 if i % 100 == 0 else 200) if transient else None
        return 200 if i % 100 == 0 else None

    attempts: list[list[Path]] = []
    for number in (1, 2, 3):
        out, err = folder / f"a{number}-output.jsonl", folder / f"a{number}-errors.jsonl"
        with out.open("w") as o, err.open("w") as e:
            for i in range(lines):
                code = status(number, i)
                if code is not None:
                    (o if code == 200 else e).write(_line(f"req-{i}", code))
        attempts.append([out, err])
    return attempts


def child(folder: Path) -> None:
    """Run both passes on ``folder``'s files; print their figures as JSON."""
    from orchestrator.daemon.attempt_files import merge_attempts, write_retry_input
    from orchestrator.providers.mistral import MISTRAL_RESULT_LINES

    attempts = [[folder / f"a{n}-output.jsonl", folder / f"a{n}-errors.jsonl"] for n in (1, 2, 3)]
    started = time.perf_counter()
    retry = write_retry_input(
        inputs=[str(folder / "input.jsonl")],
        results=attempts[0],
        rules=MISTRAL_RESULT_LINES,
        never_ran=None,
        dest=folder / "attempts" / "02" / "input.jsonl",
    )
    middle = time.perf_counter()
    output, errors = merge_attempts(
        inputs=[str(folder / "input.jsonl")],
        attempts=attempts,
        rules=MISTRAL_RESULT_LINES,
        output=folder / "output.jsonl",
        errors=folder / "errors.jsonl",
        never_ran_message="never ran",
    )
    done = time.perf_counter()
    print(json.dumps({
        "retry_lines": retry.lines, "output_lines": output.lines, "error_lines": errors.lines,
        "retry_seconds": middle - started, "merge_seconds": done - middle,
    }))  # fmt: skip


def measure(size: int, parent: str | None) -> dict[str, Any]:
    with work_folder("retry-merge", parent) as folder:
        write_input(folder / "input.jsonl", size)
        write_attempts(folder, size)
        run = run_measured([sys.executable, "-m", "bench.retry_merge", "--child", str(folder)])
        figures: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        figures.update(lines=size, peak_rss_mib=round(run.peak_rss_mib, 1), wall=run.wall)
        return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(Path(args.child))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    info = machine()
    rows = [measure(size, args.work_dir) for size in sizes]
    report = "\n".join([
        "## Retry passes: memory against lines", "", machine_line(info), "",
        table(
            ["lines", "retried", "merged output", "merged errors", "peak RSS (MiB)",
             "retry pass (s)", "merge (s)"],
            [[f"{r['lines']:,}", f"{r['retry_lines']:,}", f"{r['output_lines']:,}",
              f"{r['error_lines']:,}", r["peak_rss_mib"], f"{r['retry_seconds']:.1f}",
              f"{r['merge_seconds']:.1f}"] for r in rows],
        ),
    ])  # fmt: skip
    emit(report, {"machine": info, "runs": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
