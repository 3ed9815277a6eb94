//! Writing messages as XML: UTF-8 declaration, the root in the configured namespace under the
//! prefix `xamt`, local elements unqualified. What this writes reads back to the same value
//! and validates against the project's XSDs (tests prove both).

use serde::Serialize;

use super::{Message, MessageKind};

/// The prefix of the root element in what amtsbote writes.
pub const PREFIX: &str = "xamt";

#[derive(Debug, thiserror::Error)]
#[error("cannot write {kind}: {message}")]
pub struct WriteError {
    pub kind: MessageKind,
    pub message: String,
}

impl Message {
    /// Writes the message in `namespace` (e.g. `xAmtshilfe110`), indented by two spaces.
    pub fn to_xml(&self, namespace: &str) -> Result<String, WriteError> {
        match self {
            Message::Ersuchen(m) => write(self.kind(), &**m, namespace),
            Message::Ruecknahme(m) => write(self.kind(), &**m, namespace),
            Message::Aenderung(m) => write(self.kind(), &**m, namespace),
            Message::Sachstandsanfrage(m) => write(self.kind(), &**m, namespace),
            Message::Rueckmeldung(m) => write(self.kind(), &**m, namespace),
            Message::Abgabe(m) => write(self.kind(), &**m, namespace),
            Message::Rueckgabe(m) => write(self.kind(), &**m, namespace),
            Message::ZustaendigkeitAnfrage(m) => write(self.kind(), &**m, namespace),
            Message::ZustaendigkeitAntwort(m) => write(self.kind(), &**m, namespace),
        }
    }
}

fn write<T: Serialize>(kind: MessageKind, value: &T, namespace: &str) -> Result<String, WriteError> {
    let err = |message: String| WriteError { kind, message };
    if namespace.is_empty() || namespace.contains(['"', '<', '&']) {
        return Err(err(format!("'{namespace}' cannot be a namespace name")));
    }
    let root = format!("{PREFIX}:{}", kind.root_name());
    let mut body = String::with_capacity(4096);
    let mut ser = quick_xml::se::Serializer::with_root(&mut body, Some(&root)).map_err(|e| err(e.to_string()))?;
    ser.indent(' ', 2);
    value.serialize(ser).map_err(|e| err(e.to_string()))?;
    // serde knows nothing of namespaces: declare the root's prefix in its start tag, which
    // the serializer has just written as `<xamt:vollstreckungshilfe.…` followed by a space,
    // `>` or `/>`.
    let insert_at = 1 + root.len();
    debug_assert!(body.starts_with(&format!("<{root}")));
    let mut out = String::with_capacity(body.len() + 80 + namespace.len());
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&body[..insert_at]);
    out.push_str(&format!(" xmlns:{PREFIX}=\"{namespace}\""));
    out.push_str(&body[insert_at..]);
    out.push('\n');
    Ok(out)
}
