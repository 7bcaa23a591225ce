"""A migration blocked behind an open transaction, and readers' waits meanwhile.

A session idle in its transaction after reading markers (it holds ACCESS SHARE), db-migrate
of a revision that adds a column behind it (it needs ACCESS EXCLUSIVE: it waits, gives up,
tries again), and a reader that times `SELECT count(*) FROM markers` until db-migrate exits;
then, the session gone, db-migrate again. Arguments: the database URL, db-migrate's path.
"""

import subprocess
import sys
import time

import psycopg

url, db_migrate = sys.argv[1], sys.argv[2]
blocker = psycopg.connect(url)
blocker.execute("SELECT count(*) FROM markers")
reader = psycopg.connect(url, autocommit=True)
started = time.monotonic()
migration = subprocess.Popen(
    [db_migrate], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
)
waits: list[float] = []
while migration.poll() is None:
    begun = time.monotonic()
    reader.execute("SELECT count(*) FROM markers").fetchone()
    waits.append(time.monotonic() - begun)
    time.sleep(0.005)
gave_up = time.monotonic() - started
error = migration.communicate()[1].strip()
blocker.rollback()
after = subprocess.run([db_migrate], capture_output=True, text=True, check=False)
print(max(waits), len(waits), gave_up, migration.returncode, after.returncode)
print(error)
