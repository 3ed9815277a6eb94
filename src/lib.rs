//! amtsbote carries enforcement-assistance requests (Vollstreckungshilfeersuchen) between
//! German enforcement authorities.
//!
//! One module per part of the domain; docs/ARCHITECTURE.md shows how data flows through them.
//! - [`xamtshilfe`]: the messages — typed model, reading with limits, writing, validation.
//! - [`ledger`]: the record of every request and the journal of its state changes (SQLite or PostgreSQL).
//! - [`cli`]: the `amtsbote` command line.

pub mod cli;
pub mod ledger;
pub mod xamtshilfe;
