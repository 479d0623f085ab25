//! Fresh databases for tests: a new PostgreSQL database or SQLite file per
//! test, migrated. PostgreSQL tests fail (never skip) when the server is
//! missing.

use sqlx::Connection;
use uuid::Uuid;

use crate::{Store, StoreError};

/// The server tests create their databases on; override with
/// `LEDGER_TEST_POSTGRES_URL`.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("LEDGER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.into())
}

/// A database that lives as long as the test.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh, migrated PostgreSQL database.
    pub async fn postgres() -> Result<Self, StoreError> {
        let admin = admin_url();
        let name = format!("ledger_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let (base, _) = admin.rsplit_once('/').unwrap_or((admin.as_str(), ""));
        let url = format!("{base}/{name}");
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(Self {
            store,
            url,
            name: Some(name),
            _dir: None,
        })
    }

    /// A fresh, migrated SQLite file in a temporary folder.
    pub async fn sqlite() -> Result<Self, StoreError> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/ledger.db", dir.path().display());
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(Self {
            store,
            url,
            name: None,
            _dir: Some(dir),
        })
    }

    /// Drops the PostgreSQL database (the SQLite folder goes on drop).
    pub async fn cleanup(self) -> Result<(), StoreError> {
        let Self { store, name, .. } = self;
        match store {
            Store::Postgres(s) => s.pool().close().await,
            Store::Sqlite(s) => s.pool().close().await,
        }
        if let Some(name) = name {
            let mut conn = sqlx::PgConnection::connect(&admin_url()).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// A command context for tests: a developer named `test`.
pub fn context() -> crate::CommandContext {
    crate::CommandContext::new(events::Actor {
        sub: "test".into(),
        role: "developer".into(),
    })
}

/// Runs one async test body, `async fn body(store: &Store)`, against a fresh
/// PostgreSQL database and a fresh SQLite file, as two tests. PostgreSQL
/// missing is a failure, never a skip.
#[macro_export]
macro_rules! on_both_stores {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                let db = $crate::testing::TestDb::postgres()
                    .await
                    .expect("PostgreSQL must be running for these tests");
                super::$body(&db.store).await;
                db.cleanup().await.expect("drop the test database");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                let db = $crate::testing::TestDb::sqlite()
                    .await
                    .expect("an SQLite file");
                super::$body(&db.store).await;
                db.cleanup().await.expect("cleanup");
            }
        }
    };
}
