"""Install fluid in a fresh virtualenv, as a user would, and use it: ``make install-check``.

Not a pytest module (it takes about a minute and needs the package index):
``.ci/run`` runs it after ``make test``. It checks what a user sees first:

1. ``pip install .`` gives a ``fluid`` command that runs a worker and exits 0;
2. an integration without its extra fails with one sentence naming the extra;
3. ``pip install '.[starlette]'`` makes that integration importable.

Each step prints what it ran; the first failure exits 1 with its output.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGET = textwrap.dedent(
    """
    import fluid

    async def once() -> bool:
        print("the worker ran")
        return False  # done: the worker stops, and the command exits 0

    def build() -> fluid.Worker:
        return fluid.WorkerFunction(once, name="once")
    """
)


def run(*args: str | Path, cwd: Path | None = None, expect: int = 0) -> str:
    print("$", " ".join(str(a) for a in args), flush=True)
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    if result.returncode != expect:
        print(output)
        sys.exit(f"install-check: exit status {result.returncode}, expected {expect}")
    return output


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fluid-install-") as tmp:
        home = Path(tmp)
        venv.create(home / "venv", with_pip=True)
        bin_dir = home / "venv" / "bin"
        python = bin_dir / "python"
        run(python, "-m", "pip", "install", "--quiet", str(ROOT))

        (home / "job.py").write_text(TARGET)
        output = run(bin_dir / "fluid", "run", "job:build", cwd=home)
        assert "the worker ran" in output, output

        output = run(python, "-c", "import fluid.integrations.starlette", cwd=home, expect=1)
        last = output.strip().splitlines()[-1]
        assert "pip install 'fluid-workers[starlette]'" in last, output

        run(python, "-m", "pip", "install", "--quiet", f"{ROOT}[starlette]")
        run(python, "-c", "import fluid.integrations.starlette", cwd=home)
    print("install-check: passed")


if __name__ == "__main__":
    main()
