//! Reading a message from bytes, with explicit limits.
//!
//! [`guard`] walks the raw XML once with quick-xml's pull reader and refuses, before anything
//! is built: files over the size limit, byte-order marks and declared encodings other than
//! UTF-8, invalid UTF-8, any DOCTYPE (so no entity can be declared, let alone expanded — the
//! billion-laughs and external-entity attacks have nothing to stand on), references to entities
//! that are not predefined, nesting deeper than the limit, more than one root, text outside the
//! root, truncated files, and roots of an unknown kind or namespace. Only then does serde build
//! the typed model from the same borrowed text; no copy of the input is made on the way, and an
//! attachment's base64 is copied once, into its `String`.

use std::io::Read;
use std::path::Path;

use quick_xml::events::Event;
use serde::de::DeserializeOwned;

use super::fields::{FieldLengths, Repeated};
use super::{Message, MessageKind};

/// The limits a message must stay inside. All configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message in bytes (default 40 MB, the XTA container limit).
    pub max_bytes: u64,
    /// Deepest accepted element nesting (default 32; real messages need about 6).
    pub max_depth: usize,
    /// Most attributes on one element (default 32; real messages use at most 7). Bounds the
    /// duplicate-attribute check, which is quadratic in the count.
    pub max_attributes: usize,
    /// The longest text of each element, in characters (defaults: the XSD's `maxLength`).
    pub lengths: FieldLengths,
    /// Most debtors (`schuldner`) in one message (default 100).
    pub max_debtors: usize,
    /// Most claims (`forderung`) in one message (default 1,000).
    pub max_claims: usize,
    /// Most measures (`massnahme`) in one request (default 100; the catalogue has fewer).
    pub max_measures: usize,
    /// Most attachments (`anhang`) in one message (default 100).
    pub max_attachments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 40 * 1024 * 1024,
            max_depth: 32,
            max_attributes: 32,
            lengths: FieldLengths::default(),
            max_debtors: 100,
            max_claims: 1_000,
            max_measures: 100,
            max_attachments: 100,
        }
    }
}

impl Limits {
    /// The cap on a repeated element.
    pub fn max_repeats(&self, what: Repeated) -> usize {
        match what {
            Repeated::Schuldner => self.max_debtors,
            Repeated::Forderung => self.max_claims,
            Repeated::Massnahme => self.max_measures,
            Repeated::Anhang => self.max_attachments,
        }
    }
}

/// How messages are read: the namespaces accepted for the root element, and the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Target namespaces accepted on the root (default `xAmtshilfe110`); later versions of the
    /// standard change the name, so this is a list.
    pub namespaces: Vec<String>,
    pub limits: Limits,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig { namespaces: vec![DEFAULT_NAMESPACE.to_string()], limits: Limits::default() }
    }
}

/// The namespace of xAmtshilfe 1.1.0.
pub const DEFAULT_NAMESPACE: &str = "xAmtshilfe110";

/// Why bytes could not be read as a message. Each names where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("empty file")]
    Empty,
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("not UTF-8: invalid byte sequence at line {line}, byte offset {offset}")]
    NotUtf8 { line: usize, offset: usize },
    #[error("DOCTYPE at line {line} refused: messages must not declare a document type or entities")]
    Doctype { line: usize },
    #[error("entity reference '&{name};' at line {line} refused: only the five predefined XML entities and character references are allowed")]
    Entity { name: String, line: usize },
    #[error("more than {limit} attributes on one element at line {line}")]
    TooManyAttributes { limit: usize, line: usize },
    #[error("nesting deeper than {limit} elements at line {line}")]
    TooDeep { limit: usize, line: usize },
    #[error("not XML: {0}")]
    NotXml(String),
    /// A character the XML 1.0 `Char` production excludes, raw in the file.
    #[error("character U+{code_point:04X} at line {line}, column {column} is not allowed in XML 1.0")]
    ForbiddenChar { code_point: u32, line: usize, column: usize },
    /// A character reference (`&#x1;`) to a character XML 1.0 excludes.
    #[error("character reference to U+{code_point:04X} at line {line}, column {column} is not allowed in XML 1.0")]
    ForbiddenCharRef { code_point: u32, line: usize, column: usize },
    #[error("malformed XML at line {line}, column {column}: {message}")]
    Malformed { line: usize, column: usize, message: String },
    #[error("truncated: the file ends inside <{open}> (line {line}); was it still being written?")]
    Truncated { open: String, line: usize },
    #[error("unknown message kind <{0}>; known: {known}", known = known_roots())]
    UnknownKind(String),
    #[error("root <{root}> is in namespace '{found}'; accepted: {accepted}")]
    Namespace { root: String, found: String, accepted: String },
    /// The XML is well-formed but does not have the structure of its kind.
    #[error("{path}: {message} [rule: structure]")]
    Structure { path: String, message: String },
    #[error("cannot read file: {0}")]
    Io(String),
}

fn known_roots() -> String {
    MessageKind::ALL.iter().map(|k| k.root_name()).collect::<Vec<_>>().join(", ")
}

/// Reads a file, refusing non-regular files and files over the limit without reading them
/// whole into memory first.
pub fn read_file(path: &Path, limits: &Limits) -> Result<Vec<u8>, ReadError> {
    read_file_io(path, limits).map_err(|e| match e {
        FileError::Io(e) => ReadError::Io(e.to_string()),
        FileError::Refused(e) => e,
    })
}

/// Why [`read_file_io`] returned no bytes: the operating system's error as it was (so a caller
/// can tell a transient one, such as too many open files, from a lasting one), or the file
/// refused for what it is.
#[derive(Debug)]
pub enum FileError {
    Io(std::io::Error),
    Refused(ReadError),
}

/// [`read_file`] keeping the operating system's error.
pub fn read_file_io(path: &Path, limits: &Limits) -> Result<Vec<u8>, FileError> {
    let meta = std::fs::symlink_metadata(path).map_err(FileError::Io)?;
    if !meta.file_type().is_file() {
        return Err(FileError::Refused(ReadError::Io("not a regular file (symlinks, directories and devices are refused)".into())));
    }
    if meta.len() > limits.max_bytes {
        return Err(FileError::Refused(ReadError::TooLarge { size: meta.len(), limit: limits.max_bytes }));
    }
    let file = std::fs::File::open(path).map_err(FileError::Io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while we read it: never take more than the limit + 1.
    file.take(limits.max_bytes + 1).read_to_end(&mut bytes).map_err(FileError::Io)?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(FileError::Refused(ReadError::TooLarge { size: bytes.len() as u64, limit: limits.max_bytes }));
    }
    Ok(bytes)
}

/// What [`guard`] learned about a document that passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarded<'a> {
    pub kind: MessageKind,
    /// The document text, without a byte-order mark.
    pub text: &'a str,
}

/// The first checks on raw bytes, shared by both readers: size, byte-order mark, UTF-8,
/// and that the content looks like XML at all.
pub fn decode<'a>(bytes: &'a [u8], config: &ReaderConfig) -> Result<&'a str, ReadError> {
    let limits = &config.limits;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ReadError::TooLarge { size: bytes.len() as u64, limit: limits.max_bytes });
    }
    let bytes = match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => rest,
        [0xFE, 0xFF, ..] | [0xFF, 0xFE, ..] => {
            return Err(ReadError::Encoding("UTF-16 byte-order mark; messages must be UTF-8".into()));
        }
        _ => bytes,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReadError::Empty);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        ReadError::NotUtf8 { line: line_of(bytes, offset), offset }
    })?;
    let first = text.trim_start();
    if !first.starts_with('<') {
        // Described, never quoted: the first bytes of a file may be a debtor's name.
        let offset = text.len() - first.len();
        let head = &first.as_bytes()[..first.len().min(512)];
        let looks = if head.iter().any(|&b| b < 0x20 && !b.is_ascii_whitespace()) { "binary data" } else { "text" };
        return Err(ReadError::NotXml(format!("the content does not start with '<' (first non-blank byte at offset {offset}); it looks like {looks}")));
    }
    if let Some((offset, code_point)) = forbidden_char(text.as_bytes()) {
        let (line, column) = line_column(text, offset);
        return Err(ReadError::ForbiddenChar { code_point, line, column });
    }
    Ok(text)
}

/// Whether XML 1.0 allows a character: `#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
/// [#x10000-#x10FFFF]` (a `char` is never a surrogate).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The first character of UTF-8 text that XML 1.0 forbids, with its byte offset: a C0
/// control other than tab, line feed and carriage return, or U+FFFE / U+FFFF. Blocks of 32
/// bytes are tested at once with a test the compiler vectorises, so the scan costs a
/// fraction of the UTF-8 check before it; only a block holding a control byte or 0xEF (the
/// lead byte of U+F000..U+FFFF) is looked at byte by byte.
pub(crate) fn forbidden_char(bytes: &[u8]) -> Option<(usize, u32)> {
    fn suspect(b: u8) -> bool {
        (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r') | (b == 0xEF)
    }
    let mut i = 0;
    while i < bytes.len() {
        if let Some(block) = bytes.get(i..i + 32)
            && !block.iter().fold(false, |any, &b| any | suspect(b))
        {
            i += 32;
            continue;
        }
        let end = (i + 32).min(bytes.len());
        for j in i..end {
            let b = bytes[j];
            if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
                return Some((j, u32::from(b)));
            }
            if b == 0xEF && bytes.get(j + 1) == Some(&0xBF) && let Some(&last @ (0xBE | 0xBF)) = bytes.get(j + 2) {
                return Some((j, 0xFFFE + u32::from(last - 0xBE)));
            }
        }
        i = end;
    }
    None
}

/// Line and column (1-based, the column in characters) of a byte offset in the text.
pub(crate) fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let line = line_of(text.as_bytes(), pos);
    let line_start = text.as_bytes()[..pos].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = text.get(line_start..pos).map_or(pos - line_start, |s| s.chars().count()) + 1;
    (line, column)
}

/// Resolves a character reference (the text between `&` and `;`, starting with `#`): the
/// character, or why not — a number that is no code point is malformed, a code point XML
/// 1.0 excludes (`&#0;`, `&#x1;`, `&#xFFFE;`) is refused by name.
pub(crate) fn resolve_char_ref(text: &str, reference: &[u8], pos: usize) -> Result<char, ReadError> {
    let Some(code) = parse_char_ref(reference) else {
        return Err(malformed(text, pos, "a character reference that is not a number"));
    };
    match char::from_u32(code) {
        Some(c) if is_xml_char(c) => Ok(c),
        _ => {
            let (line, column) = line_column(text, pos);
            Err(ReadError::ForbiddenCharRef { code_point: code, line, column })
        }
    }
}

/// The first character reference in a raw attribute value (`a&#x1;b`) to a code point XML
/// 1.0 excludes (raw characters were refused with the document; only a reference can bring
/// one in). References that are no number are left to the unescaping, which refuses them.
pub(crate) fn forbidden_ref_in(raw: &[u8]) -> Option<u32> {
    memchr::memmem::find_iter(raw, b"&#").find_map(|at| {
        let rest = &raw[at + 1..];
        let end = memchr::memchr(b';', rest)?;
        let code = parse_char_ref(&rest[..end])?;
        (!char::from_u32(code).is_some_and(is_xml_char)).then_some(code)
    })
}

/// The number of a character reference (`#x1F`, `#31`), if it is one.
fn parse_char_ref(reference: &[u8]) -> Option<u32> {
    let digits = reference.strip_prefix(b"#")?;
    let (digits, radix) = match digits.strip_prefix(b"x") {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    let ok = !digits.is_empty() && digits.len() <= 8 && digits.iter().all(|b| if radix == 16 { b.is_ascii_hexdigit() } else { b.is_ascii_digit() });
    ok.then(|| u32::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()).flatten()
}

/// Checks raw bytes against every rule that must hold before a message is built, in one
/// walk that builds nothing: the pre-scan of the serde reader ([`parse_with_serde`]).
pub fn guard<'a>(bytes: &'a [u8], config: &ReaderConfig) -> Result<Guarded<'a>, ReadError> {
    let limits = &config.limits;
    let text = decode(bytes, config)?;

    let mut reader = quick_xml::Reader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.check_comments = true;
    cfg.trim_text(false);

    let mut depth = 0usize;
    let mut kind: Option<MessageKind> = None;
    let mut root_done = false;
    loop {
        // Where the next event starts: reasons name the line an element or declaration begins on.
        let at = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| {
            let pos = reader.error_position() as usize;
            if matches!(e, quick_xml::Error::Syntax(_)) && depth > 0 && reader.buffer_position() as usize >= text.len() {
                return truncated(text);
            }
            malformed(text, pos, &e.to_string())
        })?;
        match event {
            Event::Decl(_) | Event::PI(_) if at != 0 && is_declaration(&event) => return Err(misplaced_declaration(text, at)),
            Event::Decl(decl) => {
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|e| malformed(text, reader.buffer_position() as usize, &e.to_string()))?;
                    let name = String::from_utf8_lossy(&enc);
                    if !name.eq_ignore_ascii_case("utf-8") && !name.eq_ignore_ascii_case("utf8") {
                        return Err(ReadError::Encoding(format!(
                            "declared encoding '{}' is not supported; XÖV messages are UTF-8",
                            super::values::clip(&name)
                        )));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(ReadError::Doctype { line: line_of(text.as_bytes(), at) });
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                if root_done {
                    return Err(malformed(text, reader.buffer_position() as usize, "a second root element"));
                }
                if depth >= limits.max_depth {
                    return Err(ReadError::TooDeep {
                        limit: limits.max_depth,
                        line: line_of(text.as_bytes(), reader.buffer_position() as usize),
                    });
                }
                if start.attributes().with_checks(false).take(limits.max_attributes + 1).count() > limits.max_attributes {
                    return Err(ReadError::TooManyAttributes {
                        limit: limits.max_attributes,
                        line: line_of(text.as_bytes(), reader.buffer_position() as usize),
                    });
                }
                if kind.is_none() {
                    kind = Some(root_kind(start, config)?);
                }
                if let Some(code_point) = forbidden_ref_in(start.attributes_raw()) {
                    let (line, column) = line_column(text, at);
                    return Err(ReadError::ForbiddenCharRef { code_point, line, column });
                }
                if is_empty {
                    if depth == 0 {
                        root_done = true;
                    }
                } else {
                    depth += 1;
                }
            }
            Event::End(_) => {
                depth -= 1;
                if depth == 0 {
                    root_done = true;
                }
            }
            Event::Text(t) if depth == 0 => {
                if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(malformed(text, reader.buffer_position() as usize, "text outside the root element"));
                }
            }
            Event::CData(_) if depth == 0 => {
                return Err(malformed(text, reader.buffer_position() as usize, "CDATA outside the root element"));
            }
            Event::GeneralRef(r) => {
                if depth == 0 {
                    return Err(malformed(text, reader.buffer_position() as usize, "entity reference outside the root element"));
                }
                if !r.is_char_ref() && !matches!(&*r, b"lt" | b"gt" | b"amp" | b"apos" | b"quot") {
                    return Err(ReadError::Entity {
                        name: super::values::clip(&String::from_utf8_lossy(&r)),
                        line: line_of(text.as_bytes(), reader.buffer_position() as usize),
                    });
                }
                if r.is_char_ref() {
                    resolve_char_ref(text, &r, at)?;
                }
            }
            Event::Eof => {
                if depth > 0 {
                    return Err(truncated(text));
                }
                break;
            }
            Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
    match kind {
        Some(kind) => Ok(Guarded { kind, text }),
        None => Err(ReadError::NotXml("no element found".into())),
    }
}

/// Tells the kind from the root's local name and checks its namespace.
fn root_kind(start: &quick_xml::events::BytesStart<'_>, config: &ReaderConfig) -> Result<MessageKind, ReadError> {
    let qname = start.name();
    let local = qname.local_name().into_inner();
    let kind = MessageKind::ALL.into_iter().find(|k| k.root_name().as_bytes() == local).ok_or_else(|| {
        ReadError::UnknownKind(super::values::clip(&String::from_utf8_lossy(local)))
    })?;
    // The attribute that declares the root's namespace: `xmlns:<prefix>`, or `xmlns`.
    let prefix = qname.prefix().map(|p| p.into_inner());
    let declares = |key: &[u8]| match prefix {
        Some(p) => key.len() == 6 + p.len() && key.starts_with(b"xmlns:") && &key[6..] == p,
        None => key == b"xmlns",
    };
    let mut found = None;
    for (n, attr) in start.attributes().enumerate() {
        if n >= config.limits.max_attributes {
            return Err(ReadError::TooManyAttributes { limit: config.limits.max_attributes, line: 1 });
        }
        let attr = attr.map_err(|e| ReadError::Malformed { line: 1, column: 1, message: format!("root attributes: {e}") })?;
        if declares(attr.key.as_ref()) {
            found = Some(attr.value);
        }
    }
    let found = found.unwrap_or_default();
    if config.namespaces.iter().any(|ns| ns.as_bytes() == &*found) {
        Ok(kind)
    } else {
        let found = String::from_utf8_lossy(&found);
        Err(ReadError::Namespace {
            root: kind.root_name().to_string(),
            found: if found.is_empty() { "(none)".into() } else { super::values::clip(&found) },
            accepted: config.namespaces.join(", "),
        })
    }
}

/// Whether an event is the XML declaration (`<?xml …?>`, which quick-xml may also hand over
/// as a processing instruction when it is not the first thing in the file).
pub(crate) fn is_declaration(event: &Event<'_>) -> bool {
    match event {
        Event::Decl(_) => true,
        Event::PI(pi) => pi.target().eq_ignore_ascii_case(b"xml"),
        _ => false,
    }
}

/// Anything before the XML declaration (whitespace, a comment) but a byte-order mark.
pub(crate) fn misplaced_declaration(text: &str, at: usize) -> ReadError {
    malformed(text, at, "the XML declaration must come first: nothing but a byte-order mark may precede it")
}

pub(crate) fn truncated(text: &str) -> ReadError {
    // Name the innermost element still open by scanning back from the end.
    let open = innermost_open(text).unwrap_or_else(|| "?".into());
    ReadError::Truncated { open, line: line_of(text.as_bytes(), text.len()) }
}

/// The innermost element open at the end of a truncated document, found by a cheap re-scan
/// (only ever run on the error path).
fn innermost_open(text: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(s)) => stack.push(String::from_utf8_lossy(s.name().as_ref()).into_owned()),
            Ok(Event::End(_)) => {
                stack.pop();
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    stack.pop().map(|s| super::values::clip(&s))
}

pub(crate) fn malformed(text: &str, pos: usize, message: &str) -> ReadError {
    let (line, column) = line_column(text, pos);
    // quick-xml's messages quote names (`expected </a>, found </b…>`), which may be long.
    const MAX: usize = 300;
    let message = match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_string(),
    };
    ReadError::Malformed { line, column, message }
}

pub(crate) fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Reads one message in a single pass over the text: every limit is enforced on the way
/// (see [`super::cursor`]), and the typed model is built straight from the events.
pub fn parse(bytes: &[u8], config: &ReaderConfig) -> Result<Message, ReadError> {
    parse_noting_nfc(bytes, config).map(|(message, _)| message)
}

/// [`parse`], and whether any text arrived outside Unicode NFC (the model holds it in NFC).
pub fn parse_noting_nfc(bytes: &[u8], config: &ReaderConfig) -> Result<(Message, bool), ReadError> {
    use super::cursor::{Cursor, read_document, read_prolog};
    let text = decode(bytes, config)?;
    let mut c = Cursor::new(text, config.limits);
    let root = read_prolog(&mut c)?;
    let kind = root_kind(root.start(), config)?;
    let message = match kind {
        MessageKind::Ersuchen => Message::Ersuchen(read_document(&mut c, root)?),
        MessageKind::Ruecknahme => Message::Ruecknahme(read_document(&mut c, root)?),
        MessageKind::Aenderung => Message::Aenderung(read_document(&mut c, root)?),
        MessageKind::Sachstandsanfrage => Message::Sachstandsanfrage(read_document(&mut c, root)?),
        MessageKind::Rueckmeldung => Message::Rueckmeldung(read_document(&mut c, root)?),
        MessageKind::Abgabe => Message::Abgabe(read_document(&mut c, root)?),
        MessageKind::Rueckgabe => Message::Rueckgabe(read_document(&mut c, root)?),
        MessageKind::ZustaendigkeitAnfrage => Message::ZustaendigkeitAnfrage(read_document(&mut c, root)?),
        MessageKind::ZustaendigkeitAntwort => Message::ZustaendigkeitAntwort(read_document(&mut c, root)?),
    };
    Ok((message, c.normalised))
}

/// The second, independent reader: [`guard`], then serde + quick-xml build the model from
/// the serde derives. Slower; tests compare [`parse`] against it.
pub fn parse_with_serde(bytes: &[u8], config: &ReaderConfig) -> Result<Message, ReadError> {
    let Guarded { kind, text } = guard(bytes, config)?;
    Ok(match kind {
        MessageKind::Ersuchen => Message::Ersuchen(build(text)?),
        MessageKind::Ruecknahme => Message::Ruecknahme(build(text)?),
        MessageKind::Aenderung => Message::Aenderung(build(text)?),
        MessageKind::Sachstandsanfrage => Message::Sachstandsanfrage(build(text)?),
        MessageKind::Rueckmeldung => Message::Rueckmeldung(build(text)?),
        MessageKind::Abgabe => Message::Abgabe(build(text)?),
        MessageKind::Rueckgabe => Message::Rueckgabe(build(text)?),
        MessageKind::ZustaendigkeitAnfrage => Message::ZustaendigkeitAnfrage(build(text)?),
        MessageKind::ZustaendigkeitAntwort => Message::ZustaendigkeitAntwort(build(text)?),
    })
}

/// Builds the typed model with serde; a structural error names the element path.
fn build<T: DeserializeOwned>(text: &str) -> Result<Box<T>, ReadError> {
    let mut de = quick_xml::de::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map(Box::new).map_err(|e| {
        let path = xml_path(e.path());
        let mut message = tidy_serde_message(&e.inner().to_string());
        if super::cursor::about_debtor(&path) {
            message = super::cursor::withhold_quoted(&message);
        }
        ReadError::Structure { path, message }
    })
}

/// Turns serde's path (`ersuchen.forderung[0].hauptforderung.$text`) into an XPath-like one
/// (`ersuchen/forderung[1]/hauptforderung`).
fn xml_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{}]", index + 1)),
            Segment::Map { key } | Segment::Enum { variant: key } => push_step(&mut out, key),
            Segment::Unknown => push_step(&mut out, "?"),
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

fn push_step(out: &mut String, key: &str) {
    if key == "$text" || key == "$value" {
        return;
    }
    if !out.is_empty() {
        out.push('/');
    }
    out.push_str(key);
}

/// serde's messages speak of fields; ours speak of elements and attributes.
fn tidy_serde_message(message: &str) -> String {
    let m = message
        .replace("missing field `@", "missing attribute `")
        .replace("missing field `", "missing element `")
        .replace("unknown field `@", "unknown attribute `")
        .replace("unknown field `", "unknown element `");
    // The list of expected fields is long and mostly noise for an operator.
    match m.find(", expected") {
        Some(i) if m.starts_with("unknown") => m[..i].to_string(),
        _ => m,
    }
}
