"""Write docs/bad-inputs.md: every case of tests/bad_input_cases.py with the message distill gives for it.

Run: .venv/bin/python scripts/bad_inputs_doc.py   (runs each case, like the test does)
"""

import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_input_cases import CASES, fill  # noqa: E402


def main() -> None:
    import test_bad_inputs as t
    from distill.cli import main as cli

    rows = []
    with tempfile.TemporaryDirectory() as d:
        factory = type("F", (), {"mktemp": lambda self, name: Path(tempfile.mkdtemp(dir=d))})()
        fx = t.fixtures.__wrapped__(factory)
        for case, what, argv, _ in CASES:
            tmp = Path(tempfile.mkdtemp(dir=d))
            t.write_recipes(tmp)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli([fill(a, {"tmp": tmp, **fx}) for a in argv])
            msg = err.getvalue().strip().splitlines()[-1].replace(d, "…").replace("|", "\\|")
            rows.append(f"| `{case}` | {what} | {code} | {msg} |")
    head = [
        "# Bad inputs and what distill says",
        "",
        "Each row is tested in `tests/test_bad_inputs.py`: exit status 2, exactly one line on stderr, no traceback",
        "(add `--debug` for one), no run directory created and no existing file changed. Paths are shortened to `…`.",
        "",
        "| case | what is wrong | exit | message |",
        "|---|---|---|---|",
    ]
    doc = ROOT / "docs/bad-inputs.md"
    old = doc.read_text() if doc.exists() else ""
    kept = old[old.index("\n## ") :] if "\n## " in old else ""  # the hand-written sections after the table
    doc.write_text("\n".join(head + rows) + "\n" + kept)
    print(f"wrote docs/bad-inputs.md ({len(rows)} cases)")


if __name__ == "__main__":
    main()
