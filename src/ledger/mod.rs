//! The ledger: the record of every request and the append-only journal of its state changes.
//!
//! Jobs on the queues are only triggers; the ledger is the truth. Before a job acts it reads
//! the request here, and it moves the request on with [`Ledger::transition`], a
//! compare-and-set that writes the journal event in the same transaction. A job that runs
//! twice finds the request already moved on ([`LedgerError::Conflict`]) and stops.
//!
//! What this module owns:
//! - the request states and the transitions allowed between them ([`RequestState`]),
//! - the [`Ledger`] trait with one implementation per database ([`SqliteLedger`],
//!   [`PostgresLedger`]) and the migrations in `migrations/sqlite` and `migrations/postgres`
//!   (tracked in their own table, `_ledger_migrations`, so that the queues' migrations can
//!   live in the same database),
//! - the tables `requests` (with the routing decision in columns, [`RoutedTo`]),
//!   `request_payloads`, `request_events`, `request_states` and `outbox`,
//! - the outbox: a request entering a stage's input state ([`RequestState::stage`]) gets a
//!   [`Trigger`] for that stage's queue in the same transaction as the state change; the
//!   relay (`crate::queue::relay`) pushes it with [`Ledger::relay_outbox`] and the sweeper
//!   finds what lost its job with [`Ledger::waiting_without_trigger`],
//! - the table `received_messages`: what the receive stage fetched from the XTA message box
//!   for a tenant, one row per MessageID ([`Received`], [`ReceivedState`]), inserted before
//!   anything is written so that a message offered again is written once,
//! - the print batches: `print_batches` (one per date), `print_files` (each file handed off),
//!   `print_letters` (every letter a batch had, kept when an error sends its request back) and
//!   `print_feedback` (what the print centre reported, append-only, once per letter, status
//!   and time; [`Ledger::record_print_feedback`]),
//! - the table `access_tokens`: the HTTP interface's bearer tokens, each kept only as its
//!   SHA-256 with its name and role ([`AccessToken`]; `crate::access` makes and checks them).
//!
//! # Request states
//!
//! ```text
//! received → validated → routed → transmitting → transmitted → delivered
//!                                ↘ awaiting_print → printed → posted
//! ```
//! plus `rejected` (invalid input, with reason), `unroutable` (no or ambiguous authority: a
//! clarification case for an operator, never a guess), `failed` (operator attention) and
//! `withdrawn`.
//!
//! A request starts as `received`, or — when the intake checked it before recording —
//! directly as `validated` or `rejected` ([`RequestState::can_start_as`]).
//!
//! | from             | may become                                                   |
//! |------------------|--------------------------------------------------------------|
//! | `received`       | `validated`, `rejected`, `withdrawn`                         |
//! | `validated`      | `routed`, `unroutable`, `rejected`, `withdrawn`              |
//! | `routed`         | `transmitting`, `awaiting_print`, `failed` (refused before a MessageID), `withdrawn` |
//! | `transmitting`   | `transmitting` (a further attempt), `transmitted`, `awaiting_print`, `failed` |
//! | `transmitted`    | `delivered` (its transport report is green or yellow), `failed` (red) |
//! | `awaiting_print` | `printed`, `failed`, `withdrawn`                             |
//! | `printed`        | `posted`, `awaiting_print` (print-centre error: print again), `failed` (the print centre cannot post it) |
//! | `unroutable`     | `routed`, `rejected`, `withdrawn` (after a directory fix or a decision) |
//! | `failed`         | `transmitting`, `awaiting_print`, `routed` (operator retry, resend by post, route again), `rejected`, `withdrawn` |
//! | `delivered`, `posted`, `rejected`, `withdrawn` | nothing: terminal              |
//!
//! Withdrawal is possible wherever nothing has left the house yet. Once a request is being
//! transmitted or is printed it can no longer be withdrawn here; a withdrawal then travels as
//! a message of its own (Rücknahme).
//!
//! A stage that must try again later stays in its state and schedules the next try with
//! [`Ledger::schedule_attempt`]: the count (`attempts`) and the time (`next_attempt_at`) in
//! the request, an event `state → state` in the journal, a trigger not due before that time.
//!
//! `transmitting → transmitting` records a further attempt in the journal. Being a self-loop,
//! its compare-and-set does not exclude a concurrent twin; the XTA MessageID, created once
//! and stored before the first send, keeps a doubled attempt harmless outside.
//!
//! # Privacy
//!
//! Payloads carry debtors' personal data. The ledger stores them and hands them out through
//! [`Ledger::payload`], but never logs them; [`NewRequest`]'s `Debug` shows only their length.
//! Listing requests never reads payloads.

#[macro_use]
mod shared;
pub mod mail;
mod postgres;
mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::queue::Queue;

pub use postgres::{PostgresLedger, PostgresLedgerOptions};
pub use mail::{Event as NotifyEvent, Mail, MailMark, MailStatus, NewMail, Notification};
pub use sqlite::{SqliteLedger, SqliteLedgerOptions, Synchronous};

/// Where a request stands. Stored in the database as [`RequestState::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Received,
    Validated,
    Routed,
    /// A MessageID is reserved and sending is under way (with retries).
    Transmitting,
    /// The XTA server accepted it; its transport report is awaited.
    Transmitted,
    /// Its transport report says the reader fetched it.
    Delivered,
    AwaitingPrint,
    Printed,
    Posted,
    Rejected,
    Unroutable,
    Failed,
    Withdrawn,
}

impl RequestState {
    /// Every state, in the order of the happy paths first, then the side states.
    pub const ALL: [RequestState; 13] = [
        RequestState::Received,
        RequestState::Validated,
        RequestState::Routed,
        RequestState::Transmitting,
        RequestState::Transmitted,
        RequestState::Delivered,
        RequestState::AwaitingPrint,
        RequestState::Printed,
        RequestState::Posted,
        RequestState::Rejected,
        RequestState::Unroutable,
        RequestState::Failed,
        RequestState::Withdrawn,
    ];

    /// The name stored in the database and shown in JSON and the CLI (snake_case).
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestState::Received => "received",
            RequestState::Validated => "validated",
            RequestState::Routed => "routed",
            RequestState::Transmitting => "transmitting",
            RequestState::Transmitted => "transmitted",
            RequestState::Delivered => "delivered",
            RequestState::AwaitingPrint => "awaiting_print",
            RequestState::Printed => "printed",
            RequestState::Posted => "posted",
            RequestState::Rejected => "rejected",
            RequestState::Unroutable => "unroutable",
            RequestState::Failed => "failed",
            RequestState::Withdrawn => "withdrawn",
        }
    }

    /// A terminal state has no way out: the request's story is over.
    /// `failed` and `unroutable` are not terminal: they wait for an operator.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestState::Delivered
                | RequestState::Posted
                | RequestState::Rejected
                | RequestState::Withdrawn
        )
    }

    /// Whether a request may be recorded in this state (the journal's first event).
    pub const fn can_start_as(self) -> bool {
        matches!(
            self,
            RequestState::Received | RequestState::Validated | RequestState::Rejected
        )
    }

    /// Whether a request in state `self` may move to `next` (see the table in the module doc).
    pub const fn can_become(self, next: RequestState) -> bool {
        use RequestState::*;
        matches!(
            (self, next),
            (Received, Validated | Rejected | Withdrawn)
                | (Validated, Routed | Unroutable | Rejected | Withdrawn)
                | (Routed, Transmitting | AwaitingPrint | Failed | Withdrawn)
                | (
                    Transmitting,
                    Transmitting | Transmitted | AwaitingPrint | Failed
                )
                | (Transmitted, Delivered | Failed)
                | (AwaitingPrint, Printed | Failed | Withdrawn)
                | (Printed, Posted | AwaitingPrint | Failed)
                | (Unroutable, Routed | Rejected | Withdrawn)
                | (
                    Failed,
                    Transmitting | AwaitingPrint | Routed | Rejected | Withdrawn
                )
        )
    }
}

impl RequestState {
    /// The stage whose input this state is: a request entering it gets a trigger for that
    /// stage's queue in the outbox, in the same transaction (see [`Trigger`]). The sweeper
    /// looks for requests that sit in such a state without one.
    ///
    /// `routed` is the transmit stage's input only for requests routed to the channel `xta`
    /// (the SQL of the outbox and of the sweeper says so: `routed_for_xta!`); a request
    /// routed to `post` is moved on to `awaiting_print` by the route stage at once
    /// (`route::Router::by_post`), where the print batch takes it.
    pub const fn stage(self) -> Option<Queue> {
        match self {
            RequestState::Validated => Some(Queue::Route),
            RequestState::Routed => Some(Queue::Transmit),
            RequestState::Transmitted => Some(Queue::Report),
            _ => None,
        }
    }

    /// The states that are a stage's input ([`RequestState::stage`]).
    pub fn stage_inputs() -> impl Iterator<Item = (RequestState, Queue)> {
        RequestState::ALL.into_iter().filter_map(|s| s.stage().map(|q| (s, q)))
    }

    /// The state whose requests `queue`'s stage takes, if it has one.
    pub fn input_of(queue: Queue) -> Option<RequestState> {
        RequestState::stage_inputs().find(|(_, q)| *q == queue).map(|(s, _)| s)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not a request state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for RequestState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// The ledger's number for a request: positive, never reused, shown to operators
/// (`amtsbote request show 4711`, `/api/v1/requests/4711`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub i64);

impl RequestId {
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The text given is not a request id (a positive whole number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a request id: {0:?} (expected a positive whole number)")]
pub struct InvalidRequestId(pub String);

impl FromStr for RequestId {
    type Err = InvalidRequestId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<i64>() {
            Ok(n) if n > 0 => Ok(RequestId(n)),
            _ => Err(InvalidRequestId(s.to_owned())),
        }
    }
}

/// Who made a change: a stage of the system (`system:route`) or an operator
/// (`operator:mueller`). Stored as that text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    System(String),
    Operator(String),
}

impl Actor {
    /// A stage of the system, named like its queue: `intake`, `route`, `transmit`, `print`…
    pub fn system(stage: impl Into<String>) -> Self {
        Actor::System(stage.into())
    }

    /// An operator, by login name.
    pub fn operator(name: impl Into<String>) -> Self {
        Actor::Operator(name.into())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System(stage) => write!(f, "system:{stage}"),
            Actor::Operator(name) => write!(f, "operator:{name}"),
        }
    }
}

/// The text given is not an actor (`system:<stage>` or `operator:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an actor: {0:?} (expected system:<stage> or operator:<name>)")]
pub struct InvalidActor(pub String);

impl FromStr for Actor {
    type Err = InvalidActor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("system", stage)) if !stage.is_empty() => Ok(Actor::system(stage)),
            Some(("operator", name)) if !name.is_empty() => Ok(Actor::operator(name)),
            _ => Err(InvalidActor(s.to_owned())),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A request as the intake hands it over, before it has an id.
#[derive(Clone)]
pub struct NewRequest {
    pub tenant: String,
    /// Unique idempotency key of the intake, e.g. `inbox:<tenant>:<claimed file name>` or
    /// `http:<uuid>`. Recording the same source again returns the request recorded first.
    pub source: String,
    /// SHA-256 of the payload, lower-case hex.
    pub sha256: String,
    /// The message's Nachrichten-UUID, when it could be read. Unique in the ledger, across
    /// tenants.
    pub nachrichten_uuid: Option<String>,
    /// The message kind (e.g. `ersuchen`).
    pub kind: String,
    /// A test message (marked as such by the sender).
    pub test: bool,
    /// The message as received. Personal data: never logged.
    pub payload: Vec<u8>,
    /// The file name the message arrived under, when it came through a folder.
    pub file_name: Option<String>,
}

impl fmt::Debug for NewRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRequest")
            .field("tenant", &self.tenant)
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .field("nachrichten_uuid", &self.nachrichten_uuid)
            .field("kind", &self.kind)
            .field("test", &self.test)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("file_name", &self.file_name)
            .finish()
    }
}

/// A recorded request, without its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub tenant: String,
    pub source: String,
    pub sha256: String,
    pub nachrichten_uuid: Option<String>,
    pub kind: String,
    pub test: bool,
    pub file_name: Option<String>,
    pub state: RequestState,
    /// The detail of the newest journal event (e.g. the reason of a rejection).
    pub state_detail: Option<String>,
    /// The journal event that entered the current state (its `seq`).
    pub seq: u32,
    /// Where the routing stage sent it (from `routed` on).
    pub routed: Option<RoutedTo>,
    /// The XTA MessageID reserved for it before the first send (from `transmitting` on).
    pub xta_message_id: Option<String>,
    /// Tries made in the current state that did not get it further (transmit: transient
    /// failures; report: reports still open), see [`Ledger::schedule_attempt`].
    pub attempts: u32,
    /// When the next try is due, while one is scheduled.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Its print batch and letter number there (from the night it went into one).
    pub print_batch: Option<String>,
    pub letter_number: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The SQL condition, over a row of `requests`, under which its state is its stage's input:
/// a routed request is the transmit stage's only when routed to XTA.
macro_rules! routed_for_xta {
    () => {
        "(state <> 'routed' OR routed_channel = 'xta')"
    };
}
pub(crate) use routed_for_xta;

/// How a request leaves the house: electronically over XTA, or on paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Xta,
    Post,
}

impl Channel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Xta => "xta",
            Channel::Post => "post",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "xta" => Ok(Channel::Xta),
            "post" => Ok(Channel::Post),
            other => Err(LedgerError::Corrupt(format!("unknown channel {other:?}"))),
        }
    }
}

/// The routing stage's decision, kept in columns of the request for the stages after it:
/// the responsible authority, how it is reached, and the directory generation the decision
/// was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedTo {
    pub kennung: String,
    pub name: String,
    pub channel: Channel,
    /// The authority's XTA reader identifier (channel `xta`).
    pub xta_reader: Option<String>,
    /// The XTA service it takes the request under (channel `xta`).
    pub xta_service: Option<String>,
    /// `<data_dir>/directory/gen-…`, or `sample` for the built-in sample data.
    pub directory_generation: String,
}

/// Where a message fetched from the XTA message box stands (`received_messages.state`).
///
/// ```text
/// stored → written → closed
///        ↘ invalid ↗
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceivedState {
    /// Fetched and kept in the ledger; its file is not written yet.
    Stored,
    /// Written into the tenant's outbox folder.
    Written,
    /// Written into the outbox's `error/` folder with its reason.
    Invalid,
    /// The XTA server was told (close): it drops the message from the box.
    Closed,
}

impl ReceivedState {
    pub const ALL: [ReceivedState; 4] = [ReceivedState::Stored, ReceivedState::Written, ReceivedState::Invalid, ReceivedState::Closed];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReceivedState::Stored => "stored",
            ReceivedState::Written => "written",
            ReceivedState::Invalid => "invalid",
            ReceivedState::Closed => "closed",
        }
    }

    /// Whether a received message in state `self` may move to `next`.
    pub const fn can_become(self, next: ReceivedState) -> bool {
        use ReceivedState::*;
        matches!((self, next), (Stored, Written | Invalid) | (Written | Invalid, Closed))
    }

    /// Its file is written (into the outbox or its `error/`): on a re-offer it is only closed.
    pub const fn is_handled(self) -> bool {
        !matches!(self, ReceivedState::Stored)
    }
}

impl fmt::Display for ReceivedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReceivedState {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self> {
        ReceivedState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| LedgerError::Corrupt(format!("unknown received state {s:?}")))
    }
}

/// A message fetched from the XTA message box, as the receive stage stores it.
#[derive(Clone)]
pub struct NewReceived {
    /// The XTA MessageID: the key. Outside input, checked by the XTA reader.
    pub message_id: String,
    pub tenant: String,
    /// The reader identity whose box it came from.
    pub reader: String,
    /// Derived from the MessageID: the same on every re-write.
    pub file_name: String,
    /// The message as fetched. Personal data: never logged.
    pub payload: Vec<u8>,
    /// Why it is not a valid message, when it is not (it goes to `error/`).
    pub reason: Option<String>,
}

impl fmt::Debug for NewReceived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewReceived")
            .field("message_id", &self.message_id)
            .field("tenant", &self.tenant)
            .field("reader", &self.reader)
            .field("file_name", &self.file_name)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("reason", &self.reason)
            .finish()
    }
}

/// A row of `received_messages`, without its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub message_id: String,
    pub tenant: String,
    pub reader: String,
    pub file_name: String,
    pub state: ReceivedState,
    pub reason: Option<String>,
    /// Who holds the claim to write its file, and until when (while `stored`).
    pub claimed_by: Option<String>,
    pub claimed_until: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The outcome of [`Ledger::store_received`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredReceived {
    /// Stored now.
    New(Received),
    /// Stored before (a re-offer after a crash, or another process fetched it too): the row
    /// as it is, unchanged.
    Before(Received),
}

impl StoredReceived {
    pub fn row(&self) -> &Received {
        match self {
            StoredReceived::New(r) | StoredReceived::Before(r) => r,
        }
    }
}

/// An access token as the ledger keeps it: its name, role and times, and the SHA-256 of
/// the token (never the token itself; see `crate::access`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessToken {
    pub name: String,
    /// `admin`, `operator` or `tenant:<id>`, as `crate::access::Role` reads it.
    pub role: String,
    /// Not a secret, but of no use to show: left out of JSON.
    #[serde(skip)]
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    /// From then on the token is refused.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last accepted, to the minute (see [`Ledger::touch_token`]).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token to store: its name, role and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    pub sha256: String,
}

/// A row of `access_tokens`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    name: String,
    role: String,
    token_sha256: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

/// The columns of [`TokenRow`], for `SELECT`s.
macro_rules! token_columns {
    () => {
        "name, role, token_sha256, created_at, revoked_at, last_used_at"
    };
}
pub(crate) use token_columns;

impl From<TokenRow> for AccessToken {
    fn from(row: TokenRow) -> Self {
        AccessToken { name: row.name, role: row.role, sha256: row.token_sha256, created_at: row.created_at, revoked_at: row.revoked_at, last_used_at: row.last_used_at }
    }
}

/// A trigger in the outbox: "request R entered the input state of queue Q with journal event
/// `seq`". Written in the transaction of that state change, pushed to the queue by the relay
/// with [`Trigger::key`] as idempotency key, then deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The outbox row.
    pub id: i64,
    pub request: RequestId,
    pub queue: Queue,
    pub seq: u32,
    pub created_at: DateTime<Utc>,
    /// A scheduled further attempt: the job is not to run before this time.
    pub not_before: Option<DateTime<Utc>>,
}

impl Trigger {
    /// The job's idempotency key within its queue: `<request>:<seq>`. The same state entry
    /// is pushed once, however often the relay or the sweeper offers it.
    pub fn key(&self) -> String {
        trigger_key(self.request, self.seq)
    }
}

/// `<request>:<seq>`: see [`Trigger::key`].
pub fn trigger_key(request: RequestId, seq: u32) -> String {
    format!("{request}:{seq}")
}

/// A night's print batch as the ledger holds it ([`Ledger::open_print_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintBatch {
    pub batch_id: String,
    pub date: chrono::NaiveDate,
    /// Its letters in order: (request, letter number from 1).
    pub letters: Vec<(RequestId, u32)>,
    /// The files already handed off (their numbers).
    pub files_done: Vec<u32>,
    /// Every file handed off.
    pub finished: bool,
    /// Made by this call (false: it was there already).
    pub created: bool,
}

/// What the print centre reports on a letter (`print_feedback.status`): printed, put into
/// its envelope, handed over to the post, or an error (the letter is printed again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackStatus {
    Printed,
    Enveloped,
    HandedOver,
    Error,
}

impl FeedbackStatus {
    pub const ALL: [FeedbackStatus; 4] = [FeedbackStatus::Printed, FeedbackStatus::Enveloped, FeedbackStatus::HandedOver, FeedbackStatus::Error];

    /// The name in the feedback file, the database and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Printed => "printed",
            FeedbackStatus::Enveloped => "enveloped",
            FeedbackStatus::HandedOver => "handed_over",
            FeedbackStatus::Error => "error",
        }
    }
}

impl fmt::Display for FeedbackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeedbackStatus {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self> {
        FeedbackStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| LedgerError::Corrupt(format!("unknown feedback status {s:?}")))
    }
}

/// One line of the print centre's feedback on one letter of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintFeedback {
    pub batch_id: String,
    pub letter_number: u32,
    pub status: FeedbackStatus,
    /// When it happened, as the print centre says (to the microsecond).
    pub at: DateTime<Utc>,
    /// Why (an error line), as the print centre wrote it.
    pub reason: Option<String>,
    /// The feedback file (its name) and the line it came from.
    pub file_name: String,
    pub line: u32,
}

/// What recording a line of feedback does to its letter's request
/// ([`Ledger::record_print_feedback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackEffect {
    /// Recorded only (printed, enveloped, or a letter whose request moved on).
    Record,
    /// `printed → posted`: handed over to the post.
    Posted,
    /// `printed → awaiting_print`, out of its batch: an error, the next batch prints it again.
    Reprint,
}

/// A line of feedback to record, with its letter's request and what it does there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackEntry {
    pub feedback: PrintFeedback,
    pub request: RequestId,
    pub effect: FeedbackEffect,
}

/// What [`Ledger::record_print_feedback`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FeedbackRecorded {
    /// Lines recorded now.
    pub new: usize,
    /// Lines that were there already (imported before): nothing done for them.
    pub before: usize,
    /// Requests moved to `posted`, and back to `awaiting_print`.
    pub posted: usize,
    pub reprint: usize,
}

/// A letter of a batch, whether or not its request is still in that batch
/// ([`Ledger::print_letters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintLetter {
    pub batch_id: String,
    pub letter_number: u32,
    pub request: RequestId,
    /// A test message's letter (never handed to the print centre).
    pub test: bool,
    /// Its request's state now.
    pub state: RequestState,
    /// Its request is in this batch under this number now: not sent back to print by an
    /// error (nor taken into a later batch since).
    pub in_batch: bool,
    /// The file it was handed off in, once it was.
    pub file_no: Option<u32>,
    /// What the print centre reported on it, oldest first.
    pub feedback: Vec<PrintFeedback>,
}

/// A batch with what came back for it ([`Ledger::print_batches`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrintBatchInfo {
    pub batch_id: String,
    pub date: chrono::NaiveDate,
    pub letters: u32,
    /// Files handed off.
    pub files: u32,
    pub created_at: DateTime<Utc>,
    /// When its last file was handed off.
    pub finished_at: Option<DateTime<Utc>>,
    /// Letters reported handed over to the post, reported as errors, and with no feedback at
    /// all (the rest have been printed or enveloped, but not yet handed over).
    pub posted: u32,
    pub errors: u32,
    pub no_feedback: u32,
}

/// A file of a batch as it was handed off ([`Ledger::print_files`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrintFileInfo {
    pub file_no: u32,
    pub file_name: String,
    pub sha256: String,
    pub letters: u32,
    pub written_at: DateTime<Utc>,
}

/// What the relay hands a batch of triggers to: pushes them to the queue backend, and
/// succeeds only when every one of them is stored there.
pub type PushTriggers<'a> = &'a (dyn for<'t> Fn(&'t [Trigger]) -> PushFuture<'t> + Send + Sync);

/// The future a [`PushTriggers`] returns: `Err` with the reason when the triggers are not
/// all stored.
pub type PushFuture<'t> = std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + 't>>;

/// One entry of a request's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// 1 for the event that recorded the request, then counting up without gaps.
    pub seq: u32,
    pub at: DateTime<Utc>,
    /// `None` for the first event, when the request was recorded.
    pub from: Option<RequestState>,
    pub to: RequestState,
    pub actor: Actor,
    pub detail: Option<String>,
}

/// The outcome of [`Ledger::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now, under this id.
    New(RequestId),
    /// This source was recorded before (a re-run after a crash); nothing changed.
    AlreadyRecorded(RequestId),
    /// The tenant sent a message with the same Nachrichten-UUID before, from another source.
    /// Nothing was recorded.
    Duplicate { existing: RequestId },
}

/// Which requests [`Ledger::list`] returns (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<RequestState>,
    pub tenant: Option<String>,
    /// At most [`ListFilter::MAX_LIMIT`]; larger values are capped.
    pub limit: u32,
    pub offset: u64,
}

impl ListFilter {
    pub const MAX_LIMIT: u32 = 1000;
    pub const DEFAULT_LIMIT: u32 = 50;

    pub fn state(mut self, state: RequestState) -> Self {
        self.state = Some(state);
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    pub(crate) fn capped_limit(&self) -> i64 {
        i64::from(self.limit.min(Self::MAX_LIMIT))
    }

    pub(crate) fn offset_i64(&self) -> i64 {
        i64::try_from(self.offset).unwrap_or(i64::MAX)
    }
}

impl Default for ListFilter {
    fn default() -> Self {
        ListFilter {
            state: None,
            tenant: None,
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("request {0} not found")]
    NotFound(RequestId),
    /// The compare-and-set found the request in another state than expected: someone else
    /// moved it first.
    #[error("request {id} is {current}, not {expected}")]
    Conflict {
        id: RequestId,
        expected: RequestState,
        current: RequestState,
    },
    #[error("a request may not go from {from} to {to}")]
    InvalidTransition {
        from: RequestState,
        to: RequestState,
    },
    #[error("a received message may not go from {from} to {to}")]
    InvalidReceivedTransition {
        from: ReceivedState,
        to: ReceivedState,
    },
    /// Feedback meant to move a letter's request found it no longer printed as that letter
    /// (another import, an operator, or the next batch came first).
    #[error("letter {letter_number} of batch {batch_id} (request {request}) changed while the feedback was recorded")]
    LetterMoved { batch_id: String, letter_number: u32, request: RequestId },
    #[error("a request may not be recorded as {0}")]
    InvalidInitialState(RequestState),
    /// The source was recorded before with a different payload: the intake reused a key.
    #[error("source {key:?} was recorded as request {existing} with different content")]
    SourceReused { key: String, existing: RequestId },
    /// An access token of this name exists (revoked ones keep their names).
    #[error("a token named {0:?} exists already (revoked tokens keep their names)")]
    TokenNameTaken(String),
    #[error("unsupported ledger URL (expected sqlite:PATH or postgres://…): {0}")]
    UnsupportedUrl(String),
    #[error("the ledger's data is inconsistent: {0}")]
    Corrupt(String),
    /// The relay could not hand the outbox's triggers to the queue backend; they stay in the
    /// outbox and are offered again.
    #[error("pushing triggers to the job queues: {0}")]
    Relay(String),
    #[error("ledger database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("ledger migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// The record of requests and their journals. One implementation per database; both
/// behave the same (tests/ledger.rs runs one suite against both).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Brings the schema up to date. Idempotent; safe to run from several processes.
    async fn migrate(&self) -> Result<()>;

    /// Records a request with its payload and the first journal event (`from` = `None`),
    /// in one transaction. Whether the request is new, was recorded before under the same
    /// `source`, or duplicates another source's Nachrichten-UUID (of any tenant) is decided by the
    /// database's unique constraints, so concurrent intakes cannot both win.
    async fn record(
        &self,
        new: NewRequest,
        initial: RequestState,
        actor: &Actor,
        detail: Option<&str>,
    ) -> Result<Recorded>;

    /// Moves a request from `from` to `to` if, and only if, it is in `from` now
    /// (compare-and-set), and appends the event in the same transaction.
    /// Errors: [`LedgerError::InvalidTransition`] when `from` may not become `to`,
    /// [`LedgerError::Conflict`] when the request is in another state,
    /// [`LedgerError::NotFound`].
    async fn transition(
        &self,
        id: RequestId,
        from: RequestState,
        to: RequestState,
        actor: &Actor,
        detail: Option<&str>,
    ) -> Result<()>;

    async fn get(&self, id: RequestId) -> Result<Option<Request>>;

    /// The request's journal, oldest first. [`LedgerError::NotFound`] for an unknown id.
    async fn journal(&self, id: RequestId) -> Result<Vec<Event>>;

    /// The message as received. [`LedgerError::NotFound`] for an unknown id.
    async fn payload(&self, id: RequestId) -> Result<Vec<u8>>;

    async fn find_by_source(&self, source: &str) -> Result<Option<Request>>;

    /// Requests matching the filter, newest first, without payloads.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Request>>;

    /// Up to `limit` requests awaiting print with an id above `after`, by id (keyset paging:
    /// each page costs the same however far in). The print batch reads its candidates so.
    async fn awaiting_print_after(&self, after: RequestId, limit: u32) -> Result<Vec<Request>> {
        // What a ledger without its own statement can do: every page of `list`.
        let mut found = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.list(&ListFilter::default().state(RequestState::AwaitingPrint).limit(ListFilter::MAX_LIMIT).offset(offset)).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as u64;
            found.extend(page.into_iter().filter(|r| r.id > after));
        }
        found.sort_by_key(|r| r.id);
        found.truncate(limit as usize);
        Ok(found)
    }

    /// The requests of `letters` (letters of the print batch `batch_id`: request, number)
    /// with their payloads, in any order: what one print file needs, in as few statements as
    /// the ledger can (the SQL ledgers: two for the file, not two a letter). A request not
    /// in the ledger is left out.
    async fn print_inputs(&self, batch_id: &str, letters: &[(RequestId, u32)]) -> Result<Vec<(Request, Vec<u8>)>> {
        let _ = batch_id;
        let mut found = Vec::with_capacity(letters.len());
        for &(id, _) in letters {
            if let Some(request) = self.get(id).await? {
                found.push((request, self.payload(id).await?));
            }
        }
        Ok(found)
    }

    /// How many requests are in each state: every state of [`RequestState::ALL`], in that
    /// order, zeros included (so that gauges fall back to zero).
    async fn count_by_state(&self) -> Result<Vec<(RequestState, u64)>>;

    /// One cheap query: does the database answer? (`/healthz`; no table is counted.)
    async fn ping(&self) -> Result<()>;

    /// Moves a request from `from` (validated, unroutable or failed) to `routed`, storing
    /// the decision in its columns, like [`Ledger::transition`].
    async fn route(
        &self,
        id: RequestId,
        from: RequestState,
        routed: &RoutedTo,
        actor: &Actor,
        detail: Option<&str>,
    ) -> Result<()>;

    /// The relay's step: takes up to `limit` of the oldest triggers, hands them to `push`,
    /// and deletes them once `push` succeeded. Returns how many were pushed. A crash after
    /// `push` leaves them in the outbox: pushed again, they are deduplicated by their key.
    /// In PostgreSQL the rows stay locked until deleted (`SKIP LOCKED`), so the relays of
    /// several processes take different triggers.
    async fn relay_outbox(&self, limit: u32, push: PushTriggers<'_>) -> Result<usize>;

    /// Moves a request from `from` (routed, or failed on an operator's retry) to
    /// `transmitting`, reserving `message_id` for it unless it has one already; returns the
    /// MessageID it has now. Every send of the request uses that one.
    async fn begin_transmission(&self, id: RequestId, from: RequestState, message_id: &str, actor: &Actor, detail: Option<&str>) -> Result<String>;

    /// Keeps a request in `state` and schedules a further try of `queue`'s stage: in one
    /// transaction the columns `attempts` (tries made in this state so far) and
    /// `next_attempt_at`, the detail, a journal event `state → state`, and a trigger for
    /// `queue` that is not due before `next_at` (the relay pushes it with that run time).
    /// [`LedgerError::Conflict`] when the request is no longer in `state`.
    #[allow(clippy::too_many_arguments)]
    async fn schedule_attempt(&self, id: RequestId, state: RequestState, queue: Queue, attempts: u32, next_at: DateTime<Utc>, actor: &Actor, detail: Option<&str>) -> Result<()>;

    /// The print batch of `date`. The first call creates it with `candidates` as its letters,
    /// numbered from 1 in this order (those still awaiting print and in no other batch); every
    /// later call — a second run, a restart, another process — gets that batch back, with its
    /// letters, whatever it passes. One transaction: two concurrent calls make one batch.
    /// `None` when the date has no batch and none of `candidates` can take a number: a batch
    /// with no letters is not recorded, so the date stays open for a later run.
    async fn open_print_batch(&self, date: chrono::NaiveDate, batch_id: &str, candidates: &[RequestId]) -> Result<Option<PrintBatch>>;

    /// Takes the right to write the batch's files for `owner` until `until`: `None` when
    /// taken, else the writer that holds it (its lease has not ended). `take_from` names a
    /// writer known to be gone (its process died): its lease is taken over at once.
    async fn claim_print_batch(&self, batch_id: &str, owner: &str, until: DateTime<Utc>, take_from: Option<&str>) -> Result<Option<String>>;

    /// One file of a batch is in the handoff folder: its row, and its letters moved from
    /// `awaiting_print` to `printed` (with batch, letter and file in the journal), in one
    /// transaction. `notes` add to a letter's journal detail (an attachment not printed, by
    /// request; a request may have several). Recorded already: nothing happens.
    #[allow(clippy::too_many_arguments)]
    async fn print_file_done(&self, batch_id: &str, file_no: u32, file_name: &str, sha256: &str, letters: &[(RequestId, u32)], notes: &[(RequestId, String)], actor: &Actor) -> Result<()>;

    /// Every file of the batch is handed off.
    async fn finish_print_batch(&self, batch_id: &str) -> Result<()>;

    /// Every print batch with its counts of files and feedback, newest date first.
    async fn print_batches(&self) -> Result<Vec<PrintBatchInfo>>;

    /// The files of a batch handed off, by number.
    async fn print_files(&self, batch_id: &str) -> Result<Vec<PrintFileInfo>>;

    /// Every letter a batch had, by number, with its request's state and the feedback on it.
    async fn print_letters(&self, batch_id: &str) -> Result<Vec<PrintLetter>>;

    /// Records the print centre's feedback, all in one transaction: each line unless it is
    /// there already (the same letter, status and time), and for a new line its effect — a
    /// request `printed → posted`, or `printed → awaiting_print` and out of its batch (with
    /// the reason in the journal). The effect's request must still be `printed` as that
    /// letter: if it is not, nothing at all is recorded ([`LedgerError::LetterMoved`]).
    async fn record_print_feedback(&self, entries: &[FeedbackEntry], actor: &Actor) -> Result<FeedbackRecorded>;

    /// Triggers waiting in the outbox (a small table: the relay empties it).
    async fn outbox_len(&self) -> Result<u64>;

    /// Requests in `state` whose last change is older than `before` and which have no
    /// trigger in the outbox, with ids above `after_id` (pages), oldest first, at most
    /// `limit`: (id, seq of the state entry).
    async fn waiting_without_trigger(
        &self,
        state: RequestState,
        before: DateTime<Utc>,
        after_id: RequestId,
        limit: u32,
    ) -> Result<Vec<(RequestId, u32)>>;

    /// Writes the trigger for `queue` again for a request that is still in the state it
    /// entered with `seq` (the sweeper, for work that lost its job). False when the request
    /// moved on or the trigger is already there.
    async fn retrigger(&self, id: RequestId, seq: u32, queue: Queue) -> Result<bool>;

    /// Stores a message fetched from the XTA message box unless its MessageID is stored
    /// already (insert-if-absent, decided by the primary key, so two processes fetching it
    /// at once store it once). A new row is `stored`, unclaimed.
    async fn store_received(&self, new: NewReceived) -> Result<StoredReceived>;

    /// The received message with this MessageID.
    async fn received(&self, message_id: &str) -> Result<Option<Received>>;

    /// Its payload as fetched.
    async fn received_payload(&self, message_id: &str) -> Result<Option<Vec<u8>>>;

    /// Takes the claim to write a `stored` message's file for `owner` until `until`: true
    /// when `owner` holds it now (it was free, had expired, or was `owner`'s already); false
    /// when another owner holds it or the message is no longer `stored`.
    async fn claim_received(&self, message_id: &str, owner: &str, until: DateTime<Utc>) -> Result<bool>;

    /// Moves a received message from `from` to `to` if, and only if, it is in `from` now
    /// (compare-and-set), and lets go of its claim. False when it is in another state (or
    /// unknown); [`LedgerError::InvalidReceivedTransition`] when `from` may not become `to`.
    async fn mark_received(&self, message_id: &str, from: ReceivedState, to: ReceivedState) -> Result<bool>;

    /// Stores a new access token. [`LedgerError::TokenNameTaken`] when its name is in use.
    async fn create_token(&self, new: &NewToken) -> Result<AccessToken>;

    /// Revokes the token of this name: it is refused from now on, in every process sharing
    /// the ledger. The token as it is now; `None` when no token has the name. Revoking twice
    /// keeps the first time.
    async fn revoke_token(&self, name: &str) -> Result<Option<AccessToken>>;

    /// Every token, revoked ones too, oldest first.
    async fn tokens(&self) -> Result<Vec<AccessToken>>;

    /// The token whose SHA-256 this is (revoked or not).
    async fn token_by_hash(&self, sha256: &str) -> Result<Option<AccessToken>>;

    /// Notes that the token was accepted at `at` (callers do it about once a minute per
    /// token, not per request).
    async fn touch_token(&self, name: &str, at: DateTime<Utc>) -> Result<()>;

    // --- Notifications (see `ledger::mail`) ---

    /// Notifications no email carries yet (and not skipped), oldest first.
    async fn open_notifications(&self, limit: u32) -> Result<Vec<Notification>>;

    /// How many notifications wait to be composed.
    async fn open_notification_count(&self) -> Result<u64>;

    /// Writes the composed emails, links their notifications to them and marks the
    /// notifications that get none with why, in one transaction. A notification composed
    /// already (by another process) is left as it is.
    async fn compose_mails(&self, mails: &[NewMail], skipped: &[(String, String)]) -> Result<()>;

    /// Claims up to `limit` emails due now for `owner` until `until`, oldest first, leaving
    /// those whose domain asked us to wait. Claimed by one sender only (PostgreSQL: skip
    /// locked rows).
    async fn claim_mails(&self, owner: &str, until: DateTime<Utc>, limit: u32) -> Result<Vec<Mail>>;

    /// A sender's notes on emails it holds, committed together (SQLite: group-committed with
    /// whatever else is written at the time).
    async fn mark_mails(&self, owner: &str, marks: Vec<MailMark>) -> Result<()>;

    /// The emails claimed or being sent now (to find those of a sender that died).
    async fn mails_in_hand(&self) -> Result<Vec<Mail>>;

    /// A dead sender's email: claimed → due again; sending → unconfirmed. False when
    /// `owner` no longer holds it.
    async fn let_go_of_mail(&self, id: &str, owner: &str) -> Result<bool>;

    async fn mail(&self, id: &str) -> Result<Option<Mail>>;

    /// The newest emails, or only those that need an operator (failed, unconfirmed).
    async fn mails(&self, operator_only: bool, limit: u32) -> Result<Vec<Mail>>;

    async fn notifications_of_mail(&self, mail_id: &str) -> Result<Vec<Notification>>;

    async fn notifications_of_request(&self, id: RequestId) -> Result<Vec<Notification>>;

    /// The emails that carry a notification (one per receiving domain).
    async fn mails_of_notification(&self, id: &str) -> Result<Vec<Mail>>;

    /// An operator: send a failed, unconfirmed or deferred email now. False when it is in
    /// no such state.
    async fn retry_mail(&self, id: &str) -> Result<bool>;

    /// An operator: do not send it. False when it was sent or is being sent.
    async fn discard_mail(&self, id: &str) -> Result<bool>;

    /// Emails by status, every status once.
    async fn mail_counts(&self) -> Result<Vec<(MailStatus, u64)>>;

    /// Woken whenever this process wrote a trigger, so the relay need not wait for its next
    /// poll.
    fn outbox_signal(&self) -> Arc<tokio::sync::Notify>;
}

/// Opens the ledger a URL names: `sqlite:PATH` / `sqlite://PATH` (created if missing;
/// `?synchronous=full` for FULL instead of NORMAL), `sqlite::memory:` (tests), or
/// `postgres://…` / `postgresql://…`. Does not migrate: call [`Ledger::migrate`].
pub async fn open(url: &str) -> Result<Arc<dyn Ledger>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresLedger::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteLedger::open_url(url).await?))
    } else {
        // Never echo the URL: it may carry a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        Err(LedgerError::UnsupportedUrl(format!("scheme {scheme:?}")))
    }
}

// ---- shared by both implementations ----

/// Now, in UTC, to the microsecond (what PostgreSQL keeps), so that what is written reads
/// back equal.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A further try is scheduled only in a state that is still going somewhere.
pub(crate) fn check_schedule(state: RequestState) -> Result<()> {
    if state.is_terminal() {
        Err(LedgerError::InvalidTransition { from: state, to: state })
    } else {
        Ok(())
    }
}

pub(crate) fn check_transition(from: RequestState, to: RequestState) -> Result<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(LedgerError::InvalidTransition { from, to })
    }
}

pub(crate) fn parse_state(text: &str) -> Result<RequestState> {
    text.parse()
        .map_err(|e: UnknownState| LedgerError::Corrupt(e.to_string()))
}

/// A row of `requests`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct RequestRow {
    id: i64,
    tenant: String,
    source: String,
    sha256: String,
    nachrichten_uuid: Option<String>,
    kind: String,
    test: bool,
    file_name: Option<String>,
    state: String,
    state_detail: Option<String>,
    last_seq: i32,
    routed_kennung: Option<String>,
    routed_name: Option<String>,
    routed_channel: Option<String>,
    routed_xta_reader: Option<String>,
    routed_xta_service: Option<String>,
    directory_generation: Option<String>,
    xta_message_id: Option<String>,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    print_batch: Option<String>,
    letter_number: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The columns of [`RequestRow`], for `SELECT`s.
macro_rules! request_columns {
    () => {
        "id, tenant, source, sha256, nachrichten_uuid, kind, test, file_name, state, \
         state_detail, last_seq, routed_kennung, routed_name, routed_channel, \
         routed_xta_reader, routed_xta_service, directory_generation, xta_message_id, attempts, \
         next_attempt_at, print_batch, letter_number, created_at, updated_at"
    };
}
pub(crate) use request_columns;

impl TryFrom<RequestRow> for Request {
    type Error = LedgerError;

    fn try_from(row: RequestRow) -> Result<Self> {
        let routed = match (row.routed_kennung, row.routed_channel) {
            (Some(kennung), Some(channel)) => Some(RoutedTo {
                kennung,
                name: row.routed_name.unwrap_or_default(),
                channel: channel.parse()?,
                xta_reader: row.routed_xta_reader,
                xta_service: row.routed_xta_service,
                directory_generation: row.directory_generation.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Request {
            id: RequestId(row.id),
            tenant: row.tenant,
            source: row.source,
            sha256: row.sha256,
            nachrichten_uuid: row.nachrichten_uuid,
            kind: row.kind,
            test: row.test,
            file_name: row.file_name,
            state: parse_state(&row.state)?,
            state_detail: row.state_detail,
            seq: u32::try_from(row.last_seq)
                .map_err(|_| LedgerError::Corrupt(format!("last_seq {}", row.last_seq)))?,
            routed,
            xta_message_id: row.xta_message_id,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            next_attempt_at: row.next_attempt_at,
            print_batch: row.print_batch,
            letter_number: row.letter_number.and_then(|n| u32::try_from(n).ok()),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A row of `received_messages` (without the payload), as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct ReceivedRow {
    message_id: String,
    tenant: String,
    reader: String,
    file_name: String,
    state: String,
    reason: Option<String>,
    claimed_by: Option<String>,
    claimed_until: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The columns of [`ReceivedRow`], for `SELECT`s.
macro_rules! received_columns {
    () => {
        "message_id, tenant, reader, file_name, state, reason, claimed_by, claimed_until, received_at, updated_at"
    };
}
pub(crate) use received_columns;

impl TryFrom<ReceivedRow> for Received {
    type Error = LedgerError;

    fn try_from(row: ReceivedRow) -> Result<Self> {
        Ok(Received {
            message_id: row.message_id,
            tenant: row.tenant,
            reader: row.reader,
            file_name: row.file_name,
            state: row.state.parse()?,
            reason: row.reason,
            claimed_by: row.claimed_by,
            claimed_until: row.claimed_until,
            received_at: row.received_at,
            updated_at: row.updated_at,
        })
    }
}

/// What [`Ledger::store_received`] answers: the row read back after the insert-if-absent.
pub(crate) fn stored_received(row: Option<Received>, inserted: bool, message_id: &str) -> Result<StoredReceived> {
    let row = row.ok_or_else(|| LedgerError::Corrupt(format!("received message {message_id} is gone right after it was stored")))?;
    Ok(if inserted { StoredReceived::New(row) } else { StoredReceived::Before(row) })
}

/// What [`Ledger::create_token`] answers: the row read back after the insert.
pub(crate) fn created_token(inserted: bool, row: Option<AccessToken>, name: &str) -> Result<AccessToken> {
    match (inserted, row) {
        (true, Some(row)) => Ok(row),
        (true, None) => Err(LedgerError::Corrupt(format!("token {name:?} is gone right after it was stored"))),
        (false, _) => Err(LedgerError::TokenNameTaken(name.to_string())),
    }
}

pub(crate) fn check_received_transition(from: ReceivedState, to: ReceivedState) -> Result<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(LedgerError::InvalidReceivedTransition { from, to })
    }
}

/// A row of `outbox`.
#[derive(sqlx::FromRow)]
pub(crate) struct TriggerRow {
    id: i64,
    request_id: i64,
    queue: String,
    seq: i32,
    created_at: DateTime<Utc>,
    not_before: Option<DateTime<Utc>>,
}

impl TryFrom<TriggerRow> for Trigger {
    type Error = LedgerError;

    fn try_from(row: TriggerRow) -> Result<Self> {
        Ok(Trigger {
            id: row.id,
            request: RequestId(row.request_id),
            queue: row
                .queue
                .parse()
                .map_err(|_| LedgerError::Corrupt(format!("outbox: unknown queue {:?}", row.queue)))?,
            seq: u32::try_from(row.seq)
                .map_err(|_| LedgerError::Corrupt(format!("outbox seq {}", row.seq)))?,
            created_at: row.created_at,
            not_before: row.not_before,
        })
    }
}

/// A row of `request_events`.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i32,
    at: DateTime<Utc>,
    from_state: Option<String>,
    to_state: String,
    actor: String,
    detail: Option<String>,
}

impl TryFrom<EventRow> for Event {
    type Error = LedgerError;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(Event {
            seq: u32::try_from(row.seq)
                .map_err(|_| LedgerError::Corrupt(format!("event seq {}", row.seq)))?,
            at: row.at,
            from: row.from_state.as_deref().map(parse_state).transpose()?,
            to: parse_state(&row.to_state)?,
            actor: row
                .actor
                .parse()
                .map_err(|e: InvalidActor| LedgerError::Corrupt(e.to_string()))?,
            detail: row.detail,
        })
    }
}

pub(crate) fn requests_from_rows(rows: Vec<RequestRow>) -> Result<Vec<Request>> {
    rows.into_iter().map(Request::try_from).collect()
}

pub(crate) fn events_from_rows(id: RequestId, rows: Vec<EventRow>) -> Result<Vec<Event>> {
    if rows.is_empty() {
        // Every request has its first event from the transaction that recorded it.
        return Err(LedgerError::NotFound(id));
    }
    rows.into_iter().map(Event::try_from).collect()
}

pub(crate) fn counts_in_order(rows: Vec<(String, i64)>) -> Result<Vec<(RequestState, u64)>> {
    let mut counts: Vec<(RequestState, u64)> =
        RequestState::ALL.iter().map(|&state| (state, 0)).collect();
    for (state, count) in rows {
        let state = parse_state(&state)?;
        let slot = counts
            .iter_mut()
            .find(|(s, _)| *s == state)
            .expect("ALL holds every state");
        slot.1 = u64::try_from(count).unwrap_or(0);
    }
    Ok(counts)
}

/// Embedded migrations of one dialect, tracked in `_ledger_migrations`.
///
/// Listed by hand rather than by `sqlx::migrate!` (the crate builds sqlx without its
/// `macros` feature); the test `every_migration_file_is_embedded` keeps the list complete.
pub(crate) fn migrator(files: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};

    let migrations = files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                description.into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name("_ledger_migrations");
    migrator
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestState::*;

    #[test]
    fn names_round_trip() {
        for state in RequestState::ALL {
            assert_eq!(state.as_str().parse::<RequestState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("Received".parse::<RequestState>().is_err());
        assert!("".parse::<RequestState>().is_err());
    }

    #[test]
    fn all_holds_every_state_once() {
        let mut names: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RequestState::ALL.len());
    }

    #[test]
    fn happy_paths_are_allowed() {
        let electronic = [Received, Validated, Routed, Transmitting, Transmitted, Delivered];
        let by_post = [Received, Validated, Routed, AwaitingPrint, Printed, Posted];
        for path in [&electronic[..], &by_post[..]] {
            for pair in path.windows(2) {
                assert!(pair[0].can_become(pair[1]), "{} → {}", pair[0], pair[1]);
            }
        }
        assert!(
            Transmitting.can_become(AwaitingPrint),
            "permanent failure falls back to post"
        );
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in RequestState::ALL {
            let outgoing = RequestState::ALL
                .iter()
                .filter(|&&to| from.can_become(to))
                .count();
            assert_eq!(from.is_terminal(), outgoing == 0, "{from}");
        }
    }

    #[test]
    fn every_state_is_reachable_from_a_start() {
        let mut reached: Vec<RequestState> = RequestState::ALL
            .into_iter()
            .filter(|s| s.can_start_as())
            .collect();
        let mut i = 0;
        while i < reached.len() {
            let from = reached[i];
            for to in RequestState::ALL {
                if from.can_become(to) && !reached.contains(&to) {
                    reached.push(to);
                }
            }
            i += 1;
        }
        assert_eq!(reached.len(), RequestState::ALL.len());
    }

    #[test]
    fn every_non_terminal_state_can_reach_a_terminal_one() {
        for start in RequestState::ALL {
            let mut seen = vec![start];
            let mut i = 0;
            while i < seen.len() {
                for to in RequestState::ALL {
                    if seen[i].can_become(to) && !seen.contains(&to) {
                        seen.push(to);
                    }
                }
                i += 1;
            }
            assert!(
                seen.iter().any(|s| s.is_terminal()),
                "{start} is a dead end"
            );
        }
    }

    #[test]
    fn forbidden_moves() {
        // Nothing skips validation or routing.
        assert!(!Received.can_become(Routed));
        assert!(!Received.can_become(Transmitting));
        assert!(!Validated.can_become(Transmitting));
        assert!(!Validated.can_become(AwaitingPrint));
        // What has left the house cannot be withdrawn here.
        assert!(!Transmitting.can_become(Withdrawn));
        assert!(!Transmitted.can_become(Withdrawn));
        // Delivered only on the transport report, after the server accepted it.
        assert!(!Transmitting.can_become(Delivered));
        assert!(!Printed.can_become(Withdrawn));
        // Unroutable is never resolved by a guess straight to sending.
        assert!(!Unroutable.can_become(Transmitting));
        assert!(!Unroutable.can_become(AwaitingPrint));
        // Terminal is terminal.
        for to in RequestState::ALL {
            assert!(!Delivered.can_become(to));
            assert!(!Posted.can_become(to));
            assert!(!Rejected.can_become(to));
            assert!(!Withdrawn.can_become(to));
        }
        // Only a further transmission attempt may repeat its state.
        for state in RequestState::ALL {
            assert_eq!(state.can_become(state), state == Transmitting, "{state}");
        }
    }

    #[test]
    fn the_table_is_exactly_this() {
        let allowed: &[(RequestState, &[RequestState])] = &[
            (Received, &[Validated, Rejected, Withdrawn]),
            (Validated, &[Routed, Rejected, Unroutable, Withdrawn]),
            (Routed, &[Transmitting, AwaitingPrint, Failed, Withdrawn]),
            (
                Transmitting,
                &[Transmitting, Transmitted, AwaitingPrint, Failed],
            ),
            (Transmitted, &[Delivered, Failed]),
            (Delivered, &[]),
            (AwaitingPrint, &[Printed, Failed, Withdrawn]),
            (Printed, &[AwaitingPrint, Posted, Failed]),
            (Posted, &[]),
            (Rejected, &[]),
            (Unroutable, &[Routed, Rejected, Withdrawn]),
            (
                Failed,
                &[Routed, Transmitting, AwaitingPrint, Rejected, Withdrawn],
            ),
            (Withdrawn, &[]),
        ];
        assert_eq!(allowed.len(), RequestState::ALL.len());
        for &(from, targets) in allowed {
            for to in RequestState::ALL {
                assert_eq!(from.can_become(to), targets.contains(&to), "{from} → {to}");
            }
        }
    }

    #[test]
    fn starts() {
        let starts: Vec<_> = RequestState::ALL
            .into_iter()
            .filter(|s| s.can_start_as())
            .collect();
        assert_eq!(starts, [Received, Validated, Rejected]);
    }

    #[test]
    fn request_ids() {
        assert_eq!("4711".parse::<RequestId>(), Ok(RequestId(4711)));
        assert_eq!(" 12 ".parse::<RequestId>(), Ok(RequestId(12)));
        assert!("0".parse::<RequestId>().is_err());
        assert!("-3".parse::<RequestId>().is_err());
        assert!("abc".parse::<RequestId>().is_err());
        assert_eq!(RequestId(4711).to_string(), "4711");
        assert_eq!(serde_json::to_string(&RequestId(7)).unwrap(), "7");
    }

    #[test]
    fn actors() {
        for actor in [
            Actor::system("route"),
            Actor::operator("mueller"),
            Actor::operator("a:b"),
        ] {
            assert_eq!(actor.to_string().parse::<Actor>(), Ok(actor.clone()));
            let json = serde_json::to_string(&actor).unwrap();
            assert_eq!(serde_json::from_str::<Actor>(&json).unwrap(), actor);
        }
        assert_eq!(Actor::system("route").to_string(), "system:route");
        assert!("route".parse::<Actor>().is_err());
        assert!("system:".parse::<Actor>().is_err());
        assert!("robot:x".parse::<Actor>().is_err());
    }

    #[test]
    fn new_request_debug_hides_the_payload() {
        let new = NewRequest {
            tenant: "t".into(),
            source: "http:1".into(),
            sha256: "00".into(),
            nachrichten_uuid: None,
            kind: "ersuchen".into(),
            test: false,
            payload: b"Erika Mustermann, Musterweg 1".to_vec(),
            file_name: None,
        };
        let shown = format!("{new:?}");
        assert!(!shown.contains("Mustermann"), "{shown}");
        assert!(shown.contains("<29 bytes>"), "{shown}");
    }

    #[test]
    fn list_filter_caps_the_limit() {
        assert_eq!(ListFilter::default().limit(5000).capped_limit(), 1000);
        assert_eq!(ListFilter::default().capped_limit(), 50);
    }

    #[test]
    fn open_refuses_other_schemes_without_echoing_the_url() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt
            .block_on(open("mysql://user:secret@host/db"))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(matches!(err, LedgerError::UnsupportedUrl(_)));
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn every_migration_file_is_embedded() {
        for (dialect, embedded) in [
            ("sqlite", sqlite::MIGRATIONS),
            ("postgres", postgres::MIGRATIONS),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".sql"))
                .collect();
            files.sort();
            let versions: Vec<i64> = files
                .iter()
                .map(|name| name.split('_').next().unwrap().parse().unwrap())
                .collect();
            let listed: Vec<i64> = embedded.iter().map(|m| m.0).collect();
            assert_eq!(
                versions, listed,
                "migrations/{dialect} and its MIGRATIONS list differ"
            );
            for (name, (_, _, sql)) in files.iter().zip(embedded) {
                let on_disk = std::fs::read_to_string(dir.join(name)).unwrap();
                assert_eq!(&on_disk, sql, "{dialect}/{name}");
            }
        }
    }
}
