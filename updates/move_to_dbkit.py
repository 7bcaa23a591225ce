"""0.2.0's update step (copier.yml `_migrations`, after the update): edits follow moved files.

0.2.0 moved the template's modules from src/<package>/ into src/<package>/dbkit/ and its tests
from tests/ into tests/dbkit/. Copier deletes a file that a release moved, edits and all; this
step runs after it, in the project, and for each moved file the user had changed:

- carries the user's changes onto the file at its new place (a three-way merge of the
  release's file with the user's changes since the template's version they started from);
- where both changed the same lines, leaves the file with conflict markers and records the
  conflict in git's index, so that `git status` reports it as unmerged, as Copier does for
  its own conflicts.

tests/conftest.py, the template's fixtures until 0.2.0, becomes the user's conftest.py that
loads the template's plugin: replaced when the user had not changed it, merged otherwise.

It needs only git and Python's standard library. Usage (Copier runs it):
    python3 move_to_dbkit.py TEMPLATE_CLONE PACKAGE SKILLS_DIR
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

LABELS = ("before updating", "last update", "after updating")


def main(template: Path, package: str, skills_dir: str) -> int:
    old_commit = _old_commit()
    if old_commit is None:
        print("move_to_dbkit: no _commit in the last commit's .copier-answers.yml; nothing to do")
        return 0
    try:
        old_files = _git(template, "ls-tree", "-r", "--name-only", old_commit, "--", "template")
    except subprocess.CalledProcessError:
        print(
            f"move_to_dbkit: the template's history has no {old_commit}: files moved in 0.2.0 "
            "that you had edited are not carried over; compare with `git diff HEAD --stat` and "
            "take your edits from `git show HEAD:<path>`",
            file=sys.stderr,
        )
        return 0

    def render(text: str) -> str:
        return text.replace("{{ package_name }}", package).replace("{{ skills_dir }}", skills_dir)

    for source in old_files.splitlines():
        old = render(source.removeprefix("template/").removesuffix(".jinja"))
        new = _new_place(old, package)
        if new is None:
            continue
        users = _show(Path.cwd(), f"HEAD:{old}")
        pristine = _show(template, f"{old_commit}:{source}")
        release: str | None = None
        if new == "tests/conftest.py":
            # an update never writes the user's conftest.py (_skip_if_exists): 0.2.0's is here
            release = render((template / "template/tests/conftest.py.jinja").read_text())
        elif Path(new).exists():
            release = Path(new).read_text(encoding="utf-8")
        if users is None or pristine is None:
            continue  # not the user's, or not the template's then
        if users == render(pristine):
            if new == "tests/conftest.py" and release is not None:
                Path(new).write_text(release, encoding="utf-8")
            continue  # as the template shipped it: the release's file replaces it
        _carry(Path(old), Path(new), render(pristine), users, release)
    return 0


def _new_place(old: str, package: str) -> str | None:
    # where 0.2.0 keeps what stood at old; None for a file that did not move
    root = f"src/{package}/"
    if old.startswith(root) and "/" not in old[len(root) :] and old != f"{root}__init__.py":
        return f"{root}dbkit/{old[len(root) :]}"
    if re.fullmatch(r"tests/(test_\w+|migration_sql)\.py", old):
        return f"tests/dbkit/{old[len('tests/') :]}"
    if old == "tests/conftest.py":
        return old
    return None


def _carry(old: Path, new: Path, pristine: str, users: str, release: str | None) -> None:
    if release is None:
        # the release has no such file any more: keep the user's, where it was
        old.write_text(users, encoding="utf-8")
        print(f"move_to_dbkit: kept your {old} (0.2.0 has no file of its own there)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        files = [Path(scratch, name) for name in ("yours", "base", "release")]
        for path, text in zip(files, (users, pristine, release), strict=True):
            path.write_text(text, encoding="utf-8")
        merged = subprocess.run(
            ["git", "merge-file", "-p", *(f"-L{label}" for label in LABELS), *map(str, files)],
            capture_output=True,
            text=True,
            check=False,
        )
        if not 0 <= merged.returncode < 128:
            raise SystemExit(f"move_to_dbkit: git merge-file failed on {new}: {merged.stderr}")
        new.write_text(merged.stdout, encoding="utf-8")
        if merged.returncode == 0:
            print(f"move_to_dbkit: your changes to {old} are in {new}")
            return
        # unmerged in git's index, as git shows a conflict: 1 the base, 2 yours, 3 the release's
        yours, base, theirs = (_git(Path.cwd(), "hash-object", "-w", str(path)) for path in files)
    entries = f"100644 {base} 1\t{new}\n100644 {yours} 2\t{new}\n100644 {theirs} 3\t{new}\n"
    _git(Path.cwd(), "rm", "--cached", "--quiet", "--ignore-unmatch", "--", str(new))
    subprocess.run(["git", "update-index", "--index-info"], input=entries, text=True, check=True)
    print(f"move_to_dbkit: your changes to {old} conflict with 0.2.0's {new}: resolve them there")


def _old_commit() -> str | None:
    answers = _show(Path.cwd(), "HEAD:.copier-answers.yml") or ""
    found = re.search(r"^_commit:\s*['\"]?([^'\"\s]+)", answers, re.MULTILINE)
    return found[1] if found else None


def _show(repo: Path, spec: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(repo), "show", spec], capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else None


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
