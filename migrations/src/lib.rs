//! Schema migrations, one set per database, embedded at compile time and
//! applied at start-up and by `ledger-server migrate`.

use sqlx::migrate::Migrator;

/// PostgreSQL migrations (`migrations/postgres`).
pub static POSTGRES: Migrator = sqlx::migrate!("./postgres");

/// SQLite migrations (`migrations/sqlite`).
pub static SQLITE: Migrator = sqlx::migrate!("./sqlite");
