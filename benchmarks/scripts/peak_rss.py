"""Run argv[2:] and write its peak resident memory (KiB) and exit code to the file argv[1].

ru_maxrss of children is a maximum over every child ever waited for, and a child starts
from its parent's footprint; so each measurement gets its own small wrapper process.
"""

import resource
import subprocess
import sys

code = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as report:
    report.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {code}\n")
