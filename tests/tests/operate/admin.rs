//! Admin actions on the metrics port: off unless enabled (404); without a
//! token only from loopback; with a token only with `Bearer <token>` (401
//! otherwise); `invalidate` and `flush` make the next read a miss; `reload`
//! picks up an edited rules file at once, and a broken one is refused with
//! 422 and file:line:column while the running rules keep working.

use std::net::SocketAddr;

use pgstash_tests::fixture::operated;
use pgstash_tests::operate::{column, OpsProxy};

const TABLES: &str = "CREATE TABLE items (id int PRIMARY KEY, name text);
                      INSERT INTO items VALUES (1, 'one');
                      CREATE TABLE other (id int PRIMARY KEY, name text);
                      INSERT INTO other VALUES (1, 'first');";

const ITEMS_RULE: &str = r#"
[[rule]]
name = "items"
tables = ["items"]
ttl = "60s"
"#;

const ITEMS_READ: &str = "SELECT name FROM items WHERE id = 1";
const OTHER_READ: &str = "SELECT name FROM other WHERE id = 1";

/// (hits, misses, fills) of `rule`, scraped.
async fn counts(proxy: &OpsProxy, rule: &str) -> (f64, f64, f64) {
    let s = proxy.scrape().await;
    let l = [("rule", rule)];
    (
        s.value("pgstash_cache_hits_total", &l),
        s.value("pgstash_cache_misses_total", &l),
        s.value("pgstash_cache_fills_total", &l),
    )
}

/// Runs `sql` until it is served from the cache (its miss is filled in
/// the background, so the first reads after a miss may miss too).
async fn cache_it(proxy: &OpsProxy, client: &tokio_postgres::Client, rule: &str, sql: &str) {
    for _ in 0..200 {
        let (hits, _, _) = counts(proxy, rule).await;
        column(client, sql).await;
        if counts(proxy, rule).await.0 > hits {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{sql} never became a hit of rule {rule}");
}

/// Runs `sql` once and says whether it was a miss (misses +1, hits +0).
async fn was_miss(
    proxy: &OpsProxy,
    client: &tokio_postgres::Client,
    rule: &str,
    sql: &str,
) -> bool {
    let (hits, misses, _) = counts(proxy, rule).await;
    column(client, sql).await;
    let (hits2, misses2, _) = counts(proxy, rule).await;
    assert_eq!(
        hits2 + misses2,
        hits + misses + 1.0,
        "{sql} is ruled by {rule}"
    );
    misses2 == misses + 1.0
}

#[tokio::test]
async fn admin_actions_are_not_found_unless_enabled() {
    let (pg, proxy) = operated(&[TABLES], ITEMS_RULE, |_| {}).await;
    for path in [
        format!("/admin/invalidate?database={}&table=items", pg.database),
        "/admin/flush".to_owned(),
        "/admin/reload".to_owned(),
    ] {
        let r = proxy.post(&path, None).await;
        assert_eq!(r.status, 404, "POST {path}: {}", r.body);
    }
    // And a cached entry is still served.
    let client = proxy.connect().await;
    cache_it(&proxy, &client, "items", ITEMS_READ).await;
    assert_eq!(proxy.post("/admin/flush", None).await.status, 404);
    assert!(!was_miss(&proxy, &client, "items", ITEMS_READ).await);
}

#[tokio::test]
async fn invalidate_and_flush_from_loopback_make_the_next_read_a_miss() {
    let (pg, proxy) = operated(&[TABLES], ITEMS_RULE, |c| c.admin.enabled = true).await;
    let client = proxy.connect().await;

    cache_it(&proxy, &client, "items", ITEMS_READ).await;
    let r = proxy
        .post(
            &format!("/admin/invalidate?database={}&table=items", pg.database),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        was_miss(&proxy, &client, "items", ITEMS_READ).await,
        "after /admin/invalidate the read goes upstream"
    );
    let invalidations = proxy.scrape().await.value(
        "pgstash_invalidations_total",
        &[("table", &format!("{}.items", pg.database))],
    );
    assert!(invalidations >= 1.0, "the admin invalidation is counted");

    // Invalidating another table leaves the entry alone.
    cache_it(&proxy, &client, "items", ITEMS_READ).await;
    let r = proxy
        .post(
            &format!("/admin/invalidate?database={}&table=other", pg.database),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!was_miss(&proxy, &client, "items", ITEMS_READ).await);

    let r = proxy.post("/admin/flush", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        was_miss(&proxy, &client, "items", ITEMS_READ).await,
        "after /admin/flush the read goes upstream"
    );
}

#[tokio::test]
async fn admin_without_a_token_refuses_non_loopback_clients() {
    // A local, non-loopback address of this host (no packet is sent).
    let Some(ip) = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    else {
        eprintln!("skipped: this host has no non-loopback address");
        return;
    };
    let (_pg, proxy) = operated(&[TABLES], ITEMS_RULE, |c| {
        c.admin.enabled = true;
        c.metrics_listen = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    let remote = SocketAddr::new(ip, proxy.metrics_addr.port());
    let r = pgstash_tests::operate::http::request(remote, "POST", "/admin/flush", &[])
        .await
        .expect("POST from a non-loopback address");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(proxy.post("/admin/flush", None).await.status, 200);
}

#[tokio::test]
async fn admin_with_a_token_needs_the_bearer_token() {
    let (_pg, proxy) = operated(&[TABLES], ITEMS_RULE, |c| {
        c.admin.enabled = true;
        c.admin.token = Some("s3cret-token".into());
    })
    .await;
    let client = proxy.connect().await;
    cache_it(&proxy, &client, "items", ITEMS_READ).await;

    let missing = proxy.post("/admin/flush", None).await;
    assert_eq!(
        missing.status, 401,
        "no token, even from loopback: {}",
        missing.body
    );
    let wrong = proxy.post("/admin/flush", Some("s3cret-tokeN")).await;
    assert_eq!(wrong.status, 401, "wrong token: {}", wrong.body);
    let basic = pgstash_tests::operate::http::request(
        proxy.metrics_addr,
        "POST",
        "/admin/flush",
        &[("Authorization", "Basic czNjcmV0LXRva2Vu")],
    )
    .await
    .unwrap();
    assert_eq!(basic.status, 401, "not a bearer token: {}", basic.body);
    assert!(
        !was_miss(&proxy, &client, "items", ITEMS_READ).await,
        "refused flushes flush nothing"
    );

    let right = proxy.post("/admin/flush", Some("s3cret-token")).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert!(was_miss(&proxy, &client, "items", ITEMS_READ).await);
}

#[tokio::test]
async fn reload_applies_an_edited_rules_file_and_refuses_a_broken_one() {
    let (_pg, proxy) = operated(&[TABLES], ITEMS_RULE, |c| c.admin.enabled = true).await;
    let rules = proxy.rules();
    let client = proxy.connect().await;

    // No rule for `other` yet: repeated reads are never hits.
    let bypass = |s: &pgstash_tests::operate::Scrape| {
        s.count("pgstash_query_duration_seconds", &[("path", "bypass")])
    };
    let before = bypass(&proxy.scrape().await);
    column(&client, OTHER_READ).await;
    column(&client, OTHER_READ).await;
    assert_eq!(bypass(&proxy.scrape().await), before + 2.0);

    // Edit the file without touching its mtime: only /admin/reload can see it.
    let edited = format!("{ITEMS_RULE}\n[[rule]]\nname = \"other\"\ntables = [\"other\"]\n");
    rules.rewrite_unnoticed(&edited);
    // Longer than the file poller's period: it must not have noticed.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    column(&client, OTHER_READ).await;
    assert_eq!(
        bypass(&proxy.scrape().await),
        before + 3.0,
        "not reloaded yet"
    );
    let r = proxy.post("/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        proxy
            .scrape()
            .await
            .value("pgstash_rule_reloads_total", &[("result", "ok")]),
        1.0
    );
    cache_it(&proxy, &client, "other", OTHER_READ).await;
    cache_it(&proxy, &client, "items", ITEMS_READ).await;

    // A broken file: refused with the place of the mistake.
    let broken = "[[rule]]\nname = \"other\"\nttl = \"forever\"\ntables = [\"other\"]\n";
    rules.rewrite_unnoticed(broken);
    let r = proxy.post("/admin/reload", None).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let place = format!("{}:3:7", rules.path().display());
    assert!(
        r.body.contains(&place),
        "the error names file:line:column ({place}): {}",
        r.body
    );
    assert!(r.body.contains("forever"), "and the bad value: {}", r.body);
    assert_eq!(
        proxy
            .scrape()
            .await
            .value("pgstash_rule_reloads_total", &[("result", "failed")]),
        1.0
    );

    // The running rules keep working: both entries are still hits.
    assert!(!was_miss(&proxy, &client, "other", OTHER_READ).await);
    assert!(!was_miss(&proxy, &client, "items", ITEMS_READ).await);
}

#[tokio::test]
async fn invalidate_with_a_schema_qualified_table_invalidates_it_or_refuses() {
    // rules.toml accepts `schema.name`; an operator will type it here too.
    // Answering 200 "invalidated" while the entry is still served would be
    // the worst outcome: the operator believes the stale data is gone.
    let (pg, proxy) = operated(&[TABLES], ITEMS_RULE, |c| c.admin.enabled = true).await;
    let client = proxy.connect().await;
    cache_it(&proxy, &client, "items", ITEMS_READ).await;
    let r = proxy
        .post(
            &format!(
                "/admin/invalidate?database={}&table=public.items",
                pg.database
            ),
            None,
        )
        .await;
    if r.status == 200 {
        assert!(
            was_miss(&proxy, &client, "items", ITEMS_READ).await,
            "200 ({}) but the entry of public.items is still served",
            r.body.trim()
        );
    } else {
        assert!(
            (400..500).contains(&r.status),
            "a name it cannot handle is refused as a client error: {} {}",
            r.status,
            r.body
        );
    }
}
