//! Rendering a notification: [`MailContent`] → subject, plain text and HTML from the templates
//! in `templates/mail/`, and the rendered parts → a MIME message ([`build_message`]).
//!
//! The templates are compiled in; a file of the same name in `<data_dir>/templates/mail/`
//! takes a built-in one's place. [`Templates::load`] compiles every template and renders each
//! with sample contents of every event, single and as a digest, so that a syntax error, an
//! unknown variable or filter, or a value that may be absent printed without a test stops
//! start-up with the file and line — not the first email of that kind at 2 a.m.
//!
//! What a template shows is formatted here, in Rust (German dates, times in Europe/Berlin,
//! amounts in euro), and put into the context next to the raw values; the templates only place
//! it. No content is ever logged.

use super::{Authority, Debtor, Event, Item, MailContent, ReceivedInfo};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Berlin;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Errors.

/// A template that cannot be read, compiled or rendered. Its display starts with the file
/// (the override's path, or `templates/mail/<name>` for a built-in one) and the line.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{}: cannot read the mail template: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Template { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    Subject { file: String, message: String },
    #[error("a notification needs at least one item")]
    NoItems,
}

/// A rendered notification that cannot be made into a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("the sender address {address:?} is not a valid mailbox: {reason} (set mail.from)")]
    From { address: String, reason: String },
    #[error("recipient {index} ({address:?}) is not a valid mailbox: {reason}")]
    To { index: usize, address: String, reason: String },
    #[error("a notification needs at least one recipient")]
    NoRecipient,
    #[error("the Message-ID {0:?} must be id-left@id-right, printable ASCII without <, >, spaces")]
    MessageId(String),
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
}

// ---------------------------------------------------------------------------------------------
// Formatting (German, Europe/Berlin).

/// `01.12.2026`.
pub fn date_text(date: NaiveDate) -> String {
    date.format("%d.%m.%Y").to_string()
}

/// The day in Berlin of an instant, `01.12.2026`.
pub fn berlin_date_text(at: DateTime<Utc>) -> String {
    date_text(at.with_timezone(&Berlin).date_naive())
}

/// The time in Berlin of an instant, `19:12 Uhr`.
pub fn berlin_time_text(at: DateTime<Utc>) -> String {
    format!("{} Uhr", at.with_timezone(&Berlin).format("%H:%M"))
}

/// An amount in euro cents as `1.234,56 €` (`-0,05 €` for a negative one).
pub fn euro_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let euros = (abs / 100).to_string();
    let mut grouped = String::with_capacity(euros.len() + euros.len() / 3);
    for (i, digit) in euros.chars().enumerate() {
        if i > 0 && (euros.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped},{:02} €", abs % 100)
}

/// What happened, in German, as a digest lists it.
fn event_text(event: Event) -> &'static str {
    match event {
        Event::Transmitted => "elektronisch übermittelt",
        Event::Delivered => "von der Behörde abgeholt",
        Event::Printed => "zum Druck gegeben",
        Event::Posted => "zur Post gegeben",
        Event::Rejected => "zurückgewiesen",
        Event::Unroutable => "keine zuständige Behörde gefunden",
        Event::Failed => "Zustellung gescheitert",
        Event::Received => "Nachricht eingegangen",
    }
}

// ---------------------------------------------------------------------------------------------
// What the templates see (templates/mail/README.md lists it for operators).

#[derive(Serialize)]
struct Context<'a> {
    tenant: TenantView<'a>,
    contact: Option<&'a str>,
    /// Any item a test message.
    test: bool,
    /// Single emails only.
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<ItemView<'a>>,
    /// Digests only.
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<ItemView<'a>>>,
}

#[derive(Serialize)]
struct TenantView<'a> {
    name: &'a str,
    kennung: &'a str,
}

#[derive(Serialize)]
struct ItemView<'a> {
    event: &'static str,
    event_text: &'static str,
    at_date: String,
    at_time: String,
    at_text: String,
    request_id: Option<i64>,
    aktenzeichen: Option<&'a str>,
    nachrichten_uuid: Option<&'a str>,
    test: bool,
    debtors: Vec<DebtorView<'a>>,
    total_cents: Option<i64>,
    total_text: Option<String>,
    authority: Option<&'a Authority>,
    /// "Stadt Köln (vbh:053150000000)".
    authority_text: Option<String>,
    xta_message_id: Option<&'a str>,
    report: Option<&'a str>,
    batch_date: Option<String>,
    batch_date_text: Option<String>,
    letter_number: Option<u32>,
    reasons: &'a [String],
    received: Option<&'a ReceivedInfo>,
}

#[derive(Serialize)]
struct DebtorView<'a> {
    name: &'a str,
    /// `None` under Auskunftssperre.
    address: Option<&'a str>,
    /// "Erika Mustermann, Musterstraße 1, 32657 Lemgo", or the name alone.
    text: String,
}

impl<'a> DebtorView<'a> {
    fn new(debtor: &'a Debtor) -> DebtorView<'a> {
        let text = match &debtor.address {
            Some(address) => format!("{}, {address}", debtor.name),
            None => debtor.name.clone(),
        };
        DebtorView { name: &debtor.name, address: debtor.address.as_deref(), text }
    }
}

impl<'a> ItemView<'a> {
    fn new(item: &'a Item) -> ItemView<'a> {
        let at_date = berlin_date_text(item.at);
        let at_time = berlin_time_text(item.at);
        ItemView {
            event: item.event.as_str(),
            event_text: event_text(item.event),
            at_text: format!("{at_date}, {at_time}"),
            at_date,
            at_time,
            request_id: item.request_id,
            aktenzeichen: item.aktenzeichen.as_deref(),
            nachrichten_uuid: item.nachrichten_uuid.as_deref(),
            test: item.test,
            debtors: item.debtors.iter().map(DebtorView::new).collect(),
            total_cents: item.total_cents,
            total_text: item.total_cents.map(euro_text),
            authority: item.authority.as_ref(),
            authority_text: item.authority.as_ref().map(|a| format!("{} ({})", a.name, a.kennung)),
            xta_message_id: item.xta_message_id.as_deref(),
            report: item.report.as_deref(),
            batch_date: item.batch_date.map(|d| d.to_string()),
            batch_date_text: item.batch_date.map(date_text),
            letter_number: item.letter_number,
            reasons: &item.reasons,
            received: item.received.as_ref(),
        }
    }
}

fn context(content: &MailContent) -> Context<'_> {
    let views = || content.items.iter().map(ItemView::new);
    let digest = content.items.len() > 1;
    Context {
        tenant: TenantView { name: &content.tenant_name, kennung: &content.tenant_kennung },
        contact: content.contact.as_deref(),
        test: content.items.iter().any(|i| i.test),
        item: if digest { None } else { views().next() },
        items: if digest { Some(views().collect()) } else { None },
    }
}

// ---------------------------------------------------------------------------------------------
// The templates.

/// The name of the digest's templates (`digest.subject`, `digest.txt`, `digest.html`).
pub const DIGEST: &str = "digest";
/// The three parts of an email, by file extension.
const PARTS: [&str; 3] = ["subject", "txt", "html"];

macro_rules! builtin {
    ($name:literal) => {
        (
            $name,
            [
                include_str!(concat!("../../templates/mail/", $name, ".subject")),
                include_str!(concat!("../../templates/mail/", $name, ".txt")),
                include_str!(concat!("../../templates/mail/", $name, ".html")),
            ],
        )
    };
}

/// Every template name (an event's or the digest's) with its subject, text and HTML.
const BUILTIN: [(&str, [&str; 3]); 9] = [
    builtin!("transmitted"),
    builtin!("delivered"),
    builtin!("printed"),
    builtin!("posted"),
    builtin!("rejected"),
    builtin!("unroutable"),
    builtin!("failed"),
    builtin!("received"),
    builtin!("digest"),
];

/// Files in the override folder that are not templates but expected there.
const IGNORED_OVERRIDES: [&str; 1] = ["README.md"];

/// The mail templates, compiled and checked.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
    /// Template name (`rejected.txt`) → the file to name in an error.
    files: Vec<(String, String)>,
    unknown_overrides: Vec<PathBuf>,
}

/// One rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in
    /// `<data_dir>/templates/mail/` where there is one; every template compiled and rendered
    /// with samples of every event, single and digest. A missing folder means no overrides.
    pub fn load(data_dir: &Path) -> Result<Templates, TemplateError> {
        let dir = data_dir.join("templates").join("mail");
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None }
        });
        env.set_formatter(refuse_none);
        // A line holding only a tag leaves nothing behind; the file's last line break stays.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| template_error("templates/mail", &e))?;
        env.set_syntax(syntax);
        let mut files = Vec::new();
        for (base, sources) in BUILTIN {
            for (part, builtin) in PARTS.iter().zip(sources) {
                let name = format!("{base}.{part}");
                let path = dir.join(&name);
                let (source, file) = match std::fs::read_to_string(&path) {
                    Ok(text) => (text, path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (builtin.to_owned(), format!("templates/mail/{name}"))
                    }
                    Err(source) => return Err(TemplateError::Io { path, source }),
                };
                env.add_template_owned(name.clone(), source).map_err(|e| template_error(&file, &e))?;
                files.push((name, file));
            }
        }
        // Debug mode while checking: an error then carries the span of the failing expression,
        // which its message quotes.
        env.set_debug(true);
        let mut templates = Templates { env, files, unknown_overrides: unknown_files(&dir)? };
        for content in samples() {
            templates.render(&content)?;
        }
        templates.env.set_debug(false);
        Ok(templates)
    }

    /// Files in `<data_dir>/templates/mail/` that are no template's name (a typo, an old
    /// copy): they are not used; `serve` warns about them.
    pub fn unknown_overrides(&self) -> &[PathBuf] {
        &self.unknown_overrides
    }

    /// One item: its event's templates; several: the digest's.
    pub fn render(&self, content: &MailContent) -> Result<Rendered, TemplateError> {
        let base = match content.items.as_slice() {
            [] => return Err(TemplateError::NoItems),
            [one] => one.event.as_str(),
            _ => DIGEST,
        };
        let ctx = Value::from(minijinja::value::Serde(context(content)));
        let subject = self.render_one(&format!("{base}.subject"), &ctx)?;
        let mut subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(TemplateError::Subject {
                file: self.file(&format!("{base}.subject")).to_owned(),
                message: "the subject is empty".to_owned(),
            });
        }
        if content.items.iter().any(|i| i.test) && !subject.contains("Testnachricht") {
            subject.insert_str(0, "[Testnachricht] ");
        }
        Ok(Rendered {
            subject,
            text: self.render_one(&format!("{base}.txt"), &ctx)?,
            html: self.render_one(&format!("{base}.html"), &ctx)?,
        })
    }

    fn render_one(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        let file = self.file(name);
        let template = self.env.get_template(name).map_err(|e| template_error(file, &e))?;
        template.render(ctx).map_err(|e| template_error(file, &e))
    }

    fn file<'a>(&'a self, name: &'a str) -> &'a str {
        self.files.iter().find(|(n, _)| n == name).map_or(name, |(_, f)| f.as_str())
    }
}

/// Prints values as minijinja does, but refuses `none`: an absent value printed without an
/// `{% if %}` would put "none" into an email.
fn refuse_none(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_none() {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "a value that can be absent is printed: test it first ({% if x %}…{% endif %}) or give a default (x or \"–\")",
        ));
    }
    minijinja::escape_formatter(out, state, value)
}

fn template_error(file: &str, e: &minijinja::Error) -> TemplateError {
    let mut message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    // A syntax error's span is where the parser stopped, not an expression.
    let failing = (e.kind() != ErrorKind::SyntaxError)
        .then(|| e.template_source().zip(e.range()).and_then(|(source, range)| source.get(range)))
        .flatten();
    if let Some(expression) = failing.map(str::trim).filter(|x| !x.is_empty() && !x.contains('\n') && !message.contains(*x)) {
        let shown: String = expression.chars().take(60).collect();
        message.push_str(&format!(" in `{shown}`"));
    }
    TemplateError::Template { file: file.to_owned(), line: e.line().unwrap_or(0), message }
}

fn unknown_files(dir: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(TemplateError::Io { path: dir.to_owned(), source }),
    };
    let known = |name: &str| {
        IGNORED_OVERRIDES.contains(&name)
            || name.rsplit_once('.').is_some_and(|(base, part)| {
                PARTS.contains(&part) && BUILTIN.iter().any(|(b, _)| *b == base)
            })
    };
    let mut unknown = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TemplateError::Io { path: dir.to_owned(), source })?;
        if !entry.file_name().to_str().is_some_and(known) {
            unknown.push(entry.path());
        }
    }
    unknown.sort();
    Ok(unknown)
}

// ---------------------------------------------------------------------------------------------
// Samples for the check at load: every field filled, and every optional one empty.

fn sample_item(event: Event, full: bool) -> Item {
    let at = DateTime::from_timestamp(1_796_152_320, 0).unwrap_or_default();
    let some = |s: &str| full.then(|| s.to_owned());
    Item {
        event,
        at,
        request_id: full.then_some(42),
        aktenzeichen: some("VH-2026-0815"),
        nachrichten_uuid: some("6f1c2a7e-0000-4000-8000-000000000000"),
        test: !full,
        debtors: if full {
            vec![
                Debtor { name: "Erika Mustermann".into(), address: Some("Musterstraße 1, 32657 Lemgo".into()) },
                Debtor { name: "Muster GmbH".into(), address: None },
            ]
        } else {
            Vec::new()
        },
        total_cents: full.then_some(123_456),
        authority: full.then(|| Authority { name: "Stadt Köln".into(), kennung: "vbh:053150000000".into() }),
        xta_message_id: some("urn:de:xta:messageid:sample"),
        report: some("grün"),
        batch_date: full.then(|| NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default()),
        letter_number: full.then_some(7),
        reasons: if full { vec!["Grund eins".into(), "Grund zwei".into()] } else { Vec::new() },
        // A received item always has its message, whose other parts may be unreadable.
        received: (full || event == Event::Received).then(|| ReceivedInfo {
            message_id: "urn:de:xta:messageid:received".into(),
            file_name: "vbh_6f1c2a7e.xml".into(),
            message_type: some("vollstreckungshilfe.Rueckmeldung.0201"),
            from: some("Stadt Köln"),
            valid: !full,
            reasons: if full { vec!["Grund".into()] } else { Vec::new() },
        }),
    }
}

fn sample_content(items: Vec<Item>, contact: bool) -> MailContent {
    MailContent {
        tenant_name: "Stadt Lemgo".into(),
        tenant_kennung: "vbh:057660440000".into(),
        contact: contact.then(|| "Leitstelle amtsbote, 05261 213-0".to_owned()),
        items,
    }
}

fn samples() -> Vec<MailContent> {
    let mut all = Vec::new();
    for event in Event::ALL {
        for full in [true, false] {
            all.push(sample_content(vec![sample_item(event, full)], full));
        }
    }
    for full in [true, false] {
        let items = Event::ALL.iter().map(|e| sample_item(*e, full)).collect();
        all.push(sample_content(items, full));
    }
    all
}

// ---------------------------------------------------------------------------------------------
// The message.

/// `Auto-Submitted: auto-generated` (RFC 3834): no out-of-office replies to it.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// A multipart/alternative message (text/plain, then text/html, UTF-8) with From, To,
/// Subject, Date, `Message-ID: <{message_id}>` as given, and `Auto-Submitted:
/// auto-generated`.
pub fn build_message(
    rendered: &Rendered,
    from: &str,
    to: &[String],
    message_id: &str,
    date: DateTime<Utc>,
) -> Result<lettre::Message, MessageError> {
    let from_box: Mailbox = from
        .parse()
        .map_err(|e: lettre::address::AddressError| MessageError::From { address: from.to_owned(), reason: e.to_string() })?;
    if to.is_empty() {
        return Err(MessageError::NoRecipient);
    }
    if !valid_message_id(message_id) {
        return Err(MessageError::MessageId(message_id.to_owned()));
    }
    let mut builder = lettre::Message::builder()
        .from(from_box)
        .subject(rendered.subject.clone())
        .date(date.into())
        .message_id(Some(format!("<{message_id}>")))
        .header(AutoSubmitted);
    for (index, address) in to.iter().enumerate() {
        let mailbox: Mailbox = address.parse().map_err(|e: lettre::address::AddressError| MessageError::To {
            index,
            address: address.clone(),
            reason: e.to_string(),
        })?;
        builder = builder.to(mailbox);
    }
    Ok(builder.multipart(MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone()))?)
}

/// `id-left@id-right` of printable ASCII, without what would break the header.
fn valid_message_id(id: &str) -> bool {
    let printable = id.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'));
    let parts = id.split_once('@');
    printable && parts.is_some_and(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
    }

    #[test]
    fn dates_and_times_are_german_and_in_berlin() {
        assert_eq!(date_text(NaiveDate::from_ymd_opt(2026, 12, 1).expect("date")), "01.12.2026");
        // Winter: UTC+1.
        assert_eq!(berlin_time_text(utc(2026, 12, 1, 18, 12)), "19:12 Uhr");
        // Summer time begins 29.03.2026 at 02:00 CET (01:00 UTC): 03:00 CEST.
        assert_eq!(berlin_time_text(utc(2026, 3, 29, 0, 59)), "01:59 Uhr");
        assert_eq!(berlin_time_text(utc(2026, 3, 29, 1, 0)), "03:00 Uhr");
        // It ends 25.10.2026 at 03:00 CEST (01:00 UTC): 02:00 CET again.
        assert_eq!(berlin_time_text(utc(2026, 10, 25, 0, 59)), "02:59 Uhr");
        assert_eq!(berlin_time_text(utc(2026, 10, 25, 1, 0)), "02:00 Uhr");
        // Late in the evening in UTC is the next day in Berlin.
        assert_eq!(berlin_date_text(utc(2026, 12, 31, 23, 30)), "01.01.2027");
        assert_eq!(berlin_date_text(utc(2026, 7, 1, 22, 0)), "02.07.2026");
        assert_eq!(berlin_date_text(utc(2026, 7, 1, 21, 59)), "01.07.2026");
    }

    #[test]
    fn amounts_are_euro_with_thousands_and_cents() {
        assert_eq!(euro_text(0), "0,00 €");
        assert_eq!(euro_text(5), "0,05 €");
        assert_eq!(euro_text(-5), "-0,05 €");
        assert_eq!(euro_text(100), "1,00 €");
        assert_eq!(euro_text(99_999), "999,99 €");
        assert_eq!(euro_text(100_000), "1.000,00 €");
        assert_eq!(euro_text(123_456), "1.234,56 €");
        assert_eq!(euro_text(-123_456_789), "-1.234.567,89 €");
        assert_eq!(euro_text(10_000_000_000), "100.000.000,00 €");
        assert_eq!(euro_text(i64::MIN), "-92.233.720.368.547.758,08 €");
    }

    #[test]
    fn message_ids_are_id_left_at_id_right() {
        assert!(valid_message_id("n42.transmitted@amtsbote.host"));
        for bad in ["", "n42", "@host", "n42@", "a@b@c", "a b@c", "<a@b>", "a@b\r\n", "ä@b"] {
            assert!(!valid_message_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn templates_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Templates>();
    }

    #[test]
    fn the_samples_cover_every_event_single_and_as_a_digest() {
        let samples = samples();
        for event in Event::ALL {
            let singles = samples.iter().filter(|c| c.items.len() == 1 && c.items[0].event == event).count();
            assert_eq!(singles, 2, "{event}: filled and sparse");
        }
        let digests: Vec<_> = samples.iter().filter(|c| c.items.len() > 1).collect();
        assert_eq!(digests.len(), 2);
        assert!(digests.iter().all(|c| c.items.len() == Event::ALL.len()));
    }
}
