"""`snakemake --lint` for CI, less the one lint this workflow answers by design.

The rules carry no `conda:` directive: every job runs in the environment that runs Snakemake
(`make install`, or `conda env create -f envs/dars.yaml`; README "Installation details"), so
Snakemake's "Specify a conda environment or container for each rule" does not apply. Every other
lint fails the check.

    python scripts/lint_workflow.py --configfile config/config.yaml
"""

from __future__ import annotations

import re
import subprocess
import sys

BY_DESIGN = ("Specify a conda environment or container for each rule.",)


def main(argv: list[str]) -> int:
    proc = subprocess.run(["snakemake", "--lint", *argv], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    lints = re.findall(r"^(Lints for .*):\n((?:    .*\n?)+)", text, flags=re.M)
    found = []
    for where, body in lints:
        titles = re.findall(r"^    \* (.*?):?$", body, flags=re.M)
        found += [f"{where}: {t}" for t in titles if t not in BY_DESIGN]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not lints):
        print(text, file=sys.stderr)
        return proc.returncode or 1
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    print(f"snakemake --lint: {len(found)} lint(s) beyond the documented one")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
