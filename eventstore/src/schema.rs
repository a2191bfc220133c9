//! Whether a database holds the schema this binary was built for, checked
//! without changing anything: the auditors' commands (`verify`, `replay`,
//! `export`) read a ledger and must never migrate it.

use crate::{EventStore, StoreError, MIGRATOR};

/// Why this binary cannot read the database as it is.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "database {database} holds no ledger schema (no migration applied); \
         check --database-url / DATABASE_URL, or run `ledger migrate` to create a ledger there"
    )]
    Missing { database: String },
    #[error(
        "database {database} has a ledger schema older than this binary: migration {version} \
         ({description}) is not applied; run `ledger migrate` first (this command never migrates)"
    )]
    Behind {
        database: String,
        version: i64,
        description: String,
    },
    #[error(
        "database {database}: migration {version} ({description}) did not complete; \
         run `ledger migrate` to finish it"
    )]
    Incomplete {
        database: String,
        version: i64,
        description: String,
    },
    #[error(
        "database {database}: migration {version} ({description}) was applied from other SQL \
         than this binary's; this binary does not match that ledger"
    )]
    Changed {
        database: String,
        version: i64,
        description: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for SchemaError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

impl EventStore {
    /// Checks, reading only, that every migration of this binary has been
    /// applied, completely and from the same SQL. A database migrated by a
    /// newer binary is accepted: migrations only ever add, and what this
    /// binary reads (the chain, the projections) means the same. (A repeated
    /// key's answer is another matter: a server older than migration 0019
    /// would answer one recorded after it without its events; `serve`
    /// applies the migrations, which an older one refuses once they are
    /// newer than it.)
    pub async fn check_schema(&self) -> Result<(), SchemaError> {
        let (database, table): (String, Option<String>) = sqlx::query_as(
            "SELECT current_database()::text, to_regclass('_sqlx_migrations')::text",
        )
        .fetch_one(self.pool())
        .await?;
        if table.is_none() {
            return Err(SchemaError::Missing { database });
        }
        let applied: Vec<(i64, bool, Vec<u8>)> =
            sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations")
                .fetch_all(self.pool())
                .await?;
        for migration in MIGRATOR
            .iter()
            .filter(|migration| !migration.migration_type.is_down_migration())
        {
            let description = migration.description.to_string();
            let version = migration.version;
            match applied.iter().find(|(applied, _, _)| *applied == version) {
                None if applied.is_empty() => return Err(SchemaError::Missing { database }),
                None => {
                    return Err(SchemaError::Behind {
                        database,
                        version,
                        description,
                    })
                }
                Some((_, false, _)) => {
                    return Err(SchemaError::Incomplete {
                        database,
                        version,
                        description,
                    })
                }
                Some((_, true, checksum)) if *checksum != *migration.checksum => {
                    return Err(SchemaError::Changed {
                        database,
                        version,
                        description,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
