"""The floor for large reads on PostgreSQL: psycopg alone, streaming the rows in chunks.

As read-later does: a plain fetch of 1M rows is slower, and holds them all in memory.
"""

import sys
from itertools import islice

import psycopg

write = sys.stdout.write
separator = ""
write("[")
with psycopg.connect(sys.argv[1]) as connection:
    rows = connection.cursor().stream("SELECT name FROM markers ORDER BY id", size=10_000)
    while chunk := list(islice(rows, 10_000)):
        write(separator + ", ".join([repr(name) for (name,) in chunk]))
        separator = ", "
write("]\n")
