//! Writes whose results nobody reads, sent together.
//!
//! Saving an advanced enrollment is four inserts (analytics deltas, the enrollment, its
//! steps, the outbox) that depend on nothing but the transaction they share. Each one sent
//! alone is a round trip in which the server and PostgreSQL wait on each other, and on a
//! busy machine that waiting was most of a completion's cost (BENCHMARKS.md). So on
//! PostgreSQL they go as one statement, all but the last as data-modifying CTEs:
//!
//! ```sql
//! WITH w0 AS (INSERT INTO rollup_deltas ...), w1 AS (INSERT INTO enrollments ...) INSERT INTO outbox ...
//! ```
//!
//! PostgreSQL runs each of them exactly once and to completion, on one snapshot, in the
//! caller's transaction: the effect is that of the statements one after another, provided
//! no two of them change the same row (a row changed twice in one statement keeps only
//! one of the changes). Callers guarantee that. SQLite has no data-modifying CTEs; there
//! the statements run one by one, which costs nothing on an embedded database.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, StatementBuilder};

/// PostgreSQL takes at most 65,535 parameters per statement; a batch that would pass it
/// is sent as several.
const MAX_PARAMETERS: usize = 65_535;

/// The most rows one multi-row insert carries. With at most 16 columns a row that is at
/// most 16,000 parameters: under PostgreSQL's 65,535 and SQLite's 32,766 (its default
/// since 3.32), whatever the batch (a batch of events can advance hundreds of
/// enrollments of a 500-step flow at once).
pub const ROWS_PER_STATEMENT: usize = 1000;

/// Rows split into runs of at most `ROWS_PER_STATEMENT`, in order.
pub fn row_chunks<T>(rows: impl IntoIterator<Item = T>) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = Vec::new();
    for row in rows {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < ROWS_PER_STATEMENT => chunk.push(row),
            _ => chunks.push(vec![row]),
        }
    }
    chunks
}

pub struct Writes {
    backend: DbBackend,
    statements: Vec<Statement>,
}

impl Writes {
    pub fn new(backend: DbBackend) -> Self {
        Writes { backend, statements: Vec::new() }
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Queues a statement built by sea-query or sea-orm.
    pub fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements.push(statement.build(&self.backend));
    }

    /// Queues a statement already built for this backend.
    pub fn push_statement(&mut self, statement: Statement) {
        self.statements.push(statement);
    }

    /// Runs every queued statement, in as few round trips as the backend allows.
    pub async fn run(self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        if self.backend != DbBackend::Postgres {
            for statement in self.statements {
                db.execute_raw(statement).await?;
            }
            return Ok(());
        }
        for group in groups(self.statements) {
            db.execute_raw(combine(group)).await?;
        }
        Ok(())
    }
}

fn parameters(statement: &Statement) -> usize {
    statement.values.as_ref().map_or(0, |v| v.0.len())
}

/// Splits statements, in order, into runs that fit in one statement's parameters.
fn groups(statements: Vec<Statement>) -> Vec<Vec<Statement>> {
    let mut groups: Vec<Vec<Statement>> = Vec::new();
    let mut used = 0;
    for statement in statements {
        let n = parameters(&statement);
        match groups.last_mut() {
            Some(group) if used + n <= MAX_PARAMETERS => group.push(statement),
            _ => {
                groups.push(vec![statement]);
                used = 0;
            }
        }
        used += n;
    }
    groups
}

/// One PostgreSQL statement doing what `statements` do: all but the last become CTEs,
/// their `$n` placeholders renumbered after those before them.
fn combine(mut statements: Vec<Statement>) -> Statement {
    let Some(last) = statements.pop() else {
        return Statement::from_string(DbBackend::Postgres, "SELECT 1");
    };
    if statements.is_empty() {
        return last;
    }
    let mut sql = String::from("WITH ");
    let mut values = Vec::new();
    for (i, statement) in statements.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("w{i} AS ("));
        sql.push_str(&renumber(&statement.sql, values.len()));
        sql.push(')');
        values.extend(statement.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push(' ');
    sql.push_str(&renumber(&last.sql, values.len()));
    values.extend(last.values.map(|v| v.0).unwrap_or_default());
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `sql` with every placeholder `$n` made `$(n + offset)`. Quoted identifiers and string
/// literals are copied as they are: a `$` inside them is no placeholder.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match quote {
            // A doubled quote inside a quoted run closes and reopens it: same result.
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let n: usize = digits.parse().unwrap_or(0);
                out.push_str(&(n + offset).to_string());
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str, values: Vec<i64>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values.into_iter().map(Into::into))
    }

    #[test]
    fn renumbering_shifts_placeholders_and_leaves_quoted_text_alone() {
        assert_eq!(
            renumber(r#"INSERT INTO "t$1" (a, b) VALUES ($1, $12) -- '$3'"#, 5),
            r#"INSERT INTO "t$1" (a, b) VALUES ($6, $17) -- '$3'"#
        );
        assert_eq!(renumber("SELECT 'it''s $1', $2", 1), "SELECT 'it''s $1', $3");
        assert_eq!(renumber("SELECT $1", 0), "SELECT $1");
    }

    #[test]
    fn statements_become_ctes_of_the_last_with_their_values_in_order() {
        let combined = combine(vec![
            statement("INSERT INTO a VALUES ($1, $2)", vec![1, 2]),
            statement("INSERT INTO b VALUES ($1)", vec![3]),
            statement("INSERT INTO c VALUES ($1, $2)", vec![4, 5]),
        ]);
        assert_eq!(
            combined.sql,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2)), w1 AS (INSERT INTO b VALUES ($3)) INSERT INTO c VALUES ($4, $5)"
        );
        let values: Vec<sea_orm::Value> = (1..=5i64).map(Into::into).collect();
        assert_eq!(combined.values.map(|v| v.0), Some(values));
        let alone = combine(vec![statement("INSERT INTO a VALUES ($1)", vec![1])]);
        assert_eq!(alone.sql, "INSERT INTO a VALUES ($1)");
    }

    #[test]
    fn batches_past_the_parameter_limit_are_split_in_order() {
        let big = |tag: i64| statement(&format!("INSERT INTO t{tag} VALUES ($1)"), vec![tag; 40_000]);
        let split = groups(vec![big(1), big(2), statement("INSERT INTO x VALUES ($1)", vec![3])]);
        let tables: Vec<Vec<&str>> =
            split.iter().map(|g| g.iter().map(|s| s.sql.split_whitespace().nth(2).unwrap_or("")).collect()).collect();
        assert_eq!(tables, vec![vec!["t1"], vec!["t2", "x"]]);
    }
}
