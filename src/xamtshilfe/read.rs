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

use super::{Message, MessageKind};

/// The limits a message must stay inside. All configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted message in bytes (default 40 MB, the XTA container limit).
    pub max_bytes: u64,
    /// Deepest accepted element nesting (default 32; real messages need about 6).
    pub max_depth: usize,
    /// Most attributes on one element (default 32; real messages use at most 7). Bounds the
    /// duplicate-attribute check, which is quadratic in the count.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 40 * 1024 * 1024, max_depth: 32, max_attributes: 32 }
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
        return Err(ReadError::NotXml(format!("the content does not start with '<' but with '{}'", super::values::clip(&first.chars().take(20).collect::<String>()))));
    }
    Ok(text)
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
                    r.resolve_char_ref().map_err(|e| malformed(text, reader.buffer_position() as usize, &e.to_string()))?;
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
    let pos = pos.min(text.len());
    let line = line_of(text.as_bytes(), pos);
    let line_start = text.as_bytes()[..pos].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = text.get(line_start..pos).map_or(pos - line_start, |s| s.chars().count()) + 1;
    ReadError::Malformed { line, column, message: message.to_string() }
}

pub(crate) fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Reads one message in a single pass over the text: every limit is enforced on the way
/// (see [`super::cursor`]), and the typed model is built straight from the events.
pub fn parse(bytes: &[u8], config: &ReaderConfig) -> Result<Message, ReadError> {
    use super::cursor::{Cursor, read_document, read_prolog};
    let text = decode(bytes, config)?;
    let mut c = Cursor::new(text, config.limits);
    let root = read_prolog(&mut c)?;
    let kind = root_kind(root.start(), config)?;
    Ok(match kind {
        MessageKind::Ersuchen => Message::Ersuchen(read_document(&mut c, root)?),
        MessageKind::Ruecknahme => Message::Ruecknahme(read_document(&mut c, root)?),
        MessageKind::Aenderung => Message::Aenderung(read_document(&mut c, root)?),
        MessageKind::Sachstandsanfrage => Message::Sachstandsanfrage(read_document(&mut c, root)?),
        MessageKind::Rueckmeldung => Message::Rueckmeldung(read_document(&mut c, root)?),
        MessageKind::Abgabe => Message::Abgabe(read_document(&mut c, root)?),
        MessageKind::Rueckgabe => Message::Rueckgabe(read_document(&mut c, root)?),
        MessageKind::ZustaendigkeitAnfrage => Message::ZustaendigkeitAnfrage(read_document(&mut c, root)?),
        MessageKind::ZustaendigkeitAntwort => Message::ZustaendigkeitAntwort(read_document(&mut c, root)?),
    })
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
        if path.contains("schuldner") {
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
