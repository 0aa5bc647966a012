#!/usr/bin/env python3
"""Write a copy of a TOML file with some keys set, keeping its comments:

    python3 contrib/toml_set.py IN OUT 'table.key=<TOML value>'...

A `key = ...` line under `[table]` is replaced; a key the table lacks is added at the end
of the table; a table the file lacks is appended. Only single-line values and plain
`[table]` headers are handled (what contrib/mailguard.example.toml uses). The result is
parsed with tomllib before it is written, so a bad value never leaves a broken file
behind. Used by contrib/quickstart.sh to make its configuration from the example."""

from __future__ import annotations

import re
import sys
import tomllib

HEADER = re.compile(r"^\[([A-Za-z0-9_.-]+)\]\s*(#.*)?$")
KEY = re.compile(r"^([A-Za-z0-9_-]+)\s*=")


def set_keys(text: str, changes: dict[tuple[str, str], str]) -> str:
    lines = text.splitlines()
    todo = dict(changes)
    out: list[str] = []
    table = ""
    for line in lines:
        header = HEADER.match(line)
        if header:
            out.extend(_missing(table, todo))
            table = header.group(1)
            out.append(line)
            continue
        key = KEY.match(line)
        if key and (table, key.group(1)) in todo:
            out.append(f"{key.group(1)} = {todo.pop((table, key.group(1)))}")
            continue
        out.append(line)
    out.extend(_missing(table, todo))
    for table_name in dict.fromkeys(t for t, _ in todo):
        out += ["", f"[{table_name}]", *_missing(table_name, todo)]
    return "\n".join(out) + "\n"


def _missing(table: str, todo: dict[tuple[str, str], str]) -> list[str]:
    """Lines for the keys of `table` still to be written (removed from `todo`)."""
    keys = [k for t, k in todo if t == table]
    return [f"{k} = {todo.pop((table, k))}" for k in keys]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, target, *assignments = argv
    changes: dict[tuple[str, str], str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        table, dot, key = name.rpartition(".")
        if not sep or not dot:
            print(f"toml_set: expected table.key=value, got {item!r}", file=sys.stderr)
            return 2
        changes[(table, key)] = value
    with open(source, encoding="utf-8") as fh:
        text = set_keys(fh.read(), changes)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        print(f"toml_set: the result is not valid TOML: {exc}", file=sys.stderr)
        return 1
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
