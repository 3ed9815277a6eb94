//! Reading XTA envelopes with limits, and the few helpers for writing them.
//!
//! An XTA server's reply (and, for the simulator, a client's request) is outside input, so it
//! is read under the same rules as our other XML (see `xamtshilfe::read`): a size limit, a
//! depth limit, a limit on attributes, no DOCTYPE (so no entity can be declared), no entity
//! references but the five predefined ones and character references. The envelope is read
//! once, with namespaces resolved, into a small tree of [`Node`]s that `soap` takes apart;
//! SOAP envelopes are small apart from their base64 content, which is kept as one string.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// The limits a document must stay inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document (body of the HTTP message, all MTOM parts together).
    /// Default 60 MiB: a 40 MB container in base64 and its envelope.
    pub max_bytes: usize,
    /// Deepest accepted element nesting (default 64).
    pub max_depth: usize,
    /// Most attributes on one element (default 32).
    pub max_attributes: usize,
    /// Most elements in one document (default 100,000).
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 60 * 1024 * 1024, max_depth: 64, max_attributes: 32, max_elements: 100_000 }
    }
}

/// Why a document was refused. Names what, never the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not UTF-8")]
    NotUtf8,
    #[error("DOCTYPE refused: an XTA envelope must not declare a document type or entities")]
    Doctype,
    #[error("entity reference '&{0};' refused: only the predefined XML entities and character references are allowed")]
    Entity(String),
    #[error("nesting deeper than {0} elements")]
    TooDeep(usize),
    #[error("more than {0} attributes on one element")]
    TooManyAttributes(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("no root element")]
    Empty,
}

/// An element: its namespace URI and local name, attributes, text and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub ns: String,
    pub name: String,
    /// Attributes by (namespace URI, local name); unprefixed attributes have namespace "".
    pub attrs: Vec<(String, String, String)>,
    /// The text directly inside this element (all pieces joined, untrimmed).
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child with this name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child with this name.
    pub fn children_named<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// An unqualified attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(ns, n, _)| ns.is_empty() && n == name).map(|(_, _, v)| v.as_str())
    }

    /// The text, trimmed.
    pub fn trimmed(&self) -> &str {
        self.text.trim()
    }

    /// The first element of this name anywhere below (depth first), this one included.
    pub fn find(&self, ns: Option<&str>, name: &str) -> Option<&Node> {
        if self.name == name && ns.is_none_or(|ns| self.ns == ns) {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(ns, name))
    }
}

/// Reads a document into its root [`Node`], with every limit applied.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Node, XmlError> {
    if bytes.len() > limits.max_bytes {
        return Err(XmlError::TooLarge { size: bytes.len(), limit: limits.max_bytes });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = quick_xml::NsReader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.check_comments = true;
    cfg.expand_empty_elements = false;

    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(|e| XmlError::Malformed(e.to_string()))?;
        // Owned at once: the resolved name borrows the reader.
        let element_ns = match resolved {
            ResolveResult::Bound(ns) => Ok(String::from_utf8_lossy(ns.into_inner()).into_owned()),
            ResolveResult::Unbound => Ok(String::new()),
            ResolveResult::Unknown(p) => Err(XmlError::Malformed(format!("unknown namespace prefix '{}'", clip(&String::from_utf8_lossy(&p))))),
        };
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(XmlError::Malformed("a second root element".into()));
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(XmlError::TooManyElements(limits.max_elements));
                }
                let ns = element_ns?;
                let name = String::from_utf8_lossy(start.local_name().into_inner()).into_owned();
                let mut attrs = Vec::new();
                for (n, attr) in start.attributes().enumerate() {
                    if n >= limits.max_attributes {
                        return Err(XmlError::TooManyAttributes(limits.max_attributes));
                    }
                    let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
                    let key = attr.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ans, local) = reader.resolve_attribute(key);
                    let ans = match ans {
                        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.into_inner()).into_owned(),
                        _ => String::new(),
                    };
                    let value = attr.unescape_value().map_err(|e| entity_or_malformed(&e.to_string()))?;
                    attrs.push((ans, String::from_utf8_lossy(local.into_inner()).into_owned(), value.into_owned()));
                }
                let node = Node { ns, name, attrs, text: String::new(), children: Vec::new() };
                if matches!(event, Event::Start(_)) {
                    stack.push(node);
                } else {
                    close(&mut stack, &mut root, node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| XmlError::Malformed("unexpected end tag".into()))?;
                close(&mut stack, &mut root, node);
            }
            Event::Text(t) => {
                let piece: Cow<'_, str> = t.xml_content().map_err(|e| XmlError::Malformed(e.to_string()))?;
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&piece),
                    None if piece.trim().is_empty() => {}
                    None => return Err(XmlError::Malformed("text outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let piece = c.xml_content().map_err(|e| XmlError::Malformed(e.to_string()))?;
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&piece),
                    None => return Err(XmlError::Malformed("content outside the root element".into())),
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => match &*r {
                        b"lt" => '<',
                        b"gt" => '>',
                        b"amp" => '&',
                        b"apos" => '\'',
                        b"quot" => '"',
                        other => return Err(XmlError::Entity(clip(&String::from_utf8_lossy(other)))),
                    },
                    Err(e) => return Err(XmlError::Malformed(e.to_string())),
                };
                match stack.last_mut() {
                    Some(node) => node.text.push(ch),
                    None => return Err(XmlError::Malformed("content outside the root element".into())),
                }
            }
            Event::Decl(decl) => {
                if let Some(Ok(enc)) = decl.encoding() {
                    let name = String::from_utf8_lossy(&enc);
                    if !name.eq_ignore_ascii_case("utf-8") && !name.eq_ignore_ascii_case("utf8") {
                        return Err(XmlError::Malformed(format!("declared encoding '{}' is not supported", clip(&name))));
                    }
                }
            }
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(XmlError::Malformed("the document ends inside an element".into()));
                }
                return root.ok_or(XmlError::Empty);
            }
            Event::Comment(_) | Event::PI(_) => {}
        }
    }
}

fn close(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn entity_or_malformed(message: &str) -> XmlError {
    if message.contains("entity") { XmlError::Entity(clip(message)) } else { XmlError::Malformed(clip(message)) }
}

/// At most 60 characters of an outside value, for an error message.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Escapes text and attribute values.
pub(crate) fn esc(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\'')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_doctype_entities_depth_and_size() {
        let l = Limits::default();
        assert_eq!(parse(b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", &l), Err(XmlError::Doctype));
        assert!(matches!(parse(b"<a>&x;</a>", &l), Err(XmlError::Entity(_))));
        let deep = format!("{}{}", "<a>".repeat(65), "</a>".repeat(65));
        assert_eq!(parse(deep.as_bytes(), &l), Err(XmlError::TooDeep(64)));
        let small = Limits { max_bytes: 10, ..l };
        assert!(matches!(parse(b"<a>0123456789</a>", &small), Err(XmlError::TooLarge { .. })));
        let n = parse(b"<p:a xmlns:p='urn:x' b='1'>x &amp; y<c/></p:a>", &l).expect("valid");
        assert!(n.is("urn:x", "a"));
        assert_eq!(n.attr("b"), Some("1"));
        assert_eq!(n.text, "x & y");
        assert_eq!(n.children.len(), 1);
    }
}
