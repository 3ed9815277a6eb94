//! The routing stage against the sample directory (examples/directory) and a real SQLite
//! ledger: routed, unroutable with a reason, rejected for claims of different authorities,
//! a named reader checked, and re-routing after a directory fix.

use std::sync::Arc;

use amtsbote::directory::{Directory, SharedDirectory};
use amtsbote::intake::{Intake, Outcome};
use amtsbote::ledger::{self, Actor, RequestState};
use amtsbote::queue::metrics::StageMetrics;
use amtsbote::queue::relay::run_relay;
use amtsbote::queue::stage::run_worker;
use amtsbote::queue::{Queue, QueueStore, load_job_configs};
use amtsbote::route::{RouteStage, Router, Routing, decide};
use amtsbote::xamtshilfe::Checker;

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");

fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
}

fn decide_on(xml: &str) -> Routing {
    let message = Checker::with_defaults().check(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    decide(&message, &Directory::sample(), today())
}

/// The example with a second claim of another Einnahmeart.
fn with_second_claim(code: &str, name: &str) -> String {
    let start = EXAMPLE.find("<forderung>").unwrap();
    let end = EXAMPLE.find("</forderung>").unwrap() + "</forderung>".len();
    let second = EXAMPLE[start..end].replace("<code>GRST</code><name>Grundsteuer</name>", &format!("<code>{code}</code><name>{name}</name>"));
    let mut xml = EXAMPLE.to_string();
    xml.insert_str(end, &format!("\n    {second}"));
    xml.replace(">445.00</gesamtbetrag>", ">890.00</gesamtbetrag>")
}

#[test]
fn the_spec_request_is_routed_by_address_and_einnahmeart() {
    match decide_on(EXAMPLE) {
        Routing::Routed { kennung, detail, to } => {
            // Köln's rule for Grundsteuer names the Steueramt, before the `*` rule.
            assert_eq!(kennung, "vbh:053150000001", "{detail}");
            assert!(detail.contains("via xta"), "{detail}");
            assert_eq!(to.kennung, kennung);
            assert_eq!(to.channel, ledger::Channel::Xta);
            assert!(to.xta_reader.is_some(), "{to:?}");
            assert_eq!(to.directory_generation, "sample");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn claims_of_different_authorities_are_rejected_with_the_split() {
    match decide_on(&with_second_claim("GWST", "Gewerbesteuer")) {
        Routing::Rejected { detail } => assert!(detail.contains("GRST → vbh:053150000001") && detail.contains("GWST → vbh:053150000000"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // Two claims for the same authority are fine.
    assert!(matches!(decide_on(&with_second_claim("GRST", "Grundsteuer")), Routing::Routed { .. }));
}

#[test]
fn an_unknown_address_is_unroutable_never_guessed() {
    let xml = EXAMPLE.replace("<postleitzahl>50667</postleitzahl><ort>Köln</ort>", "<postleitzahl>99998</postleitzahl><ort>Nirgendwo</ort>");
    match decide_on(&xml) {
        Routing::Unroutable { detail } => assert!(detail.contains("no responsible authority"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_named_reader_is_checked_against_the_directory() {
    let leser = |kennung: &str| {
        EXAMPLE.replace(
            "    <autor>",
            &format!("    <leser>\n      <verzeichnisdienst listURI=\"urn:xoev-de:kosit:codeliste:verzeichnisdienst\" listVersionID=\"2\"><code>DVDV</code></verzeichnisdienst>\n      <kennung>{kennung}</kennung>\n      <name>Leser</name>\n    </leser>\n    <autor>"),
        )
    };
    assert!(matches!(decide_on(&leser("vbh:053150000001")), Routing::Routed { .. }));
    match decide_on(&leser("vbh:111111111111")) {
        Routing::Unroutable { detail } => assert!(detail.contains("vbh:111111111111") && detail.contains("vbh:053150000001"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn routing_moves_the_request_and_rerouting_follows_a_directory_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let checker = Arc::new(Checker::with_defaults());
    let intake = Intake::new(ledger.clone(), checker.clone());

    // Berlin is not in the sample street data: unroutable.
    let berlin = EXAMPLE
        .replace("<strasse>Hohe Straße</strasse>", "<strasse>Unter den Linden</strasse>")
        .replace("<postleitzahl>50667</postleitzahl><ort>Köln</ort>", "<postleitzahl>10117</postleitzahl><ort>Berlin</ort>");
    let Outcome::Accepted { id } = intake.accept("demo", "test:1", None, berlin.into_bytes()).await.unwrap() else { panic!() };
    let Outcome::Accepted { id: koeln } = intake.accept("demo", "test:2", None, EXAMPLE.replace("9a51-0c2f5f7e9b11", "9a51-0c2f5f7e9b12").into_bytes()).await.unwrap() else {
        panic!()
    };

    // The pipeline as `serve` runs it: the relay pushes the outbox's triggers, a worker of
    // the route queue routes.
    let directory = Arc::new(SharedDirectory::new(Directory::sample()));
    let router = Router { ledger: ledger.clone(), checker, directory: directory.clone() };
    let queues = QueueStore::open(&dir.path().join("queue.sqlite"), load_job_configs(None).unwrap()).await.unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(run_relay(ledger.clone(), queues.jobs(), metrics.clone(), std::time::Duration::from_millis(20), rx.clone()));
    let task = tokio::spawn(run_worker(queues.clone(), Arc::new(RouteStage { router: router.clone() }), metrics.clone(), rx));
    let start = std::time::Instant::now();
    loop {
        let states = (ledger.get(id).await.unwrap().unwrap().state, ledger.get(koeln).await.unwrap().unwrap().state);
        if states == (RequestState::Unroutable, RequestState::Routed) {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{states:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    relay.await.unwrap().unwrap();

    // The decision is in the request's columns, not only in the journal's text.
    let routed = ledger.get(koeln).await.unwrap().unwrap().routed.expect("routed columns");
    assert_eq!((routed.kennung.as_str(), routed.channel), ("vbh:053150000001", ledger::Channel::Xta));
    assert!(!routed.name.is_empty());
    assert_eq!(routed.directory_generation, "sample");
    assert!(ledger.get(id).await.unwrap().unwrap().routed.is_none(), "unroutable: no authority");
    assert_eq!(ledger.outbox_len().await.unwrap(), 0, "every trigger pushed");
    let c = queues.admin().queue_counts(Queue::Route).await.unwrap();
    assert_eq!((c.done, c.pending, c.failed, c.dead), (2, 0, 0, 0), "{c:?}");

    let journal = ledger.journal(koeln).await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!((last.from, last.to), (Some(RequestState::Validated), RequestState::Routed));
    assert!(last.detail.as_deref().unwrap().contains("vbh:053150000001"));
    assert_eq!(last.actor, Actor::system("route"));

    // The directory learns Berlin's street; an operator routes the request again.
    let dir2 = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/directory");
    let mut streets = std::fs::read_to_string(format!("{examples}/streets.csv")).unwrap();
    streets.push_str("Unter den Linden;10117;Berlin;110000000000;Mitte;Mitte\n");
    let mut rules = std::fs::read_to_string(format!("{examples}/jurisdictions.csv")).unwrap();
    if !rules.contains("110000000000;*") && !rules.contains("11000000;*") {
        rules.push_str("11000000;*;vbh:053150000000;;\n");
    }
    for (name, text) in [("streets.csv", streets), ("jurisdictions.csv", rules)] {
        std::fs::write(dir2.path().join(name), text).unwrap();
    }
    std::fs::copy(format!("{examples}/authorities.csv"), dir2.path().join("authorities.csv")).unwrap();
    let sources = amtsbote::directory::ImportSources {
        authorities: dir2.path().join("authorities.csv"),
        jurisdictions: dir2.path().join("jurisdictions.csv"),
        streets: Some(dir2.path().join("streets.csv")),
        gv100: None,
    };
    directory.import(dir2.path(), &sources, &mut |_| {}).unwrap();
    let state = router.route(id, RequestState::Unroutable, &Actor::operator("test")).await.unwrap();
    assert_eq!(state, RequestState::Routed, "{:?}", ledger.get(id).await.unwrap().unwrap().state_detail);
    let routed = ledger.get(id).await.unwrap().unwrap().routed.unwrap();
    assert!(routed.directory_generation.starts_with("gen-"), "{routed:?}");
}

/// An authority that takes no XTA (Düsseldorf in the sample directory, `kanal = post`): the
/// request is routed to it and goes on to `awaiting_print` at once, for the next print
/// batch — it does not wait in `routed`, which only the transmit stage takes (for XTA).
#[tokio::test]
async fn a_request_for_an_authority_by_post_goes_on_to_awaiting_print() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let checker = Arc::new(Checker::with_defaults());
    let intake = Intake::new(ledger.clone(), checker.clone());
    let post = include_str!("../examples/messages/ersuchen-post.xml");
    let Outcome::Accepted { id } = intake.accept("demo", "test:post", None, post.as_bytes().to_vec()).await.unwrap() else { panic!() };
    let router = Router { ledger: ledger.clone(), checker, directory: Arc::new(SharedDirectory::new(Directory::sample())) };
    let state = router.route(id, RequestState::Validated, &Actor::system("route")).await.unwrap();
    assert_eq!(state, RequestState::AwaitingPrint);
    let request = ledger.get(id).await.unwrap().unwrap();
    assert_eq!(request.state, RequestState::AwaitingPrint);
    let routed = request.routed.expect("the decision in its columns");
    assert_eq!((routed.kennung.as_str(), routed.channel), ("vbh:051110000000", ledger::Channel::Post));
    let journal: Vec<_> = ledger.journal(id).await.unwrap().into_iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(journal[1..], [(Some(RequestState::Validated), RequestState::Routed), (Some(RequestState::Routed), RequestState::AwaitingPrint)]);
}
