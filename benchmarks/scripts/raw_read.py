"""The floor for large reads: the standard library's sqlite3 and nothing else."""

import sqlite3
import sys

write = sys.stdout.write
separator = ""
write("[")
for (name,) in sqlite3.connect(sys.argv[1]).execute("SELECT name FROM markers ORDER BY id"):
    write(separator + repr(name))
    separator = ", "
write("]\n")
