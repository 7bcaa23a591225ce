# dbkit (the template's): `copier update` brings each release's changes here.
"""The imports of 0.1.x, `<package>.db` and the like, kept working until 0.3.0.

0.2.0 moved the template's modules from the package root into dbkit/. An import of a moved
module by its old name gets the module from dbkit/, with a DeprecationWarning naming the new
import. A module of your own by that name, in the package root, is found first, untouched.
"""

import sys

# every command imports this first: what it needs beyond sys is imported when it is used
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# every module 0.1.x had in the package root that is in dbkit/ now
MOVED = frozenset(
    [
        "bulk",
        "bundle",
        "checksums",
        "cli",
        "config",
        "data_loss",
        "db",
        "db_evidence",
        "db_migrate",
        "db_verify",
        "errors",
        "evidence",
        "migrate",
        "program",
        "read_later",
        "schema",
        "schema_diff",
        "two_paths",
        "verify",
        "write_once",
    ]
)


class _OldNames:
    """A finder and loader (importlib's protocols) for the old names."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.specs: dict[str, ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None", target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        package, _, name = fullname.rpartition(".")
        if package != self.package or name not in MOVED:
            return None
        from importlib.machinery import ModuleSpec

        loader: Loader = self  # type: ignore[assignment]  # a loader by protocol, not by class
        return ModuleSpec(fullname, loader)

    def create_module(self, spec: "ModuleSpec") -> "ModuleType":
        import warnings

        new = f"{self.package}.dbkit.{spec.name.rpartition('.')[2]}"
        warnings.warn(
            f"{spec.name} moved to {new} in 0.2.0; import what your code calls from "
            f"{self.package}.dbkit (from {self.package}.dbkit import open_database); "
            f"{spec.name} stops working in 0.3.0",
            DeprecationWarning,
            stacklevel=2,
        )
        __import__(new)
        module = sys.modules[new]
        self.specs[new] = module.__spec__
        return module

    def exec_module(self, module: "ModuleType") -> None:
        # dbkit's module, run already; the import system gave it the old name's spec
        module.__spec__ = self.specs.pop(module.__name__)


def keep_old_imports_working(package: str) -> None:
    """Let `import <package>.db` (0.1.x) find <package>.dbkit.db, warning, until 0.3.0."""
    if not any(isinstance(finder, _OldNames) for finder in sys.meta_path):
        sys.meta_path.append(_OldNames(package))
