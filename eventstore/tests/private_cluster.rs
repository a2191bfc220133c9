//! The embedded default's last resort: a private cluster started from the
//! installed PostgreSQL binaries.

use eventstore::database::{
    postgres_bin_dir, resolve, start_private_cluster, stop_private_cluster,
};
use eventstore::EventStore;
use std::path::PathBuf;

/// Stops the cluster and removes its directory however the test ends.
struct Cluster {
    bin_dir: PathBuf,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = stop_private_cluster(&self.bin_dir, &self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_private_cluster_starts_migrates_and_stops_in_its_own_directory() {
    // Proves: with the server binaries installed, the ledger can initialise,
    // start and use a cluster of its own listening only on a socket in its
    // directory, and a second start reuses the running cluster.
    let bin_dir =
        postgres_bin_dir().expect("PostgreSQL server binaries (initdb, pg_ctl) are needed");
    let dir = std::env::temp_dir().join(format!(
        "ledger-pc-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    ));
    let cluster = Cluster {
        bin_dir: bin_dir.clone(),
        dir: dir.clone(),
    };
    let url = start_private_cluster(&bin_dir, &dir).unwrap();
    assert!(url.contains(&format!("host={}", dir.display())), "{url}");
    assert_eq!(start_private_cluster(&bin_dir, &dir).unwrap(), url);
    let database = resolve(Some(&url)).await.unwrap();
    let store = EventStore::new(database.connect_pool(2).await.unwrap());
    store.migrate().await.unwrap();
    let tenant = store.create_tenant("acme").await.unwrap();
    assert_eq!(
        store.authenticate(&tenant.api_key).await.unwrap(),
        Some(tenant.tenant_id)
    );
    store.pool().close().await;
    assert!(stop_private_cluster(&bin_dir, &dir).unwrap());
    drop(cluster);
    assert!(!dir.exists());
}
