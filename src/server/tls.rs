//! HTTPS on the listening port: the certificate and key from
//! `TLS_CERT_FILE` and `TLS_KEY_FILE`, offered with `h2` and `http/1.1` by
//! ALPN, and renewed without a restart.
//!
//! Browsers speak HTTP/2 only over TLS, and only HTTP/2 lifts their limit of
//! six open streams per site. Certificate managers renew by writing new files
//! (usually renaming them over the old ones), so the files are read again
//! every [`WATCH_EVERY`]: a pair that loads becomes the certificate of every
//! later handshake, while connections already open keep theirs; a pair that
//! does not load is reported and the previous certificate stays. Files are
//! compared by content, which sees a rename, a rewrite in place and a copy
//! with the old timestamp alike; they are small, and a certificate larger
//! than [`MAX_FILE_BYTES`] is refused rather than read.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::lock::lock;

/// How often the files are read again to notice a renewal.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A certificate chain or key file is a few KiB; anything this large is
/// the wrong file, not something to hold in memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum File {
    Cert,
    Key,
}

impl File {
    /// The setting that names this file.
    pub(crate) fn variable(self) -> &'static str {
        match self {
            File::Cert => "TLS_CERT_FILE",
            File::Key => "TLS_KEY_FILE",
        }
    }
}

/// Why the files do not make a certificate; never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadError {
    pub(crate) file: File,
    pub(crate) message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.file.variable(), self.message)
    }
}

impl std::error::Error for LoadError {}

/// The two files' bytes as last read.
#[derive(Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Where the certificate and key are.
struct Source {
    cert: PathBuf,
    key: PathBuf,
}

impl Source {
    fn read(&self) -> Result<Contents, LoadError> {
        Ok(Contents {
            cert: read_capped(&self.cert, File::Cert)?,
            key: read_capped(&self.key, File::Key)?,
        })
    }
}

fn read_capped(path: &Path, file: File) -> Result<Vec<u8>, LoadError> {
    let fail = |message: String| LoadError { file, message };
    let opened =
        std::fs::File::open(path).map_err(|error| fail(cannot_read(path, &error.to_string())))?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| fail(cannot_read(path, &error.to_string())))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "`{}` is larger than {MAX_FILE_BYTES} bytes: not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

fn cannot_read(path: &Path, why: &str) -> String {
    format!("cannot read `{}`: {why}", path.display())
}

/// The certificate the two files make, or why they make none.
fn certified(contents: &Contents, provider: &CryptoProvider) -> Result<CertifiedKey, LoadError> {
    let cert_error = |message: String| LoadError {
        file: File::Cert,
        message,
    };
    let key_error = |message: String| LoadError {
        file: File::Key,
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&contents.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| cert_error(pem_problem(&error)))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|error| {
        key_error(match error {
            pem::Error::NoItemsFound => "no unencrypted PEM private key in it (PKCS#8 \
                `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`)"
                .to_owned(),
            other => pem_problem(&other),
        })
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| key_error("not a usable RSA, ECDSA or Ed25519 private key".to_owned()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(key_error(
                "this key does not belong to the first certificate of TLS_CERT_FILE".to_owned(),
            ))
        }
        Err(error) => Err(cert_error(format!(
            "the first certificate cannot be parsed: {error}"
        ))),
    }
}

/// What is wrong with a PEM file, in words that never quote its contents.
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM section has no -----END line: the file is cut short".to_owned()
        }
        pem::Error::IllegalSectionStart { .. } => "a malformed -----BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        pem::Error::SectionTooLarge => "a PEM section is too large".to_owned(),
        _ => "not a valid PEM file".to_owned(),
    }
}

/// Hands each handshake the certificate in force when it starts.
#[derive(Debug)]
struct Current(Mutex<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&lock(&self.0)))
    }
}

/// The TLS side of the listener: what accepts handshakes, and what keeps
/// its certificate current. Loaded once, when the configuration is parsed,
/// so that what was checked at start-up is what is served.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    source: Source,
    /// What the files held at start-up.
    loaded: Contents,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.source.cert)
            .field("key", &self.source.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks both files, and sets up ALPN for HTTP/2 and HTTP/1.1.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Self, LoadError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let source = Source {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let loaded = source.read()?;
        let current = Arc::new(Current(Mutex::new(Arc::new(certified(
            &loaded, &provider,
        )?))));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| LoadError {
                file: File::Cert,
                message: format!("no TLS version to offer: {error}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            source,
            loaded,
            provider,
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the files every [`WATCH_EVERY`] until `stop`, and puts a
    /// changed pair in force once it loads.
    pub(crate) async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = self.loaded.clone();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Reported once, not every second, while a file stays unreadable.
        let mut unreadable: Option<LoadError> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let reading = tokio::task::spawn_blocking({
                let tls = Arc::clone(&self);
                move || tls.source.read()
            });
            let contents = match reading.await {
                Ok(Ok(contents)) => contents,
                Ok(Err(error)) => {
                    if unreadable.as_ref() != Some(&error) {
                        tracing::warn!(%error, "keeping the current TLS certificate");
                        unreadable = Some(error);
                    }
                    continue;
                }
                Err(_) => continue,
            };
            unreadable = None;
            if contents == seen {
                continue;
            }
            match certified(&contents, &self.provider) {
                Ok(renewed) => {
                    *lock(&self.current.0) = Arc::new(renewed);
                    tracing::info!("TLS certificate renewed: new connections get the new one");
                }
                // A manager that replaces the two files one after the other
                // passes through a mismatched pair; the next change heals it.
                Err(error) => tracing::warn!(%error, "keeping the current TLS certificate"),
            }
            seen = contents;
        }
    }
}
