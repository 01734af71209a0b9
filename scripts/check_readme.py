"""Run the command blocks of the READMEs as written, in order, in one new shell; flag errors and noise.

    python3 scripts/check_readme.py              # after the quick start (bash scripts/quickstart.sh)
    python3 scripts/check_readme.py --list       # show the blocks and what would run
    python3 scripts/check_readme.py --with long  # also the blocks marked long (the benchmark suite)

Every ```bash block of README.md, deploy/README.md and test_tipc/README.md is runnable as
written. A block preceded by ``<!-- readme-check: TAG (why) -->`` is skipped unless
``--with TAG``: ``setup`` (the two set-up commands: run them first), ``long`` (an hour),
``gpu`` (needs CUDA and Paddle's package index). Synopses with placeholders are ```text
blocks and never run.

The blocks run in a fresh ``bash -e`` from the clone's root with the environment of a new
login shell (no virtualenv active), so ``source .venv/bin/activate`` in the first block
matters. The run fails on the first command that fails, and on any output line -- the
shell's and the TIPC step logs written during the run -- that is a traceback or a
third-party warning (:data:`NOISE`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READMES = ("README.md", "deploy/README.md", "test_tipc/README.md")
MARKER = re.compile(r"^<!--\s*readme-check:\s*(\w+)\b.*-->\s*$")
#: Lines that must not appear: tracebacks, Python warnings from installed packages, glog
#: warnings/errors, and the Paddle messages this toolkit silences (utils/quiet.py).
NOISE = re.compile("|".join((
    r"Traceback \(most recent call last\)",
    r"site-packages/\S+:\d+: \w*Warning:",
    r"^[WEF]\d{4} \d\d:\d\d:\d\d",
    r"using custom operator only",
    r"No ccache found",
    r"not support input out tensor",
    r"To copy construct from a tensor",
)))


class Block(NamedTuple):
    path: str  # README, relative to the root
    line: int  # line of the opening fence
    tag: Optional[str]  # readme-check tag, or None (always runs)
    text: str


def extract_blocks(path: str, root: str = ROOT) -> List[Block]:
    """The ```bash blocks of ``path`` with the readme-check tag written above each."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i, last = [], 0, ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang, start, body = line[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{path}:{start}: code block is not closed")
            if lang == "bash":
                m = MARKER.match(last)
                blocks.append(Block(path, start, m.group(1) if m else None, "\n".join(body)))
            last = ""
        elif line.strip():
            last = line.strip()
        i += 1
    return blocks


def all_blocks(root: str = ROOT) -> List[Block]:
    return [b for p in READMES for b in extract_blocks(p, root)]


def new_shell_env() -> dict:
    """The environment of a new shell: no virtualenv on PATH, no project variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "OPENCV_LOG_LEVEL", "PYTHONHOME")
           and not k.startswith(("PADDLESEG_EXT_", "PYTEST_"))}
    venvs = {os.path.join(ROOT, ".venv", "bin"), os.path.join(ROOT, ".venv-bench", "bin")}
    if os.environ.get("VIRTUAL_ENV"):
        venvs.add(os.path.join(os.environ["VIRTUAL_ENV"], "bin"))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if os.path.normpath(p) not in {os.path.normpath(v) for v in venvs})
    return env


def shell_script(blocks: Sequence[Block]) -> str:
    parts = ["set -eo pipefail", "trap 'echo \"@@ FAILED: $BASH_COMMAND\" >&2' ERR"]
    for b in blocks:
        parts.append(f"echo '@@ {b.path}:{b.line}'")
        parts.append(b.text)
    return "\n".join(parts) + "\necho '@@ all blocks done'\n"


def noise_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--with", dest="tags", nargs="+", default=[], help="also run blocks with these tags")
    p.add_argument("--list", action="store_true", help="print the blocks and exit")
    p.add_argument("--log", default=os.path.join(ROOT, "output", "check_readme.log"))
    args = p.parse_args(argv)
    blocks = all_blocks()
    run = [b for b in blocks if b.tag is None or b.tag in args.tags]
    if args.list:
        for b in blocks:
            state = "run " if b in run else f"skip ({b.tag})"
            print(f"--- {b.path}:{b.line} {state}\n{b.text}")
        return 0
    if not os.path.isdir(os.path.join(ROOT, "output", "quickstart", "best_model")) and "setup" not in args.tags:
        print("error: output/quickstart/best_model is missing: run bash scripts/quickstart.sh first "
              "(the README's commands use its model and data)", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    start = time.time()
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(shell_script(run))
    print(f"[check_readme] running {len(run)} of {len(blocks)} block(s) in a new shell; log: {args.log}")
    with open(args.log, "w") as log:
        proc = subprocess.run(["bash", f.name], cwd=ROOT, env=new_shell_env(), stdout=log,
                              stderr=subprocess.STDOUT, text=True)
    os.unlink(f.name)
    with open(args.log) as log:
        out = log.read()
    problems = [f"{args.log}: {line}" for line in noise_lines(out)]
    tipc = os.path.join(ROOT, "test_tipc", "output")
    for dirpath, _, files in os.walk(tipc):
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".log") and os.path.getmtime(path) >= start:
                with open(path, errors="replace") as fh:
                    problems += [f"{path}: {line}" for line in noise_lines(fh.read())]
    done = [line[3:] for line in out.splitlines() if line.startswith("@@ ")]
    if proc.returncode != 0:
        print(f"[check_readme] FAILED in block {done[-2] if len(done) > 1 else '?'}: {done[-1]}", file=sys.stderr)
    for line in problems[:40]:
        print(f"[check_readme] noise: {line}", file=sys.stderr)
    ok = proc.returncode == 0 and not problems
    print(f"[check_readme] {'OK' if ok else 'FAILED'}: {len(run)} block(s), {time.time() - start:.0f} s, "
          f"{len(problems)} noise line(s), exit {proc.returncode}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
