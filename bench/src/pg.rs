//! The PostgreSQL databases a run creates, all dropped at its end.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Longest wait for an administrative statement (CREATE/DROP DATABASE).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Databases {
    admin_url: String,
    created: Mutex<Vec<String>>,
}

impl Databases {
    pub fn new(admin_url: &str) -> Self {
        Self {
            admin_url: admin_url.to_owned(),
            created: Mutex::new(Vec::new()),
        }
    }

    /// Creates `ledger_bench_<tag>_<uuid>` and returns its URL.
    pub async fn create(&self, tag: &str) -> anyhow::Result<String> {
        let name = format!("ledger_bench_{tag}_{}", Uuid::new_v4().simple());
        let url = database_url(&self.admin_url, &name)?;
        tokio::time::timeout(ADMIN_TIMEOUT, async {
            let mut conn = PgConnection::connect(&self.admin_url)
                .await
                .with_context(|| {
                    format!(
                        "connecting to PostgreSQL at {} (is it running?)",
                        crate::report::redact(&self.admin_url)
                    )
                })?;
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("creating database {name}"))?;
            let _ = conn.close().await;
            anyhow::Ok(())
        })
        .await
        .context("creating a database timed out")??;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name);
        Ok(url)
    }

    /// Drops every database this run created; failures are reported, not fatal.
    pub async fn drop_all(&self) {
        let names: Vec<String> =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if names.is_empty() {
            return;
        }
        let dropped = tokio::time::timeout(ADMIN_TIMEOUT, async {
            let mut conn = PgConnection::connect(&self.admin_url).await?;
            for name in &names {
                // FORCE ends connections a killed client may have left behind.
                if let Err(e) =
                    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await
                {
                    eprintln!("[ledger-bench] could not drop database {name}: {e}");
                }
            }
            let _ = conn.close().await;
            anyhow::Ok(())
        })
        .await;
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("[ledger-bench] could not drop databases {names:?}: {e:#}"),
            Err(_) => eprintln!("[ledger-bench] dropping databases {names:?} timed out"),
        }
    }
}

/// The admin URL with its database (path) replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = Url::parse(admin_url).context("--admin-url is not a URL")?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_url_replaces_the_path() {
        assert_eq!(
            super::database_url("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::database_url("postgres://u:p@localhost/postgres?sslmode=disable", "y").unwrap(),
            "postgres://u:p@localhost/y?sslmode=disable"
        );
    }
}
