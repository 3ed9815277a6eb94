//! What can go wrong talking to an XTA server, typed, and whether trying again may help.
//!
//! [`Fault`] is a SOAP fault read by its XTA error code (code list
//! `urn:de:xta:webservice:codeliste:fehlernummer`), or by its exception element when the code
//! is missing. [`XtaError`] is every failure of a call — faults, HTTP statuses, timeouts,
//! broken connections, unreadable replies — and [`XtaError::retry`] tells the transmit stage
//! what to do: transient (technical problems, timeouts, 5xx, broken connections: retry with
//! backoff; a failed TLS handshake too, see [`XtaError::retry`]) or permanent (permission,
//! parameter, schema, virus: operator attention, print).

use super::soap::{NS_SOAP, NS_XTA, ReadError};
use super::xml::{Node, clip};

/// The XTA exceptions of the WSDL, by their error-code ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 9010–9014
    PermissionDenied,
    /// 9020–9024
    ParameterIsNotValid,
    /// 9030–9032
    TechnicalProblem,
    /// 9050–9052
    MessageSchemaViolation,
    /// 9060
    MessageVirusDetection,
    /// 9070
    InvalidMessageId,
    /// 9080–9081
    SyncAsync,
    /// 9100–9101
    CancelDenied,
    /// A fault without a known XTA code or exception element.
    Other,
}

impl FaultKind {
    pub fn from_code(code: u16) -> FaultKind {
        match code {
            9010..=9014 => FaultKind::PermissionDenied,
            9020..=9024 => FaultKind::ParameterIsNotValid,
            9030..=9032 => FaultKind::TechnicalProblem,
            9050..=9052 => FaultKind::MessageSchemaViolation,
            9060 => FaultKind::MessageVirusDetection,
            9070 => FaultKind::InvalidMessageId,
            9080..=9081 => FaultKind::SyncAsync,
            9100..=9101 => FaultKind::CancelDenied,
            _ => FaultKind::Other,
        }
    }

    /// The first code of the kind's range, which the simulator answers with.
    pub fn default_code(self) -> Option<u16> {
        Some(match self {
            FaultKind::PermissionDenied => 9010,
            FaultKind::ParameterIsNotValid => 9020,
            FaultKind::TechnicalProblem => 9030,
            FaultKind::MessageSchemaViolation => 9050,
            FaultKind::MessageVirusDetection => 9060,
            FaultKind::InvalidMessageId => 9070,
            FaultKind::SyncAsync => 9080,
            FaultKind::CancelDenied => 9100,
            FaultKind::Other => return None,
        })
    }

    /// The exception element of the WSDL's fault messages.
    pub fn element(self) -> Option<&'static str> {
        Some(match self {
            FaultKind::PermissionDenied => "PermissionDeniedException",
            FaultKind::ParameterIsNotValid => "ParameterIsNotValidException",
            FaultKind::TechnicalProblem => "XTAWSTechnicalProblemException",
            FaultKind::MessageSchemaViolation => "MessageSchemaViolationException",
            FaultKind::MessageVirusDetection => "MessageVirusDetectionException",
            FaultKind::InvalidMessageId => "InvalidMessageIDException",
            FaultKind::SyncAsync => "SyncAsyncException",
            FaultKind::CancelDenied => "CancelDeniedException",
            FaultKind::Other => return None,
        })
    }

    fn from_element(name: &str) -> FaultKind {
        [
            FaultKind::PermissionDenied,
            FaultKind::ParameterIsNotValid,
            FaultKind::TechnicalProblem,
            FaultKind::MessageSchemaViolation,
            FaultKind::MessageVirusDetection,
            FaultKind::InvalidMessageId,
            FaultKind::SyncAsync,
            FaultKind::CancelDenied,
        ]
        .into_iter()
        .find(|k| k.element() == Some(name))
        .unwrap_or(FaultKind::Other)
    }

    /// Whether the server is at fault (SOAP `Receiver`) rather than the request (`Sender`).
    pub fn is_server_side(self) -> bool {
        matches!(self, FaultKind::TechnicalProblem | FaultKind::Other)
    }

    /// Technical problems may pass; everything else is about the request and will not.
    pub fn retry(self) -> Retry {
        match self {
            FaultKind::TechnicalProblem => Retry::Transient,
            _ => Retry::Permanent,
        }
    }
}

/// Whether a failed call may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Retry with backoff and jitter, with the same MessageID.
    Transient,
    /// No retry: operator attention, and the request falls back to print where configured.
    Permanent,
}

/// A SOAP fault of an XTA server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} ({code}): {reason}", code = self.code.map(|c| c.to_string()).unwrap_or_else(|| "no code".into()))]
pub struct Fault {
    pub kind: FaultKind,
    /// The XTA error code (`errorCode/code`), when the fault carries one.
    pub code: Option<u16>,
    /// The code's name (`errorCode/name`).
    pub code_name: String,
    /// The SOAP reason text (clipped; written by the server, not by us).
    pub reason: String,
    /// `Sender` or `Receiver` (the local name of the SOAP fault code).
    pub soap_code: String,
}

impl Fault {
    /// A fault of `kind` with its default code, as the simulator answers it.
    pub fn new(kind: FaultKind, reason: impl Into<String>) -> Fault {
        let code_name = kind.element().map(|e| e.trim_end_matches("Exception").to_owned()).unwrap_or_default();
        Fault {
            kind,
            code: kind.default_code(),
            code_name,
            reason: reason.into(),
            soap_code: if kind.is_server_side() { "Receiver".into() } else { "Sender".into() },
        }
    }

    /// Reads an `s12:Fault` element.
    pub fn from_node(fault: &Node) -> Fault {
        let soap_code = fault
            .child(NS_SOAP, "Code")
            .and_then(|c| c.child(NS_SOAP, "Value"))
            .map(|v| v.trimmed().rsplit(':').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let reason = fault
            .child(NS_SOAP, "Reason")
            .and_then(|r| r.child(NS_SOAP, "Text"))
            .map(|t| clip(t.trimmed()))
            .unwrap_or_default();
        let exception = fault.child(NS_SOAP, "Detail").and_then(|d| d.children.iter().find(|c| c.ns == NS_XTA));
        let error_code = exception.and_then(|e| e.child(NS_XTA, "errorCode"));
        let code = error_code.and_then(|c| c.child("", "code")).and_then(|c| c.trimmed().parse::<u16>().ok());
        let code_name = error_code.and_then(|c| c.child("", "name")).map(|n| clip(n.trimmed())).unwrap_or_default();
        let kind = match (code, exception) {
            (Some(code), _) if FaultKind::from_code(code) != FaultKind::Other => FaultKind::from_code(code),
            (_, Some(e)) => FaultKind::from_element(&e.name),
            _ => FaultKind::Other,
        };
        Fault { kind, code, code_name, reason, soap_code }
    }

    /// A known kind decides; an unknown fault is transient when the server says it is its
    /// own (`Receiver`), permanent otherwise.
    pub fn retry(&self) -> Retry {
        match self.kind {
            FaultKind::Other if self.soap_code == "Receiver" => Retry::Transient,
            kind => kind.retry(),
        }
    }
}

/// Every failure of an XTA call.
#[derive(Debug, thiserror::Error)]
pub enum XtaError {
    #[error("XTA fault: {0}")]
    Fault(Fault),
    #[error("the XTA server answered HTTP {status}")]
    Http { status: u16 },
    #[error("timed out: no {phase} within {millis} ms")]
    Timeout { phase: Phase, millis: u128 },
    #[error("connection to the XTA server failed: {0}")]
    Connection(String),
    #[error("unreadable reply from the XTA server: {0}")]
    InvalidReply(#[from] ReadError),
    #[error("the XTA server's reply is not what {operation} answers: {message}")]
    UnexpectedReply { operation: &'static str, message: String },
    /// A TLS handshake that failed: the server's certificate not trusted, our client
    /// certificate refused or missing. The message says which and what to check.
    #[error("{0}")]
    Tls(String),
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// Not sent: the server failed too often in a row and is given a pause
    /// ([`super::breaker`]).
    #[error("not sent: the XTA server failed repeatedly and gets a pause (circuit breaker open; calls again in {} s)", .retry_in.as_secs_f64().ceil())]
    BreakerOpen { retry_in: std::time::Duration },
    /// A TLS setting that cannot be used (a file missing, unreadable, or a key that is not
    /// the certificate's): found when the client is built.
    #[error("invalid client configuration: {0}")]
    TlsSetup(super::tls::TlsError),
}

/// Not `#[from]`: that would chain the error as a source as well as show it in the message.
impl From<super::tls::TlsError> for XtaError {
    fn from(e: super::tls::TlsError) -> XtaError {
        XtaError::TlsSetup(e)
    }
}

/// Which timeout expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Response,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connection",
            Phase::Response => "response",
        })
    }
}

impl XtaError {
    /// Transient or permanent. An unreadable reply counts as transient: it is the server's
    /// (or a proxy's) failure, and a retry is safe since every re-send carries the same
    /// MessageID; the transmit stage's retry limit and breaker bound it.
    ///
    /// A failed TLS handshake is transient too, although its cause is a configuration (a
    /// certificate not trusted or refused, on one side or the other) that waiting does not
    /// fix: treating it as permanent would send every request in hand to print for what an
    /// operator fixes in minutes (a renewed certificate, a CA bundle updated on one side
    /// first). Retried, nothing is lost and nothing goes by post; the message names the
    /// certificate setting to check, and a job that keeps failing ends dead and visible.
    pub fn retry(&self) -> Retry {
        match self {
            XtaError::Fault(f) => f.retry(),
            XtaError::Http { status } if *status >= 500 || *status == 408 || *status == 429 => Retry::Transient,
            XtaError::Http { .. } => Retry::Permanent,
            XtaError::Timeout { .. } | XtaError::Connection(_) | XtaError::Tls(_) | XtaError::InvalidReply(_) | XtaError::UnexpectedReply { .. } | XtaError::BreakerOpen { .. } => Retry::Transient,
            XtaError::Config(_) | XtaError::TlsSetup(_) => Retry::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }

    /// The fault's kind, when the server answered with a fault.
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            XtaError::Fault(f) => Some(f.kind),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ranges_and_classes() {
        for (code, kind, retry) in [
            (9010, FaultKind::PermissionDenied, Retry::Permanent),
            (9014, FaultKind::PermissionDenied, Retry::Permanent),
            (9024, FaultKind::ParameterIsNotValid, Retry::Permanent),
            (9031, FaultKind::TechnicalProblem, Retry::Transient),
            (9052, FaultKind::MessageSchemaViolation, Retry::Permanent),
            (9060, FaultKind::MessageVirusDetection, Retry::Permanent),
            (9070, FaultKind::InvalidMessageId, Retry::Permanent),
            (9081, FaultKind::SyncAsync, Retry::Permanent),
            (9101, FaultKind::CancelDenied, Retry::Permanent),
        ] {
            assert_eq!(FaultKind::from_code(code), kind, "{code}");
            assert_eq!(kind.retry(), retry, "{code}");
        }
        assert_eq!(FaultKind::from_code(9040), FaultKind::Other);
        assert!(XtaError::Http { status: 503 }.is_transient());
        assert!(!XtaError::Http { status: 404 }.is_transient());
    }
}
