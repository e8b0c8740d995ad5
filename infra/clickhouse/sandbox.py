"""Analyst queries in a sandbox: one fresh client per query, ClickHouse's own parser, readonly=1.

Three layers, each enough for a different part of the threat:
1. The query runs on its own client (its own chDB handle or HTTP session), opened for that query
   and closed after it. Nothing a query does to its session reaches the sink's client.
2. Before it runs, the engine parses it (`EXPLAIN AST`, nothing is executed) and `check_ast` walks
   the tree: only SELECT, EXPLAIN, DESCRIBE and SHOW [TABLES|CREATE TABLE]; tables of the event
   store's database only (no `system`, `INFORMATION_SCHEMA` or other databases); no table function
   but the generators in ALLOWED_TABLE_FUNCTIONS; no function that reads files or dictionaries; no
   INTO OUTFILE; no SETTINGS clause.
3. The session then gets the limits and `readonly=1`, last: with readonly=1 ClickHouse refuses any
   change of a setting (so the limits hold) and any table function that reaches files, URLs, S3 or
   other databases. `readonly=2` would allow both.

Against a ClickHouse server, use an analyst user whose profile already has these settings as
constraints (docs/analytics.md has the SQL); chDB has no access management for its built-in user
(`CREATE USER` fails with "Not enough privileges"), so the embedded engine relies on 2 and 3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from common.errors import LustraxError
from common.settings import Settings
from infra.clickhouse.client import clickhouse_client

MAX_ROWS = 10_000
# Applied to every analyst session, readonly last (after it nothing can be changed).
SANDBOX_SETTINGS: dict[str, Any] = {
    "max_result_rows": MAX_ROWS, "result_overflow_mode": "break", "max_execution_time": 60,
    "max_memory_usage": 2_000_000_000, "readonly": 1,
}
# Generators: they read nothing outside the engine.
ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series",
                                     "generateSeries", "values"})
# Scalar functions that read files, models or other tables by name.
DENIED_FUNCTIONS = frozenset({"file", "catboostevaluate", "joinget", "joingetornull", "getclienthttpheader"})
DENIED_FUNCTION_PREFIXES = ("dict",)  # dictGet*, dictHas, dictIsIn ...: dictionaries reach their sources
IN_FUNCTIONS = frozenset({"in", "notin", "globalin", "globalnotin", "nullin", "notnullin",
                          "globalnullin", "globalnotnullin"})
# Statements with output that may run; SHOW TABLES also covers SHOW DATABASES/SETTINGS (names only).
QUERY_KINDS = frozenset({"SelectWithUnionQuery", "Explain", "DescribeQuery", "ShowTables",
                         "ShowCreateTableQuery"})


class QueryRefused(LustraxError):
    """The sandbox does not run this statement (the message says why)."""


@dataclass
class AstNode:
    kind: str
    text: str = ""  # what follows the kind (alias dropped), e.g. the name of a Function or a table
    children: list[AstNode] = field(default_factory=list)

    def walk(self) -> list[AstNode]:
        nodes = [self]
        for child in self.children:
            nodes += child.walk()
        return nodes


_CHILDREN = re.compile(r"\s*\(children \d+\)\s*$")


def parse_explain_ast(lines: list[str]) -> AstNode:
    """The indented text of `EXPLAIN AST` as a tree (pure). One space of indent per level."""
    root: AstNode | None = None
    stack: list[tuple[int, AstNode]] = []
    for line in lines:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        kind, _, rest = _CHILDREN.sub("", line.strip()).partition(" ")
        node = AstNode(kind, rest.strip().split(" (alias ")[0])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            stack[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            raise QueryRefused("the parser returned more than one statement")
        stack.append((depth, node))
    if root is None:
        raise QueryRefused("the parser returned nothing")
    return root


def _check_database(db: str, database: str, what: str) -> None:
    if db != database:
        raise QueryRefused(f"only tables of the database {database!r} may be read, not {what!r}")


def _check_table(name: str, database: str) -> None:
    """`name` is `table` or `db.table` as the AST prints it."""
    db, dot, _ = name.partition(".")
    if dot:
        _check_database(db, database, name)


def _check_statement(node: AstNode, database: str) -> None:
    if node.kind not in QUERY_KINDS:
        raise QueryRefused(f"only SELECT, EXPLAIN, DESCRIBE and SHOW TABLES/CREATE TABLE may run, not {node.kind}")
    children = list(node.children)
    if node.kind == "Explain":
        # EXPLAIN [options] <statement>: the statement is checked as if it ran alone (options: below)
        children = [child for child in children if child.kind != "Set"]
        if not children:
            raise QueryRefused("EXPLAIN without a statement")
        _check_statement(children[0], database)
        children = children[1:]
    if node.kind in ("SelectWithUnionQuery", "Explain"):
        # Beside the body, a query's own children are its output clauses.
        if any(child.kind == "Literal" for child in children):
            raise QueryRefused("INTO OUTFILE is not allowed")
        if any(child.kind == "Identifier" for child in children):
            raise QueryRefused("a FORMAT clause is not allowed: the answer comes back as rows")
    if node.kind in ("ShowTables", "ShowCreateTableQuery"):
        names = [c.text for c in children if c.kind == "Identifier"]
        if node.kind == "ShowTables" and names:
            _check_database(names[0], database, names[0])  # SHOW TABLES FROM db
        if node.kind == "ShowCreateTableQuery" and len(names) >= 2:
            _check_table(f"{names[0]}.{names[1]}", database)


def check_ast(root: AstNode, database: str) -> None:
    """Refuse what analysts may not run (pure); see the module docstring for the rules."""
    _check_statement(root, database)
    for node in root.walk():
        if node.kind == "Set":
            raise QueryRefused("SETTINGS clauses (and EXPLAIN options) are not allowed: the sandbox sets the limits")
        if node.kind == "TableIdentifier":
            _check_table(node.text, database)
        elif node.kind == "TableExpression":
            for child in node.children:
                if child.kind == "Function" and child.text not in ALLOWED_TABLE_FUNCTIONS:
                    raise QueryRefused(f"the table function {child.text}() is not allowed")
        elif node.kind == "Function":
            name = node.text.lower()
            if name in DENIED_FUNCTIONS or name.startswith(DENIED_FUNCTION_PREFIXES):
                raise QueryRefused(f"the function {node.text}() is not allowed")
            if name in IN_FUNCTIONS and node.children and len(node.children[0].children) == 2:
                right = node.children[0].children[1]
                if right.kind == "Identifier":  # `x IN db.table`
                    _check_table(right.text, database)
        elif node.kind == "Explain" and node is not root:
            _check_statement(node, database)


def json_value(value: Any) -> Any:
    if isinstance(value, datetime | date | UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:2000] if str(exc).strip() else type(exc).__name__


def run_sandboxed(settings: Settings, sql: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Check and run one analyst query on a client of its own; `{db}` stands for the database.

    Raises QueryRefused for what the sandbox forbids, LustraxError for what the engine refuses."""
    database = settings.clickhouse_database
    sql = sql.replace("{db}", database).strip().rstrip(";")
    try:
        client = clickhouse_client(settings, database=database)
    except Exception as exc:  # noqa: BLE001 - chDB's lock error, an unreachable server: one line
        raise LustraxError(f"cannot open {settings.clickhouse_url}: {_first_line(exc)}") from None
    try:
        try:
            # raw_query without a format: nothing is appended to the statement being parsed
            lines = client.raw_query(f"EXPLAIN AST {sql}", parameters=parameters or None).decode().splitlines()
        except Exception as exc:  # noqa: BLE001 - a syntax error, an unknown parameter: ClickHouse says which
            raise QueryRefused(f"cannot parse the query: {_first_line(exc)}") from None
        check_ast(parse_explain_ast(lines), database)
        for name, value in SANDBOX_SETTINGS.items():
            client.set_client_setting(name, value)
        try:
            result = client.query(sql, parameters=parameters or None)
        except Exception as exc:  # noqa: BLE001 - ClickHouse's message is the useful answer
            raise LustraxError(_first_line(exc)) from None
        return {"columns": list(result.column_names),
                "rows": [[json_value(v) for v in row] for row in result.result_rows[:MAX_ROWS]]}
    finally:
        client.close()
