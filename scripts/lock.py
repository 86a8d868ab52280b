"""Write the constraints file of `make lock` from pip's installation report.

`make lock` asks pip to resolve the torch pair and the project with its extras as on a fresh
machine (``pip install --dry-run --ignore-installed --report``); this turns the report into one
``name==version`` line per package, the project itself left out. `make install` installs with
``-c`` on that file, so every machine of one architecture gets the versions the suite ran on.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def main() -> None:
    report, out = Path(sys.argv[1]), Path(sys.argv[2])
    pins = sorted(
        f"{item['metadata']['name'].lower()}=={item['metadata']['version']}"
        for item in json.loads(report.read_text())["install"]
        if item["metadata"]["name"].lower() != "dars-pipeline"
    )
    header = (f"# `make lock` on {platform.machine()}, Python {platform.python_version()}: the "
              "versions `make install` installs (pip -c). Regenerate with `make lock`.\n")
    out.write_text(header + "\n".join(pins) + "\n")


if __name__ == "__main__":
    main()
