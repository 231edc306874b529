//! The storage backends against real files, a real SQLite file and the real
//! PostgreSQL server (URL in `AFTERIMAGE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; each test in a schema of its own).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod backends;
mod documents;
mod jsonl;
mod lease;
mod reading;

/// A schema of its own on the test server, dropped at the end.
struct TestDatabase {
    base: String,
    url: String,
    schema: String,
}

impl TestDatabase {
    async fn new() -> TestDatabase {
        let base = std::env::var("AFTERIMAGE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("afterimage_storage_{:016x}", unique());
        let separator = if base.contains('?') { '&' } else { '?' };
        TestDatabase {
            url: format!("{base}{separator}schema={schema}"),
            base,
            schema,
        }
    }

    async fn drop(self) {
        let (client, connection) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .await
            .unwrap();
    }
}

fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}
