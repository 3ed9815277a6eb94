//! Access and tenants that cannot speak for others, over real sockets on a real SQLite
//! ledger: every route of the router (enumerated from `web::routes()`, so a new route
//! without a rule or a sample here fails) without a token, with a malformed, an unknown, a
//! revoked and another tenant's token, and with the right one; messages in another
//! authority's name; one Nachrichten-UUID under two tenants, over HTTP and in the inbox;
//! tokens stored hashed, made, listed and revoked with `amtsbote token`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amtsbote::config::Tenant;
use amtsbote::intake::Intake;
use amtsbote::intake::inbox::{InboxDirs, WatchConfig, Watcher};
use amtsbote::ledger::{self, Ledger};
use amtsbote::web::auth::Rule;
use amtsbote::web::{self, AppState};
use amtsbote::xamtshilfe::{Checker, Limits};
use axum::http::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ERSUCHEN: &str = include_str!("../examples/messages/ersuchen.xml");
const ANFRAGE: &str = include_str!("../examples/messages/zustaendigkeit-anfrage.xml");
const LEMGO: &str = "vbh:057660440000";
const KOELN: &str = "vbh:053150000000";
const UUID: &str = "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11";

/// The sample request (from Lemgo) with its own UUID.
fn ersuchen(n: u32) -> String {
    ERSUCHEN.replace(UUID, &format!("7d3c1f0e-2b7a-4c55-9a51-{n:012x}"))
}

/// The sample request in Köln's name (author and requesting authority) with UUID `n`.
fn from_koeln(n: u32) -> String {
    ersuchen(n).replace(LEMGO, KOELN)
}

fn tenants() -> Vec<Tenant> {
    vec![
        Tenant { id: "demo".into(), name: "Stadt Lemgo".into(), kennung: LEMGO.into(), ..Tenant::default() },
        Tenant { id: "koeln".into(), name: "Stadt Köln".into(), kennung: KOELN.into(), ..Tenant::default() },
    ]
}

/// A configuration file with the two tenants, for the command line.
fn write_config(root: &Path) -> std::path::PathBuf {
    let file = root.join("amtsbote.toml");
    let mut text = format!("data_dir = {:?}\n", root.display().to_string());
    for t in tenants() {
        text.push_str(&format!("[[tenants]]\nid = \"{}\"\nname = \"{}\"\nkennung = \"{}\"\n", t.id, t.name, t.kennung));
    }
    std::fs::write(&file, text).unwrap();
    file
}

/// `amtsbote ARGS` on the data directory `root`: (exit code, stdout, stderr).
fn amtsbote(root: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(args)
        .env("AMTSBOTE_CONFIG", write_config(root))
        .env("AMTSBOTE_LOG", "warn")
        .env_remove("AMTSBOTE_DATA_DIR")
        .env_remove("AMTSBOTE_LEDGER_URL")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `amtsbote token create --role ROLE --name NAME`: the token.
fn create_token(root: &Path, role: &str, name: &str) -> String {
    let (code, out, err) = amtsbote(root, &["token", "create", "--role", role, "--name", name]);
    assert_eq!(code, Some(0), "{err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("ab_") && !token.contains('\n'), "{out}");
    token
}

struct Server {
    addr: std::net::SocketAddr,
    ledger: Arc<dyn Ledger>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// The real router on the ledger of `root` (the one the command line uses).
    async fn start(root: &Path) -> Server {
        Server::start_with(root, |state| state).await
    }

    async fn start_with(root: &Path, configure: impl FnOnce(AppState) -> AppState) -> Server {
        let ledger = ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
        ledger.migrate().await.unwrap();
        let intake = Intake::new(ledger.clone(), Arc::new(Checker::with_defaults())).with_tenants(tenants());
        let state = configure(AppState::new(intake, tenants(), 1 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(web::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server { addr, ledger, stop: Some(stop) }
    }

    /// One request; `authorization` is the whole header value, if any.
    async fn send(&self, method: &Method, path: &str, authorization: Option<&str>, body: Option<(&str, &str)>) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(value) = authorization {
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        let (content_type, body) = body.unwrap_or(("", ""));
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if *method == Method::POST {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        Reply::parse(&raw)
    }

    async fn as_token(&self, token: &str, method: &Method, path: &str, body: Option<(&str, &str)>) -> Reply {
        self.send(method, path, Some(&format!("Bearer {token}")), body).await
    }

    async fn post_as(&self, token: &str, path: &str, xml: &str) -> Reply {
        self.as_token(token, &Method::POST, path, Some(("application/xml", xml))).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
        Reply { status, headers, body: body.to_string() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn reasons(&self) -> String {
        self.json()["reasons"].to_string()
    }
}

/// A request each route answers with 2xx to a caller it admits: (path with query, body).
/// A route added to the router without a sample here fails the test that walks them all.
fn sample(method: &Method, path: &str, demo_request: i64, n: u32) -> (String, Option<(&'static str, String)>) {
    match (method.as_str(), path) {
        ("POST", "/api/v1/nachrichten") => (format!("{path}?tenant=demo"), Some(("application/xml", ersuchen(n)))),
        ("GET", "/api/v1/requests") => (path.into(), None),
        ("GET", "/api/v1/requests/{id}") => (format!("/api/v1/requests/{demo_request}"), None),
        ("GET", "/api/v1/zustaendigkeit") => (format!("{path}?plz=50667&ort=K%C3%B6ln&einnahmeart=GRST"), None),
        ("POST", "/api/v1/zustaendigkeit") => (path.into(), Some(("application/xml", ANFRAGE.to_string()))),
        ("GET", "/healthz" | "/metrics") => (path.into(), None),
        _ => panic!("{method} {path}: a new route; add a sample request here (and check its access rule, {:?})", web::routes().iter().find(|r| r.path == path).map(|r| r.rule)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_missing_bad_unknown_revoked_or_foreign_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let admin = create_token(root, "admin", "admin");
    let operator = create_token(root, "operator", "prometheus");
    let demo = create_token(root, "tenant:demo", "lemgo");
    let koeln = create_token(root, "tenant:koeln", "koeln");
    let revoked = create_token(root, "admin", "gone");
    assert_eq!(amtsbote(root, &["token", "revoke", "gone"]).0, Some(0));
    let unknown = amtsbote::access::Token::generate().unwrap();
    let server = Server::start(root).await;

    // A request of demo's, for the routes that read one.
    let reply = server.post_as(&demo, "/api/v1/nachrichten", &ersuchen(1)).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let demo_request = reply.json()["id"].as_i64().unwrap();

    let routes = web::routes();
    assert!(routes.len() >= 7, "{}", routes.len());
    let mut n = 100;
    for route in &routes {
        let what = format!("{} {}", route.method, route.path);
        let right = match route.rule {
            Rule::Open => None,
            Rule::Operator | Rule::OwnRequests | Rule::PostAsTenant => Some(format!("Bearer {admin}")),
        };
        let malformed = format!("Bearer {}", &admin[..20]);
        let basic = "Basic YWRtaW46YWRtaW4=".to_string();
        let unknown = format!("Bearer {}", unknown.expose());
        let revoked = format!("Bearer {revoked}");
        let (operator_status, demo_status, koeln_status): (u16, u16, u16) = match route.rule {
            Rule::Open => (200, 200, 200),
            Rule::Operator => (200, 403, 403),
            // The sample posts for demo (?tenant=demo): Köln may not.
            Rule::PostAsTenant => (403, 202, 403),
            Rule::OwnRequests => (200, 200, if route.path.contains("{id}") { 404 } else { 200 }),
        };
        let bearer = |token: &str| Some(format!("Bearer {token}"));
        let cases: Vec<(&str, Option<String>, Option<u16>)> = vec![
            ("the right token", right, None),
            ("no token", None, Some(401)),
            ("malformed", Some(malformed), Some(401)),
            ("Basic", Some(basic), Some(401)),
            ("unknown", Some(unknown), Some(401)),
            ("revoked", Some(revoked), Some(401)),
            ("operator", bearer(&operator), Some(operator_status)),
            ("tenant:demo", bearer(&demo), Some(demo_status)),
            ("tenant:koeln", bearer(&koeln), Some(koeln_status)),
        ];
        for (case, authorization, expected) in cases {
            n += 1;
            let (path, body) = sample(&route.method, route.path, demo_request, n);
            let reply = server.send(&route.method, &path, authorization.as_deref(), body.as_ref().map(|(t, b)| (*t, b.as_str()))).await;
            let authorization = authorization.as_ref();
            let expected = match (expected, route.rule) {
                (None, _) | (Some(_), Rule::Open) => {
                    assert!((200..300).contains(&reply.status), "{what}, {case}: {reply:?}");
                    continue;
                }
                (Some(expected), _) => expected,
            };
            assert_eq!(reply.status, expected, "{what}, {case}: {reply:?}");
            match expected {
                401 => {
                    assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{what}, {case}: {reply:?}");
                    assert_eq!(reply.json()["error"], "unauthorized", "{what}, {case}");
                    let sent = authorization.and_then(|a| a.split_once(' ')).map(|(_, t)| t).unwrap_or("ab_-");
                    assert!(!reply.body.contains(sent), "no token echoed: {}", reply.body);
                }
                403 => assert_eq!(reply.json()["error"], "forbidden", "{what}, {case}"),
                _ => {}
            }
        }
        if route.rule == Rule::Open {
            assert_eq!(route.path, "/healthz", "only /healthz goes without a token");
        }
    }

    // A tenant token names no other tenant: not to post, not to list.
    let reply = server.post_as(&koeln, "/api/v1/nachrichten?tenant=demo", &ersuchen(7)).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.reasons().contains("demo") && reply.reasons().contains("koeln"), "{}", reply.reasons());
    let reply = server.as_token(&koeln, &Method::GET, "/api/v1/requests?tenant=demo", None).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let reply = server.as_token(&koeln, &Method::POST, "/api/v1/nachrichten", Some(("application/xml", &from_koeln(8)))).await;
    assert_eq!(reply.status, 202, "its own message, no ?tenant= needed: {reply:?}");
    // Each tenant lists its own requests only; the operator lists all.
    let tenants_listed = |reply: Reply| -> std::collections::BTreeSet<String> { reply.json()["requests"].as_array().unwrap().iter().map(|r| r["tenant"].as_str().unwrap().to_string()).collect() };
    assert_eq!(tenants_listed(server.as_token(&koeln, &Method::GET, "/api/v1/requests", None).await), ["koeln".to_string()].into());
    assert_eq!(tenants_listed(server.as_token(&demo, &Method::GET, "/api/v1/requests", None).await), ["demo".to_string()].into());
    assert_eq!(tenants_listed(server.as_token(&operator, &Method::GET, "/api/v1/requests", None).await), ["demo".to_string(), "koeln".to_string()].into());
    // Another tenant's request looks like one that does not exist.
    let foreign = server.as_token(&koeln, &Method::GET, &format!("/api/v1/requests/{demo_request}"), None).await;
    let absent = server.as_token(&koeln, &Method::GET, "/api/v1/requests/999999", None).await;
    assert_eq!((foreign.status, absent.status), (404, 404));
    assert_eq!(foreign.json()["error"], absent.json()["error"]);

    // A path no route has, or a method a route does not take: 401 without a valid token,
    // like every endpoint but /healthz (the API's shape is not probed anonymously); with
    // any valid token 404 and 405.
    for (method, path, known) in [(Method::GET, "/nope", 404), (Method::POST, "/api/v1/admin", 404), (Method::DELETE, "/metrics", 405), (Method::PUT, "/api/v1/requests", 405)] {
        for authorization in [None, Some(format!("Bearer {}", unknown.expose())), Some(format!("Bearer {revoked}"))] {
            let reply = server.send(&method, path, authorization.as_deref(), None).await;
            assert_eq!(reply.status, 401, "{method} {path} with {authorization:?}: {reply:?}");
            assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{reply:?}");
            assert!(!reply.body.contains(path), "the 401 says nothing of the path: {}", reply.body);
        }
        for token in [&admin, &operator, &koeln] {
            assert_eq!(server.as_token(token, &method, path, None).await.status, known, "{method} {path}");
        }
    }
    // The use of a token is noted.
    let start = Instant::now();
    while server.ledger.tokens().await.unwrap().iter().find(|t| t.name == "lemgo").unwrap().last_used_at.is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "the last use of a token is noted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_posts_only_in_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let demo = create_token(root, "tenant:demo", "lemgo");
    let server = Server::start(root).await;

    // Author Köln, posted for Lemgo: rejected, the reason names both kennungen.
    let reply = server.post_as(&demo, "/api/v1/nachrichten", &from_koeln(1)).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["error"], "rejected");
    let reasons = reply.reasons();
    assert!(reasons.contains("autor/kennung") && reasons.contains(KOELN) && reasons.contains(LEMGO), "{reasons}");
    // The requesting authority alone another's: rejected too.
    let authority_only = ersuchen(2).replacen(&format!("<ersuchendeBehoerde>\n      <kennung>{LEMGO}"), &format!("<ersuchendeBehoerde>\n      <kennung>{KOELN}"), 1);
    assert_ne!(authority_only, ersuchen(2), "the sample's layout changed");
    let reply = server.post_as(&demo, "/api/v1/nachrichten", &authority_only).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reasons = reply.reasons();
    assert!(reasons.contains("ersuchendeBehoerde/kennung") && reasons.contains(KOELN) && reasons.contains(LEMGO), "{reasons}");
    // Neither was routed; the rejected one keeps no UUID, so Köln may still send its own.
    let requests = server.ledger.list(&Default::default()).await.unwrap();
    assert!(requests.iter().all(|r| r.state == ledger::RequestState::Rejected && r.nachrichten_uuid.is_none()), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nachrichten_uuid_under_two_tenants_is_a_duplicate_over_http_and_in_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let demo = create_token(root, "tenant:demo", "lemgo");
    let koeln = create_token(root, "tenant:koeln", "koeln");
    let server = Server::start(root).await;

    let first = server.post_as(&demo, "/api/v1/nachrichten", &ersuchen(1)).await;
    assert_eq!(first.status, 202, "{first:?}");
    let first_id = first.json()["id"].as_i64().unwrap();
    // Köln's own message (its author), but with Lemgo's UUID: the second one, refused.
    let second = server.post_as(&koeln, "/api/v1/nachrichten", &from_koeln(1)).await;
    assert_eq!(second.status, 409, "{second:?}");
    assert_eq!(second.json()["existing"], first_id);
    assert!(second.reasons().contains(&format!("request {first_id}")), "{}", second.reasons());

    // In the inbox: Köln's watcher takes in a file with the same UUID.
    let dirs = InboxDirs { tenant: "koeln".into(), inbox: root.join("inbox/koeln") };
    let intake = Intake::new(server.ledger.clone(), Arc::new(Checker::with_defaults())).with_tenants(tenants());
    let config = WatchConfig { poll_interval: Duration::from_millis(20), settle: Duration::from_millis(10), concurrency: 2, limits: Limits::default(), ..WatchConfig::default() };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Watcher::new(intake, vec![dirs.clone()], config).run(rx));
    std::fs::create_dir_all(&dirs.inbox).unwrap();
    std::fs::write(dirs.inbox.join("again.xml"), from_koeln(1)).unwrap();
    std::fs::write(dirs.inbox.join("lemgos.xml"), ersuchen(2)).unwrap();
    let reason_of = |suffix: &str| -> Option<String> {
        let entry = std::fs::read_dir(dirs.error()).ok()?.flatten().find(|e| e.file_name().to_string_lossy().ends_with(suffix))?;
        std::fs::read_to_string(entry.path()).ok()
    };
    let start = Instant::now();
    while reason_of("again.xml.error.txt").is_none() || reason_of("lemgos.xml.error.txt").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "both files in error/");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = reason_of("again.xml.error.txt").unwrap();
    assert!(again.contains("duplicate") && again.contains(&format!("request {first_id}")), "{again}");
    // A file in Lemgo's name in Köln's inbox is refused with both kennungen.
    let lemgos = reason_of("lemgos.xml.error.txt").unwrap();
    assert!(lemgos.contains(KOELN) && lemgos.contains(LEMGO), "{lemgos}");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let valid = server.ledger.list(&Default::default()).await.unwrap().into_iter().filter(|r| r.state != ledger::RequestState::Rejected).count();
    assert_eq!(valid, 1, "only the first was taken in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_hashed_and_listed_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = create_token(root, "operator", "prometheus");
    let (code, _, err) = amtsbote(root, &["token", "create", "--role", "tenant:nobody"]);
    assert_eq!(code, Some(2), "a tenant that is not configured: {err}");
    assert!(err.contains("nobody"), "{err}");
    let (code, _, err) = amtsbote(root, &["token", "create", "--role", "admin", "--name", "prometheus"]);
    assert_eq!(code, Some(1), "the name is taken: {err}");
    let (code, out, _) = amtsbote(root, &["token", "create", "--role", "tenant:demo"]);
    assert_eq!(code, Some(0));
    let other = out.trim().to_string();

    // The table holds the hash, never the token.
    use sqlx::{Connection, Row};
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    let rows = sqlx::query("SELECT name, role, token_sha256, created_at, revoked_at, last_used_at FROM access_tokens").fetch_all(&mut db).await.unwrap();
    assert_eq!(rows.len(), 2);
    let mut hashes = Vec::new();
    for row in &rows {
        let values: Vec<Option<String>> = (0..6).map(|i| row.try_get::<Option<String>, _>(i).unwrap()).collect();
        let all = format!("{values:?}");
        for secret in [&token, &other] {
            assert!(!all.contains(secret.as_str()) && !all.contains(&secret[3..]), "a token in the table: {all}");
        }
        hashes.push(row.get::<String, _>("token_sha256"));
    }
    assert!(hashes.contains(&amtsbote::access::hash(&token)) && hashes.contains(&amtsbote::access::hash(&other)));
    db.close().await.unwrap();

    // token list shows names and roles, neither token nor hash.
    for args in [&["token", "list"][..], &["token", "list", "--json"][..]] {
        let (code, out, err) = amtsbote(root, args);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("prometheus") && out.contains("operator") && out.contains("tenant:demo"), "{out}");
        for secret in [&token, &other, &hashes[0], &hashes[1]] {
            assert!(!out.contains(secret.as_str()) && !err.contains(secret.as_str()), "{args:?} shows a secret: {out}");
        }
    }
    let (_, json, _) = amtsbote(root, &["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(&json).unwrap();
    assert!(listed.as_array().unwrap().iter().all(|t| t["revoked_at"].is_null() && t.get("sha256").is_none()), "{listed}");
    assert_eq!(amtsbote(root, &["token", "revoke", "prometheus"]).0, Some(0));
    assert_eq!(amtsbote(root, &["token", "revoke", "nobody"]).0, Some(1));
    let (_, json, _) = amtsbote(root, &["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(&json).unwrap();
    let prometheus = listed.as_array().unwrap().iter().find(|t| t["name"] == "prometheus").unwrap().clone();
    assert!(prometheus["revoked_at"].is_string(), "{prometheus}");
}

/// `http.tls_cert` and `http.tls_key`: the server speaks HTTPS with that certificate, and a
/// plain HTTP request to it gets no HTTP answer. One set without the other is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_certificate_and_no_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let admin = create_token(root, "admin", "admin");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (root.join("http.pem"), root.join("http.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let config = amtsbote::config::Config::load_with(
        None,
        &[("AMTSBOTE_HTTP_TLS_CERT".into(), cert.display().to_string()), ("AMTSBOTE_HTTP_TLS_KEY".into(), key.display().to_string())],
    )
    .unwrap();
    let tls = config.http.server_tls().expect("both set").rustls_config().unwrap();
    let server = Server::start_with(root, |state| state.with_tls(tls)).await;

    // HTTPS, trusting that certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https_get = async |path: &str, token: Option<&str>| -> String {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client.clone()));
        let mut stream = connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.expect("the TLS handshake");
        let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        String::from_utf8_lossy(&raw).into_owned()
    };
    assert!(https_get("/healthz", None).await.starts_with("HTTP/1.1 200"));
    assert!(https_get("/metrics", Some(&admin)).await.starts_with("HTTP/1.1 200"));
    assert!(https_get("/metrics", None).await.starts_with("HTTP/1.1 401"), "tokens over HTTPS too");

    // Plain HTTP to it: no HTTP answer, the connection ends.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw)).await.expect("the server closes the connection");
    assert!(!String::from_utf8_lossy(&raw).contains("HTTP/1.1 200"), "{raw:?}");

    // One file without the other is an error naming the setting.
    let e = amtsbote::config::Config::load_with(None, &[("AMTSBOTE_HTTP_TLS_CERT".into(), cert.display().to_string())]).unwrap_err().to_string();
    assert!(e.contains("http.tls_key"), "{e}");
    // A key that is not the certificate's is named by amtsbote config check.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(root.join("other.key"), other.signing_key.serialize_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["config", "check"])
        .env("AMTSBOTE_DATA_DIR", root)
        .env("AMTSBOTE_HTTP_TLS_CERT", &cert)
        .env("AMTSBOTE_HTTP_TLS_KEY", root.join("other.key"))
        .env_remove("AMTSBOTE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("http.tls_key") && err.contains("http.tls_cert"), "{err}");
}

/// `amtsbote queues` reads an HTTPS serve's `/metrics` (with the machine's local token),
/// trusting the configured `http.tls_cert` alone: a certificate that names neither
/// `localhost` nor the listen address is fine, another certificate is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_reads_the_metrics_of_an_https_serve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let made = rcgen::generate_simple_self_signed(vec!["amtsbote.example".into()]).unwrap();
    let (cert, key) = (root.join("http.pem"), root.join("http.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["amtsbote.example".into()]).unwrap();
    std::fs::write(root.join("other.pem"), other.cert.pem()).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let command = |args: &[&str], cert: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_amtsbote"));
        c.args(args)
            .env("AMTSBOTE_DATA_DIR", root)
            .env("AMTSBOTE_HTTP_LISTEN", &listen)
            .env("AMTSBOTE_HTTP_TLS_CERT", cert)
            .env("AMTSBOTE_HTTP_TLS_KEY", &key)
            .env("AMTSBOTE_LOG", "warn")
            .env_remove("AMTSBOTE_CONFIG")
            .env_remove("AMTSBOTE_LEDGER_URL");
        c
    };
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = Killed(command(&["serve"], &cert).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap());
    let queues = |cert: &Path| {
        let out = command(&["queues"], cert).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let start = Instant::now();
    let mut shown = queues(&cert);
    while !shown.contains("as counted by the serve at https://") {
        assert!(start.elapsed() < Duration::from_secs(60), "queues never read the HTTPS serve's /metrics: {shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        shown = queues(&cert);
    }
    assert!(shown.contains("run p50") && shown.contains("route"), "{shown}");
    // Another certificate configured (not the one the serve presents): nothing is read.
    let refused = queues(&root.join("other.pem"));
    assert!(!refused.contains("as counted") && refused.contains("no serve answers at https://"), "{refused}");
}
