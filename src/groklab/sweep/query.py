"""DuckDB over a sweep dir: the view `runs` (runs.parquet) and `metrics` (every run's metric rows + run_id).

Views are lazy: files are only read by the queries that use them. A finished run's metrics come from its
metrics.parquet; a run still going (or interrupted) contributes its metrics.jsonl, so a query during a
sweep sees every row written so far. Column names with a slash need double quotes: "val/acc".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groklab.errors import UserError

RUN_ID_FROM_PATH = r"regexp_extract(replace(filename, '\', '/'), '/runs/([^/]+)/metrics\.[a-z]+$', 1)"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def connect(sweep_dir: Path) -> Any:
    """An in-memory DuckDB connection with the views `runs` and `metrics` over `sweep_dir`."""
    import duckdb

    runs_path = sweep_dir / "runs.parquet"
    if not runs_path.exists():
        raise UserError(f"{sweep_dir} holds no runs.parquet: expected a directory written by `groklab sweep`")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW runs AS SELECT * FROM read_parquet({_sql_list([runs_path])})")

    parquets, jsonls = [], []
    for run_dir in sorted(p for p in (sweep_dir / "runs").glob("*") if p.is_dir()):
        if (run_dir / "metrics.parquet").exists():
            parquets.append(run_dir / "metrics.parquet")
        elif (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").stat().st_size:
            jsonls.append(run_dir / "metrics.jsonl")
    parts = []
    if parquets:
        parts.append(f"SELECT * FROM read_parquet({_sql_list(parquets)}, filename = true, union_by_name = true)")
    if jsonls:
        parts.append(
            f"SELECT * FROM read_json({_sql_list(jsonls)}, format = 'newline_delimited', filename = true, "
            "union_by_name = true, ignore_errors = true) WHERE step IS NOT NULL"  # a torn last line (kill -9) reads as nulls
        )
    if parts:
        union = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
        con.execute(f"CREATE VIEW metrics AS SELECT {RUN_ID_FROM_PATH} AS run_id, * EXCLUDE (filename) FROM ({union})")
    else:
        con.execute("CREATE VIEW metrics AS SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS step WHERE false")
    return con


def query(sweep_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run `sql` against the sweep's views: (column names, rows)."""
    import duckdb

    con = connect(sweep_dir)
    try:
        result = con.execute(sql)
        columns = [d[0] for d in result.description] if result.description else []
        return columns, result.fetchall()
    except duckdb.Error as err:
        raise UserError(f'query failed: {str(err).splitlines()[0]} (views: runs, metrics; quote names like "val/acc")') from None
    finally:
        con.close()
