"""Continuous SQL over topics in Flink's dialect: the embedded engine.

    job = Job(log, open("averages.sql").read(), name="averages")
    job.run(stop)                   # INSERT INTO ... results, exactly once, until `stop` is set
    for plan, rows in Job(log, sql).query():   # SELECTs once over what the topics hold now
        ...

A script declares tables over topics (`CREATE TABLE ... WITH ('topic' = ...)`: columns read the
events' data, metadata columns their envelope) and queries over them: projections, filters,
TUMBLE / HOP / CUMULATE / SESSION window aggregations (DISTINCT and FILTER aggregates too),
Window Top-N, GROUP BY without a window (upserts), regular, interval and window joins; `SET`
tunes a job (state TTL, idle timeout). `parse` reads a script; SQL that cannot be read or that
the engine does not run raises `InvalidSql` with its line and column. A running job checkpoints
its results, state and offsets in one transaction of the log (`JobTakenOver` when another
process starts the same job). The command: `inmotion sql query|run|explain|jobs|reset|nexmark`."""

from inmotion.streams.checkpoints import JobTakenOver
from inmotion.streams.job import Job
from inmotion.streams.sql import Column, Query, Statement, Table, Watermark, parse

__all__ = ["Column", "Job", "JobTakenOver", "Query", "Statement", "Table", "Watermark", "parse"]
