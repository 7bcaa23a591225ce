# dbkit (the template's): `copier update` brings each release's changes here.
"""What makes the database behave as the models expect, beyond the shape schema_diff.py compares.

A database can match the models table for table and column for column and still accept rows
the models forbid, lose the rows they write, or refuse them. verify.py's behaviour check
compares, for the models' tables:

- CHECK constraints of the same name: their conditions, each backend's text normalised the
  same way on both sides (PostgreSQL deparses the models' condition and the stored one through
  one EXPLAIN; SQLite's stored CREATE TABLE text and the models' SQL lose case, quotes and
  spaces);
- the autoincrement key: PostgreSQL's column still draws from a sequence (a nextval default
  or an identity) whose next value is past the column's largest; SQLite's is still the rowid
  (declared INTEGER, the table's only key column);
- column collations;
- triggers and rules: each must be one a migration script creates (its name follows CREATE
  TRIGGER or CREATE RULE in a revision's source); any other is named.

The catalog is read once for every table: one query on PostgreSQL (then, in one more round
trip, one EXPLAIN for all CHECK conditions and one read of the keys' largest values and their
sequences), sqlite_master once on SQLite. What this does not see: a trigger a migration
created whose body was replaced by hand under the same name, and a function such a trigger
calls.
"""

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Column, Connection, Table

from ..models.base import Base  # models/__init__.py, run first, imports every model
from .db import driver_connection, driver_errors

# a trigger or rule a revision's source creates: the name after CREATE ... TRIGGER or RULE
CREATED = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?(?:TEMP(?:ORARY)?\s+)?"
    r"(?:TRIGGER|RULE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:[\w$]+\.|\"[^\"]+\"\.)?"
    r"(\"[^\"]+\"|[\w$]+)",
    re.IGNORECASE,
)


def check_behaviour(connection: Connection, script: ScriptDirectory) -> tuple[bool, str]:
    """verify.py's behaviour check: its verdict and why, in one line."""
    scripts = [Path(revision.path) for revision in script.walk_revisions()]
    differences, unread = behaviour_differences(connection, scripts)
    if differences:
        return False, f"{len(differences)} difference(s): {'; '.join(differences)}"
    passed = "CHECK conditions, key numbering, collations and triggers as the models say"
    if unread:  # a role that may not read a sequence: said, not taken for a failure
        passed += f"; not read (no SELECT privilege): {', '.join(unread)}"
    return True, passed


def behaviour_differences(
    connection: Connection, scripts: Iterable[Path]
) -> tuple[list[str], list[str]]:
    """How the database would behave otherwise than the models declare, in words ([] if
    none), and the sequences it could not read.

    scripts: the migration scripts' files, whose source names the triggers and rules that
    migrations create.
    """
    created = migration_created(scripts)
    tables = {table.name: table for table in Base.metadata.tables.values()}
    if connection.dialect.name == "sqlite":
        return _sqlite(connection, tables, created), []
    return _postgresql(connection, tables, created)


def migration_created(scripts: Iterable[Path]) -> set[str]:
    """The names of the triggers and rules the scripts' source creates, in lower case."""
    names = set()
    for script in scripts:
        for match in CREATED.finditer(script.read_text(encoding="utf-8")):
            names.add(match[1].strip('"').lower())
    return names


def _model_checks(table: Table) -> dict[str, CheckConstraint]:
    return {
        str(constraint.name): constraint
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint) and isinstance(constraint.name, str)
    }


def _condition(constraint: CheckConstraint, connection: Connection) -> str:
    """A CHECK constraint's condition as the models would create it on this backend."""
    compiled = constraint.sqltext.compile(
        dialect=connection.dialect, compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def _collation(column: Column[Any]) -> str | None:
    collation = getattr(column.type, "collation", None)
    return str(collation) if collation else None


def _unexpected(kind: str, table: str, names: Iterable[str], created: set[str]) -> list[str]:
    return [
        f"{kind} {name} on {table}: in the database, and no migration script creates it"
        for name in sorted(names)
        if name.lower() not in created
    ]


# SQLite


def _sqlite(connection: Connection, tables: dict[str, Table], created: set[str]) -> list[str]:
    # one statement: every table's and trigger's stored SQL, each table's columns beside it
    rows = connection.exec_driver_sql(
        "SELECT m.type, m.name, m.tbl_name, m.sql, c.name, c.type, c.pk "
        "FROM sqlite_master m LEFT JOIN pragma_table_info(m.name) c ON m.type = 'table' "
        "WHERE m.type IN ('table', 'trigger') ORDER BY m.name, c.cid"
    ).all()
    sql: dict[str, str] = {}
    keys: dict[str, list[tuple[str, str]]] = {}
    triggers: dict[str, list[str]] = {}
    for kind, name, table, text, column, type_, pk in rows:
        if kind == "trigger":
            triggers.setdefault(table, []).append(name)
        elif table in tables:
            sql[table] = text or ""
            if pk:
                keys.setdefault(table, []).append((column, str(type_).upper()))
    said = []
    for name, table in sorted(tables.items()):
        if name not in sql:
            continue  # a missing table: the schema check names it
        checks, collations = _sqlite_parts(sql[name])
        for check_name, constraint in sorted(_model_checks(table).items()):
            stored = checks.get(check_name.lower())
            wanted = _condition(constraint, connection)
            if stored is not None and _plain(stored) != _plain(wanted):
                said.append(_check_differs(check_name, name, stored, wanted))
        said += _collation_differences(name, table, collations, "binary")
        key, primary = table.autoincrement_column, keys.get(name, [])
        rowid = "WITHOUT ROWID" not in re.sub(r"\s+", " ", sql[name].upper())
        if key is not None and not (
            rowid and len(primary) == 1 and primary[0] == (key.name, "INTEGER")
        ):
            said.append(
                f"{name}.{key.name}: not the rowid (declared INTEGER, the only key column), so "
                "SQLite does not number new rows; an insert without it fails"
            )
        said += _unexpected("trigger", name, triggers.get(name, []), created)
    return said


def _sqlite_parts(create: str) -> tuple[dict[str, str], dict[str, str]]:
    """A CREATE TABLE's named CHECK conditions and its columns' collations, keys lower case."""
    checks: dict[str, str] = {}
    collations: dict[str, str] = {}
    body = create[create.find("(") + 1 : create.rfind(")")]
    for element in _split(body, ","):
        words = element.split()
        if not words:
            continue
        for match in re.finditer(r"(?:\bCONSTRAINT\s+(\S+)\s+)?\bCHECK\s*\(", element, re.I):
            if match[1]:
                checks[_unquoted(match[1]).lower()] = _balanced(element, match.end() - 1)
        first = words[0].upper()
        if first not in ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"):
            # outside the CHECK conditions, which may say COLLATE too
            outside = re.sub(r"\bCHECK\s*\(.*", "", element, flags=re.I | re.S)
            if found := re.search(r"\bCOLLATE\s+(\S+)", outside, re.I):
                collations[_unquoted(words[0]).lower()] = _unquoted(found[1])
    return checks, collations


def _split(text: str, separator: str) -> Iterator[str]:
    """text's parts between separators outside parentheses and quotes."""
    depth, quote, start = 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char == separator and depth == 0:
            yield text[start:index].strip()
            start = index + 1
        elif char in "'\"`[":
            quote = "]" if char == "[" else char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
    yield text[start:].strip()


def _balanced(text: str, opening: int) -> str:
    """What the parenthesis at opening encloses."""
    return next(_split(text[opening + 1 :], ")"))  # up to the first ) of its own depth


def _unquoted(name: str) -> str:
    return name.strip('"`[]')


def _plain(condition: str) -> str:
    """A condition without case, quotes around names, spaces or outer parentheses outside its
    string literals: two writings of it compare equal."""
    parts = re.split(r"('(?:[^']|'')*')", condition)
    text = "".join(
        part if part.startswith("'") else re.sub(r"[\s\"`\[\]]", "", part.lower()) for part in parts
    )
    while text.startswith("(") and text.endswith(")") and _balanced(text, 0) == text[1:-1]:
        text = text[1:-1]
    return text


def _check_differs(name: str, table: str, stored: str, wanted: str) -> str:
    return f"check constraint {name} on {table}: {stored} in the database, {wanted} in the models"


def _collation_differences(
    name: str, table: Table, found: dict[str, str], default: str
) -> list[str]:
    said = []
    for column in table.columns:
        wanted = _collation(column) or default
        there = found.get(column.name.lower(), default)
        if there.lower() != wanted.lower():
            said.append(
                f"{name}.{column.name}: collation {there} in the database, {wanted} in the models"
            )
    return said


# PostgreSQL

# every fact of the models' tables in one statement: that the table is there, its CHECK
# conditions, collations other than the type's, triggers (but the database's own, for foreign
# keys), rules (but a view's), and its autoincrement key's default, identity and sequence
CATALOG = """
WITH t AS (
  SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY (current_schemas(false))
    AND c.relname = ANY (%(tables)s)
)
SELECT 'table', t.relname, NULL, NULL, NULL, NULL, NULL::bigint FROM t
UNION ALL
SELECT 'check', t.relname, k.conname, pg_get_expr(k.conbin, k.conrelid), NULL, NULL, NULL
FROM t JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'c'
UNION ALL
SELECT 'collation', t.relname, a.attname, l.collname, NULL, NULL, NULL
FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type y ON y.oid = a.atttypid JOIN pg_collation l ON l.oid = a.attcollation
WHERE a.attcollation <> y.typcollation
UNION ALL
SELECT 'trigger', t.relname, g.tgname, NULL, NULL, NULL, NULL
FROM t JOIN pg_trigger g ON g.tgrelid = t.oid AND NOT g.tgisinternal
UNION ALL
SELECT 'rule', t.relname, r.rulename, NULL, NULL, NULL, NULL
FROM t JOIN pg_rewrite r ON r.ev_class = t.oid AND r.rulename <> '_RETURN'
UNION ALL
SELECT 'key', t.relname, a.attname, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
  q.seqrelid::regclass::text,
  -- NULL: a sequence this role may not read
  CASE WHEN has_sequence_privilege(q.seqrelid, 'SELECT') THEN q.seqincrement END
FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = ANY (%(keys)s)
LEFT JOIN pg_attrdef d ON d.adrelid = t.oid AND d.adnum = a.attnum
LEFT JOIN pg_sequence q ON q.seqrelid = COALESCE(
  -- a nextval() default's sequence, or an identity's
  (SELECT p.refobjid FROM pg_depend p WHERE p.classid = 'pg_attrdef'::regclass
   AND p.objid = d.oid AND p.refclassid = 'pg_class'::regclass AND p.deptype = 'n' LIMIT 1),
  (SELECT p.objid FROM pg_depend p WHERE p.classid = 'pg_class'::regclass
   AND p.refobjid = t.oid AND p.refobjsubid = a.attnum AND p.deptype = 'i' LIMIT 1))
ORDER BY 1, 2, 3
"""

# an autoincrement key's default (its SQL), identity ('a', 'd' or ''), sequence and increment
# (None: the sequence is not readable)
Key = tuple[str | None, str, str | None, int | None]


def _postgresql(
    connection: Connection, tables: dict[str, Table], created: set[str]
) -> tuple[list[str], list[str]]:
    keys = {name: table.autoincrement_column for name, table in tables.items()}
    key_names = sorted({key.name for key in keys.values() if key is not None})
    rows = connection.exec_driver_sql(CATALOG, {"tables": sorted(tables), "keys": key_names})
    present: set[str] = set()
    checks: dict[tuple[str, str], str] = {}
    collations: dict[str, dict[str, str]] = {}
    found_keys: dict[str, Key] = {}
    said = []
    for kind, table, name, text, identity, sequence, increment in rows:
        if kind == "table":
            present.add(table)
        elif kind == "check":
            checks[table, name] = text
        elif kind == "collation":
            collations.setdefault(table, {})[name.lower()] = str(text)
        elif kind in ("trigger", "rule"):
            said += _unexpected(kind, table, [name], created)
        elif (key := keys.get(table)) is not None and key.name == name:
            found_keys[table] = (text, identity, sequence, increment)
    pairs, explain = _postgresql_checks(connection, tables, checks)
    unnumbered, unread, reads = _postgresql_keys(connection, keys, found_keys)
    # the two depend only on the catalog's answer: sent together, one round trip
    plan, largest = _pipelined(connection, explain, reads)
    said += _checks_differ(pairs, [line for (line,) in plan])
    for name in sorted(present):
        said += _collation_differences(name, tables[name], collations.get(name, {}), "default")
    return said + unnumbered + _keys_collide(keys, largest), unread


def _pipelined(connection: Connection, *statements: str | None) -> list[list[Any]]:
    """Each statement's rows ([] for None, which is not sent), the statements sent in one
    round trip (psycopg's pipeline) in the connection's transaction."""
    driver = driver_connection(connection)
    cursors = {index: driver.cursor() for index, sql in enumerate(statements) if sql}
    if cursors:
        sent = "; ".join(sql for sql in statements if sql)
        with driver_errors(connection, sent), driver.pipeline():
            for index, cursor in cursors.items():
                # with parameters, as SQLAlchemy executes a statement: the models' conditions
                # are compiled for it, a % written as %%
                cursor.execute(statements[index], {})
    return [
        cursors[index].fetchall() if index in cursors else [] for index in range(len(statements))
    ]


# a CHECK constraint's table, name, condition as the models would create it, and as stored
Pair = tuple[str, str, str, str]


def _postgresql_checks(
    connection: Connection, tables: dict[str, Table], stored: dict[tuple[str, str], str]
) -> tuple[list[Pair], str | None]:
    """The CHECK constraints of the same name in the models and the database, and the statement
    that has PostgreSQL deparse both conditions of each (None: none to compare).

    One EXPLAIN VERBOSE of a SELECT per table, joined by UNION ALL, holding the models'
    condition and the stored one side by side: the planner writes both the same way (casts,
    BETWEEN spelt out, IN as = ANY), and nothing is run.
    """
    pairs: list[Pair] = []
    for (table, name), text in sorted(stored.items()):
        declared = _model_checks(tables[table]).get(name)
        if declared is not None:
            pairs.append((table, name, _condition(declared, connection), text))
    if not pairs:
        return [], None
    width = max(sum(1 for pair in pairs if pair[0] == table) for table, *_ in pairs) * 2
    quote = connection.dialect.identifier_preparer.quote
    selects = []
    for table in sorted({pair[0] for pair in pairs}):
        conditions = [f"({c})" for t, _n, m, s in pairs if t == table for c in (m, s)]
        conditions += ["NULL::boolean"] * (width - len(conditions))
        selects.append(f"SELECT '{table}'::text, {', '.join(conditions)} FROM {quote(table)}")
    return pairs, "EXPLAIN (VERBOSE, COSTS OFF) " + " UNION ALL ".join(selects)


def _checks_differ(pairs: list[Pair], plan: list[str]) -> list[str]:
    """The CHECK conditions of the same name that differ once PostgreSQL has deparsed both
    (plan: the EXPLAIN's lines)."""
    deparsed: dict[str, list[str]] = {}
    tags = {f"Output: '{table}'::text, ": table for table, *_ in pairs}
    for line in plan:
        for tag, table in tags.items():
            if line.strip().startswith(tag):  # a scan of that table's SELECT
                deparsed[table] = list(_split(line.strip().removeprefix(tag), ","))
    said = []
    for table in sorted({pair[0] for pair in pairs}):
        if table not in deparsed:  # a plan of another shape: say so rather than pass
            said.append(f"check constraints on {table}: not compared, EXPLAIN did not show them")
            continue
        written = iter(deparsed[table])
        for _table, name, model, text in (pair for pair in pairs if pair[0] == table):
            if next(written, None) != next(written, None):
                said.append(_check_differs(name, table, text, model))
    return said


def _postgresql_keys(
    connection: Connection, keys: dict[str, Column[Any] | None], found: dict[str, Key]
) -> tuple[list[str], list[str], str | None]:
    """The autoincrement keys that draw from no sequence, in words; the sequences this role
    may not read; and the statement that reads, for every other, its sequence's state beside
    the key's largest value (None: no such key)."""
    said, unread = [], []
    reads = []
    quote = connection.dialect.identifier_preparer.quote
    for name, key in sorted(keys.items()):
        if key is None or name not in found:
            continue
        default, identity, sequence, increment = found[name]
        numbered = identity in ("a", "d") or (default or "").startswith("nextval(")
        if not numbered or sequence is None:
            said.append(
                f"{name}.{key.name}: no default and no identity, so the database does not number "
                "new rows; an insert without it fails"
            )
            continue
        if increment is None:
            unread.append(sequence)
            continue
        reads.append(
            f"SELECT '{name}'::text, (SELECT max({quote(key.name)}) FROM {quote(name)})::bigint, "
            f"s.last_value, s.is_called, {int(increment)} FROM {sequence} s"
        )
    return said, unread, " UNION ALL ".join(reads) if reads else None


def _keys_collide(keys: dict[str, Column[Any] | None], largest: list[Any]) -> list[str]:
    """Each key whose sequence's next value is not past its largest (largest: the rows of
    _postgresql_keys's statement)."""
    said = []
    for name, most, last, called, increment in largest:
        upcoming = last + increment if called else last
        if most is not None and increment > 0 and upcoming <= most:
            column = f"{name}.{keys[name].name}"  # type: ignore[union-attr]
            said.append(
                f"{column}: its sequence's next value is {upcoming}, not past the largest "
                f"{most}; inserts will collide with stored rows"
            )
    return said
