"""The floor for large writes: the standard library's sqlite3 and nothing else."""

import sqlite3
import sys

connection = sqlite3.connect(sys.argv[1])
with connection:  # one transaction: committed at the end, rolled back on error
    connection.executemany(
        "INSERT INTO markers (name) VALUES (?)", ((line.rstrip("\r\n"),) for line in sys.stdin)
    )
connection.close()
