//! How an email leaves: a [`Transport`] opens [`Session`]s, and a session hands over one
//! email at a time in two steps — [`Session::begin`] (everything up to the server's "go
//! ahead" for the content: MAIL FROM, RCPT TO, DATA) and [`Session::finish`] (the content,
//! and the server's answer). The notify stage records in the ledger between the two that the
//! content is about to go (see `ledger::mail`): that is what lets a crash at any point send
//! nothing twice. lettre's pooled transport sends in one call and leaves no such point, so
//! the sessions here drive lettre's SMTP connection command by command.
//!
//! The transport is `mail::smtp::Mailer`: lettre's SMTP connection on our own connections
//! (`smtp.url`), or `.eml` files in `<data_dir>/mail/` (the embedded default: the same id
//! written twice leaves one file).

use async_trait::async_trait;

/// Why an email was not accepted, as the sender acts on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Try again later: a 4xx answer, the server unreachable, a connection lost, a timeout.
    #[error("{0}")]
    Transient(String),
    /// Do not try again: a 5xx answer, an address the server refuses, a bad configuration.
    #[error("{0}")]
    Permanent(String),
}

impl Refusal {
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::Transient(_))
    }
}

/// Where emails go.
#[async_trait]
pub trait Transport: Send + Sync {
    /// For the start-up log: where emails go (never a password).
    fn describe(&self) -> String;

    /// A session to hand over emails one after the other (an SMTP connection).
    async fn open(&self) -> Result<Box<dyn Session>, Refusal>;
}

/// One connection's worth of emails, handed over one at a time.
#[async_trait]
pub trait Session: Send {
    /// Everything before the content (which it is given to choose MAIL parameters such as
    /// 8BITMIME); `Ok` when the server waits for it.
    async fn begin(&mut self, id: &str, from: &str, to: &[String], content: &[u8]) -> Result<(), Refusal>;

    /// The content (the whole RFC 5322 message), and the server's answer to it.
    async fn finish(&mut self, content: &[u8]) -> Result<(), Refusal>;

    /// Whether the session can be used for the next email (false after a lost connection
    /// or an answer that leaves the server's state unknown).
    fn usable(&self) -> bool;

    /// Whether what [`Session::finish`] took is kept for good only once [`Session::settle`]
    /// says so (the `.eml` folder: the files of a batch are synced together, so that a
    /// batch costs the disk a few flushes, not two an email). The sender then counts and
    /// notes an email accepted only after `settle`.
    fn defers(&self) -> bool {
        false
    }

    /// Makes every email `finish` took since the last call durable. An error: none of them
    /// is there (each may be tried again).
    async fn settle(&mut self) -> Result<(), Refusal> {
        Ok(())
    }
}

