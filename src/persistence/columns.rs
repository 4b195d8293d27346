//! Reading a row's columns by position, straight from sqlx.
//!
//! sea-orm's model decoding looks every column up by name, formatting the name for each
//! lookup and an error string for each NULL it meets. For the thousands of step rows an
//! event batch loads, that was most of the server's CPU (BENCHMARKS.md), so the hot reads
//! decode their rows here instead: by position, with NULL a plain `None`.

use sea_orm::sqlx::{Decode, Postgres, Row as _, Sqlite, Type};
use sea_orm::{DbErr, QueryResult};

/// A value both backends decode.
pub trait Column: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite> {}

impl<T> Column for T where T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite> {}

/// The value of the column at `index` (0-based, in the order the query selects them).
pub fn get<T: Column>(row: &QueryResult, index: usize) -> Result<T, DbErr> {
    let value = if let Some(row) = row.try_as_pg_row() {
        row.try_get::<T, _>(index)
    } else if let Some(row) = row.try_as_sqlite_row() {
        row.try_get::<T, _>(index)
    } else {
        return Err(DbErr::Type("a row of an unsupported backend".into()));
    };
    value.map_err(|e| DbErr::Type(format!("column {index}: {e}")))
}
