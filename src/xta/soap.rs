//! The XTA 2 (Version 3) SOAP protocol: the typed values of the operations, and the writers
//! and readers of their SOAP 1.2 envelopes — requests (what the client sends, what the
//! simulator reads) and responses (what the simulator answers, what the client reads).
//!
//! Written from the published WSDL and schemas (../shared/reference/xta2-v3): document/literal,
//! WS-Addressing headers (Action, MessageID, To, ReplyTo anonymous) on every request, the
//! `oscimeta:Author` header on management and message-box operations, `oscimeta:MessageMetaData`
//! on sendMessage and in getMessage's answer. Content is written inline as base64; it is read
//! inline or from MTOM (multipart/related with `xop:Include`). Everything read goes through
//! [`super::xml::parse`] and its limits.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};

use super::fault::Fault;
use super::xml::{self, Limits, Node, XmlError, clip, esc};

pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
pub const NS_XTA: &str = "http://xoev.de/transport/xta/211";
pub const NS_OSCI: &str = "http://www.osci.eu/ws/2008/05/transport";
pub const NS_OSCIMETA: &str = "http://www.osci.eu/ws/2014/10/transport";
pub const NS_XOP: &str = "http://www.w3.org/2004/08/xop/include";
pub const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
/// The code list of the fault codes (`errorCode/@listURI`).
pub const FEHLERNUMMER_LIST: &str = "urn:de:xta:webservice:codeliste:fehlernummer";
const MSGBOX_NO_MATCH: &str = "http://www.osci.eu/ws/2008/05/transport/MsgBox/reasons/NoMatch";

/// The three ports of the WSDL's `XTAService`; the simulator serves each on `/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    Management,
    SendXta,
    MsgBox,
}

impl Port {
    pub const ALL: [Port; 3] = [Port::Management, Port::SendXta, Port::MsgBox];

    /// The port's name in the WSDL, and its URL path in the simulator.
    pub fn name(self) -> &'static str {
        match self {
            Port::Management => "ManagementPort",
            Port::SendXta => "SendXtaPort",
            Port::MsgBox => "MsgBoxPort",
        }
    }
}

/// The operations of this increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CheckAccountActive,
    LookupService,
    CreateMessageId,
    SendMessage,
    GetTransportReport,
    GetStatusList,
    GetMessage,
    Close,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::CheckAccountActive,
        Operation::LookupService,
        Operation::CreateMessageId,
        Operation::SendMessage,
        Operation::GetTransportReport,
        Operation::GetStatusList,
        Operation::GetMessage,
        Operation::Close,
    ];

    /// The SOAP action (and WS-Addressing Action) of the WSDL binding.
    pub fn action(self) -> &'static str {
        match self {
            Operation::CheckAccountActive => "http://www.xta.de/XTA/CheckAccountActive",
            Operation::LookupService => "http://www.xta.de/XTA/IsServiceAvailable",
            Operation::CreateMessageId => "http://www.xta.de/XTA/CreateMessageID",
            Operation::SendMessage => "http://www.xta.de/XTA/SendMessage",
            Operation::GetTransportReport => "http://www.xta.de/XTA/GetTransportReport",
            Operation::GetStatusList => "http://www.osci.eu/ws/2008/05/transport/urn/messageTypes/MsgBoxStatusListRequest",
            Operation::GetMessage => "http://www.osci.eu/ws/2008/05/transport/urn/messageTypes/MsgBoxFetchRequest",
            Operation::Close => "http://www.osci.eu/ws/2008/05/transport/urn/messageTypes/MsgBoxCloseRequest",
        }
    }

    pub fn from_action(action: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.action() == action)
    }

    pub fn port(self) -> Port {
        match self {
            Operation::SendMessage => Port::SendXta,
            Operation::GetStatusList | Operation::GetMessage | Operation::Close => Port::MsgBox,
            _ => Port::Management,
        }
    }

    /// The WSDL's operation name, for logs and recorded files.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CheckAccountActive => "checkAccountActive",
            Operation::LookupService => "lookupService",
            Operation::CreateMessageId => "createMessageId",
            Operation::SendMessage => "sendMessage",
            Operation::GetTransportReport => "getTransportReport",
            Operation::GetStatusList => "getStatusList",
            Operation::GetMessage => "getMessage",
            Operation::Close => "close",
        }
    }
}

/// An XTA MessageID: `urn:de:xta:messageid:<prefix>:<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

impl MessageId {
    const PREFIX: &'static str = "urn:de:xta:messageid:";

    /// A new MessageID under `prefix` (letters, digits, `.`, `-`, `_`) with a random UUID.
    pub fn generate(prefix: &str) -> Result<MessageId, String> {
        MessageId::parse(&format!("{}{prefix}:{}", Self::PREFIX, uuid::Uuid::new_v4()))
    }

    pub fn parse(s: &str) -> Result<MessageId, String> {
        let s = s.trim();
        let rest = s.strip_prefix(Self::PREFIX).ok_or_else(|| format!("'{}' is not an XTA MessageID (urn:de:xta:messageid:<prefix>:<uuid>)", clip(s)))?;
        let (prefix, id) = rest.rsplit_once(':').ok_or_else(|| format!("'{}' has no <prefix>:<uuid> part", clip(s)))?;
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')) {
            return Err(format!("'{}' has an invalid prefix", clip(s)));
        }
        uuid::Uuid::parse_str(id).map_err(|_| format!("'{}' does not end in a UUID", clip(s)))?;
        Ok(MessageId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MessageId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        MessageId::parse(&s)
    }
}

impl From<MessageId> for String {
    fn from(m: MessageId) -> String {
        m.0
    }
}

/// A party's identifier (`oscimeta:PartyIdentifierType`): the value, its `@type` (e.g.
/// `xoev`), optional `@name` and `@category`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identifier {
    pub value: String,
    pub id_type: String,
    pub name: Option<String>,
    pub category: Option<String>,
}

impl Identifier {
    /// An identifier of `@type` "xoev", the usual type for XÖV participants.
    pub fn xoev(value: impl Into<String>) -> Identifier {
        Identifier { value: value.into(), id_type: "xoev".into(), name: None, category: None }
    }
}

/// A code of a code list (`oscimeta:KeyCodeType`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyCode {
    pub code: String,
    pub name: Option<String>,
    pub list_uri: String,
    pub list_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BusinessScenario {
    Defined(KeyCode),
    Undefined(String),
}

/// `oscimeta:Qualifier`: service, business scenario and message type of a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Qualifier {
    pub subject: Option<String>,
    pub service: String,
    pub business_scenario: BusinessScenario,
    pub message_type: KeyCode,
    pub payload_schema: String,
}

/// `oscimeta:MessageMetaData`: what the transport needs to know about a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageMetaData {
    pub test_msg: bool,
    pub origin: Option<DateTime<Utc>>,
    pub author: Identifier,
    pub reader: Identifier,
    pub message_id: MessageId,
    pub qualifier: Qualifier,
    pub msg_size: Option<u64>,
}

impl MessageMetaData {
    /// The metadata of an xAmtshilfe message of type `message_type` (e.g.
    /// `vollstreckungshilfe.Ersuchen.0101`) from `author` to `reader`'s `service`: business
    /// scenario `XAMTSHILFE_DATA`, payload schema xAmtshilfe 1.1, originated now.
    pub fn xamtshilfe(author: Identifier, reader: Identifier, message_id: MessageId, service: String, message_type: String, test: bool, size: Option<u64>) -> MessageMetaData {
        MessageMetaData {
            test_msg: test,
            origin: Some(Utc::now()),
            author,
            reader,
            message_id,
            qualifier: Qualifier {
                subject: None,
                service,
                business_scenario: BusinessScenario::Defined(KeyCode {
                    code: "XAMTSHILFE_DATA".into(),
                    name: None,
                    list_uri: "urn:de:dataport:codeliste:business.scenario".into(),
                    list_version: "1".into(),
                }),
                message_type: KeyCode { code: message_type, name: None, list_uri: "urn:xoev-de:xamtshilfe:codeliste:nachrichtentyp".into(), list_version: "1.1".into() },
                payload_schema: "xAmtshilfe110".into(),
            },
            msg_size: size,
        }
    }
}

/// One content (`xta:ContentType`): the bytes and their description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub content_type: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// `xta:GenericContentContainer` (unencrypted form): the message and its attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentContainer {
    pub message: Content,
    pub attachments: Vec<Content>,
}

/// What lookupService says about a reader and service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// `ServiceIsAvailable` true: electronic delivery.
    Available,
    /// `ServiceIsAvailable` false: print.
    NotAvailable,
    /// `ServiceIsAvailableUnknown`: ask again later, then print.
    Unknown,
}

/// A service parameter of a lookup result (e.g. the reader's encryption certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceParameter {
    pub parameter_type: KeyCode,
    pub resource: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupServiceResult {
    pub reader: Identifier,
    pub service: String,
    pub availability: Availability,
    pub parameters: Vec<ServiceParameter>,
}

/// `xta:MessageStatus/Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportStatus {
    /// 0: not yet delivered.
    Open,
    /// 1: delivered.
    Green,
    /// 2: delivered with warnings.
    Yellow,
    /// 3: failed.
    Red,
}

impl TransportStatus {
    pub fn code(self) -> u8 {
        match self {
            TransportStatus::Open => 0,
            TransportStatus::Green => 1,
            TransportStatus::Yellow => 2,
            TransportStatus::Red => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<TransportStatus> {
        match code {
            0 => Some(TransportStatus::Open),
            1 => Some(TransportStatus::Green),
            2 => Some(TransportStatus::Yellow),
            3 => Some(TransportStatus::Red),
            _ => None,
        }
    }
}

/// An error, warning or info of a transport report (`xta:RecordType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp: DateTime<Utc>,
    pub code: String,
    pub list_uri: String,
    pub list_version: String,
    pub reason: String,
}

/// `xta:TransportReport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportReport {
    pub metadata: MessageMetaData,
    pub report_time: DateTime<Utc>,
    pub server_identity: String,
    pub status: TransportStatus,
    pub errors: Vec<Record>,
    pub warnings: Vec<Record>,
    pub infos: Vec<Record>,
}

/// `osci:MsgBoxResponse`: the box's request id and what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgBoxResponse {
    pub request_id: String,
    /// `ItemsPending`; `None` for `NoMessageAvailable`.
    pub items_pending: Option<u64>,
}

/// A request of one of the operations, with what the envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CheckAccountActive { author: Identifier },
    LookupService { author: Identifier, lookups: Vec<(Identifier, String)> },
    CreateMessageId { author: Identifier },
    SendMessage { metadata: Box<MessageMetaData>, container: ContentContainer },
    GetTransportReport { author: Identifier, message_id: MessageId },
    GetStatusList { author: Identifier, max_items: Option<u32> },
    GetMessage { author: Identifier, message_id: MessageId },
    Close { author: Identifier, request_id: String, message_ids: Vec<MessageId> },
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Request::CheckAccountActive { .. } => Operation::CheckAccountActive,
            Request::LookupService { .. } => Operation::LookupService,
            Request::CreateMessageId { .. } => Operation::CreateMessageId,
            Request::SendMessage { .. } => Operation::SendMessage,
            Request::GetTransportReport { .. } => Operation::GetTransportReport,
            Request::GetStatusList { .. } => Operation::GetStatusList,
            Request::GetMessage { .. } => Operation::GetMessage,
            Request::Close { .. } => Operation::Close,
        }
    }

    /// Who asks: the author header, or for sendMessage the metadata's author.
    pub fn author(&self) -> &Identifier {
        match self {
            Request::SendMessage { metadata, .. } => &metadata.author,
            Request::CheckAccountActive { author }
            | Request::LookupService { author, .. }
            | Request::CreateMessageId { author }
            | Request::GetTransportReport { author, .. }
            | Request::GetStatusList { author, .. }
            | Request::GetMessage { author, .. }
            | Request::Close { author, .. } => author,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// checkAccountActive, sendMessage, close: an empty body.
    Empty,
    LookupService(Vec<LookupServiceResult>),
    MessageId(MessageId),
    TransportReport(Box<TransportReport>),
    StatusList { msgbox: MsgBoxResponse, entries: Vec<MessageMetaData> },
    Message { msgbox: MsgBoxResponse, metadata: Box<MessageMetaData>, container: ContentContainer },
}

/// The WS-Addressing headers of a message that was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addressing {
    pub action: Option<String>,
    pub message_id: Option<String>,
    pub relates_to: Option<String>,
    pub to: Option<String>,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Xml(#[from] XmlError),
    #[error("MTOM: {0}")]
    Mtom(String),
    #[error("not a SOAP 1.2 envelope: {0}")]
    NotSoap(String),
    #[error("unknown SOAP action '{0}'")]
    UnknownAction(String),
    #[error("{path}: {message}")]
    Structure { path: String, message: String },
}

fn missing(path: &str, what: &str) -> ReadError {
    ReadError::Structure { path: path.to_owned(), message: format!("missing {what}") }
}

fn invalid(path: &str, message: impl Into<String>) -> ReadError {
    ReadError::Structure { path: path.to_owned(), message: message.into() }
}

/// An encoded HTTP body and its Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub content_type: String,
    pub body: Vec<u8>,
}

// ───────────────────────────── writing ─────────────────────────────

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing""#,
    r#" xmlns:xta="http://xoev.de/transport/xta/211" xmlns:osci="http://www.osci.eu/ws/2008/05/transport""#,
    r#" xmlns:oscimeta="http://www.osci.eu/ws/2014/10/transport">"#
);

fn soap_content_type(action: &str) -> String {
    format!("application/soap+xml; charset=utf-8; action=\"{action}\"")
}

fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn write_identifier(out: &mut String, id: &Identifier) {
    let _ = write!(out, r#"<oscimeta:Identifier type="{}""#, esc(&id.id_type));
    if let Some(name) = &id.name {
        let _ = write!(out, r#" name="{}""#, esc(name));
    }
    if let Some(category) = &id.category {
        let _ = write!(out, r#" category="{}""#, esc(category));
    }
    let _ = write!(out, ">{}</oscimeta:Identifier>", esc(&id.value));
}

fn write_party(out: &mut String, element: &str, id: &Identifier) {
    let _ = write!(out, "<{element}>");
    write_identifier(out, id);
    let _ = write!(out, "</{element}>");
}

fn write_key_code_inner(out: &mut String, code: &KeyCode) {
    let _ = write!(out, "<code>{}</code>", esc(&code.code));
    if let Some(name) = &code.name {
        let _ = write!(out, "<name>{}</name>", esc(name));
    }
}

fn write_metadata(out: &mut String, m: &MessageMetaData) {
    out.push_str("<oscimeta:MessageMetaData");
    if m.test_msg {
        out.push_str(r#" TestMsg="true""#);
    }
    out.push_str("><oscimeta:DeliveryAttributes>");
    if let Some(origin) = &m.origin {
        let _ = write!(out, "<oscimeta:Origin>{}</oscimeta:Origin>", timestamp(origin));
    }
    out.push_str("</oscimeta:DeliveryAttributes><oscimeta:Originators>");
    write_party(out, "oscimeta:Author", &m.author);
    out.push_str("</oscimeta:Originators><oscimeta:Destinations>");
    write_party(out, "oscimeta:Reader", &m.reader);
    let _ = write!(out, "</oscimeta:Destinations><oscimeta:MsgIdentification><wsa:MessageID>{}</wsa:MessageID></oscimeta:MsgIdentification>", esc(m.message_id.as_str()));
    out.push_str("<oscimeta:Qualifier>");
    let q = &m.qualifier;
    if let Some(subject) = &q.subject {
        let _ = write!(out, "<oscimeta:Subject>{}</oscimeta:Subject>", esc(subject));
    }
    let _ = write!(out, "<oscimeta:Service>{}</oscimeta:Service><oscimeta:BusinessScenario>", esc(&q.service));
    match &q.business_scenario {
        BusinessScenario::Defined(code) => {
            let _ = write!(out, r#"<oscimeta:Defined listURI="{}" listVersionID="{}">"#, esc(&code.list_uri), esc(&code.list_version));
            write_key_code_inner(out, code);
            out.push_str("</oscimeta:Defined>");
        }
        BusinessScenario::Undefined(text) => {
            let _ = write!(out, "<oscimeta:Undefined>{}</oscimeta:Undefined>", esc(text));
        }
    }
    let mt = &q.message_type;
    let _ = write!(
        out,
        r#"</oscimeta:BusinessScenario><oscimeta:MessageType listURI="{}" listVersionID="{}" payloadSchema="{}">"#,
        esc(&mt.list_uri),
        esc(&mt.list_version),
        esc(&q.payload_schema)
    );
    write_key_code_inner(out, mt);
    out.push_str("</oscimeta:MessageType></oscimeta:Qualifier>");
    if let Some(size) = m.msg_size {
        let _ = write!(out, "<oscimeta:MsgSize>{size}</oscimeta:MsgSize>");
    }
    out.push_str("</oscimeta:MessageMetaData>");
}

/// How content is put into an envelope: inline base64, or as MTOM parts.
struct ContentWriter {
    mtom: bool,
    parts: Vec<(String, String, Vec<u8>)>,
}

impl ContentWriter {
    fn write(&mut self, out: &mut String, element: &str, c: &Content) {
        let _ = write!(out, r#"<{element} contentType="{}""#, esc(&c.content_type));
        if let Some(f) = &c.filename {
            let _ = write!(out, r#" filename="{}""#, esc(f));
        }
        if !c.data.is_empty() {
            let _ = write!(out, r#" size="{}""#, c.data.len());
        }
        out.push('>');
        if self.mtom {
            let cid = format!("content-{}@amtsbote", self.parts.len() + 1);
            let _ = write!(out, r#"<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:{cid}"/>"#);
            self.parts.push((cid, c.content_type.clone(), c.data.clone()));
        } else {
            // Straight into the envelope, room made once: a 40 MB message is not encoded
            // into a string of its own and copied again.
            use base64::Engine as _;
            out.reserve(c.data.len().div_ceil(3) * 4 + 64);
            base64::engine::general_purpose::STANDARD.encode_string(&c.data, out);
        }
        let _ = write!(out, "</{element}>");
    }
}

fn write_container(out: &mut String, c: &ContentContainer, w: &mut ContentWriter) {
    out.push_str("<xta:GenericContentContainer><xta:ContentContainer>");
    w.write(out, "xta:Message", &c.message);
    for a in &c.attachments {
        w.write(out, "xta:Attachment", a);
    }
    out.push_str("</xta:ContentContainer></xta:GenericContentContainer>");
}

fn new_wsa_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// Writes a request envelope for the endpoint `to`. Content is inline base64.
pub fn write_request(request: &Request, to: &str) -> Encoded {
    let op = request.operation();
    // Room for the content's base64 too, so that a large message's envelope is not
    // reallocated (and for a moment held twice) while it grows.
    let content = match request {
        Request::SendMessage { container, .. } => std::iter::once(&container.message).chain(&container.attachments).map(|c| c.data.len().div_ceil(3) * 4 + 256).sum(),
        _ => 0,
    };
    let mut out = String::with_capacity(4096 + content);
    out.push_str(ENVELOPE_OPEN);
    let _ = write!(
        out,
        "<s12:Header><wsa:Action>{}</wsa:Action><wsa:MessageID>{}</wsa:MessageID><wsa:To>{}</wsa:To><wsa:ReplyTo><wsa:Address>{WSA_ANONYMOUS}</wsa:Address></wsa:ReplyTo>",
        op.action(),
        new_wsa_id(),
        esc(to)
    );
    match request {
        Request::SendMessage { metadata, .. } => write_metadata(&mut out, metadata),
        other => write_party(&mut out, "oscimeta:Author", other.author()),
    }
    out.push_str("</s12:Header><s12:Body>");
    match request {
        Request::CheckAccountActive { .. } | Request::CreateMessageId { .. } => {}
        Request::LookupService { lookups, .. } => {
            out.push_str("<xta:LookupServiceRequest>");
            for (reader, service) in lookups {
                out.push_str("<xta:LookupServiceRequestList><xta:LookupService>");
                write_party(&mut out, "oscimeta:Reader", reader);
                let _ = write!(out, "<xta:ServiceType>{}</xta:ServiceType></xta:LookupService></xta:LookupServiceRequestList>", esc(service));
            }
            out.push_str("</xta:LookupServiceRequest>");
        }
        Request::SendMessage { container, .. } => {
            write_container(&mut out, container, &mut ContentWriter { mtom: false, parts: Vec::new() });
        }
        Request::GetTransportReport { message_id, .. } => {
            let _ = write!(out, "<wsa:MessageID>{}</wsa:MessageID>", esc(message_id.as_str()));
        }
        Request::GetStatusList { max_items, .. } => {
            out.push_str(r#"<osci:MsgBoxStatusListRequest ListForm="MessageMetaData""#);
            if let Some(n) = max_items {
                let _ = write!(out, r#" maxListItems="{}""#, (*n).max(1));
            }
            out.push_str("/>");
        }
        Request::GetMessage { message_id, .. } => {
            let _ = write!(
                out,
                "<osci:MsgBoxFetchRequest><osci:MsgSelector><wsa:MessageID>{}</wsa:MessageID></osci:MsgSelector></osci:MsgBoxFetchRequest>",
                esc(message_id.as_str())
            );
        }
        Request::Close { request_id, message_ids, .. } => {
            let _ = write!(out, r#"<osci:MsgBoxCloseRequest MsgBoxRequestID="{}">"#, esc(request_id));
            for id in message_ids {
                let _ = write!(out, "<osci:LastMsgReceived>{}</osci:LastMsgReceived>", esc(id.as_str()));
            }
            out.push_str("</osci:MsgBoxCloseRequest>");
        }
    }
    out.push_str("</s12:Body></s12:Envelope>");
    Encoded { content_type: soap_content_type(op.action()), body: out.into_bytes() }
}

fn response_header(out: &mut String, op: Operation, relates_to: Option<&str>) {
    out.push_str(ENVELOPE_OPEN);
    let _ = write!(out, "<s12:Header><wsa:Action>{}</wsa:Action><wsa:MessageID>{}</wsa:MessageID>", op.action(), new_wsa_id());
    if let Some(r) = relates_to {
        let _ = write!(out, "<wsa:RelatesTo>{}</wsa:RelatesTo>", esc(r));
    }
}

fn write_msgbox_response(out: &mut String, r: &MsgBoxResponse) {
    let _ = write!(out, r#"<osci:MsgBoxResponse MsgBoxRequestID="{}">"#, esc(&r.request_id));
    match r.items_pending {
        Some(n) => {
            let _ = write!(out, "<osci:ItemsPending>{n}</osci:ItemsPending>");
        }
        None => {
            let _ = write!(out, r#"<osci:NoMessageAvailable reason="{MSGBOX_NO_MATCH}"/>"#);
        }
    }
    out.push_str("</osci:MsgBoxResponse>");
}

fn write_records(out: &mut String, list: &str, item: &str, records: &[Record]) {
    if records.is_empty() {
        return;
    }
    let _ = write!(out, "<xta:{list}>");
    for r in records {
        let _ = write!(
            out,
            r#"<xta:{item}><xta:Timestamp>{}</xta:Timestamp><xta:Code listURI="{}" listVersionID="{}"><code>{}</code></xta:Code><xta:Reason>{}</xta:Reason></xta:{item}>"#,
            timestamp(&r.timestamp),
            esc(&r.list_uri),
            esc(&r.list_version),
            esc(&r.code),
            esc(&r.reason)
        );
    }
    let _ = write!(out, "</xta:{list}>");
}

/// Writes the answer to `op`; with `mtom`, content goes into MTOM parts (multipart/related).
pub fn write_response(op: Operation, response: &Response, relates_to: Option<&str>, mtom: bool) -> Encoded {
    let mut out = String::with_capacity(2048);
    let mut content = ContentWriter { mtom, parts: Vec::new() };
    response_header(&mut out, op, relates_to);
    match response {
        Response::StatusList { msgbox, .. } => write_msgbox_response(&mut out, msgbox),
        Response::Message { msgbox, metadata, .. } => {
            write_metadata(&mut out, metadata);
            write_msgbox_response(&mut out, msgbox);
        }
        _ => {}
    }
    out.push_str("</s12:Header><s12:Body>");
    match response {
        Response::Empty => {}
        Response::LookupService(results) => {
            out.push_str("<xta:LookupServiceResponse><xta:LookupServiceResultList>");
            for r in results {
                out.push_str("<xta:LookupServiceResult>");
                write_party(&mut out, "oscimeta:Reader", &r.reader);
                let _ = write!(out, "<xta:ServiceType>{}</xta:ServiceType><xta:IsServiceAvailableValue>", esc(&r.service));
                out.push_str(match r.availability {
                    Availability::Available => "<xta:ServiceIsAvailable>true</xta:ServiceIsAvailable>",
                    Availability::NotAvailable => "<xta:ServiceIsAvailable>false</xta:ServiceIsAvailable>",
                    Availability::Unknown => "<xta:ServiceIsAvailableUnknown>true</xta:ServiceIsAvailableUnknown>",
                });
                out.push_str("</xta:IsServiceAvailableValue>");
                for p in &r.parameters {
                    let _ = write!(
                        out,
                        r#"<xta:ServiceParameter><xta:ParameterType listURI="{}" listVersionID="{}"><code>{}</code></xta:ParameterType><xta:Resource>{}</xta:Resource></xta:ServiceParameter>"#,
                        esc(&p.parameter_type.list_uri),
                        esc(&p.parameter_type.list_version),
                        esc(&p.parameter_type.code),
                        b64(&p.resource)
                    );
                }
                out.push_str("</xta:LookupServiceResult>");
            }
            out.push_str("</xta:LookupServiceResultList></xta:LookupServiceResponse>");
        }
        Response::MessageId(id) => {
            let _ = write!(out, "<wsa:MessageID>{}</wsa:MessageID>", esc(id.as_str()));
        }
        Response::TransportReport(r) => {
            out.push_str("<xta:TransportReport>");
            write_metadata(&mut out, &r.metadata);
            let _ = write!(
                out,
                "<xta:ReportTime>{}</xta:ReportTime><xta:XTAServerIdentity>{}</xta:XTAServerIdentity><xta:MessageStatus><xta:Status>{}</xta:Status>",
                timestamp(&r.report_time),
                esc(&r.server_identity),
                r.status.code()
            );
            write_records(&mut out, "ErrorList", "Error", &r.errors);
            write_records(&mut out, "WarnList", "Warning", &r.warnings);
            write_records(&mut out, "InfoList", "Info", &r.infos);
            out.push_str("</xta:MessageStatus></xta:TransportReport>");
        }
        Response::StatusList { entries, .. } => {
            out.push_str("<osci:MsgStatusList>");
            for m in entries {
                write_metadata(&mut out, m);
            }
            out.push_str("</osci:MsgStatusList>");
        }
        Response::Message { container, .. } => write_container(&mut out, container, &mut content),
    }
    out.push_str("</s12:Body></s12:Envelope>");
    if !mtom || content.parts.is_empty() {
        return Encoded { content_type: soap_content_type(op.action()), body: out.into_bytes() };
    }
    write_mtom(op, out, content.parts)
}

fn write_mtom(op: Operation, envelope: String, parts: Vec<(String, String, Vec<u8>)>) -> Encoded {
    let boundary = format!("MIMEBoundary_{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::with_capacity(envelope.len() + parts.iter().map(|p| p.2.len() + 200).sum::<usize>());
    let _ = std::io::Write::write_fmt(
        &mut body,
        format_args!(
            "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root.message@amtsbote>\r\n\r\n"
        ),
    );
    body.extend_from_slice(envelope.as_bytes());
    for (cid, content_type, data) in parts {
        let _ = std::io::Write::write_fmt(
            &mut body,
            format_args!("\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n"),
        );
        body.extend_from_slice(&data);
    }
    let _ = std::io::Write::write_fmt(&mut body, format_args!("\r\n--{boundary}--\r\n"));
    let content_type = format!(
        "multipart/related; type=\"application/xop+xml\"; boundary=\"{boundary}\"; start=\"<root.message@amtsbote>\"; start-info=\"application/soap+xml; action=\\\"{}\\\"\"",
        op.action()
    );
    Encoded { content_type, body }
}

/// Writes a SOAP 1.2 fault: `Sender` for the client's faults, `Receiver` for the server's,
/// the XTA exception element with its `errorCode` in the detail.
pub fn write_fault(op: Option<Operation>, fault: &Fault, relates_to: Option<&str>) -> Encoded {
    let mut out = String::with_capacity(1024);
    out.push_str(ENVELOPE_OPEN);
    let action = op.map(Operation::action).unwrap_or("http://www.w3.org/2005/08/addressing/soap/fault");
    let _ = write!(out, "<s12:Header><wsa:Action>{action}</wsa:Action><wsa:MessageID>{}</wsa:MessageID>", new_wsa_id());
    if let Some(r) = relates_to {
        let _ = write!(out, "<wsa:RelatesTo>{}</wsa:RelatesTo>", esc(r));
    }
    let code = if fault.kind.is_server_side() { "s12:Receiver" } else { "s12:Sender" };
    let _ = write!(
        out,
        r#"</s12:Header><s12:Body><s12:Fault><s12:Code><s12:Value>{code}</s12:Value></s12:Code><s12:Reason><s12:Text xml:lang="en">{}</s12:Text></s12:Reason>"#,
        esc(&fault.reason)
    );
    if let Some(element) = fault.kind.element() {
        let _ = write!(
            out,
            r#"<s12:Detail><xta:{element}><xta:errorCode listURI="{FEHLERNUMMER_LIST}" listVersionID="1.0"><code>{}</code><name>{}</name></xta:errorCode></xta:{element}></s12:Detail>"#,
            fault.code.map(|c| c.to_string()).unwrap_or_default(),
            esc(&fault.code_name)
        );
    }
    out.push_str("</s12:Fault></s12:Body></s12:Envelope>");
    Encoded { content_type: soap_content_type(action), body: out.into_bytes() }
}

// ───────────────────────────── reading ─────────────────────────────

/// A read envelope: its addressing headers, header blocks, body children and MTOM parts.
pub struct Envelope {
    pub addressing: Addressing,
    pub header: Vec<Node>,
    pub body: Vec<Node>,
    parts: HashMap<String, Vec<u8>>,
}

impl Envelope {
    fn header_block(&self, ns: &str, name: &str) -> Option<&Node> {
        self.header.iter().find(|n| n.is(ns, name))
    }

    fn body_element(&self, ns: &str, name: &str, path: &str) -> Result<&Node, ReadError> {
        self.body.iter().find(|n| n.is(ns, name)).ok_or_else(|| missing(path, &format!("element {name}")))
    }

    /// The SOAP fault in the body, if there is one.
    pub fn fault(&self) -> Option<Fault> {
        self.body.iter().find(|n| n.is(NS_SOAP, "Fault")).map(Fault::from_node)
    }
}

/// Reads an HTTP body (plain SOAP or MTOM, told by its Content-Type) into an [`Envelope`].
pub fn read_envelope(content_type: Option<&str>, body: &[u8], limits: &Limits) -> Result<Envelope, ReadError> {
    if body.len() > limits.max_bytes {
        return Err(XmlError::TooLarge { size: body.len(), limit: limits.max_bytes }.into());
    }
    let (xml_bytes, parts) = match content_type {
        Some(ct) if ct.trim_start().to_ascii_lowercase().starts_with("multipart/related") => split_mtom(ct, body)?,
        _ => (body, HashMap::new()),
    };
    let root = xml::parse(xml_bytes, limits)?;
    if !root.is(NS_SOAP, "Envelope") {
        return Err(ReadError::NotSoap(format!("root element is {{{}}}{}", clip(&root.ns), clip(&root.name))));
    }
    let mut header = Vec::new();
    let mut body_children = None;
    for child in root.children {
        if child.is(NS_SOAP, "Header") {
            header = child.children;
        } else if child.is(NS_SOAP, "Body") {
            body_children = Some(child.children);
        }
    }
    let body = body_children.ok_or_else(|| ReadError::NotSoap("no Body".into()))?;
    let wsa = |name: &str| header.iter().find(|n| n.is(NS_WSA, name)).map(|n| n.trimmed().to_owned());
    let addressing = Addressing {
        action: wsa("Action"),
        message_id: wsa("MessageID"),
        relates_to: wsa("RelatesTo"),
        to: wsa("To"),
    };
    Ok(Envelope { addressing, header, body, parts })
}

/// A parameter of a MIME header value (`boundary`, `start`), quotes removed.
fn mime_param(value: &str, name: &str) -> Option<String> {
    let mut rest = value;
    while let Some(i) = rest.find(';') {
        rest = &rest[i + 1..];
        let trimmed = rest.trim_start();
        let Some((key, after)) = trimmed.split_once('=') else { break };
        if key.trim().eq_ignore_ascii_case(name) {
            let after = after.trim_start();
            if let Some(q) = after.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => return Some(out),
                        c => out.push(c),
                    }
                }
                return None;
            }
            return Some(after.split(';').next().unwrap_or("").trim().to_owned());
        }
    }
    None
}

/// The non-root MTOM parts by Content-ID.
type MtomParts = HashMap<String, Vec<u8>>;

/// Splits a multipart/related body into its root part and the other parts by Content-ID.
fn split_mtom<'a>(content_type: &str, body: &'a [u8]) -> Result<(&'a [u8], MtomParts), ReadError> {
    let boundary = mime_param(content_type, "boundary").ok_or_else(|| ReadError::Mtom("no boundary in Content-Type".into()))?;
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(ReadError::Mtom("invalid boundary".into()));
    }
    let start = mime_param(content_type, "start").map(|s| s.trim_matches(|c| c == '<' || c == '>').to_owned());
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let positions: Vec<usize> = finder.find_iter(body).collect();
    if positions.len() < 2 {
        return Err(ReadError::Mtom("fewer than one part".into()));
    }
    let mut root: Option<&'a [u8]> = None;
    let mut first: Option<&'a [u8]> = None;
    let mut parts = HashMap::new();
    for w in positions.windows(2) {
        let mut part = &body[w[0] + delimiter.len()..w[1]];
        if part.starts_with(b"--") {
            break;
        }
        part = part.strip_prefix(b"\r\n").or_else(|| part.strip_prefix(b"\n")).unwrap_or(part);
        // The CRLF before the next delimiter belongs to it.
        part = part.strip_suffix(b"\r\n").or_else(|| part.strip_suffix(b"\n")).unwrap_or(part);
        let split = memchr::memmem::find(part, b"\r\n\r\n").map(|i| (i, 4)).or_else(|| memchr::memmem::find(part, b"\n\n").map(|i| (i, 2)));
        let Some((i, sep)) = split else {
            return Err(ReadError::Mtom("a part without headers".into()));
        };
        let headers = std::str::from_utf8(&part[..i]).map_err(|_| ReadError::Mtom("part headers are not UTF-8".into()))?;
        let content = &part[i + sep..];
        let mut cid = None;
        for line in headers.lines() {
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim();
                if k.eq_ignore_ascii_case("content-id") {
                    cid = Some(v.trim().trim_matches(|c| c == '<' || c == '>').to_owned());
                } else if k.eq_ignore_ascii_case("content-transfer-encoding") {
                    let enc = v.trim().to_ascii_lowercase();
                    if !matches!(enc.as_str(), "binary" | "8bit" | "7bit") {
                        return Err(ReadError::Mtom(format!("unsupported Content-Transfer-Encoding '{}'", clip(&enc))));
                    }
                }
            }
        }
        if first.is_none() {
            first = Some(content);
        }
        match (&cid, &start) {
            (Some(c), Some(s)) if c == s => root = Some(content),
            (Some(c), _) => {
                parts.insert(c.clone(), content.to_vec());
            }
            _ => {}
        }
    }
    let root = root.or(if start.is_none() { first } else { None }).ok_or_else(|| ReadError::Mtom("no root part".into()))?;
    Ok((root, parts))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text_of<'a>(node: &'a Node, ns: &str, name: &str, path: &str) -> Result<&'a str, ReadError> {
    node.child(ns, name).map(Node::trimmed).ok_or_else(|| missing(path, &format!("element {name}")))
}

fn opt_text(node: &Node, ns: &str, name: &str) -> Option<String> {
    node.child(ns, name).map(|n| n.trimmed().to_owned())
}

fn read_identifier(party: &Node, path: &str) -> Result<Identifier, ReadError> {
    let id = party.child(NS_OSCIMETA, "Identifier").ok_or_else(|| missing(path, "element Identifier"))?;
    Ok(Identifier {
        value: id.trimmed().to_owned(),
        id_type: id.attr("type").ok_or_else(|| missing(path, "attribute Identifier/@type"))?.to_owned(),
        name: id.attr("name").map(str::to_owned),
        category: id.attr("category").map(str::to_owned),
    })
}

fn read_key_code(node: &Node, path: &str) -> Result<KeyCode, ReadError> {
    Ok(KeyCode {
        code: text_of(node, "", "code", path)?.to_owned(),
        name: opt_text(node, "", "name"),
        list_uri: node.attr("listURI").unwrap_or_default().to_owned(),
        list_version: node.attr("listVersionID").unwrap_or_default().to_owned(),
    })
}

fn read_time(text: &str, path: &str) -> Result<DateTime<Utc>, ReadError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| invalid(path, format!("'{}' is not a date and time", clip(text))))
}

fn read_message_id(text: &str, path: &str) -> Result<MessageId, ReadError> {
    MessageId::parse(text).map_err(|e| invalid(path, e))
}

fn read_bool(text: &str, path: &str) -> Result<bool, ReadError> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(invalid(path, format!("'{}' is not a boolean", clip(other)))),
    }
}

pub(crate) fn read_metadata(m: &Node) -> Result<MessageMetaData, ReadError> {
    const P: &str = "MessageMetaData";
    let test_msg = match m.attr("TestMsg") {
        Some(v) => read_bool(v.trim(), "MessageMetaData/@TestMsg")?,
        None => false,
    };
    let origin = match m.child(NS_OSCIMETA, "DeliveryAttributes").and_then(|d| d.child(NS_OSCIMETA, "Origin")) {
        Some(o) => Some(read_time(o.trimmed(), "MessageMetaData/DeliveryAttributes/Origin")?),
        None => None,
    };
    let author = m
        .child(NS_OSCIMETA, "Originators")
        .and_then(|o| o.child(NS_OSCIMETA, "Author"))
        .ok_or_else(|| missing(P, "Originators/Author"))
        .and_then(|a| read_identifier(a, "MessageMetaData/Originators/Author"))?;
    let reader = m
        .child(NS_OSCIMETA, "Destinations")
        .and_then(|o| o.child(NS_OSCIMETA, "Reader"))
        .ok_or_else(|| missing(P, "Destinations/Reader"))
        .and_then(|a| read_identifier(a, "MessageMetaData/Destinations/Reader"))?;
    let message_id = m
        .child(NS_OSCIMETA, "MsgIdentification")
        .and_then(|o| o.child(NS_WSA, "MessageID"))
        .ok_or_else(|| missing(P, "MsgIdentification/MessageID"))
        .and_then(|id| read_message_id(id.trimmed(), "MessageMetaData/MsgIdentification/MessageID"))?;
    const Q: &str = "MessageMetaData/Qualifier";
    let q = m.child(NS_OSCIMETA, "Qualifier").ok_or_else(|| missing(P, "Qualifier"))?;
    let bs = q.child(NS_OSCIMETA, "BusinessScenario").ok_or_else(|| missing(Q, "BusinessScenario"))?;
    let business_scenario = if let Some(d) = bs.child(NS_OSCIMETA, "Defined") {
        BusinessScenario::Defined(read_key_code(d, "MessageMetaData/Qualifier/BusinessScenario/Defined")?)
    } else if let Some(u) = bs.child(NS_OSCIMETA, "Undefined") {
        BusinessScenario::Undefined(u.trimmed().to_owned())
    } else {
        return Err(missing("MessageMetaData/Qualifier/BusinessScenario", "Defined or Undefined"));
    };
    let mt = q.child(NS_OSCIMETA, "MessageType").ok_or_else(|| missing(Q, "MessageType"))?;
    let qualifier = Qualifier {
        subject: opt_text(q, NS_OSCIMETA, "Subject"),
        service: text_of(q, NS_OSCIMETA, "Service", Q)?.to_owned(),
        business_scenario,
        message_type: read_key_code(mt, "MessageMetaData/Qualifier/MessageType")?,
        payload_schema: mt.attr("payloadSchema").ok_or_else(|| missing(Q, "MessageType/@payloadSchema"))?.to_owned(),
    };
    let msg_size = match m.child(NS_OSCIMETA, "MsgSize") {
        Some(s) => Some(s.trimmed().parse().map_err(|_| invalid("MessageMetaData/MsgSize", "not a positive integer"))?),
        None => None,
    };
    Ok(MessageMetaData { test_msg, origin, author, reader, message_id, qualifier, msg_size })
}

impl Envelope {
    fn read_content(&self, node: &Node, path: &str) -> Result<Content, ReadError> {
        let content_type = node.attr("contentType").ok_or_else(|| missing(path, "attribute contentType"))?.to_owned();
        let data = match node.child(NS_XOP, "Include") {
            Some(include) => {
                let href = include.attr("href").ok_or_else(|| missing(path, "xop:Include/@href"))?;
                let cid = href.strip_prefix("cid:").ok_or_else(|| invalid(path, "xop:Include/@href is not a cid: URI"))?;
                let cid = percent_decode(cid);
                self.parts.get(&cid).cloned().ok_or_else(|| invalid(path, format!("no MTOM part with Content-ID '{}'", clip(&cid))))?
            }
            None => decode_b64(&node.text).map_err(|e| invalid(path, e))?,
        };
        Ok(Content { content_type, filename: node.attr("filename").map(str::to_owned), data })
    }

    fn read_container(&self, path: &str) -> Result<ContentContainer, ReadError> {
        let g = self.body_element(NS_XTA, "GenericContentContainer", path)?;
        let cc = g.child(NS_XTA, "ContentContainer").ok_or_else(|| {
            if g.children.iter().any(|c| c.name == "EncryptedData") {
                invalid("GenericContentContainer", "encrypted content is not supported yet")
            } else {
                missing("GenericContentContainer", "ContentContainer")
            }
        })?;
        let message = cc.child(NS_XTA, "Message").ok_or_else(|| missing("GenericContentContainer/ContentContainer", "Message"))?;
        let message = self.read_content(message, "GenericContentContainer/ContentContainer/Message")?;
        let attachments = cc
            .children_named(NS_XTA, "Attachment")
            .map(|a| self.read_content(a, "GenericContentContainer/ContentContainer/Attachment"))
            .collect::<Result<_, _>>()?;
        Ok(ContentContainer { message, attachments })
    }

    fn author(&self) -> Result<Identifier, ReadError> {
        let a = self.header_block(NS_OSCIMETA, "Author").ok_or_else(|| missing("Header", "oscimeta:Author"))?;
        read_identifier(a, "Header/Author")
    }

    fn msgbox_response(&self) -> Result<MsgBoxResponse, ReadError> {
        let r = self.header_block(NS_OSCI, "MsgBoxResponse").ok_or_else(|| missing("Header", "osci:MsgBoxResponse"))?;
        let request_id = r.attr("MsgBoxRequestID").ok_or_else(|| missing("Header/MsgBoxResponse", "@MsgBoxRequestID"))?.to_owned();
        let items_pending = match r.child(NS_OSCI, "ItemsPending") {
            Some(n) => Some(n.trimmed().parse().map_err(|_| invalid("Header/MsgBoxResponse/ItemsPending", "not a number"))?),
            None => None,
        };
        Ok(MsgBoxResponse { request_id, items_pending })
    }
}

fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(&compact).map_err(|_| "content is not valid base64".to_owned())
}

/// Reads a request (the simulator's side). The operation is told by `wsa:Action`, or by
/// the HTTP `action` parameter when the header is missing.
pub fn read_request(content_type: Option<&str>, body: &[u8], limits: &Limits) -> Result<(Addressing, Request), ReadError> {
    let env = read_envelope(content_type, body, limits)?;
    let action = env
        .addressing
        .action
        .clone()
        .or_else(|| content_type.and_then(|ct| mime_param(ct, "action")))
        .ok_or_else(|| missing("Header", "wsa:Action"))?;
    let op = Operation::from_action(&action).ok_or_else(|| ReadError::UnknownAction(clip(&action)))?;
    let request = match op {
        Operation::CheckAccountActive => Request::CheckAccountActive { author: env.author()? },
        Operation::CreateMessageId => Request::CreateMessageId { author: env.author()? },
        Operation::LookupService => {
            let r = env.body_element(NS_XTA, "LookupServiceRequest", "Body")?;
            let mut lookups = Vec::new();
            for list in r.children_named(NS_XTA, "LookupServiceRequestList") {
                const P: &str = "LookupServiceRequest/LookupServiceRequestList/LookupService";
                let l = list.child(NS_XTA, "LookupService").ok_or_else(|| missing("LookupServiceRequestList", "LookupService"))?;
                let reader = l.child(NS_OSCIMETA, "Reader").ok_or_else(|| missing(P, "Reader"))?;
                lookups.push((read_identifier(reader, P)?, text_of(l, NS_XTA, "ServiceType", P)?.to_owned()));
            }
            if lookups.is_empty() {
                return Err(missing("LookupServiceRequest", "LookupServiceRequestList"));
            }
            Request::LookupService { author: env.author()?, lookups }
        }
        Operation::SendMessage => {
            let m = env.header_block(NS_OSCIMETA, "MessageMetaData").ok_or_else(|| missing("Header", "oscimeta:MessageMetaData"))?;
            Request::SendMessage { metadata: Box::new(read_metadata(m)?), container: env.read_container("Body")? }
        }
        Operation::GetTransportReport => {
            let id = env.body_element(NS_WSA, "MessageID", "Body")?;
            Request::GetTransportReport { author: env.author()?, message_id: read_message_id(id.trimmed(), "Body/MessageID")? }
        }
        Operation::GetStatusList => {
            let r = env.body_element(NS_OSCI, "MsgBoxStatusListRequest", "Body")?;
            let max_items = match r.attr("maxListItems") {
                Some(v) => Some(v.trim().parse().map_err(|_| invalid("MsgBoxStatusListRequest/@maxListItems", "not a positive integer"))?),
                None => None,
            };
            Request::GetStatusList { author: env.author()?, max_items }
        }
        Operation::GetMessage => {
            let r = env.body_element(NS_OSCI, "MsgBoxFetchRequest", "Body")?;
            let id = r
                .child(NS_OSCI, "MsgSelector")
                .and_then(|s| s.child(NS_WSA, "MessageID"))
                .ok_or_else(|| missing("MsgBoxFetchRequest", "MsgSelector/MessageID"))?;
            Request::GetMessage { author: env.author()?, message_id: read_message_id(id.trimmed(), "MsgBoxFetchRequest/MsgSelector/MessageID")? }
        }
        Operation::Close => {
            let r = env.body_element(NS_OSCI, "MsgBoxCloseRequest", "Body")?;
            let request_id = r.attr("MsgBoxRequestID").ok_or_else(|| missing("MsgBoxCloseRequest", "@MsgBoxRequestID"))?.to_owned();
            let message_ids = r
                .children_named(NS_OSCI, "LastMsgReceived")
                .map(|n| read_message_id(n.trimmed(), "MsgBoxCloseRequest/LastMsgReceived"))
                .collect::<Result<_, _>>()?;
            Request::Close { author: env.author()?, request_id, message_ids }
        }
    };
    Ok((env.addressing, request))
}

/// What reading an answer gave: the answer, or the server's fault.
#[derive(Debug)]
pub enum Reply {
    Ok(Response),
    Fault(Fault),
}

/// Reads the answer to `op` (the client's side). A SOAP fault in the body is a [`Reply::Fault`].
pub fn read_response(op: Operation, content_type: Option<&str>, body: &[u8], limits: &Limits) -> Result<Reply, ReadError> {
    let env = read_envelope(content_type, body, limits)?;
    if let Some(fault) = env.fault() {
        return Ok(Reply::Fault(fault));
    }
    let response = match op {
        Operation::CheckAccountActive | Operation::SendMessage | Operation::Close => Response::Empty,
        Operation::CreateMessageId => {
            let id = env.body_element(NS_WSA, "MessageID", "Body")?;
            Response::MessageId(read_message_id(id.trimmed(), "Body/MessageID")?)
        }
        Operation::LookupService => {
            const P: &str = "LookupServiceResponse/LookupServiceResultList/LookupServiceResult";
            let r = env.body_element(NS_XTA, "LookupServiceResponse", "Body")?;
            let list = r.child(NS_XTA, "LookupServiceResultList").ok_or_else(|| missing("LookupServiceResponse", "LookupServiceResultList"))?;
            let mut results = Vec::new();
            for res in list.children_named(NS_XTA, "LookupServiceResult") {
                let reader = res.child(NS_OSCIMETA, "Reader").ok_or_else(|| missing(P, "Reader"))?;
                let value = res.child(NS_XTA, "IsServiceAvailableValue").ok_or_else(|| missing(P, "IsServiceAvailableValue"))?;
                let availability = if let Some(v) = value.child(NS_XTA, "ServiceIsAvailable") {
                    if read_bool(v.trimmed(), P)? { Availability::Available } else { Availability::NotAvailable }
                } else if value.child(NS_XTA, "ServiceIsAvailableUnknown").is_some() {
                    Availability::Unknown
                } else {
                    return Err(missing(P, "ServiceIsAvailable or ServiceIsAvailableUnknown"));
                };
                let mut parameters = Vec::new();
                for p in res.children_named(NS_XTA, "ServiceParameter") {
                    let t = p.child(NS_XTA, "ParameterType").ok_or_else(|| missing(P, "ServiceParameter/ParameterType"))?;
                    let resource = p.child(NS_XTA, "Resource").ok_or_else(|| missing(P, "ServiceParameter/Resource"))?;
                    parameters.push(ServiceParameter {
                        parameter_type: read_key_code(t, P)?,
                        resource: env.read_content_bytes(resource, P)?,
                    });
                }
                results.push(LookupServiceResult {
                    reader: read_identifier(reader, P)?,
                    service: text_of(res, NS_XTA, "ServiceType", P)?.to_owned(),
                    availability,
                    parameters,
                });
            }
            Response::LookupService(results)
        }
        Operation::GetTransportReport => {
            const P: &str = "TransportReport";
            let r = env.body_element(NS_XTA, "TransportReport", "Body")?;
            let m = r.child(NS_OSCIMETA, "MessageMetaData").ok_or_else(|| missing(P, "MessageMetaData"))?;
            let status = r.child(NS_XTA, "MessageStatus").ok_or_else(|| missing(P, "MessageStatus"))?;
            let code: i64 = text_of(status, NS_XTA, "Status", "TransportReport/MessageStatus")?
                .parse()
                .map_err(|_| invalid("TransportReport/MessageStatus/Status", "not an integer"))?;
            let records = |list: &str, item: &str| -> Result<Vec<Record>, ReadError> {
                let Some(l) = status.child(NS_XTA, list) else { return Ok(Vec::new()) };
                let path = format!("TransportReport/MessageStatus/{list}/{item}");
                l.children_named(NS_XTA, item)
                    .map(|r| {
                        let code = r.child(NS_XTA, "Code").ok_or_else(|| missing(&path, "Code"))?;
                        Ok(Record {
                            timestamp: read_time(text_of(r, NS_XTA, "Timestamp", &path)?, &path)?,
                            code: text_of(code, "", "code", &path)?.to_owned(),
                            list_uri: code.attr("listURI").unwrap_or_default().to_owned(),
                            list_version: code.attr("listVersionID").unwrap_or_default().to_owned(),
                            reason: opt_text(r, NS_XTA, "Reason").unwrap_or_default(),
                        })
                    })
                    .collect()
            };
            Response::TransportReport(Box::new(TransportReport {
                metadata: read_metadata(m)?,
                report_time: read_time(text_of(r, NS_XTA, "ReportTime", P)?, "TransportReport/ReportTime")?,
                server_identity: text_of(r, NS_XTA, "XTAServerIdentity", P)?.to_owned(),
                status: TransportStatus::from_code(code).ok_or_else(|| invalid("TransportReport/MessageStatus/Status", format!("{code} is not 0, 1, 2 or 3")))?,
                errors: records("ErrorList", "Error")?,
                warnings: records("WarnList", "Warning")?,
                infos: records("InfoList", "Info")?,
            }))
        }
        Operation::GetStatusList => {
            let list = env.body_element(NS_OSCI, "MsgStatusList", "Body")?;
            let entries = list.children_named(NS_OSCIMETA, "MessageMetaData").map(read_metadata).collect::<Result<_, _>>()?;
            Response::StatusList { msgbox: env.msgbox_response()?, entries }
        }
        Operation::GetMessage => {
            let m = env.header_block(NS_OSCIMETA, "MessageMetaData").ok_or_else(|| missing("Header", "oscimeta:MessageMetaData"))?;
            Response::Message { msgbox: env.msgbox_response()?, metadata: Box::new(read_metadata(m)?), container: env.read_container("Body")? }
        }
    };
    Ok(Reply::Ok(response))
}

impl Envelope {
    fn read_content_bytes(&self, node: &Node, path: &str) -> Result<Vec<u8>, ReadError> {
        match node.child(NS_XOP, "Include") {
            Some(_) => self.read_content(&with_content_type(node), path).map(|c| c.data),
            None => decode_b64(&node.text).map_err(|e| invalid(path, e)),
        }
    }
}

fn with_content_type(node: &Node) -> Node {
    let mut n = node.clone();
    n.attrs.push((String::new(), "contentType".into(), "application/octet-stream".into()));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids() {
        let id = MessageId::generate("amtsbote").expect("valid prefix");
        assert!(id.as_str().starts_with("urn:de:xta:messageid:amtsbote:"));
        assert_eq!(MessageId::parse(id.as_str()), Ok(id));
        assert!(MessageId::parse("urn:de:xta:messageid:x:not-a-uuid").is_err());
        assert!(MessageId::parse("urn:uuid:0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10").is_err());
    }

    #[test]
    fn mime_params() {
        let ct = r#"multipart/related; type="application/xop+xml"; boundary="b1"; start="<root>"; start-info="application/soap+xml; action=\"x\"""#;
        assert_eq!(mime_param(ct, "boundary").as_deref(), Some("b1"));
        assert_eq!(mime_param(ct, "start").as_deref(), Some("<root>"));
        assert_eq!(mime_param("application/soap+xml; action=urn:a", "action").as_deref(), Some("urn:a"));
    }
}
