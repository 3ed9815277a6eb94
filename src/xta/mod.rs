//! XTA 2 (Version 3), the web-service transport to other authorities: the SOAP protocol
//! (`soap`, read with the limits of `xml`), typed faults and their retry class (`fault`), the
//! HTTP(S) client (`client`), mutual TLS from PEM files (`tls`) and the test server
//! `amtsbote xta-sim` (`sim`).
//!
//! The contract is ../shared/spec/xta.md; the types are written from the published WSDL and
//! schemas, which are not part of the project. The transmit stage (`transmit`) sends routed
//! requests with the client; the receive stage (`receive`) fetches what waits in our
//! tenants' message boxes into their outbox folders; the report stage comes next.

pub mod attempts;
pub mod breaker;
pub mod client;
pub mod report;
pub mod fault;
pub mod receive;
pub mod sim;
pub mod soap;
pub mod tls;
pub mod transmit;
pub mod xml;

pub use client::{ClientConfig, FetchedMessage, XtaClient};
pub use tls::{ClientTls, ServerTls, TlsError};
pub use fault::{Fault, FaultKind, Retry, XtaError};
pub use soap::{Availability, ContentContainer, Identifier, MessageId, MessageMetaData, TransportReport, TransportStatus};
