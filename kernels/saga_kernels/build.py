"""Build the native kernels in place: ``python -m saga_kernels.build [--force] [--check]``.

Compiles ``_keyheap.c`` against this interpreter's headers into ``_keyheap<EXT_SUFFIX>`` next to it,
with the first C compiler found: ``$CC``, ``cc``, ``gcc``, ``clang``, then the ``ziglang`` PyPI
wheel (``python -m ziglang cc``) if it is installed. No downloads. When no compiler or no
``Python.h`` is available it says so and exits 0: saga_kernels then uses its pure-Python twin,
which gives identical decisions (only slower). ``--check`` exits 1 unless the native build imports.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "_keyheap.c",)
TARGET = HERE / f"_keyheap{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def find_compiler() -> list[str] | None:
    """The command of the first usable C compiler, or None."""
    env = os.environ.get("CC")
    candidates = [shlex.split(env)] if env else []
    candidates += [["cc"], ["gcc"], ["clang"]]
    for cmd in candidates:
        if cmd and shutil.which(cmd[0]):
            return cmd
    if importlib.util.find_spec("ziglang") is not None:
        return [sys.executable, "-m", "ziglang", "cc"]
    return None


def up_to_date() -> bool:
    return TARGET.exists() and all(TARGET.stat().st_mtime >= s.stat().st_mtime for s in SOURCES)


def build(force: bool = False) -> bool:
    """Build the extension; True if a native build is in place afterwards."""
    if not force and up_to_date():
        print(f"saga_kernels: native build up to date ({TARGET.name})")
        return True
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        print(f"saga_kernels: no Python.h under {include}; using the pure-Python fallback")
        return False
    cc = find_compiler()
    if cc is None:
        print("saga_kernels: no C compiler (CC, cc, gcc, clang, ziglang); using the pure-Python fallback")
        return False
    tmp = TARGET.with_suffix(".tmp")
    cmd = [*cc, "-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Werror=implicit-function-declaration",
           f"-I{include}", *map(str, SOURCES), "-o", str(tmp), "-lm"]  # fmt: skip
    print("saga_kernels: " + " ".join(shlex.quote(c) for c in cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        print(f"saga_kernels: compile failed ({done.stderr.strip()[-2000:]}); using the pure-Python fallback")
        return False
    tmp.replace(TARGET)
    print(f"saga_kernels: built {TARGET}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the native build imports afterwards")
    args = ap.parse_args(argv)
    ok = build(force=args.force)
    if args.check:
        probe = subprocess.run([sys.executable, "-c", "import saga_kernels._keyheap"], cwd=HERE.parent)
        if not ok or probe.returncode != 0:
            print("saga_kernels: the native build does not import", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
