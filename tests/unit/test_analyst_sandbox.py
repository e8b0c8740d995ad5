"""The analyst sandbox's AST rules on `EXPLAIN AST` text as chDB 4.4 (ClickHouse 26.9) prints it."""

from __future__ import annotations

import pytest

from infra.clickhouse.sandbox import AstNode, QueryRefused, check_ast, parse_explain_ast

DB = "lustrax"


def _ast(text: str) -> AstNode:
    return parse_explain_ast(text.strip("\n").splitlines())


def _select_from(table_expression: str, extra: str = "") -> str:
    """SELECT * FROM <table_expression> as EXPLAIN AST prints it (the expression at depth 5)."""
    body = "\n".join("     " + line for line in table_expression.strip("\n").splitlines())
    return f"""
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
{body}
{extra}"""


FILE_ENVIRON = _select_from("""
TableExpression (children 1)
 Function file (children 1)
  ExpressionList (children 2)
   Literal '/proc/self/environ'
   Literal 'LineAsString'
""")


def test_parse_builds_the_tree_and_drops_aliases() -> None:
    root = _ast(_select_from("TableExpression (children 1)\n TableIdentifier lustrax.views (alias v)"))
    assert root.kind == "SelectWithUnionQuery"
    [table] = [n for n in root.walk() if n.kind == "TableIdentifier"]
    assert table.text == "lustrax.views"


def test_two_statements_are_refused() -> None:
    with pytest.raises(QueryRefused, match="more than one"):
        _ast("SelectWithUnionQuery (children 1)\nSelectWithUnionQuery (children 1)")


@pytest.mark.parametrize("table", ["heat_scores", "lustrax.heat_scores", "heat_scores (alias h)"])
def test_a_select_over_the_store_passes(table: str) -> None:
    check_ast(_ast(_select_from(f"TableExpression (children 1)\n TableIdentifier {table}")), DB)


def test_generators_pass() -> None:
    check_ast(_ast(_select_from("TableExpression (children 1)\n Function numbers (children 1)")), DB)


@pytest.mark.parametrize("function", ["file", "url", "s3", "remote", "mysql", "merge", "executable", "cluster"])
def test_table_functions_that_reach_out_are_refused(function: str) -> None:
    with pytest.raises(QueryRefused, match=f"table function {function}"):
        check_ast(_ast(_select_from(f"TableExpression (children 1)\n Function {function} (children 1)")), DB)


@pytest.mark.parametrize("table", ["system.processes", "INFORMATION_SCHEMA.tables", "other.views"])
def test_other_databases_are_refused(table: str) -> None:
    with pytest.raises(QueryRefused, match="only tables of the database 'lustrax'"):
        check_ast(_ast(_select_from(f"TableExpression (children 1)\n TableIdentifier {table}")), DB)


def test_into_outfile_is_refused() -> None:
    with pytest.raises(QueryRefused, match="INTO OUTFILE"):
        check_ast(_ast(_select_from("TableExpression (children 1)\n TableIdentifier t", " Literal '/tmp/x'")), DB)


def test_a_settings_clause_is_refused_at_any_depth() -> None:
    with pytest.raises(QueryRefused, match="SETTINGS"):
        check_ast(_ast(_select_from("TableExpression (children 1)\n TableIdentifier t", "   Set")), DB)


def test_a_format_clause_is_refused() -> None:
    with pytest.raises(QueryRefused, match="FORMAT"):
        check_ast(_ast(_select_from("TableExpression (children 1)\n TableIdentifier t", " Identifier JSON")), DB)


@pytest.mark.parametrize("kind", ["InsertQuery", "DropQuery", "SYSTEM", "KillQueryQuery", "Set", "UseQuery",
                                  "ShowProcesslistQuery", "ShowGrantsQuery", "OptimizeQuery", "CreateQuery"])
def test_statements_other_than_queries_are_refused(kind: str) -> None:
    with pytest.raises(QueryRefused, match=f"not {kind}"):
        check_ast(_ast(f"{kind} (children 1)\n Identifier x"), DB)


def test_explain_checks_the_statement_it_explains() -> None:
    inner = FILE_ENVIRON.strip("\n").splitlines()
    text = "Explain EXPLAIN (children 1)\n" + "\n".join(" " + line for line in inner)
    with pytest.raises(QueryRefused, match="table function file"):
        check_ast(_ast(text), DB)
    check_ast(_ast("Explain EXPLAIN (children 1)\n SelectWithUnionQuery (children 1)"), DB)


@pytest.mark.parametrize("function", ["file", "dictGet", "dictGetString", "joinGet", "catboostEvaluate"])
def test_scalar_functions_that_read_elsewhere_are_refused(function: str) -> None:
    text = f"""
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function {function} (children 1)
     ExpressionList (children 1)
      Literal 'x'
"""
    with pytest.raises(QueryRefused, match=f"function {function}"):
        check_ast(_ast(text), DB)


def test_in_a_table_of_another_database_is_refused() -> None:
    text = """
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function in (children 1)
     ExpressionList (children 2)
      Identifier a
      Identifier system.one
"""
    with pytest.raises(QueryRefused, match="system.one"):
        check_ast(_ast(text), DB)
    check_ast(_ast(text.replace("system.one", "lustrax.views")), DB)


def test_show_and_describe_stay_in_the_store() -> None:
    check_ast(_ast("ShowTables"), DB)
    check_ast(_ast("ShowCreateTableQuery  t (children 1)\n Identifier t"), DB)
    check_ast(_ast("DescribeQuery (children 1)\n TableExpression (children 1)\n  TableIdentifier views"), DB)
    for text in ["ShowTables (children 1)\n Identifier system",
                 "ShowCreateTableQuery system processes (children 2)\n Identifier system\n Identifier processes",
                 "DescribeQuery (children 1)\n TableExpression (children 1)\n  TableIdentifier system.processes"]:
        with pytest.raises(QueryRefused, match="only tables of the database"):
            check_ast(_ast(text), DB)


def test_explain_options_are_refused_as_settings() -> None:
    with pytest.raises(QueryRefused, match="EXPLAIN options"):
        check_ast(_ast("Explain EXPLAIN (children 2)\n Set\n SelectWithUnionQuery (children 1)"), DB)
