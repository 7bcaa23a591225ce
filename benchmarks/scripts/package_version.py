"""A package's version as the python running this sees it: the rendered project's, not ours."""

import sys
from importlib.metadata import version

print(version(sys.argv[1]))
