//! The catalog (plans, packages, cost table) held in memory for pricing.
//! It is refreshed from the catalog stream after local changes, when an
//! operation is not found, and periodically for changes made by other
//! server instances.

use std::sync::Arc;
use std::time::Duration;

use events::{CostEntry, OperationKey, CATALOG_ID};
use ledger::Catalog;
use store::{Store, StoreError};
use tokio::sync::RwLock;

/// How often the catalog is reloaded to see other instances' changes.
pub const CATALOG_REFRESH_MILLIS: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct CatalogCache {
    store: Store,
    current: Arc<RwLock<Arc<Catalog>>>,
}

impl CatalogCache {
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let catalog = store.load::<Catalog>(CATALOG_ID).await?.aggregate;
        Ok(Self {
            store,
            current: Arc::new(RwLock::new(Arc::new(catalog))),
        })
    }

    pub async fn get(&self) -> Arc<Catalog> {
        self.current.read().await.clone()
    }

    pub async fn set(&self, catalog: Catalog) {
        *self.current.write().await = Arc::new(catalog);
    }

    pub async fn refresh(&self) -> Result<Arc<Catalog>, StoreError> {
        let catalog = Arc::new(self.store.load::<Catalog>(CATALOG_ID).await?.aggregate);
        *self.current.write().await = catalog.clone();
        Ok(catalog)
    }

    /// The cost row in force; reloads once when the operation is unknown, in
    /// case another instance just added it.
    pub async fn cost(&self, operation: &OperationKey) -> Result<Option<CostEntry>, StoreError> {
        if let Some(c) = self.get().await.cost(operation) {
            return Ok(Some(c.clone()));
        }
        Ok(self.refresh().await?.cost(operation).cloned())
    }

    /// Reloads periodically until the shutdown future resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_millis(CATALOG_REFRESH_MILLIS)) => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %e, "catalog refresh failed");
                    }
                }
            }
        }
    }
}
