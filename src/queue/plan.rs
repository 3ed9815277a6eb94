//! `EXPLAIN QUERY PLAN` for statements on the queue database: how SQLite will find the
//! rows, which is what decides whether a statement's cost grows with the backlog.

use std::fmt;

use sqlx::{AssertSqlSafe, Row, SqlitePool};

/// One line of SQLite's query plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// The step's id.
    pub id: i64,
    /// The id of the step it belongs to (0 at the top).
    pub parent: i64,
    /// What SQLite does, e.g. `SEARCH Jobs USING INDEX sqlite_autoindex_Jobs_1 (id=?)`.
    pub detail: String,
}

/// A statement's query plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// The steps in SQLite's order.
    pub steps: Vec<PlanStep>,
}

impl QueryPlan {
    /// The steps that read table `table` (`SCAN` or `SEARCH` it), e.g. `"Jobs"`.
    pub fn accesses<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.steps
            .iter()
            .map(|s| s.detail.as_str())
            .filter(move |d| {
                let rest = d
                    .strip_prefix("SCAN ")
                    .or_else(|| d.strip_prefix("SEARCH "));
                rest.is_some_and(|r| r == table || r.starts_with(&format!("{table} ")))
            })
    }

    /// Does some step read all of `table` (a `SCAN` of the table or of one of its
    /// indexes)?
    pub fn scans(&self, table: &str) -> bool {
        self.accesses(table).any(|d| d.starts_with("SCAN "))
    }

    /// Does some step read `table` through index `index`?
    pub fn uses_index(&self, table: &str, index: &str) -> bool {
        self.accesses(table).any(|d| {
            d.contains(&format!("USING INDEX {index} "))
                || d.contains(&format!("USING COVERING INDEX {index} "))
                || d.ends_with(&format!("INDEX {index}"))
        })
    }

    /// Does every read of `table` go by a unique key: its rowid or the index SQLite made
    /// for its `PRIMARY KEY`/`UNIQUE` column (`sqlite_autoindex_<table>_N`) with `=`?
    /// True for statements that find a batch of jobs by id.
    pub fn reads_only_by_key(&self, table: &str) -> bool {
        let mut reads = self.accesses(table).peekable();
        reads.peek().is_some()
            && reads.all(|d| {
                d.starts_with("SEARCH ")
                    && (d.contains("USING INTEGER PRIMARY KEY (rowid=?)")
                        || d.contains(&format!("INDEX sqlite_autoindex_{table}_"))
                            && d.ends_with("(id=?)"))
            })
    }
}

impl fmt::Display for QueryPlan {
    /// The plan as a tree, like the sqlite3 shell prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn depth(steps: &[PlanStep], mut parent: i64) -> usize {
            let mut d = 0;
            while parent != 0 {
                d += 1;
                parent = steps
                    .iter()
                    .find(|s| s.id == parent)
                    .map_or(0, |s| s.parent);
            }
            d
        }
        for step in &self.steps {
            writeln!(
                f,
                "{}`--{}",
                "   ".repeat(depth(&self.steps, step.parent)),
                step.detail
            )?;
        }
        Ok(())
    }
}

/// SQLite's plan for `sql` (one statement; parameters left unbound, i.e. NULL, which
/// does not change the plan).
pub async fn explain_query_plan(pool: &SqlitePool, sql: &str) -> Result<QueryPlan, sqlx::Error> {
    let statement = sql.trim().trim_end_matches(';');
    let mut conn = pool.acquire().await?;
    // An EXPLAIN does not check the schema version, so a connection that has not run a
    // statement since indexes were dropped or created (by a migration on another
    // connection) would explain with its old schema: read the schema table first, which
    // reloads it if it changed. And do not keep the EXPLAIN prepared (sqlx's statement
    // cache), which would keep the plan of the schema it was prepared with.
    sqlx::query("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?;
    let steps = rows
        .iter()
        .map(|row| {
            Ok(PlanStep {
                id: row.try_get(0)?,
                parent: row.try_get(1)?,
                detail: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(QueryPlan { steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lines: &[&str]) -> QueryPlan {
        QueryPlan {
            steps: lines
                .iter()
                .enumerate()
                .map(|(i, d)| PlanStep {
                    id: i as i64 + 1,
                    parent: 0,
                    detail: (*d).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn reads_by_key_and_scans_are_told_apart() {
        let by_id = plan(&[
            "SEARCH Jobs USING INDEX sqlite_autoindex_Jobs_1 (id=?)",
            "LIST SUBQUERY 1",
            "SCAN json_each VIRTUAL TABLE INDEX 1:",
        ]);
        assert!(by_id.reads_only_by_key("Jobs"));
        assert!(!by_id.scans("Jobs"));

        let by_status = plan(&[
            "MULTI-INDEX OR",
            "SEARCH Jobs USING INDEX idx_jobs_status_run_at (status=?)",
            "SEARCH Jobs USING INDEX idx_jobs_status_run_at (status=?)",
        ]);
        assert!(!by_status.reads_only_by_key("Jobs"));
        assert!(by_status.uses_index("Jobs", "idx_jobs_status_run_at"));

        let scan = plan(&["SCAN Jobs USING COVERING INDEX idx_jobs_job_type_status_run_at"]);
        assert!(scan.scans("Jobs"));
        assert!(scan.uses_index("Jobs", "idx_jobs_job_type_status_run_at"));
        assert!(!plan(&["SCAN JobsArchive"]).scans("Jobs"));
        assert!(!plan(&["SCAN json_each VIRTUAL TABLE INDEX 1:"]).reads_only_by_key("Jobs"));
    }
}
