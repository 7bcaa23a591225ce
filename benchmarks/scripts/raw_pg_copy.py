"""psycopg's COPY from Python with nothing else: no checks, one row per line of stdin."""

import sys

import psycopg

with (
    psycopg.connect(sys.argv[1]) as connection,
    connection.cursor() as cursor,
    cursor.copy("COPY markers (name) FROM STDIN") as copy,
):
    for line in sys.stdin:
        copy.write_row((line.rstrip("\r\n"),))
