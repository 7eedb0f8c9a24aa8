"""`python -m benchmarks gpu_check --dry-run`: every row's command runs on the CPU, the table reads numbers.

The real run needs a GPU; the dry run takes the same path (commands, logs, parsing, the
table) at tiny shapes, so a renamed option or metric breaks this test rather than the one GPU run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The markdown table's rows, by their first cell (the check)."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith(("| check |", "|---")):
            # a cell's own "|" is written "\|"
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells
    return rows


@pytest.mark.nightly  # five processes, each importing torch and Lightning: ~1-2 min on 2 busy cores
def test_the_dry_run_fills_every_row_with_numbers(text_path, tmp_path):
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("the GPT-2 rows need GPT-2's BPE files offline; set TIKTOKEN_CACHE_DIR")
    env = {**os.environ, "NANOGPT_SHAKESPEARE_PATH": str(text_path), "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "check"
    # a val target the tiny runs reach, so the time-to-target path is read too
    command = [sys.executable, "-m", "benchmarks", "gpu_check", "--dry-run", "--out", str(out)]
    command += ["--val-target", "4.0"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rows = table_rows(done.stdout)
    assert list(rows) == [
        "GPU tests",
        "baby GPT (shakespeare_char)",
        "nanoGPT's own run",
        "GPT-2 124M throughput",
        "FSDP, GPT-2 medium, 1 GPU",
    ]
    for check, (_, command, result, target, met) in rows.items():
        assert command and target, check
        if check == "nanoGPT's own run":  # only with --nanogpt PATH
            assert met == "skipped" and "--nanogpt" in result
            continue
        assert met in ("yes", "no"), f"{check}: met? is {met!r}"
        assert "n/a" not in result and "failed" not in result.replace("0 failed", ""), f"{check}: {result}"
        assert re.search(r"\d", result), f"{check}: {result}"

    # on the CPU the GPU tests skip themselves, and none fails
    assert re.fullmatch(r"0 passed, 0 failed, \d+ skipped in \d+ s", rows["GPU tests"][2])
    assert rows["GPU tests"][4] == "yes"
    baby = rows["baby GPT (shakespeare_char)"][2]
    assert re.match(
        r"val ≤ 4.0 at step \d+, [\d.]+ s of training \(\d+ s from launch\); final val [\d.]+", baby
    )
    assert re.search(
        r"[\d,]+ tokens/s over 20 steps.*; MFU [\d.]+% of a nominal", rows["GPT-2 124M throughput"][2]
    )
    fsdp = rows["FSDP, GPT-2 medium, 1 GPU"]
    assert fsdp[2].startswith("completed at step 20") and "last.ckpt" in fsdp[2] and fsdp[4] == "yes"
    # each check's output is kept, every line behind the seconds since its launch
    for name in ("pytest", "shakespeare_char", "gpt2", "fsdp"):
        log = (out / f"{name}.log").read_text().splitlines()
        assert log[0].startswith("$ ") and re.match(r" *\d+\.\d\d  ", log[1]), name
