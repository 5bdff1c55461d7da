//! `TestPostgres`: a fresh database (and its roles) for one test.
//!
//! Every test gets `pgstash_t_<random>`, created on the process's Postgres
//! server (see `servers.rs`) and dropped `WITH (FORCE)` when the value is
//! dropped — also when the test panics. Roles made with
//! [`TestPostgres::create_role`] are dropped with it. Set
//! `PGSTASH_TEST_KEEP_DB=1` to keep them for a post-mortem.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio_postgres::{Client, NoTls};

use crate::servers::{self, PgServer};
use crate::wire::{RawClient, Startup, WireError};

/// A database of one's own on the test server.
pub struct TestPostgres {
    server: &'static PgServer,
    /// Name of the test database.
    pub database: String,
    roles: Mutex<Vec<String>>,
}

impl TestPostgres {
    /// Creates a fresh, empty database.
    pub async fn new() -> TestPostgres {
        let server = servers::postgres();
        let database = crate::unique_name("pgstash_t");
        let admin = connect(&server.admin_url(&server.admin_database)).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {database}: {}", describe(&e)));
        TestPostgres {
            server,
            database,
            roles: Mutex::new(Vec::new()),
        }
    }

    /// The server this database lives on.
    pub fn server(&self) -> &'static PgServer {
        self.server
    }

    /// Address of the Postgres server.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The superuser tests log in as by default.
    pub fn superuser(&self) -> &str {
        &self.server.superuser
    }

    /// URL of the test database as the superuser.
    pub fn url(&self) -> String {
        self.server.admin_url(&self.database)
    }

    /// URL of the test database as `user`.
    pub fn url_as(&self, user: &str, password: Option<&str>) -> String {
        self.server.url(user, password, &self.database)
    }

    /// A `tokio-postgres` client on the test database, as the superuser.
    pub async fn connect(&self) -> Client {
        connect(&self.url()).await
    }

    /// A `tokio-postgres` client on the test database, as `user`.
    pub async fn connect_as(&self, user: &str, password: Option<&str>) -> Client {
        connect(&self.url_as(user, password)).await
    }

    /// A raw wire client straight to Postgres, as the superuser.
    pub async fn raw(&self) -> Result<RawClient, WireError> {
        RawClient::connect_with(self.addr(), self.startup()).await
    }

    /// The StartupMessage parameters of the superuser on the test database.
    pub fn startup(&self) -> Startup {
        let mut s = Startup::new(self.superuser(), &self.database);
        s.password = self.server.password.clone();
        s
    }

    /// Runs SQL (several statements allowed) on the test database.
    pub async fn execute(&self, sql: &str) {
        self.connect()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }

    /// Creates a LOGIN role named `<prefix>_<random>`, dropped with the database.
    pub async fn create_role(&self, prefix: &str, password: Option<&str>) -> String {
        let name = crate::unique_name(prefix);
        let pw = match password {
            Some(p) => format!(" PASSWORD '{}'", p.replace('\'', "''")),
            None => String::new(),
        };
        self.roles.lock().expect("roles lock").push(name.clone());
        self.execute(&format!(
            "CREATE ROLE {name} LOGIN{pw}; GRANT ALL ON SCHEMA public TO {name}"
        ))
        .await;
        name
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if std::env::var_os("PGSTASH_TEST_KEEP_DB").is_some() {
            eprintln!("pgstash-tests: keeping database {}", self.database);
            return;
        }
        let url = self.server.admin_url(&self.server.admin_database);
        let database = self.database.clone();
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop may run inside a runtime (or while unwinding): do the async
        // work on a thread of its own with a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await else {
                    return;
                };
                tokio::spawn(conn);
                let drop_db = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                if let Err(e) = client.batch_execute(&drop_db).await {
                    eprintln!("pgstash-tests: {drop_db}: {}", describe(&e));
                }
                for role in roles {
                    let _ = client
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await;
                }
            });
        });
        let _ = done.join();
    }
}

/// Connects `tokio-postgres` and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {}", describe(&e)))
}

/// Like [`connect`], returning the error.
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A `tokio-postgres` error with its SQLSTATE and message, for panics.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e} ({e:?})"),
    }
}

/// The SQLSTATE of a `tokio-postgres` error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// The first column of every row of a simple query, as text.
pub async fn column(client: &Client, sql: &str) -> Vec<Option<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", crate::postgres::describe(&e)))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect()
}

/// The rows of a simple query's answer, every column as text.
pub fn simple_rows(messages: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The value `sql` (no parameters) returns: the first column of its first row,
/// through the extended protocol or the simple one.
pub async fn value(client: &Client, sql: &str, extended: bool) -> String {
    try_value(client, sql, extended)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Like [`value`], with an error, a missing row or a NULL returned as text
/// (for readers in the background, which report rather than panic).
pub async fn try_value(client: &Client, sql: &str, extended: bool) -> Result<String, String> {
    if extended {
        match client.query_one(sql, &[]).await {
            Ok(row) => Ok(row.get(0)),
            Err(e) => Err(describe(&e)),
        }
    } else {
        let messages = client.simple_query(sql).await.map_err(|e| describe(&e))?;
        messages
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .ok_or_else(|| "no row, or NULL".to_owned())
    }
}
