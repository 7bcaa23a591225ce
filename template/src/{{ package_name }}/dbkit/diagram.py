# dbkit (the template's): `copier update` brings each release's changes here.
"""The schema as a Mermaid erDiagram, drawn from what the database reports (evidence.md's).

README.md's diagram is drawn from the models, by paracelsus, a dev tool; this one is drawn
from schema_snapshot() (evidence.py), the schema reflected from the database that db-evidence
verified, so it shows what the database holds even where the models say otherwise. It needs
no dev tool, so that an installed copy's db-evidence draws it too.
"""

import re
from typing import Any

# what Mermaid takes as a name or a type in an erDiagram, unquoted
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-()\[\]]*")


def er_diagram(snapshot: dict[str, Any]) -> str:
    """erDiagram of every table: columns with types and keys, a line for each foreign key."""
    tables: dict[str, Any] = snapshot["tables"]
    lines = ["erDiagram"]
    for name, table in tables.items():
        primary = set(table["primary_key"]["columns"])
        foreign = {column for fk in table["foreign_keys"] for column in fk["columns"]}
        unique = {
            each["columns"][0]
            for each in [*table["unique"], *(i for i in table["indexes"] if i["unique"])]
            if len(each["columns"]) == 1
        }
        lines.append("  " + _entity(name) + " {")  # (an f-string would double the brace)
        for column in table["columns"]:
            keys = [
                key
                for key, holds in (
                    ("PK", column["name"] in primary),
                    ("FK", column["name"] in foreign),
                    ("UK", column["name"] in unique and column["name"] not in primary),
                )
                if holds
            ]
            line = f"    {_word(column['type'])} {_word(column['name'])}"
            if keys:
                line += " " + ", ".join(keys)
            if column["nullable"] and column["name"] not in primary:
                line += ' "nullable"'
            lines.append(line)
        lines.append("  }")
    for name, table in tables.items():
        nullable = {column["name"] for column in table["columns"] if column["nullable"]}
        one_each = [set(table["primary_key"]["columns"])] + [
            set(each["columns"])
            for each in [*table["unique"], *(i for i in table["indexes"] if i["unique"])]
        ]
        for fk in table["foreign_keys"]:
            # the parent: exactly one, or none when the key may be NULL; the children: at most
            # one when the key's columns are unique, else any number
            parent = "|o" if nullable & set(fk["columns"]) else "||"
            children = "o|" if set(fk["columns"]) in one_each else "o{"
            label = ", ".join(fk["columns"])
            lines.append(
                f'  {_entity(fk["references"])} {parent}--{children} {_entity(name)} : "{label}"'
            )
    return "\n".join(lines) + "\n"


def _entity(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) else f'"{_plain(name)}"'


def _word(text: str) -> str:
    """A type or column name as Mermaid takes it: NUMERIC(6, 3) -> NUMERIC(6-3),
    TIMESTAMP WITHOUT TIME ZONE -> TIMESTAMP_WITHOUT_TIME_ZONE."""
    word = re.sub(r"\s*,\s*", "-", text.strip())
    word = re.sub(r"\s+", "_", word)
    word = re.sub(r"[^A-Za-z0-9_\-()\[\]]", "", word)
    return word if _WORD.fullmatch(word) else f"_{word}"


def _plain(text: str) -> str:
    return text.replace('"', "'")
