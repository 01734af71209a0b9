"""Write a generated block (a results table) into a Markdown file between marker comments.

    python scripts/readme_table.py README.md learning_check table.md --command "bash scripts/learning_check.sh"

replaces everything between ``<!-- BEGIN learning_check -->`` and ``<!-- END learning_check -->``
with the contents of ``table.md`` followed by one line naming the command, the commit and
the date, so a figure in the README is always one a script wrote on the code it names.
Missing or repeated markers are an error (exit 2) and leave the file unchanged.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from typing import Optional, Sequence


def markers(name: str) -> tuple:
    """The begin and end marker comments of block ``name``."""
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between block ``name``'s markers replaced by ``body``.

    Raises:
        ValueError: a marker is missing, repeated, or the end comes before the begin.
    """
    begin, end = markers(name)
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"expected one '{begin}' line followed by one '{end}' line; found "
                         f"{len(starts)} begin and {len(ends)} end marker(s)")
    body = body.rstrip("\n") + "\n"
    return "".join(lines[:starts[0] + 1]) + body + "".join(lines[ends[0]:])


def _commit(root: str) -> str:
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Write a generated block between marker comments")
    p.add_argument("markdown", help="the file to update (e.g. README.md)")
    p.add_argument("name", help="block name: the markers are <!-- BEGIN name --> / <!-- END name -->")
    p.add_argument("body", help="file holding the block's new contents")
    p.add_argument("--command", required=True, help="the command that produced the block (printed under it)")
    p.add_argument("--commit", help="the commit the figures were made on (default: the current HEAD)")
    args = p.parse_args(argv)
    try:
        with open(args.markdown, encoding="utf-8") as f:
            text = f.read()
        with open(args.body, encoding="utf-8") as f:
            body = f.read()
        stamp = (f"\nWritten by `{args.command}` on commit "
                 f"{args.commit or _commit(os.path.dirname(os.path.abspath(args.markdown)))}"
                 f", {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.\n")
        new = replace_block(text, args.name, body.rstrip("\n") + "\n" + stamp)
    except (OSError, ValueError) as e:
        print(f"error: {args.markdown}: {e}", file=sys.stderr)
        return 2
    with open(args.markdown, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"[readme_table] wrote block '{args.name}' into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
