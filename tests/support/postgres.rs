//! Shared by the tests that need PostgreSQL (included with `#[path]`): a fresh database per
//! test on the local server, dropped at the end, so tests run in parallel.
//!
//! `AMTSBOTE_TEST_POSTGRES_URL` names the database to connect to for creating the test
//! databases (default: `postgres://postgres@127.0.0.1:5432/test`, then the same as `root`).
//! When none is reachable the test is skipped loudly, and fails when `CI=true`.

#![allow(dead_code)]

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A database of its own on the local PostgreSQL server.
pub struct TestDatabase {
    /// Its URL, for `ledger::open` or `AMTSBOTE_LEDGER_URL`.
    pub url: String,
    name: String,
    admin: PgConnection,
}

impl TestDatabase {
    /// A new, empty database; None (after a loud message) when no server answers,
    /// a panic instead under `CI=true`.
    pub async fn create() -> Option<TestDatabase> {
        let (mut admin, admin_url) = admin_connection().await?;
        let name = format!("amtsbote_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        Some(TestDatabase { url: with_database(&admin_url, &name), name, admin })
    }

    /// Drop it, whoever is still connected.
    pub async fn drop(mut self) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

fn admin_urls() -> Vec<String> {
    match std::env::var("AMTSBOTE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => vec![url],
        _ => vec![
            "postgres://postgres@127.0.0.1:5432/test".into(),
            "postgres://root@127.0.0.1:5432/test".into(),
        ],
    }
}

async fn admin_connection() -> Option<(PgConnection, String)> {
    let mut last_error = String::new();
    for url in admin_urls() {
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&url)).await {
            Ok(Ok(conn)) => return Some((conn, url)),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "timed out".into(),
        }
    }
    let message = format!(
        "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! PostgreSQL is not reachable ({last_error}).\n\
         !!! Tests that need it are SKIPPED.\n\
         !!! Start it, or set AMTSBOTE_TEST_POSTGRES_URL.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}(CI=true: a skipped database is a failure)");
    }
    eprintln!("{message}");
    None
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

