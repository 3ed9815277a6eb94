//! `XtaClient`: the operations of an XTA 2 server over HTTP/1.1 or HTTPS, one typed method
//! each.
//!
//! Connections are pooled and kept alive (hyper-util's legacy client); every call has a
//! connect timeout and a response timeout (for the whole answer, body included); replies are
//! read by [`super::soap`] under [`Limits`], with the body cut off at `max_bytes` while it
//! arrives. Every failure is an [`XtaError`] that says whether a retry may help.
//!
//! TLS: one connector (hyper-rustls over the same `HttpConnector`) speaks plain HTTP to
//! `http://` URLs and rustls to `https://` ones. HTTPS needs [`ClientConfig::tls`]
//! ([`ClientTls`]): the CA bundle that signs the server's certificate — the only roots
//! trusted — and the client certificate (mutual TLS) with its key, all PEM files read once
//! when the client is built; a missing or unreadable file, a key that is not the
//! certificate's, or an `https` URL without a CA is an [`XtaError::TlsSetup`] naming the
//! setting and the path. TLS connections are pooled and kept alive like plain ones.
//!
//! A failed handshake — the server's certificate not trusted, our client certificate
//! refused, none presented — is an [`XtaError::Tls`] whose message says which and what to
//! check. It counts as transient (see [`XtaError::retry`]): it is a configuration problem on
//! one side or the other, but retried with backoff nothing is lost and no request is sent
//! to print for it; the operator sees the message in the job's error. With TLS 1.3 the
//! server judges the client certificate after the client's side of the handshake is done,
//! so a refusal arrives with the first request's answer; the request was not processed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::uri::Scheme;
use hyper::{Method, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::breaker::{BreakerConfig, Destination};
use super::fault::{Phase, XtaError};
pub use super::tls::ClientTls;
use super::tls::{client_handshake_failure, find_rustls_error};
use super::soap::{self, ContentContainer, Identifier, LookupServiceResult, MessageId, MessageMetaData, MsgBoxResponse, Operation, Port, Reply, Request, Response, TransportReport};
use super::xml::{Limits, XmlError};

/// How the client reaches the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's base URL; the ports are `<base>/ManagementPort`, `<base>/SendXtaPort`,
    /// `<base>/MsgBoxPort` unless set one by one in `endpoints`.
    pub base_url: String,
    /// Full URLs per port, overriding `base_url` (real servers name them freely).
    pub endpoints: Option<Endpoints>,
    pub connect_timeout: Duration,
    /// For the whole answer: from sending the request to the last byte of the reply.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Limits for reading replies.
    pub limits: Limits,
    /// Calls in flight and the circuit breaker ([`super::breaker`]).
    pub breaker: BreakerConfig,
    /// How long a call waits for the breaker to let it through before it fails with
    /// [`XtaError::BreakerOpen`].
    pub admission_wait: Duration,
    /// CA and client certificate for `https://` URLs; required for them.
    pub tls: Option<ClientTls>,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            endpoints: None,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 32,
            limits: Limits::default(),
            breaker: BreakerConfig::default(),
            admission_wait: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// The URL of each port.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub management: String,
    pub send: String,
    pub msgbox: String,
}

/// A message fetched from the box: its metadata, content, and the box's request id (for close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    pub msgbox: MsgBoxResponse,
    pub metadata: MessageMetaData,
    pub container: ContentContainer,
}

/// The client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct XtaClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    management: Uri,
    send: Uri,
    msgbox: Uri,
    config: ClientConfig,
    destination: Arc<Destination>,
}

impl XtaClient {
    /// A client for `config`'s URLs: plain HTTP for `http://`, rustls for `https://`. Reads
    /// the TLS files now, so that a broken setting stops the start, not the first call.
    pub fn new(config: ClientConfig) -> Result<Self, XtaError> {
        let base = config.base_url.trim_end_matches('/');
        let endpoints = config.endpoints.clone().unwrap_or_else(|| Endpoints {
            management: format!("{base}/{}", Port::Management.name()),
            send: format!("{base}/{}", Port::SendXta.name()),
            msgbox: format!("{base}/{}", Port::MsgBox.name()),
        });
        let parse = |s: &str| -> Result<Uri, XtaError> {
            let uri = s.parse::<Uri>().map_err(|e| XtaError::Config(format!("'{s}' is not a URL: {e}")))?;
            match uri.scheme() {
                Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => Ok(uri),
                _ => Err(XtaError::Config(format!("'{s}' is not an http:// or https:// URL"))),
            }
        };
        let (management, send, msgbox) = (parse(&endpoints.management)?, parse(&endpoints.send)?, parse(&endpoints.msgbox)?);
        let https = [&management, &send, &msgbox].into_iter().find(|u| u.scheme() == Some(&Scheme::HTTPS));
        let tls = match (&config.tls, https) {
            (Some(tls), _) => tls.rustls_config()?,
            (None, Some(uri)) => return Err(XtaError::Config(format!("{uri} is https, but no CA to trust is configured (xta.ca_file)"))),
            // Plain HTTP only: the connector still wants a TLS configuration, which no URL
            // will use; it trusts nothing.
            (None, None) => rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| XtaError::Config(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        // https:// URLs go through it too, to the TLS layer on top.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let destination = Arc::new(Destination::new(config.breaker.clone()));
        Ok(XtaClient { http, management, send, msgbox, config, destination })
    }

    /// The server's limits and breaker, shared by the client's clones (for `/metrics`).
    pub fn destination(&self) -> &Arc<Destination> {
        &self.destination
    }

    fn endpoint(&self, port: Port) -> &Uri {
        match port {
            Port::Management => &self.management,
            Port::SendXta => &self.send,
            Port::MsgBox => &self.msgbox,
        }
    }

    /// Sends one request and reads its answer, once the server's breaker and its limit of
    /// calls in flight let it through (within `admission_wait`).
    pub async fn call(&self, request: &Request) -> Result<Response, XtaError> {
        let permit = self.destination.admit(self.config.admission_wait).await.map_err(|r| XtaError::BreakerOpen { retry_in: r.retry_in })?;
        let result = self.exchange(request).await;
        match &result {
            Err(e) if e.is_transient() => permit.failed(),
            _ => permit.succeeded(),
        }
        result
    }

    async fn exchange(&self, request: &Request) -> Result<Response, XtaError> {
        let op = request.operation();
        let uri = self.endpoint(op.port()).clone();
        let encoded = soap::write_request(request, &uri.to_string());
        let req = hyper::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, encoded.content_type)
            .body(Full::new(Bytes::from(encoded.body)))
            .map_err(|e| XtaError::Config(e.to_string()))?;
        let limits = self.config.limits;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| self.request_error(e))?;
            let status = resp.status();
            let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let declared = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
            if let Some(len) = declared.filter(|len| *len > limits.max_bytes) {
                return Err(XtaError::InvalidReply(XmlError::TooLarge { size: len, limit: limits.max_bytes }.into()));
            }
            let body = Limited::new(resp.into_body(), limits.max_bytes).collect().await.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    XtaError::InvalidReply(XmlError::TooLarge { size: limits.max_bytes + 1, limit: limits.max_bytes }.into())
                } else {
                    XtaError::Connection(format!("the answer broke off: {}", chain(e.as_ref())))
                }
            })?;
            Ok::<_, XtaError>((status, content_type, body.to_bytes()))
        };
        let timeout = self.config.response_timeout;
        let (status, content_type, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| XtaError::Timeout { phase: Phase::Response, millis: timeout.as_millis() })??;
        let soapish = content_type.as_deref().is_some_and(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("application/soap+xml") || ct.starts_with("multipart/related") || ct.starts_with("text/xml")
        });
        if !status.is_success() && !soapish {
            return Err(XtaError::Http { status: status.as_u16() });
        }
        match soap::read_response(op, content_type.as_deref(), &body, &limits) {
            Ok(Reply::Fault(fault)) => Err(XtaError::Fault(fault)),
            Ok(Reply::Ok(response)) if status.is_success() => Ok(response),
            Ok(Reply::Ok(_)) => Err(XtaError::Http { status: status.as_u16() }),
            Err(_) if !status.is_success() => Err(XtaError::Http { status: status.as_u16() }),
            Err(e) => Err(XtaError::InvalidReply(e)),
        }
    }

    fn unexpected(op: Operation, response: Response) -> XtaError {
        XtaError::UnexpectedReply { operation: op.name(), message: format!("{:?}", std::mem::discriminant(&response)) }
    }

    /// checkAccountActive: Ok when the server knows `author` as an active account.
    pub async fn check_account_active(&self, author: &Identifier) -> Result<(), XtaError> {
        match self.call(&Request::CheckAccountActive { author: author.clone() }).await? {
            Response::Empty => Ok(()),
            other => Err(Self::unexpected(Operation::CheckAccountActive, other)),
        }
    }

    /// lookupService for one reader and service.
    pub async fn lookup_service(&self, author: &Identifier, reader: &Identifier, service: &str) -> Result<LookupServiceResult, XtaError> {
        let request = Request::LookupService { author: author.clone(), lookups: vec![(reader.clone(), service.to_owned())] };
        match self.call(&request).await? {
            Response::LookupService(results) => results
                .into_iter()
                .find(|r| r.reader.value == reader.value && r.service == service)
                .ok_or_else(|| XtaError::UnexpectedReply { operation: "lookupService", message: "no result for the reader and service asked".into() }),
            other => Err(Self::unexpected(Operation::LookupService, other)),
        }
    }

    /// createMessageId: a MessageID the server reserved for the next message.
    pub async fn create_message_id(&self, author: &Identifier) -> Result<MessageId, XtaError> {
        match self.call(&Request::CreateMessageId { author: author.clone() }).await? {
            Response::MessageId(id) => Ok(id),
            other => Err(Self::unexpected(Operation::CreateMessageId, other)),
        }
    }

    /// sendMessage. Re-sending the same metadata (same MessageID) after a failure is safe.
    pub async fn send_message(&self, metadata: &MessageMetaData, container: &ContentContainer) -> Result<(), XtaError> {
        self.send_owned(metadata.clone(), container.clone()).await
    }

    /// sendMessage with the message handed over, not copied (the transmit stage: a 40 MB
    /// message is not held twice while it is encoded and sent).
    pub async fn send_owned(&self, metadata: MessageMetaData, container: ContentContainer) -> Result<(), XtaError> {
        let request = Request::SendMessage { metadata: Box::new(metadata), container };
        match self.call(&request).await? {
            Response::Empty => Ok(()),
            other => Err(Self::unexpected(Operation::SendMessage, other)),
        }
    }

    pub async fn get_transport_report(&self, author: &Identifier, message_id: &MessageId) -> Result<TransportReport, XtaError> {
        match self.call(&Request::GetTransportReport { author: author.clone(), message_id: message_id.clone() }).await? {
            Response::TransportReport(r) => Ok(*r),
            other => Err(Self::unexpected(Operation::GetTransportReport, other)),
        }
    }

    /// getStatusList: the metadata of the messages waiting in `reader`'s box.
    pub async fn get_status_list(&self, reader: &Identifier, max_items: Option<u32>) -> Result<(MsgBoxResponse, Vec<MessageMetaData>), XtaError> {
        match self.call(&Request::GetStatusList { author: reader.clone(), max_items }).await? {
            Response::StatusList { msgbox, entries } => Ok((msgbox, entries)),
            other => Err(Self::unexpected(Operation::GetStatusList, other)),
        }
    }

    /// getMessage: one message of `reader`'s box. It stays there until [`Self::close`].
    pub async fn get_message(&self, reader: &Identifier, message_id: &MessageId) -> Result<FetchedMessage, XtaError> {
        match self.call(&Request::GetMessage { author: reader.clone(), message_id: message_id.clone() }).await? {
            Response::Message { msgbox, metadata, container } => Ok(FetchedMessage { msgbox, metadata: *metadata, container }),
            other => Err(Self::unexpected(Operation::GetMessage, other)),
        }
    }

    /// close: the messages are stored durably; the server may drop them from the box.
    pub async fn close(&self, reader: &Identifier, request_id: &str, message_ids: &[MessageId]) -> Result<(), XtaError> {
        let request = Request::Close { author: reader.clone(), request_id: request_id.to_owned(), message_ids: message_ids.to_vec() };
        match self.call(&request).await? {
            Response::Empty => Ok(()),
            other => Err(Self::unexpected(Operation::Close, other)),
        }
    }
}

impl XtaClient {
    /// A failed request: a failed TLS handshake, a connect timeout, a refused connection, or
    /// a connection that broke.
    fn request_error(&self, e: hyper_util::client::legacy::Error) -> XtaError {
        if let Some(tls) = find_rustls_error(&e) {
            let presented = self.config.tls.as_ref().is_some_and(|t| t.identity.is_some());
            return XtaError::Tls(client_handshake_failure(tls, presented));
        }
        let text = chain(&e);
        let timed_out = {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut found = false;
            while let Some(s) = source {
                if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
                    found = true;
                }
                source = s.source();
            }
            found
        };
        if e.is_connect() && timed_out {
            return XtaError::Timeout { phase: Phase::Connect, millis: self.config.connect_timeout.as_millis() };
        }
        XtaError::Connection(text)
    }
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
