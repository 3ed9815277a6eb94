//! The single-pass reader under [`super::read::parse`]: a cursor over quick-xml's borrowing
//! pull reader that enforces the limits on every event (DOCTYPE, entities, depth, attribute
//! count), and the [`FromXml`] impls that build each model type straight from the events.
//!
//! Why not serde here: quick-xml's serde layer spends about 35 µs on a 5 KB request, most of
//! it in generic buffering; building from events costs a fraction of that (see
//! `cargo bench --bench messages`). The serde derives stay on the model for writing and as
//! a second, independent reader ([`super::read::parse_with_serde`]) that tests compare this
//! one against.
//!
//! Both readers accept the same documents, with two differences on the strict side here:
//! element order is checked (as the XSD does), and unknown attributes on the root are
//! refused (namespace declarations and `xsi:*` aside).

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};

use unicode_normalization::{IsNormalized, UnicodeNormalization};

use super::fields::{Attribute, FIELDS, ROOT_EXTRA, Repeated, attribute_of, field_index, repeated};
use super::model::*;
use super::read::{Limits, ReadError};
use super::values::clip;

/// A started element: its start tag, and whether it was `<empty/>`.
pub(crate) struct Element<'a> {
    start: BytesStart<'a>,
    empty: bool,
    /// The limit on attributes, checked when they are read.
    max_attributes: usize,
}

impl Element<'_> {
    fn name(&self) -> &[u8] {
        self.start.local_name().into_inner()
    }
}

/// A structural error on its way up: each level adds its step to the path.
pub(crate) struct Failure {
    steps: Vec<String>,
    message: String,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure { steps: Vec::new(), message: message.into() }
    }

    pub(crate) fn into_read_error(self, hard: Option<ReadError>) -> ReadError {
        if let Some(e) = hard {
            return e;
        }
        let path = self.steps.iter().rev().cloned().collect::<Vec<_>>().join("/");
        let path = if path.is_empty() { "/".to_string() } else { path };
        let message = if about_debtor(&path) { withhold_quoted(&self.message) } else { self.message };
        ReadError::Structure { path, message }
    }
}

/// Whether a reason at this path (`ersuchen/schuldner[1]/…`) is about a debtor, whose values
/// are personal data and stay out of reasons: inside a `schuldner`, or the address a
/// Zuständigkeit request asks about (the one `anschrift` directly under a root).
pub(crate) fn about_debtor(path: &str) -> bool {
    path.contains("schuldner") || path == "anschrift" || path.starts_with("anschrift/")
}

/// Replaces every quoted value ('…') by a placeholder: debtor data stays out of reasons. A
/// name in backticks (`` `vorname` ``) stays only when it is an element of the model: a
/// mangled tag (`<vorname` with its `>` lost) would carry the value in its "name".
pub(crate) fn withhold_quoted(message: &str) -> String {
    const WITHHELD: &str = "(withheld: debtor data)";
    let known = |name: &str| {
        let name = name.trim_start_matches('@');
        FIELDS.iter().any(|f| f.element == name) || matches!(name, "anschrift" | "geburtsdatum" | "schuldner" | "auskunftssperre")
    };
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('\'').enumerate() {
        if i > 0 {
            out.push('\'');
        }
        if i % 2 == 1 {
            out.push_str(WITHHELD);
            continue;
        }
        for (j, piece) in part.split('`').enumerate() {
            if j > 0 {
                out.push('`');
            }
            out.push_str(if j % 2 == 1 && !known(piece) { WITHHELD } else { piece });
        }
    }
    out
}

pub(crate) type Result<T> = std::result::Result<T, Failure>;

/// The reader over one document. A "hard" error (limits, well-formedness) is kept aside and
/// wins over the structural path, since it says more about what happened.
pub(crate) struct Cursor<'a> {
    reader: quick_xml::Reader<&'a [u8]>,
    text: &'a str,
    depth: usize,
    limits: Limits,
    pub(crate) hard: Option<ReadError>,
    /// Whether a text arrived outside NFC (and was normalised into the model).
    pub(crate) normalised: bool,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str, limits: Limits) -> Self {
        let mut reader = quick_xml::Reader::from_str(text);
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.check_comments = true;
        Cursor { reader, text, depth: 0, limits, hard: None, normalised: false }
    }

    fn line_at(&self, pos: usize) -> usize {
        super::read::line_of(self.text.as_bytes(), pos)
    }

    fn fail_hard(&mut self, e: ReadError) -> Failure {
        let f = Failure::new(e.to_string());
        self.hard.get_or_insert(e);
        f
    }

    /// The next event, with every limit applied.
    pub(crate) fn event(&mut self) -> Result<Event<'a>> {
        let at = self.reader.buffer_position() as usize;
        let event = match self.reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let pos = self.reader.error_position() as usize;
                let err = if self.depth > 0 && self.reader.buffer_position() as usize >= self.text.len() {
                    super::read::truncated(self.text)
                } else {
                    super::read::malformed(self.text, pos, &e.to_string())
                };
                return Err(self.fail_hard(err));
            }
        };
        match &event {
            Event::DocType(_) => {
                let line = self.line_at(at);
                return Err(self.fail_hard(ReadError::Doctype { line }));
            }
            Event::Decl(_) | Event::PI(_) if at != 0 && super::read::is_declaration(&event) => {
                let e = super::read::misplaced_declaration(self.text, at);
                return Err(self.fail_hard(e));
            }
            Event::Start(_) | Event::Empty(_) => {
                if self.depth >= self.limits.max_depth {
                    let line = self.line_at(at);
                    return Err(self.fail_hard(ReadError::TooDeep { limit: self.limits.max_depth, line }));
                }
                // The attribute limit is checked where attributes are read (`attributes`).
                if matches!(event, Event::Start(_)) {
                    self.depth += 1;
                }
            }
            Event::End(_) => self.depth -= 1,
            Event::GeneralRef(r) if !r.is_char_ref() && !matches!(&**r, b"lt" | b"gt" | b"amp" | b"apos" | b"quot") => {
                let name = clip(&String::from_utf8_lossy(r));
                let line = self.line_at(at);
                return Err(self.fail_hard(ReadError::Entity { name, line }));
            }
            Event::Eof if self.depth > 0 => {
                let e = super::read::truncated(self.text);
                return Err(self.fail_hard(e));
            }
            _ => {}
        }
        Ok(event)
    }

    fn element(&self, start: BytesStart<'a>, empty: bool) -> Element<'a> {
        Element { start, empty, max_attributes: self.limits.max_attributes }
    }

    /// The text of an event as a slice of the (already UTF-8-checked) input, when the event
    /// borrows from it and needs no line-end normalisation: no second UTF-8 check, no copy.
    fn borrowed_text(&self, bytes: &[u8]) -> Option<&'a str> {
        let base = self.text.as_ptr() as usize;
        let start = (bytes.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(bytes.len())?;
        if end > self.text.len() || memchr_cr(bytes) {
            return None;
        }
        self.text.get(start..end)
    }

    /// Where a slice borrowed from the input starts, as a byte offset.
    fn offset_of(&self, bytes: &[u8]) -> Option<usize> {
        let start = (bytes.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        (start <= self.text.len()).then_some(start)
    }

    /// The next child element of the element being read, or `None` at its end tag.
    fn next_child(&mut self, parent: &Element<'_>) -> Result<Option<Element<'a>>> {
        if parent.empty {
            return Ok(None);
        }
        loop {
            match self.event()? {
                Event::Start(start) => return Ok(Some(self.element(start, false))),
                Event::Empty(start) => return Ok(Some(self.element(start, true))),
                Event::End(_) => return Ok(None),
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
                Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(Failure::new("text is not allowed here, only elements"));
                }
                _ => {}
            }
        }
    }

    /// The text content of a text-only element (trimmed), consuming it up to its end tag.
    fn text(&mut self, el: &Element<'a>) -> Result<Cow<'a, str>> {
        if el.empty {
            return Ok(Cow::Borrowed(""));
        }
        let mut acc: Cow<'a, str> = Cow::Borrowed("");
        loop {
            match self.event()? {
                Event::Text(t) => {
                    let piece = match self.borrowed_text(&t) {
                        Some(s) => Cow::Borrowed(s),
                        None => t.xml_content().map_err(|e| Failure::new(e.to_string()))?,
                    };
                    append(&mut acc, piece);
                }
                Event::CData(c) => {
                    let piece = c.xml_content().map_err(|e| Failure::new(e.to_string()))?;
                    append(&mut acc, piece);
                }
                Event::GeneralRef(r) => {
                    let ch = match &*r {
                        b"lt" => '<',
                        b"gt" => '>',
                        b"amp" => '&',
                        b"apos" => '\'',
                        b"quot" => '"',
                        // Only character references are left (`event` refused the rest).
                        reference => {
                            let pos = self.offset_of(reference).map_or(self.reader.buffer_position() as usize, |p| p.saturating_sub(1));
                            match super::read::resolve_char_ref(self.text, reference, pos) {
                                Ok(ch) => ch,
                                Err(e) => return Err(self.fail_hard(e)),
                            }
                        }
                    };
                    acc.to_mut().push(ch);
                }
                Event::Start(_) | Event::Empty(_) => {
                    return Err(Failure::new("must contain text, not elements"));
                }
                Event::End(_) => break,
                _ => {}
            }
        }
        Ok(match acc {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
            Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
        })
    }

    fn string(&mut self, el: &Element<'a>) -> Result<String> {
        self.text(el).map(Cow::into_owned)
    }

    /// The text of a text element of [`FIELDS`] (`index`): in NFC, within its length limit,
    /// and of its DIN 91379 type. Reasons give lengths and code points, never the value.
    fn field(&mut self, el: &Element<'a>, index: usize) -> Result<String> {
        let text = self.text(el)?;
        let text = if text.is_ascii() || unicode_normalization::is_nfc_quick(text.chars()) == IsNormalized::Yes {
            text.into_owned()
        } else {
            self.normalised = true;
            text.nfc().collect()
        };
        let max = self.limits.lengths.get(index) as usize;
        if text.len() > max {
            let chars = text.chars().count();
            if chars > max {
                return Err(Failure::new(format!("is {chars} characters long; the limit is {max}")));
            }
        }
        let din = FIELDS[index].din;
        if let Some(code_point) = super::din91379::first_disallowed(&text, din) {
            return Err(Failure::new(format!("character U+{code_point:04X} is not allowed in {}", din.describe())));
        }
        Ok(text)
    }

    /// Refuses one more of a capped repeated element once `count` reached its cap.
    fn room_for(&self, what: Repeated, element: &str, count: usize) -> Result<()> {
        let cap = self.limits.max_repeats(what);
        if count >= cap {
            let line = self.line_at(self.reader.buffer_position() as usize);
            return Err(Failure::new(format!("more than {cap} `{element}` elements (the limit is {cap}); reading stopped at line {line}")));
        }
        Ok(())
    }

    fn value<T: std::str::FromStr>(&mut self, el: &Element<'a>) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(el)?;
        text.parse().map_err(|e: T::Err| Failure::new(e.to_string()))
    }

    /// Reads a child and puts its name (and index, for repeated ones) on any error's path.
    fn child<T>(&mut self, el: Element<'a>, step: Step, f: impl FnOnce(&mut Self, &Element<'a>) -> Result<T>) -> Result<T> {
        f(self, &el).map_err(|mut e| {
            e.steps.push(step.render(&el));
            e
        })
    }

    /// Reads a nested structure.
    fn read<T: FromXml>(&mut self, el: &Element<'a>) -> Result<T> {
        T::from_xml(self, el)
    }
}

fn memchr_cr(bytes: &[u8]) -> bool {
    memchr::memchr(b'\r', bytes).is_some()
}

fn append<'a>(acc: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if acc.is_empty() {
        *acc = piece;
    } else {
        acc.to_mut().push_str(&piece);
    }
}

/// How a child is named on an error's path.
#[derive(Clone, Copy)]
enum Step {
    Plain,
    Indexed(usize),
}

impl Step {
    fn render(self, el: &Element<'_>) -> String {
        let name = String::from_utf8_lossy(el.name()).into_owned();
        match self {
            Step::Plain => name,
            Step::Indexed(i) => format!("{name}[{i}]"),
        }
    }
}

/// How often a child may occur.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Occurs {
    One,
    Many,
}

/// The children a structure may have, in order. Tells which field a child is and refuses
/// unknown, misplaced and repeated ones.
struct Sequence {
    fields: &'static [(&'static str, Occurs)],
    last: Option<usize>,
    count: usize,
}

impl Sequence {
    fn new(fields: &'static [(&'static str, Occurs)]) -> Self {
        Sequence { fields, last: None, count: 0 }
    }

    /// The index of the field this child fills, and its path step.
    fn place(&mut self, el: &Element<'_>) -> Result<(usize, Step)> {
        let name = el.name();
        // Children nearly always come in order: look from the current field on first.
        let from = self.last.unwrap_or(0);
        let found = self.fields[from..]
            .iter()
            .position(|(n, _)| n.as_bytes() == name)
            .map(|i| i + from)
            .or_else(|| self.fields[..from].iter().position(|(n, _)| n.as_bytes() == name));
        let Some(i) = found else {
            return Err(Failure::new(format!("unknown element `{}`", clip(&String::from_utf8_lossy(name)))));
        };
        let (field, occurs) = self.fields[i];
        match self.last {
            Some(last) if last == i && occurs == Occurs::One => {
                return Err(Failure::new(format!("element `{field}` appears more than once")));
            }
            Some(last) if last > i => {
                return Err(Failure::new(format!("element `{field}` is out of order: it must come before `{}`", self.fields[last].0)));
            }
            Some(last) if last == i => self.count += 1,
            _ => self.count = 1,
        }
        self.last = Some(i);
        Ok((i, if occurs == Occurs::Many { Step::Indexed(self.count) } else { Step::Plain }))
    }
}

fn required<T>(value: Option<T>, name: &str) -> Result<T> {
    value.ok_or_else(|| Failure::new(format!("missing element `{name}`")))
}

/// Reads the attributes `names` of an element (unescaped); others are refused, except
/// namespace declarations and `xsi:*` when `lenient` (on the root).
fn attributes<'e, const N: usize>(el: &'e Element<'_>, names: [&str; N], lenient: bool) -> Result<[Option<Cow<'e, str>>; N]> {
    let mut out: [Option<Cow<'e, str>>; N] = std::array::from_fn(|_| None);
    if el.start.attributes_raw().iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let mut attrs = el.start.attributes();
    // quick-xml's duplicate check allocates for every element; for the fixed names of an
    // inner element, a second value for a slot already filled is the duplicate check. The
    // root, which may carry any namespace declarations, keeps quick-xml's check.
    attrs.with_checks(lenient);
    for (n, attr) in attrs.enumerate() {
        if n >= el.max_attributes {
            return Err(Failure::new(format!("more than {} attributes", el.max_attributes)));
        }
        let attr = attr.map_err(|e| Failure::new(format!("attributes: {e}")))?;
        let key = attr.key.as_ref();
        match names.iter().position(|n| n.as_bytes() == key) {
            Some(i) if out[i].is_some() => return Err(Failure::new(format!("attribute `{}` appears twice", names[i]))),
            Some(i) => {
                if let Some(code_point) = super::read::forbidden_ref_in(&attr.value) {
                    return Err(Failure::new(format!("attribute `{}`: a character reference to U+{code_point:04X}, which XML 1.0 does not allow", names[i])));
                }
                let value = attr.unescape_value().map_err(|e| Failure::new(format!("attribute `{}`: {e}", names[i])))?;
                let rule = attribute_of(names[i]).unwrap_or(&ROOT_EXTRA);
                check_attribute(names[i], &value, rule)?;
                out[i] = Some(value);
            }
            None if lenient && (key == b"xmlns" || key.starts_with(b"xmlns:") || key.starts_with(b"xsi:")) => {
                if let Some(code_point) = super::read::forbidden_ref_in(&attr.value) {
                    return Err(Failure::new(format!("a character reference to U+{code_point:04X}, which XML 1.0 does not allow")));
                }
                let value = attr.unescape_value().map_err(|e| Failure::new(format!("attributes: {e}")))?;
                check_attribute(&clip(&String::from_utf8_lossy(key)), &value, &ROOT_EXTRA)?;
            }
            None => return Err(Failure::new(format!("unknown attribute `{}`", clip(&String::from_utf8_lossy(key))))),
        }
    }
    Ok(out)
}

/// An attribute's value within its length and of its DIN 91379 type ([`ATTRIBUTES`]), as
/// [`Cursor::field`] holds texts: reasons name the attribute, lengths and code points, never
/// the value.
fn check_attribute(name: &str, value: &str, rule: &Attribute) -> Result<()> {
    // The characters first: a short typed value with a right-to-left override in it is
    // named for that, not for its length.
    let nfc: Cow<'_, str> = if value.is_ascii() || unicode_normalization::is_nfc_quick(value.chars()) == IsNormalized::Yes { Cow::Borrowed(value) } else { Cow::Owned(value.nfc().collect()) };
    if let Some(code_point) = super::din91379::first_disallowed(&nfc, rule.din) {
        return Err(Failure::new(format!("attribute `{name}`: character U+{code_point:04X} is not allowed in {}", rule.din.describe())));
    }
    let max = rule.max_chars as usize;
    if nfc.len() > max {
        let chars = nfc.chars().count();
        if chars > max {
            return Err(Failure::new(format!("attribute `{name}` is {chars} characters long; the limit is {max}")));
        }
    }
    Ok(())
}

fn required_attr<T>(value: Option<T>, name: &str) -> Result<T> {
    value.ok_or_else(|| Failure::new(format!("missing attribute `{name}`")))
}

fn parse_attr<T: std::str::FromStr>(value: Option<Cow<'_, str>>, name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    value
        .map(|v| v.trim().parse().map_err(|e: T::Err| Failure::new(format!("attribute `{name}`: {e}"))))
        .transpose()
}

fn parse_bool(value: Option<Cow<'_, str>>, name: &str) -> Result<Option<bool>> {
    value
        .map(|v| match v.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(Failure::new(format!("attribute `{name}`: '{}' is not true or false", clip(other)))),
        })
        .transpose()
}

/// A model type built from its element's events.
pub(crate) trait FromXml: Sized {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self>;
}

/// Declares the children of a structure and reads them: `name: Kind` per field, in order,
/// with Kind one of `one`/`opt` (a nested structure), `text`/`opt_text` (a string),
/// `value`/`opt_value` (a string parsed by FromStr), `many` (a repeated structure).
macro_rules! children {
    ($c:ident, $el:ident, { $($field:ident = $xml:literal : $kind:ident),* $(,)? }) => {{
        const FIELDS: &[(&str, Occurs)] = &[$(($xml, children!(@occurs $kind))),*];
        $( let mut $field = children!(@init $kind); )*
        let mut seq = Sequence::new(FIELDS);
        while let Some(child) = $c.next_child($el)? {
            let (i, step) = seq.place(&child)?;
            let mut _n = 0usize;
            $(
                if i == _n {
                    children!(@read $c, child, step, $field, $xml, $kind);
                    continue;
                }
                _n += 1;
            )*
        }
        ($( children!(@finish $field, $xml, $kind) ),*)
    }};
    (@occurs many) => { Occurs::Many };
    (@occurs $other:ident) => { Occurs::One };
    (@init many) => { Vec::new() };
    (@init $other:ident) => { None };
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, one) => { $field = Some($c.child($child, $step, |c, e| c.read(e))?) };
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, opt) => { $field = Some($c.child($child, $step, |c, e| c.read(e))?) };
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, many) => {{
        const REPEATED: Repeated = match repeated($xml) { Some(r) => r, None => panic!("a repeated element without a cap") };
        $c.room_for(REPEATED, $xml, $field.len())?;
        $field.push($c.child($child, $step, |c, e| c.read(e))?)
    }};
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, text) => { $field = Some($c.child($child, $step, |c, e| { no_attributes(e)?; c.field(e, const { field_index($xml) }) })?) };
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, opt_text) => { $field = Some($c.child($child, $step, |c, e| { no_attributes(e)?; c.field(e, const { field_index($xml) }) })?) };
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, value) => { $field = Some($c.child($child, $step, |c, e| { no_attributes(e)?; c.value(e) })?) };
    (@read $c:ident, $child:ident, $step:ident, $field:ident, $xml:literal, opt_value) => { $field = Some($c.child($child, $step, |c, e| { no_attributes(e)?; c.value(e) })?) };
    (@finish $field:ident, $xml:literal, one) => { required($field, $xml)? };
    (@finish $field:ident, $xml:literal, text) => { required($field, $xml)? };
    (@finish $field:ident, $xml:literal, value) => { required($field, $xml)? };
    (@finish $field:ident, $xml:literal, $other:ident) => { $field };
}

fn no_attributes(el: &Element<'_>) -> Result<()> {
    attributes(el, [], false).map(|_| ())
}

impl FromXml for Code {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        let [uri, version] = attributes(el, ["listURI", "listVersionID"], false)?;
        let list_uri = required_attr(uri, "listURI")?.into_owned();
        let list_version_id = required_attr(version, "listVersionID")?.into_owned();
        let (code, name) = children!(c, el, { code = "code": text, name = "name": opt_text });
        Ok(Code { list_uri, list_version_id, code, name })
    }
}

/// An amount element: `waehrung` attribute (and `extra`, when given) and a decimal text.
fn amount<'a, 'e>(c: &mut Cursor<'a>, el: &'e Element<'a>, extra: Option<&'static str>) -> Result<(String, super::Cents, Option<Cow<'e, str>>)> {
    let (waehrung, other) = match extra {
        Some(name) => {
            let [w, o] = attributes(el, ["waehrung", name], false)?;
            (w, o)
        }
        None => {
            let [w] = attributes(el, ["waehrung"], false)?;
            (w, None)
        }
    };
    let waehrung = required_attr(waehrung, "waehrung")?.into_owned();
    let wert = c.value(el)?;
    Ok((waehrung, wert, other))
}

impl FromXml for Betrag {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        let (waehrung, wert, _) = amount(c, el, None)?;
        Ok(Betrag { waehrung, wert })
    }
}

impl FromXml for Saeumniszuschlaege {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        let (waehrung, wert, bis) = amount(c, el, Some("bis"))?;
        Ok(Saeumniszuschlaege { bis: parse_attr(bis, "bis")?, waehrung, wert })
    }
}

impl FromXml for Nachrichtenkopf {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (identifikation, leser, autor) =
            children!(c, el, { identifikation = "identifikation.nachricht": one, leser = "leser": opt, autor = "autor": one });
        Ok(Nachrichtenkopf { identifikation, leser, autor })
    }
}

impl FromXml for Identifikation {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (nachrichten_uuid, nachrichtentyp, erstellungszeitpunkt) = children!(c, el, {
            nachrichten_uuid = "nachrichtenUUID": value,
            nachrichtentyp = "nachrichtentyp": one,
            erstellungszeitpunkt = "erstellungszeitpunkt": value,
        });
        Ok(Identifikation { nachrichten_uuid, nachrichtentyp, erstellungszeitpunkt })
    }
}

impl FromXml for Teilnehmer {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (verzeichnisdienst, kennung, name) =
            children!(c, el, { verzeichnisdienst = "verzeichnisdienst": one, kennung = "kennung": text, name = "name": text });
        Ok(Teilnehmer { verzeichnisdienst, kennung, name })
    }
}

impl FromXml for Anschrift {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (strasse, hausnummer, postfach, postleitzahl, ort, staat) = children!(c, el, {
            strasse = "strasse": opt_text,
            hausnummer = "hausnummer": opt_text,
            postfach = "postfach": opt_text,
            postleitzahl = "postleitzahl": text,
            ort = "ort": text,
            staat = "staat": opt_text,
        });
        Ok(Anschrift { strasse, hausnummer, postfach, postleitzahl, ort, staat })
    }
}

impl FromXml for Sachbearbeiter {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (name, telefon, email) = children!(c, el, { name = "name": text, telefon = "telefon": opt_text, email = "email": opt_text });
        Ok(Sachbearbeiter { name, telefon, email })
    }
}

impl FromXml for Bankverbindung {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (iban, bic, kontoinhaber) = children!(c, el, { iban = "iban": text, bic = "bic": opt_text, kontoinhaber = "kontoinhaber": opt_text });
        Ok(Bankverbindung { iban, bic, kontoinhaber })
    }
}

impl FromXml for ErsuchendeBehoerde {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (kennung, name, anschrift, email, sachbearbeiter, bankverbindung) = children!(c, el, {
            kennung = "kennung": text,
            name = "name": text,
            anschrift = "anschrift": one,
            email = "email": opt_text,
            sachbearbeiter = "sachbearbeiter": opt,
            bankverbindung = "bankverbindung": opt,
        });
        Ok(ErsuchendeBehoerde { kennung, name, anschrift, email, sachbearbeiter, bankverbindung })
    }
}

impl FromXml for Schuldner {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        let [sperre] = attributes(el, ["auskunftssperre"], false)?;
        let auskunftssperre = parse_bool(sperre, "auskunftssperre")?.unwrap_or(false);
        let (firma, familienname, vorname, geburtsname, geburtsdatum, anschrift) = children!(c, el, {
            firma = "firma": opt_text,
            familienname = "familienname": opt_text,
            vorname = "vorname": opt_text,
            geburtsname = "geburtsname": opt_text,
            geburtsdatum = "geburtsdatum": opt_value,
            anschrift = "anschrift": one,
        });
        Ok(Schuldner { auskunftssperre, firma, familienname, vorname, geburtsname, geburtsdatum, anschrift })
    }
}

impl FromXml for Zeitraum {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (beginn, ende) = children!(c, el, { beginn = "beginn": value, ende = "ende": value });
        Ok(Zeitraum { beginn, ende })
    }
}

impl FromXml for Forderung {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (einnahmeart, kassenzeichen, zeitraum, hauptforderung, saeumniszuschlaege, kosten, faelligkeit) = children!(c, el, {
            einnahmeart = "einnahmeart": one,
            kassenzeichen = "kassenzeichen": text,
            zeitraum = "zeitraum": opt,
            hauptforderung = "hauptforderung": one,
            saeumniszuschlaege = "saeumniszuschlaege": opt,
            kosten = "kosten": opt,
            faelligkeit = "faelligkeit": opt_value,
        });
        Ok(Forderung { einnahmeart, kassenzeichen, zeitraum, hauptforderung, saeumniszuschlaege, kosten, faelligkeit })
    }
}

impl FromXml for Anhang {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        let [dateiname, mime_type] = attributes(el, ["dateiname", "mimeType"], false)?;
        let dateiname = required_attr(dateiname, "dateiname")?.into_owned();
        let mime_type = required_attr(mime_type, "mimeType")?.into_owned();
        // The one copy of the attachment: from the input into its String.
        let inhalt = c.string(el)?;
        Ok(Anhang { dateiname, mime_type, inhalt })
    }
}

impl FromXml for Bezug {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (nachrichten_uuid, aktenzeichen) = children!(c, el, { nachrichten_uuid = "nachrichtenUUID": value, aktenzeichen = "aktenzeichen": text });
        Ok(Bezug { nachrichten_uuid, aktenzeichen })
    }
}

impl FromXml for Behoerde {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (kennung, name, anschrift) = children!(c, el, { kennung = "kennung": text, name = "name": text, anschrift = "anschrift": opt });
        Ok(Behoerde { kennung, name, anschrift })
    }
}

impl FromXml for ZustaendigeBehoerde {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (kennung, name, anschrift, kanal) = children!(c, el, {
            kennung = "kennung": text,
            name = "name": text,
            anschrift = "anschrift": one,
            kanal = "kanal": value,
        });
        Ok(ZustaendigeBehoerde { kennung, name, anschrift, kanal })
    }
}

/// The text enums (`grund`, `ergebnis`, `kanal`) read by their XML names.
macro_rules! text_enum {
    ($ty:ty, $what:literal, { $($text:literal => $variant:expr),* $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($variant),)*
                    other => Err(format!(concat!("'{}' is not a ", $what, " (one of: {})"), clip(other), [$($text),*].join(", "))),
                }
            }
        }
    };
}
text_enum!(RuecknahmeGrund, "reason", { "bezahlt" => RuecknahmeGrund::Bezahlt, "storniert" => RuecknahmeGrund::Storniert, "sonstiges" => RuecknahmeGrund::Sonstiges });
text_enum!(Ergebnis, "result", { "erledigt" => Ergebnis::Erledigt, "teilweise" => Ergebnis::Teilweise, "erfolglos" => Ergebnis::Erfolglos });
text_enum!(Kanal, "channel", { "xta" => Kanal::Xta, "post" => Kanal::Post });

impl FromXml for Ersuchen {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (aktenzeichen, ersuchende_behoerde, schuldner, forderung, gesamtbetrag, massnahme, angeordnet_von, bemerkung, anhang) = children!(c, el, {
            aktenzeichen = "aktenzeichen": text,
            ersuchende_behoerde = "ersuchendeBehoerde": one,
            schuldner = "schuldner": many,
            forderung = "forderung": many,
            gesamtbetrag = "gesamtbetrag": one,
            massnahme = "massnahme": many,
            angeordnet_von = "angeordnetVon": text,
            bemerkung = "bemerkung": opt_text,
            anhang = "anhang": many,
        });
        Ok(Ersuchen { aktenzeichen, ersuchende_behoerde, schuldner, forderung, gesamtbetrag, massnahme, angeordnet_von, bemerkung, anhang })
    }
}

impl FromXml for Ruecknahme {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (bezug, grund, bemerkung) = children!(c, el, { bezug = "bezug": one, grund = "grund": value, bemerkung = "bemerkung": opt_text });
        Ok(Ruecknahme { bezug, grund, bemerkung })
    }
}

impl FromXml for Aenderung {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (bezug, schuldner, forderung, gesamtbetrag, bemerkung) = children!(c, el, {
            bezug = "bezug": one,
            schuldner = "schuldner": many,
            forderung = "forderung": many,
            gesamtbetrag = "gesamtbetrag": opt,
            bemerkung = "bemerkung": opt_text,
        });
        Ok(Aenderung { bezug, schuldner, forderung, gesamtbetrag, bemerkung })
    }
}

impl FromXml for Sachstandsanfrage {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (bezug, frage) = children!(c, el, { bezug = "bezug": one, frage = "frage": opt_text });
        Ok(Sachstandsanfrage { bezug, frage })
    }
}

impl FromXml for Rueckmeldung {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (bezug, ergebnis, beigetriebener_betrag, bemerkung, anhang) = children!(c, el, {
            bezug = "bezug": one,
            ergebnis = "ergebnis": value,
            beigetriebener_betrag = "beigetriebenerBetrag": opt,
            bemerkung = "bemerkung": opt_text,
            anhang = "anhang": many,
        });
        Ok(Rueckmeldung { bezug, ergebnis, beigetriebener_betrag, bemerkung, anhang })
    }
}

impl FromXml for Abgabe {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (bezug, neue_behoerde, begruendung) =
            children!(c, el, { bezug = "bezug": one, neue_behoerde = "neueBehoerde": one, begruendung = "begruendung": text });
        Ok(Abgabe { bezug, neue_behoerde, begruendung })
    }
}

impl FromXml for Rueckgabe {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        no_attributes(el)?;
        let (bezug, begruendung, anhang) = children!(c, el, { bezug = "bezug": one, begruendung = "begruendung": text, anhang = "anhang": many });
        Ok(Rueckgabe { bezug, begruendung, anhang })
    }
}

impl FromXml for ZustaendigkeitAnfrage {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        attributes(el, [], true)?;
        let (einnahmeart, anschrift) = children!(c, el, { einnahmeart = "einnahmeart": one, anschrift = "anschrift": one });
        Ok(ZustaendigkeitAnfrage { einnahmeart, anschrift })
    }
}

impl FromXml for ZustaendigkeitAntwort {
    fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
        attributes(el, [], true)?;
        let behoerde = children!(c, el, { behoerde = "behoerde": opt });
        Ok(ZustaendigkeitAntwort { behoerde })
    }
}

/// The header-carrying roots: product attributes, header, one body element.
macro_rules! root {
    ($ty:ident, $body:ident = $xml:literal) => {
        impl FromXml for $ty {
            fn from_xml<'a>(c: &mut Cursor<'a>, el: &Element<'a>) -> Result<Self> {
                let [produkt, produkthersteller, produktversion, standard, version, test] =
                    attributes(el, ["produkt", "produkthersteller", "produktversion", "standard", "version", "test"], true)?;
                let (kopf, $body) = children!(c, el, { kopf = "nachrichtenkopf.g2g": one, $body = $xml: one });
                Ok($ty {
                    produkt: required_attr(produkt, "produkt")?.into_owned(),
                    produkthersteller: required_attr(produkthersteller, "produkthersteller")?.into_owned(),
                    produktversion: produktversion.map(Cow::into_owned),
                    standard: required_attr(standard, "standard")?.into_owned(),
                    version: required_attr(version, "version")?.into_owned(),
                    test: parse_bool(test, "test")?,
                    kopf,
                    $body,
                })
            }
        }
    };
}
root!(ErsuchenNachricht, ersuchen = "ersuchen");
root!(RuecknahmeNachricht, ruecknahme = "ruecknahme");
root!(AenderungNachricht, aenderung = "aenderung");
root!(SachstandsanfrageNachricht, sachstandsanfrage = "sachstandsanfrage");
root!(RueckmeldungNachricht, rueckmeldung = "rueckmeldung");
root!(AbgabeNachricht, abgabe = "abgabe");
root!(RueckgabeNachricht, rueckgabe = "rueckgabe");

/// Reads the root element found by the prolog scan, then checks that nothing but comments,
/// processing instructions and whitespace follows it.
pub(crate) fn read_document<'a, T: FromXml>(c: &mut Cursor<'a>, root: Element<'a>) -> std::result::Result<Box<T>, ReadError> {
    let value = T::from_xml(c, &root).map_err(|f| {
        let hard = c.hard.take();
        f.into_read_error(hard)
    })?;
    loop {
        match c.event() {
            Ok(Event::Eof) => return Ok(Box::new(value)),
            Ok(Event::Start(_) | Event::Empty(_)) => {
                return Err(super::read::malformed(c.text, c.reader.buffer_position() as usize, "a second root element"));
            }
            Ok(Event::Text(t)) if !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(super::read::malformed(c.text, c.reader.buffer_position() as usize, "text outside the root element"));
            }
            Ok(Event::CData(_) | Event::GeneralRef(_)) => {
                return Err(super::read::malformed(c.text, c.reader.buffer_position() as usize, "content outside the root element"));
            }
            Ok(_) => {}
            Err(f) => {
                let hard = c.hard.take();
                return Err(f.into_read_error(hard));
            }
        }
    }
}

/// Reads the prolog up to the root element: checks the declared encoding, refuses DOCTYPE
/// and stray content, and returns the root's start tag.
pub(crate) fn read_prolog<'a>(c: &mut Cursor<'a>) -> std::result::Result<Element<'a>, ReadError> {
    loop {
        let event = c.event().map_err(|f| {
            let hard = c.hard.take();
            f.into_read_error(hard)
        })?;
        match event {
            Event::Decl(decl) => {
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|e| super::read::malformed(c.text, c.reader.buffer_position() as usize, &e.to_string()))?;
                    let name = String::from_utf8_lossy(&enc);
                    if !name.eq_ignore_ascii_case("utf-8") && !name.eq_ignore_ascii_case("utf8") {
                        return Err(ReadError::Encoding(format!(
                            "declared encoding '{}' is not supported; XÖV messages are UTF-8",
                            clip(&name)
                        )));
                    }
                }
            }
            Event::Start(start) => return Ok(c.element(start, false)),
            Event::Empty(start) => return Ok(c.element(start, true)),
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                return Err(super::read::malformed(c.text, c.reader.buffer_position() as usize, "text outside the root element"));
            }
            Event::Eof => return Err(ReadError::NotXml("no element found".into())),
            _ => {}
        }
    }
}

impl Element<'_> {
    pub(crate) fn start(&self) -> &BytesStart<'_> {
        &self.start
    }
}
