//! The text fields of the messages: for every element that holds text, its XSD type, its
//! maximum length in characters (the XSD's `maxLength` facet, the reader's default) and the
//! DIN 91379 data type its characters must belong to. The reader looks an element up here
//! once, at compile time (`field_index` in a `const`), so a text costs one array access.
//!
//! The lengths follow XÖV habits: names of persons and organisations 200, streets and places
//! 100, house number and PO box 20, postcode 10, Aktenzeichen 100, Kassenzeichen 50, free text
//! 2,000, codes 50, identifiers 100, e-mail 254 (RFC 5321), telephone 50, IBAN 42 (34
//! characters with the spaces of the printed form), BIC 11. tests/xsd.rs checks that this
//! table and schemas/xamtshilfe/xamtshilfe.xsd agree, element by element.

use super::din91379::DinType;

/// One text element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The element's local name (the same name has the same type wherever it occurs).
    pub element: &'static str,
    /// Its simple type in the XSD.
    pub xsd_type: &'static str,
    /// Default maximum length in characters, as the XSD's `maxLength`.
    pub max_chars: u32,
    /// The DIN 91379 data type of its characters.
    pub din: DinType,
}

const fn field(element: &'static str, xsd_type: &'static str, max_chars: u32, din: DinType) -> Field {
    Field { element, xsd_type, max_chars, din }
}

/// Every text element of the messages. (Elements read as values — UUIDs, dates, amounts, the
/// enumerations — are bounded by their parsers and not listed.)
pub const FIELDS: [Field; 24] = [
    field("familienname", "Type.Name.Person", 200, DinType::A),
    field("vorname", "Type.Name.Person", 200, DinType::A),
    field("geburtsname", "Type.Name.Person.Optional", 200, DinType::A),
    field("firma", "Type.Name", 200, DinType::B),
    field("name", "Type.Name", 200, DinType::B),
    field("kontoinhaber", "Type.Name.Optional", 200, DinType::B),
    field("angeordnetVon", "Type.Name", 200, DinType::B),
    field("strasse", "Type.Strasse", 100, DinType::B),
    field("hausnummer", "Type.Hausnummer", 20, DinType::B),
    field("postfach", "Type.Postfach", 20, DinType::B),
    field("postleitzahl", "Type.Postleitzahl", 10, DinType::B),
    field("ort", "Type.Ort", 100, DinType::B),
    field("staat", "Type.Staat", 2, DinType::B),
    field("aktenzeichen", "Type.Aktenzeichen", 100, DinType::B),
    field("kassenzeichen", "Type.Kassenzeichen", 50, DinType::B),
    field("bemerkung", "Type.Freitext", 2000, DinType::C),
    field("frage", "Type.Freitext", 2000, DinType::C),
    field("begruendung", "Type.Freitext", 2000, DinType::C),
    field("code", "Type.Codewert", 50, DinType::B),
    field("kennung", "Type.Kennung", 100, DinType::B),
    field("email", "Type.EMail", 254, DinType::B),
    field("telefon", "Type.Telefon", 50, DinType::B),
    field("iban", "Type.IBAN", 42, DinType::B),
    field("bic", "Type.BIC", 11, DinType::B),
];

/// One attribute of the messages: its maximum length in characters and the DIN 91379 type
/// of its characters. Checked on every attribute value as on texts (after character
/// references are resolved; the Char production is the reader's), before it is parsed or
/// kept, so a 2 MB `listURI` or a right-to-left override in a `dateiname` is refused by
/// length or code point, never quoted. Attributes read as values (`test`, `auskunftssperre`,
/// `bis`) are held to the length of their longest valid form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub name: &'static str,
    pub max_chars: u32,
    pub din: DinType,
}

const fn attribute(name: &'static str, max_chars: u32, din: DinType) -> Attribute {
    Attribute { name, max_chars, din }
}

/// Every attribute the reader takes. Lengths: the XSD's `maxLength` where it has one
/// (`dateiname` 255), else XÖV habits (product names 200, versions 50, URIs 255, currency
/// codes 3 as ISO 4217). Namespace declarations and `xsi:*` on the root: [`ROOT_EXTRA`].
pub const ATTRIBUTES: [Attribute; 13] = [
    attribute("produkt", 200, DinType::B),
    attribute("produkthersteller", 200, DinType::B),
    attribute("produktversion", 50, DinType::B),
    attribute("standard", 200, DinType::B),
    attribute("version", 50, DinType::B),
    attribute("test", 5, DinType::B),
    attribute("listURI", 255, DinType::B),
    attribute("listVersionID", 50, DinType::B),
    attribute("waehrung", 3, DinType::B),
    attribute("bis", 10, DinType::B),
    attribute("auskunftssperre", 5, DinType::B),
    attribute("dateiname", 255, DinType::B),
    attribute("mimeType", 100, DinType::B),
];

/// The limit of namespace declarations and `xsi:*` attributes on a root
/// (`xsi:schemaLocation` may name a few URI pairs).
pub const ROOT_EXTRA: Attribute = attribute("xmlns, xsi:*", 1000, DinType::B);

/// The attribute `name` of [`ATTRIBUTES`].
pub fn attribute_of(name: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.name == name)
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The index of an element in [`FIELDS`]; a name that is not there fails the build.
pub const fn field_index(element: &str) -> usize {
    let mut i = 0;
    while i < FIELDS.len() {
        if same(FIELDS[i].element, element) {
            return i;
        }
        i += 1;
    }
    panic!("a text element missing from xamtshilfe::fields::FIELDS")
}

/// The maximum length of every text field, in characters: the defaults of [`FIELDS`],
/// changed per element by configuration (`[messages.max_length]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLengths([u32; FIELDS.len()]);

impl Default for FieldLengths {
    fn default() -> Self {
        let mut out = [0; FIELDS.len()];
        for (slot, f) in out.iter_mut().zip(FIELDS.iter()) {
            *slot = f.max_chars;
        }
        FieldLengths(out)
    }
}

impl FieldLengths {
    pub(crate) fn get(&self, index: usize) -> u32 {
        self.0[index]
    }

    /// The limit for an element by name.
    pub fn of(&self, element: &str) -> Option<u32> {
        FIELDS.iter().position(|f| f.element == element).map(|i| self.0[i])
    }

    /// Sets the limit for an element; an unknown name is an error naming the known ones.
    pub fn set(&mut self, element: &str, max_chars: u32) -> Result<(), String> {
        match FIELDS.iter().position(|f| f.element == element) {
            Some(_) if max_chars == 0 => Err(format!("max_length.{element} must be at least 1")),
            Some(i) => {
                self.0[i] = max_chars;
                Ok(())
            }
            None => Err(format!(
                "max_length: unknown element '{}' (known: {})",
                super::values::clip(element),
                FIELDS.iter().map(|f| f.element).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// The repeated elements whose number is capped while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeated {
    Schuldner,
    Forderung,
    Massnahme,
    Anhang,
}

/// Which capped repetition an element is, if any (at compile time, like [`field_index`]).
pub(crate) const fn repeated(element: &str) -> Option<Repeated> {
    if same(element, "schuldner") {
        Some(Repeated::Schuldner)
    } else if same(element, "forderung") {
        Some(Repeated::Forderung)
    } else if same(element, "massnahme") {
        Some(Repeated::Massnahme)
    } else if same(element, "anhang") {
        Some(Repeated::Anhang)
    } else {
        None
    }
}
