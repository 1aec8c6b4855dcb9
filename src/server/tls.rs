//! TLS on the listeners (`server.tls`): the certificate, its key and the optional client CA, read from PEM
//! files and read again when they change, so a rotated certificate (cert-manager, a Kubernetes Secret
//! volume) is served to new connections without a restart.
//!
//! [`ServerTls`] holds the current material; [`ServerTls::acceptor`] makes a `rustls` acceptor for one
//! listener (its own ALPN list: `h2` for gRPC, `http/1.1` for plain HTTP); [`TlsListener`] accepts TCP
//! connections on any `TcpListener`, completes each handshake on its own task (a slow or hostile client
//! never holds up the others) and yields only finished TLS connections. It is a `Stream` for tonic and an
//! `axum::serve::Listener` for axum, so any of our listeners can be wrapped.
//!
//! With `client_ca_file`, every client must present a certificate chaining to that CA (RFC 8446 §4.3.2):
//! no certificate, or one from another CA, fails the handshake. Files are checked for changes at most
//! every [`RECHECK`] during handshakes; a change that does not load (a certificate without its new key,
//! half written) keeps the previous material and is logged, and is tried again at the next check.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::{Problem, ServerTlsConfig};

/// How often, at most, the files are read again to look for a change. Defaults to 2 seconds.
pub const RECHECK: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is disconnected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const BACKLOG: usize = 128;

/// The TLS material of the listeners, reloaded when its files change.
#[derive(Debug)]
pub struct ServerTls {
    config: ServerTlsConfig,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Material>,
    next_check: Mutex<Instant>,
    recheck: Duration,
    /// The file contents that last failed to load: not parsed (nor logged) again until they change.
    rejected: Mutex<Option<[Vec<u8>; 3]>>,
    /// For `/metrics`: changed files loaded, changed files refused, handshakes that failed.
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    handshake_failures: AtomicU64,
}

/// One loaded set of files.
#[derive(Debug)]
struct Material {
    key: Arc<CertifiedKey>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The bytes each file held when loaded (certificate, key, client CA): a change is a difference.
    sources: [Vec<u8>; 3],
    /// The leaf certificate's SHA-256 fingerprint (hex), for the log.
    fingerprint: String,
    /// The leaf certificate's notAfter (Unix seconds), for `/metrics`.
    not_after: i64,
}

// === impl ServerTls ===

impl ServerTls {
    /// Reads and checks the files; every problem is reported with its field path
    /// (`server.tls.cert_file`, …).
    pub fn load(config: &ServerTlsConfig) -> Result<ServerTls, Vec<Problem>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let sources = read_sources(config)?;
        let material = Material::parse(config, &provider, sources)?;
        tracing::info!(
            tls.cert_file = %config.cert_file.display(),
            tls.fingerprint = %material.fingerprint,
            tls.client_auth = material.client_verifier.is_some(),
            "TLS certificate loaded"
        );
        Ok(ServerTls {
            config: config.clone(),
            provider,
            current: ArcSwap::from_pointee(material),
            next_check: Mutex::new(Instant::now() + RECHECK),
            recheck: RECHECK,
            rejected: Mutex::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
        })
    }

    /// The problems [`ServerTls::load`] would report (for `validate-config`).
    pub fn check(config: &ServerTlsConfig) -> Vec<Problem> {
        ServerTls::load(config).err().unwrap_or_default()
    }

    /// Checks the files for changes at most every `every` instead of [`RECHECK`].
    pub fn with_recheck(mut self, every: Duration) -> ServerTls {
        self.recheck = every;
        self.next_check = Mutex::new(Instant::now() + every);
        self
    }

    /// Whether clients must present a certificate (`client_ca_file` is set).
    pub fn requires_client_certificate(&self) -> bool {
        self.config.client_ca_file.is_some()
    }

    /// The SHA-256 fingerprint (hex) of the leaf certificate served now.
    pub fn fingerprint(&self) -> String {
        self.current.load().fingerprint.clone()
    }

    /// A handshake acceptor for one listener, offering `alpn` (e.g. `[b"h2"]` for gRPC). It always serves
    /// the current material. TLS 1.2 and 1.3 (the provider's defaults for both).
    pub fn acceptor(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(rustls::ALL_VERSIONS)?;
        let builder = if self.requires_client_certificate() {
            builder.with_client_cert_verifier(Arc::new(ClientCa(Arc::clone(self))))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(Certificate(Arc::clone(self))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Reads the files again if the last check is older than the recheck interval, and swaps in what
    /// they hold now if it changed and loads. Called on every handshake; cheap when not due.
    fn refresh(&self) {
        {
            let Ok(mut next) = self.next_check.try_lock() else {
                return; // another handshake is checking
            };
            let now = Instant::now();
            if now < *next {
                return;
            }
            *next = now + self.recheck;
        }
        let sources = match read_sources(&self.config) {
            Ok(sources) => sources,
            Err(problems) => return log_kept(&problems),
        };
        if sources == self.current.load().sources {
            return;
        }
        let Ok(mut rejected) = self.rejected.lock() else {
            return;
        };
        if rejected.as_ref() == Some(&sources) {
            return;
        }
        match Material::parse(&self.config, &self.provider, sources.clone()) {
            Ok(material) => {
                *rejected = None;
                tracing::info!(
                    tls.cert_file = %self.config.cert_file.display(),
                    tls.fingerprint = %material.fingerprint,
                    "TLS files changed: new connections get the new certificate"
                );
                self.current.store(Arc::new(material));
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(problems) => {
                log_kept(&problems);
                *rejected = Some(sources);
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl ServerTls {
    /// A [`TlsListener`] on `listener` offering `alpn`, whose failed handshakes are counted here.
    pub fn listen(
        self: &Arc<Self>,
        listener: TcpListener,
        alpn: &[&[u8]],
    ) -> io::Result<TlsListener> {
        let acceptor = self.acceptor(alpn).map_err(io::Error::other)?;
        TlsListener::start(listener, acceptor, Some(Arc::clone(self)))
    }

    /// The TLS series of `/metrics`.
    pub fn metrics(&self) -> crate::metrics::TlsSnapshot {
        crate::metrics::TlsSnapshot {
            not_after: self.current.load().not_after,
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
        }
    }
}

fn log_kept(problems: &[Problem]) {
    for problem in problems {
        tracing::warn!(
            config.field = %problem.path,
            "TLS files changed but do not load, keeping the previous ones: {}",
            problem.message
        );
    }
}

fn read_sources(config: &ServerTlsConfig) -> Result<[Vec<u8>; 3], Vec<Problem>> {
    let mut problems = Vec::new();
    let mut read = |path: &Path, field: &str| {
        std::fs::read(path)
            .map_err(|e| {
                problems.push(Problem {
                    path: format!("server.tls.{field}"),
                    message: format!("cannot read `{}`: {e}", path.display()),
                })
            })
            .unwrap_or_default()
    };
    let cert = read(&config.cert_file, "cert_file");
    let key = read(&config.key_file, "key_file");
    let ca = match &config.client_ca_file {
        Some(path) => read(path, "client_ca_file"),
        None => Vec::new(),
    };
    if problems.is_empty() {
        Ok([cert, key, ca])
    } else {
        Err(problems)
    }
}

// === impl Material ===

impl Material {
    fn parse(
        config: &ServerTlsConfig,
        provider: &Arc<CryptoProvider>,
        sources: [Vec<u8>; 3],
    ) -> Result<Material, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                path: format!("server.tls.{field}"),
                message,
            })
        };
        let [cert_pem, key_pem, ca_pem] = &sources;
        let certs = certificates(cert_pem)
            .map_err(|e| problem("cert_file", e))
            .ok();
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| {
                problem(
                    "key_file",
                    format!("no usable private key (PEM: PKCS#8, PKCS#1 or SEC1): {e}"),
                )
            })
            .ok();
        let client_verifier = match &config.client_ca_file {
            None => None,
            Some(_) => client_verifier(ca_pem, provider)
                .map_err(|e| problem("client_ca_file", e))
                .ok(),
        };
        let key = match (certs, key) {
            (Some(certs), Some(key)) => {
                let fingerprint = hex(&aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    certs[0].as_ref(),
                ));
                let not_after = x509_parser::parse_x509_certificate(certs[0].as_ref())
                    .map(|(_, cert)| cert.validity().not_after.timestamp())
                    .unwrap_or(0);
                match CertifiedKey::from_der(certs, key, provider) {
                    Ok(key) => Some((key, fingerprint, not_after)),
                    Err(rustls::Error::InconsistentKeys(_)) => {
                        problem(
                            "key_file",
                            "does not match the certificate in server.tls.cert_file".to_owned(),
                        );
                        None
                    }
                    Err(e) => {
                        problem("key_file", format!("cannot be used: {e}"));
                        None
                    }
                }
            }
            _ => None,
        };
        match (key, problems.is_empty()) {
            (Some((key, fingerprint, not_after)), true) => Ok(Material {
                key: Arc::new(key),
                client_verifier: client_verifier.flatten(),
                sources,
                fingerprint,
                not_after,
            }),
            _ => Err(problems),
        }
    }
}

/// Every certificate of a PEM file, in order; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

fn client_verifier(
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map(Some)
        .map_err(|e| format!("cannot verify client certificates with it: {e}"))
}

fn hex(digest: &aws_lc_rs::digest::Digest) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the current certificate; every handshake gives the files a chance to be read again.
#[derive(Debug)]
struct Certificate(Arc<ServerTls>);

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.refresh();
        Some(Arc::clone(&self.0.current.load().key))
    }
}

/// Verifies client certificates against the current client CA; required, never optional.
#[derive(Debug)]
struct ClientCa(Arc<ServerTls>);

impl ClientCa {
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.0
            .current
            .load()
            .client_verifier
            .clone()
            .ok_or_else(|| rustls::Error::General("no client CA loaded".to_owned()))
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the CA can change while this verifier lives, and an empty list lets the client send the
    /// certificate it has (RFC 8446 §4.2.4 is optional).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// A listener whose connections have completed a TLS handshake.
pub struct TlsListener {
    connections: mpsc::Receiver<TlsConnection>,
    local_addr: SocketAddr,
}

/// One accepted TLS connection, with the TCP peer's address.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

// === impl TlsListener ===

impl TlsListener {
    /// Accepts on `listener` until this `TlsListener` is dropped; each handshake runs on its own task and
    /// a failed one is logged (peer address, TLS error) and dropped.
    pub fn new(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> io::Result<TlsListener> {
        TlsListener::start(listener, acceptor, None)
    }

    fn start(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        counted_by: Option<Arc<ServerTls>>,
    ) -> io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, connections) = mpsc::channel(BACKLOG);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: wait instead of spinning.
                            tracing::warn!(error = %e, "cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // Nagle and delayed ACKs would add ~40 ms to every answer.
                let _ = tcp.set_nodelay(true);
                let info = tcp.connect_info();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let counted_by = counted_by.clone();
                tokio::spawn(async move {
                    let failed = || {
                        if let Some(tls) = &counted_by {
                            tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(TlsConnection { stream, info }).await;
                        }
                        Ok(Err(e)) => {
                            failed();
                            tracing::info!(tls.peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            failed();
                            tracing::info!(tls.peer = %peer, "TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            connections,
            local_addr,
        })
    }
}

impl futures_util::Stream for TlsListener {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => {
                let addr = connection.info.remote_addr().unwrap_or(self.local_addr);
                (connection, addr)
            }
            // The accepting task only stops once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

// === impl TlsConnection ===

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
