//! Code lists (genericode files): which codes a message may use.
//!
//! The shipped drafts live in `schemas/codelists/*.xml` and are compiled in; a directory with
//! files of the same names (the official lists, say) replaces them at start, without a
//! rebuild. A list is known by its canonical URI and version, as the `listURI` and
//! `listVersionID` attributes of a code element name it.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::Event;

/// One code list: its URI, version and codes (code → name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeList {
    pub uri: String,
    pub version: String,
    pub codes: BTreeMap<String, String>,
}

impl CodeList {
    pub fn contains(&self, code: &str) -> bool {
        self.codes.contains_key(code)
    }

    pub fn name_of(&self, code: &str) -> Option<&str> {
        self.codes.get(code).map(String::as_str)
    }

    /// Reads a genericode 1.0 document. The key column is the one the `Key` names (else the
    /// first column); the name is the first other column.
    pub fn from_genericode(xml: &str) -> Result<CodeList, CodeListError> {
        let mut reader = quick_xml::Reader::from_str(xml);
        reader.config_mut().trim_text(true);
        let mut path: Vec<String> = Vec::new();
        let (mut uri, mut version) = (None::<String>, None::<String>);
        let mut columns: Vec<String> = Vec::new();
        let mut key_column: Option<String> = None;
        let mut rows: Vec<Vec<(String, String)>> = Vec::new();
        let mut column_ref: Option<String> = None;
        loop {
            let event = reader.read_event().map_err(|e| CodeListError::Xml(e.to_string()))?;
            match event {
                Event::DocType(_) => return Err(CodeListError::Xml("DOCTYPE not allowed".into())),
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(event, Event::Empty(_));
                    let local = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    let attr = |name: &[u8]| {
                        s.attributes()
                            .flatten()
                            .find(|a| a.key.local_name().as_ref() == name)
                            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                    };
                    match local.as_str() {
                        "Column" => columns.extend(attr(b"Id")),
                        "ColumnRef" if path.last().map(String::as_str) == Some("Key") && key_column.is_none() => {
                            key_column = attr(b"Ref");
                        }
                        "Row" => rows.push(Vec::new()),
                        "Value" => column_ref = attr(b"ColumnRef"),
                        _ => {}
                    }
                    if !empty {
                        path.push(local);
                    }
                }
                Event::End(_) => {
                    path.pop();
                }
                Event::Text(t) => {
                    let text = t.decode().map_err(|e| CodeListError::Xml(e.to_string()))?.into_owned();
                    let parent = path.iter().rev().nth(1).map(String::as_str);
                    match (parent, path.last().map(String::as_str)) {
                        (Some("Identification"), Some("CanonicalUri")) => uri = Some(text),
                        (Some("Identification"), Some("Version")) => version = Some(text),
                        (Some("Value"), Some("SimpleValue")) => {
                            let col = column_ref.clone().unwrap_or_default();
                            if let Some(row) = rows.last_mut() {
                                row.push((col, text));
                            }
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let uri = uri.ok_or(CodeListError::Missing("Identification/CanonicalUri"))?;
        let version = version.ok_or(CodeListError::Missing("Identification/Version"))?;
        let key = key_column.or_else(|| columns.first().cloned()).ok_or(CodeListError::Missing("ColumnSet/Column"))?;
        let mut codes = BTreeMap::new();
        for (i, row) in rows.into_iter().enumerate() {
            let code = row
                .iter()
                .find(|(c, _)| *c == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| CodeListError::Row(i + 1, format!("no value in key column '{key}'")))?;
            let name = row.iter().find(|(c, _)| *c != key).map(|(_, v)| v.clone()).unwrap_or_default();
            if codes.insert(code.clone(), name).is_some() {
                return Err(CodeListError::Row(i + 1, format!("code '{code}' appears twice")));
            }
        }
        if codes.is_empty() {
            return Err(CodeListError::Missing("SimpleCodeList/Row"));
        }
        Ok(CodeList { uri, version, codes })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeListError {
    #[error("not a genericode document: {0}")]
    Xml(String),
    #[error("genericode document lacks {0}")]
    Missing(&'static str),
    #[error("row {0}: {1}")]
    Row(usize, String),
    #[error("{file}: {source}")]
    File { file: String, source: Box<CodeListError> },
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    #[error("{file}: list URI is '{found}', expected '{expected}'")]
    WrongList { file: String, found: String, expected: String },
}

/// The four code lists messages are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLists {
    pub einnahmeart: CodeList,
    pub massnahme: CodeList,
    pub nachrichtentyp: CodeList,
    pub verzeichnisdienst: CodeList,
}

/// The file names, their expected list URIs, and the shipped drafts.
const SHIPPED: [(&str, &str, &str); 4] = [
    ("einnahmeart.xml", URI_EINNAHMEART, include_str!("../../schemas/codelists/einnahmeart.xml")),
    ("massnahme.xml", URI_MASSNAHME, include_str!("../../schemas/codelists/massnahme.xml")),
    ("nachrichtentyp.xml", URI_NACHRICHTENTYP, include_str!("../../schemas/codelists/nachrichtentyp.xml")),
    ("verzeichnisdienst.xml", URI_VERZEICHNISDIENST, include_str!("../../schemas/codelists/verzeichnisdienst.xml")),
];

pub const URI_EINNAHMEART: &str = "urn:xoev-de:xamtshilfe:codeliste:einnahmeart";
pub const URI_MASSNAHME: &str = "urn:xoev-de:xamtshilfe:codeliste:massnahme";
pub const URI_NACHRICHTENTYP: &str = "urn:xoev-de:xamtshilfe:codeliste:nachrichtentyp";
pub const URI_VERZEICHNISDIENST: &str = "urn:xoev-de:kosit:codeliste:verzeichnisdienst";

impl CodeLists {
    /// The drafts shipped in the binary.
    pub fn builtin() -> CodeLists {
        // The shipped files are tested (tests below); a broken one is a build defect.
        Self::load(None).expect("shipped code lists are valid")
    }

    /// Loads the lists, each from `dir/<name>.xml` when that file exists, else the shipped draft.
    pub fn load(dir: Option<&Path>) -> Result<CodeLists, CodeListError> {
        let mut lists = Vec::with_capacity(4);
        for (file, uri, shipped) in SHIPPED {
            let override_path = dir.map(|d| d.join(file)).filter(|p| p.is_file());
            let (label, text) = match &override_path {
                Some(p) => (
                    p.display().to_string(),
                    std::borrow::Cow::Owned(std::fs::read_to_string(p).map_err(|e| CodeListError::Io {
                        file: p.display().to_string(),
                        message: e.to_string(),
                    })?),
                ),
                None => (format!("(built-in) {file}"), std::borrow::Cow::Borrowed(shipped)),
            };
            let list = CodeList::from_genericode(&text)
                .map_err(|e| CodeListError::File { file: label.clone(), source: Box::new(e) })?;
            if list.uri != uri {
                return Err(CodeListError::WrongList { file: label, found: list.uri, expected: uri.into() });
            }
            lists.push(list);
        }
        let mut it = lists.into_iter();
        let mut next = || it.next().expect("four lists loaded");
        Ok(CodeLists { einnahmeart: next(), massnahme: next(), nachrichtentyp: next(), verzeichnisdienst: next() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lists_load_with_the_spec_codes() {
        let lists = CodeLists::builtin();
        for code in ["GRST", "GWST", "HUST", "ZWST", "GEB", "BEI", "BUG", "RFB", "SON"] {
            assert!(lists.einnahmeart.contains(code), "{code}");
        }
        for code in ["VBV", "VAK", "FPK", "FPL", "FPS", "KFZ", "ZUS", "AER", "ERZ"] {
            assert!(lists.massnahme.contains(code), "{code}");
        }
        for kind in crate::xamtshilfe::MessageKind::ALL {
            assert!(lists.nachrichtentyp.contains(kind.nachrichtentyp()), "{kind}");
        }
        assert!(lists.verzeichnisdienst.contains("DVDV"));
        assert_eq!(lists.einnahmeart.name_of("GRST"), Some("Grundsteuer"));
        assert_eq!(lists.einnahmeart.version, "1.1.1");
    }

    #[test]
    fn a_directory_overrides_one_list() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../schemas/codelists/einnahmeart.xml").replace("<SimpleValue>SON</SimpleValue>", "<SimpleValue>XYZ</SimpleValue>");
        std::fs::write(dir.path().join("einnahmeart.xml"), text).unwrap();
        let lists = CodeLists::load(Some(dir.path())).unwrap();
        assert!(lists.einnahmeart.contains("XYZ"));
        assert!(!lists.einnahmeart.contains("SON"));
        assert!(lists.massnahme.contains("VBV"));
    }

    #[test]
    fn a_wrong_or_broken_list_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("massnahme.xml"), include_str!("../../schemas/codelists/einnahmeart.xml")).unwrap();
        let err = CodeLists::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("massnahme.xml") && err.contains("expected"), "{err}");
        std::fs::write(dir.path().join("massnahme.xml"), "<not-closed>").unwrap();
        assert!(CodeLists::load(Some(dir.path())).is_err());
    }
}
