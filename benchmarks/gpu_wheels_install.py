#!/usr/bin/env python3
"""Install, offline, the wheels of benchmarks/gpu_wheels.sh that this Python lacks or has in another version.

    python benchmarks/gpu_wheels_install.py --wheels .staging/wheels --target /tmp/tunewise-gpu-site

Into --target with pip's --no-index --find-links --no-deps (the folder must be on PYTHONPATH, ahead of
site-packages, which benchmarks/gpu.sh arranges): torch and everything else stay the machine's own. dashscope is
never installed (its wheel only carries the tokenizer's ranks for qwen_shape.py). Prints the versions before and
after; exit 1 when an install failed (the benchmark still runs: the rows that need it record the error).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

NOT_INSTALLED = {"dashscope"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheels(folder: Path) -> dict[str, str]:
    """{distribution: version} of the folder's wheels (name-version-...whl)."""
    found = {}
    for wheel in sorted(folder.glob("*.whl")):
        name, ver = wheel.name.split("-")[:2]
        found[canonical(name)] = ver
    return found


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheels", required=True)
    p.add_argument("--target", required=True)
    a = p.parse_args(argv)
    folder = Path(a.wheels)
    if not folder.is_dir():
        print(f"gpu_wheels_install: no folder {folder}; make it with `bash benchmarks/gpu_wheels.sh {folder}`",
              file=sys.stderr)
        return 1
    wanted = {n: v for n, v in wheels(folder).items() if n not in NOT_INSTALLED}
    todo = {n: v for n, v in wanted.items() if installed(n) != v}
    for name, ver in wanted.items():
        print(f"  {name:<16} here {installed(name) or '-':<12} wheel {ver}" + ("  -> install" if name in todo else ""))
    if not todo:
        return 0
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--upgrade", "--target", a.target, "--find-links", str(folder)]
    if subprocess.run(base + [f"{n}=={v}" for n, v in todo.items()]).returncode == 0:
        return 0
    failed = [n for n, v in todo.items() if subprocess.run(base + [f"{n}=={v}"]).returncode != 0]
    print(f"gpu_wheels_install: could not install {', '.join(failed)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
