"""Prints the command half of a README set-up line, so CI runs what the README says.

    python .ci/readme_command.py README.md --after "Run the tests" --install '.[all,test]'

finds the first ```bash block after the line containing the --after text; that block must be
the one line ``pip install "<install>" && <command>`` with exactly the --install target (CI
installs the same extras from the wheel instead of the checkout); prints <command>.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("--after", required=True)
    parser.add_argument("--install", required=True)
    args = parser.parse_args()
    text = args.readme.read_text()
    at = text.find(args.after)
    if at < 0:
        sys.exit(f"readme_command: {args.readme} has no line containing {args.after!r}")
    block = re.search(r"```bash\n(.*?)```", text[at:], flags=re.S)
    if block is None:
        sys.exit(f"readme_command: no bash block after {args.after!r}")
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    install, sep, command = lines[0].partition(" && ") if len(lines) == 1 else ("", "", "")
    words = shlex.split(install)
    if not sep or words != ["pip", "install", args.install]:
        sys.exit(
            f'readme_command: expected one line `pip install "{args.install}" && ...` after '
            f"{args.after!r}, found: {block.group(1)!r}"
        )
    print(command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
