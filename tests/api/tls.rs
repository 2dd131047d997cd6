//! HTTPS served directly: certificates made at test time by a throwaway
//! certificate authority (a root and an intermediate, so the served chain is
//! what lets clients in), real TLS clients (reqwest, rustls, Chromium), and
//! what a person or an operator sees: HTTP/2 by ALPN, tokens arriving one by
//! one, twelve streams at once in a browser, a renewed certificate picked up
//! without a restart, and clear refusals of what is not TLS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::Version;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::browser::Browser;
use crate::cli::{Server, binary, output, scratch_dir};
use crate::fake_upstream::{FakeUpstream, Reply};
use crate::helpers::{TestApp, Transcript, spawn_app_with};

/// Every wait in these tests; generous because CI is noisy.
const WAIT: Duration = Duration::from_secs(20);

/// A paced answer: long enough to watch it arrive token by token.
pub(crate) fn paced_answer(count: usize, gap: Duration) -> (Reply, String) {
    let tokens: Vec<String> = (1..=count).map(|n| format!("t{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    (Reply::tokens(&tokens).pace(gap), tokens.concat())
}

// ---- The tests ----

#[tokio::test]
async fn a_chat_streams_token_by_token_over_https_with_http2_and_with_http1() {
    // Arrange
    let pki = Pki::new("both-versions");
    let app = pki.spawn_app(&[]).await;
    let cases = [
        (pki.client(Alpn::Negotiated), Version::HTTP_2),
        (pki.client(Alpn::Http1Only), Version::HTTP_11),
    ];
    for (client, version) in cases {
        let (reply, full) = paced_answer(10, Duration::from_millis(150));
        app.upstream.push(reply);

        // Act
        let response = post_chat(&client, &app).await;

        // Assert
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        let (transcript, streamed) = Transcript::read_as_it_streams(response, &app.upstream).await;
        assert!(
            streamed,
            "{version:?}: the first token arrived only after the upstream had finished"
        );
        assert_eq!(transcript.text_of("token"), full, "{version:?}");
        assert!(transcript.ends_with_done(), "{version:?}");
        if version == Version::HTTP_2 {
            for name in ["connection", "keep-alive", "transfer-encoding"] {
                assert_eq!(
                    transcript.header(name),
                    None,
                    "{name} on an HTTP/2 response"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_demo_page_over_https_runs_twelve_streams_at_once_on_http2() {
    // Arrange: each answer takes about 4 s, so over HTTP/1.1 (six
    // connections at most) the seventh could only start after the first ended.
    let pki = Pki::new("browser");
    let app = pki.spawn_app(&[]).await;
    let (reply, full) = paced_answer(10, Duration::from_millis(400));
    app.upstream.set_default(reply);
    let browser = Browser::launch_with(&["ignore-certificate-errors"]).await;
    let page = browser.open(&app.url("/")).await;

    // Act
    let _: Value = page
        .eval(
            "(() => {
               window.streams = [];
               const start = performance.now();
               for (let i = 0; i < 12; i++) {
                 const stream = { firstToken: null, finished: null, text: '', protocol: null };
                 window.streams.push(stream);
                 fetch('/api/chat', {
                   method: 'POST',
                   headers: { 'content-type': 'application/json' },
                   body: JSON.stringify({ prompt: 'stream ' + i }),
                 }).then(async (response) => {
                   const reader = response.body.getReader();
                   const decoder = new TextDecoder();
                   for (;;) {
                     const { done, value } = await reader.read();
                     if (done) break;
                     stream.text += decoder.decode(value, { stream: true });
                     if (stream.firstToken === null && stream.text.includes('\"type\":\"token\"')) {
                       stream.firstToken = performance.now() - start;
                     }
                   }
                   stream.finished = performance.now() - start;
                 });
               }
               return null;
             })()",
        )
        .await;
    let streams: Vec<Value> = page
        .wait_for(
            "all twelve streams to finish",
            "window.streams.every((s) => s.finished !== null) ? window.streams : null",
        )
        .await;
    let protocol: String = page
        .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        .await;
    let fetch_protocols: Vec<String> = page
        .eval(
            "performance.getEntriesByType('resource')
               .filter((entry) => entry.name.endsWith('/api/chat'))
               .map((entry) => entry.nextHopProtocol)",
        )
        .await;

    // Assert
    assert_eq!(protocol, "h2", "the page itself came over HTTP/2");
    assert_eq!(
        fetch_protocols,
        vec!["h2"; 12],
        "every stream went over HTTP/2"
    );
    let time = |stream: &Value, key: &str| stream[key].as_f64().unwrap_or(f64::NAN);
    let last_first_token = streams
        .iter()
        .map(|stream| time(stream, "firstToken"))
        .fold(f64::MIN, f64::max);
    let first_finish = streams
        .iter()
        .map(|stream| time(stream, "finished"))
        .fold(f64::MAX, f64::min);
    let times: Vec<(f64, f64)> = streams
        .iter()
        .map(|stream| (time(stream, "firstToken"), time(stream, "finished")))
        .collect();
    assert!(
        last_first_token < first_finish,
        "every stream should have tokens before the first one finishes; (first token, finished) in ms: {times:?}"
    );
    for stream in &streams {
        let text = stream["text"].as_str().unwrap_or_default();
        let tokens: String = crate::helpers::parse_frames(text)
            .iter()
            .filter_map(crate::helpers::Frame::json)
            .filter(|event| event["type"] == "token")
            .filter_map(|event| event["token"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(tokens, full);
    }
    browser.close().await;
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_while_an_open_stream_completes() {
    // Arrange
    let pki = Pki::new("renewal");
    let app = pki.spawn_app(&[]).await;
    let (reply, full) = paced_answer(40, Duration::from_millis(200));
    app.upstream.push(reply);
    let open_client = pki.client(Alpn::Negotiated);
    let open_stream = post_chat(&open_client, &app).await;
    let old_certificate = served_certificate(&open_stream);
    assert_eq!(old_certificate, pki.leaf_der(), "the first certificate");

    // Act: a certificate manager writes the new pair beside the old one and
    // renames it over.
    let renewed = pki.renew();
    let renewed_at = Instant::now();
    let seen = loop {
        let probe = pki
            .client(Alpn::Negotiated)
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("a new connection during the renewal: {error}"));
        if served_certificate(&probe) == renewed {
            break renewed_at.elapsed();
        }
        assert!(
            renewed_at.elapsed() < WAIT,
            "new connections still get the old certificate after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Assert
    assert!(
        app.upstream.bodies_open() > 0,
        "the open stream should still be streaming when the renewal is seen ({seen:?})"
    );
    let transcript = Transcript::read(open_stream).await;
    assert_eq!(
        transcript.text_of("token"),
        full,
        "the open stream is untouched"
    );
    assert!(transcript.ends_with_done());
}

#[tokio::test]
async fn a_renewal_that_does_not_load_keeps_the_old_certificate_and_says_why() {
    // Arrange: the real binary, for its log.
    let pki = Pki::new("bad-renewal");
    let upstream = FakeUpstream::start().await;
    let server = Server::start(
        binary()
            .current_dir(&pki.dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("TLS_CERT_FILE", &pki.cert_file)
            .env("TLS_KEY_FILE", &pki.key_file),
    );
    let addr = server.addr();
    let key_pem = std::fs::read_to_string(&pki.key_file).unwrap_or_default();
    let original = pki.leaf_der();

    // Act: a certificate cut short is renamed over the good one.
    let good = std::fs::read_to_string(&pki.cert_file).unwrap_or_default();
    replace_by_rename(&pki.cert_file, &good[..good.len() / 4]);
    let warning = server.wait_for("keeping the current TLS certificate");
    let response = pki
        .client(Alpn::Negotiated)
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("a connection after the bad renewal: {error}"));

    // Assert
    assert!(warning.contains("TLS_CERT_FILE"), "{warning}");
    assert!(warning.contains("END"), "the warning says why: {warning}");
    assert_eq!(response.status(), 200);
    assert_eq!(served_certificate(&response), original);
    let key_line = key_pem.lines().nth(1).unwrap_or("-");
    for line in std::iter::once(warning).chain(server.logged()) {
        assert!(!line.contains(key_line), "key material logged: {line}");
    }
}

#[tokio::test]
async fn plain_http_to_the_https_port_is_refused_and_serving_goes_on() {
    // Arrange
    let pki = Pki::new("plain");
    let app = pki.spawn_app(&[]).await;

    // Act
    let plain = crate::helpers::http_client()
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await
        .unwrap_or_else(|error| panic!("plain HTTP to the HTTPS port: {error}"));
    let status = plain.status();
    let body = crate::helpers::json_body(plain).await;
    let mut garbage = TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    let _ = garbage.write_all(&[0u8; 4096]).await;
    let after = pki
        .client(Alpn::Negotiated)
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("HTTPS after plain HTTP: {error}"));

    // Assert
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("https://")),
        "{body}"
    );
    assert_eq!(after.status(), 200);
    assert_eq!(after.version(), Version::HTTP_2);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed_after_the_request_timeout() {
    // Arrange
    let pki = Pki::new("handshake-deadline");
    let app = pki.spawn_app(&[("REQUEST_TIMEOUT_SECS", "1")]).await;
    // Silent, and a ClientHello that starts and never ends.
    let silent = TcpStream::connect(app.addr).await;
    let stalled = TcpStream::connect(app.addr).await;
    let (Ok(mut silent), Ok(mut stalled)) = (silent, stalled) else {
        panic!("connect to {}", app.addr);
    };
    let _ = stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await;
    let started = Instant::now();

    // Act
    let silent_closed = closed_within(&mut silent, WAIT).await;
    let stalled_closed = closed_within(&mut stalled, WAIT).await;

    // Assert
    assert!(silent_closed, "a silent client was never closed");
    assert!(stalled_closed, "a stalled handshake was never closed");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before its REQUEST_TIMEOUT_SECS"
    );
    let response = pki
        .client(Alpn::Negotiated)
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("HTTPS after the stalled clients: {error}"));
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    // Arrange: no request open would only close it after 60 s.
    let pki = Pki::new("pings");
    let app = pki
        .spawn_app(&[
            ("REQUEST_TIMEOUT_SECS", "60"),
            ("HTTP2_PING_INTERVAL_SECS", "0.5"),
            ("HTTP2_PING_TIMEOUT_SECS", "0.5"),
        ])
        .await;
    let mut tls = pki.raw_h2_connection(app.addr).await;

    // Act: the connection preface and our settings, then silence.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    tls.write_all(preface)
        .await
        .unwrap_or_else(|error| panic!("write the preface: {error}"));
    let mut read = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        while matches!(tls.read(&mut read).await, Ok(n) if n > 0) {}
    })
    .await
    .is_ok();

    // Assert
    assert!(
        closed,
        "a peer that never acknowledged a ping stayed connected for {WAIT:?}"
    );
}

#[tokio::test]
async fn the_connection_limit_counts_tls_connections() {
    // Arrange
    let pki = Pki::new("limit");
    let app = pki.spawn_app(&[("MAX_CONNECTIONS", "1")]).await;
    let holder = TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));

    // Act
    let refused = pki
        .client(Alpn::Negotiated)
        .get(app.url("/healthz"))
        .send()
        .await;
    drop(holder);
    let deadline = Instant::now() + WAIT;
    let admitted = loop {
        let attempt = pki
            .client(Alpn::Negotiated)
            .get(app.url("/healthz"))
            .send()
            .await;
        match attempt {
            Ok(response) => break response,
            Err(error) if Instant::now() > deadline => panic!("never admitted again: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };

    // Assert
    assert!(
        refused.is_err(),
        "a second connection over MAX_CONNECTIONS=1"
    );
    assert_eq!(admitted.status(), 200);
}

#[tokio::test]
async fn a_stream_over_https_finishes_during_graceful_shutdown() {
    // Arrange
    let pki = Pki::new("shutdown");
    let mut app = pki.spawn_app(&[("SHUTDOWN_GRACE_SECS", "10")]).await;
    let (reply, full) = paced_answer(10, Duration::from_millis(150));
    app.upstream.push(reply);
    let response = post_chat(&pki.client(Alpn::Negotiated), &app).await;
    assert_eq!(response.version(), Version::HTTP_2);

    // Act
    app.begin_shutdown();
    let transcript = Transcript::read(response).await;

    // Assert
    assert_eq!(transcript.text_of("token"), full);
    assert!(transcript.ends_with_done());
    assert!(
        app.stopped(WAIT).await,
        "the server stopped after the stream"
    );
}

#[tokio::test]
async fn rsa_and_ecdsa_keys_load_as_pkcs8_pkcs1_and_sec1() {
    for format in [
        KeyFormat::EcdsaPkcs8,
        KeyFormat::EcdsaSec1,
        KeyFormat::RsaPkcs8,
        KeyFormat::RsaPkcs1,
    ] {
        // Arrange
        let pki = Pki::with_key(&format!("{format:?}"), format);
        let marker = format.pem_label();
        let key_pem = std::fs::read_to_string(&pki.key_file).unwrap_or_default();
        assert!(key_pem.contains(marker), "{format:?}: {key_pem:.40}");
        let app = pki.spawn_app(&[]).await;

        // Act
        let response = pki
            .client(Alpn::Negotiated)
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{format:?}: {error}"));

        // Assert
        assert_eq!(response.status(), 200, "{format:?}");
        assert_eq!(served_certificate(&response), pki.leaf_der(), "{format:?}");
    }
}

#[test]
fn a_bad_tls_setting_stops_the_server_naming_the_variable() {
    let pki = Pki::new("bad-files");
    let dir = pki.dir.as_path();
    let (cert, key) = (pki.cert_file.as_path(), pki.key_file.as_path());
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap_or_else(|error| panic!("{error}"));
    let other = Pki::new("bad-files-other");
    let missing = dir.join("missing.pem");
    let cases: [(&str, &[(&str, &Path)]); 6] = [
        ("TLS_KEY_FILE", &[("TLS_CERT_FILE", cert)]),
        ("TLS_CERT_FILE", &[("TLS_KEY_FILE", key)]),
        (
            "TLS_CERT_FILE",
            &[("TLS_CERT_FILE", &missing), ("TLS_KEY_FILE", key)],
        ),
        (
            "TLS_CERT_FILE",
            &[("TLS_CERT_FILE", &garbage), ("TLS_KEY_FILE", key)],
        ),
        (
            "TLS_KEY_FILE",
            &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", dir)],
        ),
        (
            "TLS_KEY_FILE",
            &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", &other.key_file)],
        ),
    ];
    for (named, settings) in cases {
        let mut command = binary();
        command.current_dir(dir).env("LISTEN_ADDR", "127.0.0.1:0");
        for (variable, path) in settings {
            command.env(variable, path);
        }

        let (ok, text) = output(&mut command);

        assert!(
            !ok && text.contains(&format!("invalid {named}")),
            "{settings:?} should stop the server naming {named}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}

// ---- Clients ----

async fn post_chat(client: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    client
        .post(app.url("/api/chat"))
        .header("content-type", "application/json")
        .body(json!({ "prompt": "hello" }).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/chat over HTTPS: {error}"))
}

/// The DER of the certificate the server presented on this response's
/// connection.
fn served_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| panic!("no TLS information on the response"))
}

/// Whether the server closes `tcp` (end of stream or reset) within `bound`.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> bool {
    let mut read = [0u8; 1024];
    tokio::time::timeout(bound, async {
        while matches!(tcp.read(&mut read).await, Ok(n) if n > 0) {}
    })
    .await
    .is_ok()
}

/// Which protocols a client offers by ALPN.
#[derive(Clone, Copy)]
pub(crate) enum Alpn {
    /// `h2` and `http/1.1`, as browsers do.
    Negotiated,
    Http1Only,
}

// ---- Certificates ----

/// How the server's private key is written.
#[derive(Debug, Clone, Copy)]
enum KeyFormat {
    EcdsaPkcs8,
    EcdsaSec1,
    RsaPkcs8,
    RsaPkcs1,
}

impl KeyFormat {
    fn pem_label(self) -> &'static str {
        match self {
            KeyFormat::EcdsaPkcs8 | KeyFormat::RsaPkcs8 => "BEGIN PRIVATE KEY",
            KeyFormat::EcdsaSec1 => "BEGIN EC PRIVATE KEY",
            KeyFormat::RsaPkcs1 => "BEGIN RSA PRIVATE KEY",
        }
    }

    /// A new key pair as rcgen signs with it, and its PEM in this format.
    /// ring cannot make RSA keys, and rcgen writes PKCS#8 only, so OpenSSL
    /// makes the RSA key and rewrites keys in the older formats.
    fn generate(self, dir: &Path) -> (KeyPair, String) {
        let pkcs8 = match self {
            KeyFormat::EcdsaPkcs8 | KeyFormat::EcdsaSec1 => KeyPair::generate()
                .unwrap_or_else(|error| panic!("ECDSA key: {error}"))
                .serialize_pem(),
            KeyFormat::RsaPkcs8 | KeyFormat::RsaPkcs1 => openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ],
                None,
            ),
        };
        let key = KeyPair::from_pem(&pkcs8).unwrap_or_else(|error| panic!("load key: {error}"));
        let pem = match self {
            KeyFormat::EcdsaPkcs8 | KeyFormat::RsaPkcs8 => pkcs8,
            KeyFormat::EcdsaSec1 => openssl(dir, &["ec"], Some(&pkcs8)),
            KeyFormat::RsaPkcs1 => openssl(dir, &["rsa", "-traditional"], Some(&pkcs8)),
        };
        (key, pem)
    }
}

/// Runs `openssl` with `input` as a key file, returning what it prints.
fn openssl(dir: &Path, args: &[&str], input: Option<&str>) -> String {
    let mut command = Command::new("openssl");
    command.args(args);
    if let Some(input) = input {
        let path = dir.join("openssl-input.pem");
        std::fs::write(&path, input).unwrap_or_else(|error| panic!("{error}"));
        command.arg("-in").arg(path);
    }
    let (ok, text) = output(&mut command);
    assert!(
        ok,
        "openssl {args:?} failed (scripts/setup.sh installs it): {text}"
    );
    // `output` joins stdout and stderr; OpenSSL notes go to stderr.
    let start = text.find("-----BEGIN").unwrap_or(0);
    let end = text
        .rfind("-----\n")
        .map_or(text.len(), |end| end + "-----\n".len());
    text[start..end].to_owned()
}

/// A certificate authority made for one test, the certificate and key files
/// it issued, and clients that trust only its root.
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    format: KeyFormat,
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        Self::with_key(name, KeyFormat::EcdsaPkcs8)
    }

    fn with_key(name: &str, format: KeyFormat) -> Self {
        let dir = scratch_dir(&format!("tls-{name}"));
        let authority = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new())
                .unwrap_or_else(|error| panic!("{error}"));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap_or_else(|error| panic!("{error}"));
            (params, key)
        };
        let (params, key) = authority("tokenrelay test root");
        let root = CertifiedIssuer::self_signed(params, key)
            .unwrap_or_else(|error| panic!("root: {error}"));
        let (params, key) = authority("tokenrelay test intermediate");
        let intermediate = CertifiedIssuer::signed_by(params, key, &root)
            .unwrap_or_else(|error| panic!("intermediate: {error}"));
        let pki = Pki {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            dir,
            root,
            intermediate,
            format,
        };
        let (chain, key) = pki.issue();
        std::fs::write(&pki.cert_file, chain).unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(&pki.key_file, key).unwrap_or_else(|error| panic!("{error}"));
        pki
    }

    /// A new leaf for 127.0.0.1: its chain (leaf, then intermediate) and
    /// key, as PEM.
    fn issue(&self) -> (String, String) {
        let (key, key_pem) = self.format.generate(&self.dir);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap_or_else(|error| panic!("{error}"));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let leaf = params
            .signed_by(&key, &self.intermediate)
            .unwrap_or_else(|error| panic!("leaf: {error}"));
        (
            format!("{}{}", leaf.pem(), self.intermediate.pem()),
            key_pem,
        )
    }

    /// The leaf certificate in the certificate file now.
    fn leaf_der(&self) -> Vec<u8> {
        let pem = std::fs::read(&self.cert_file).unwrap_or_else(|error| panic!("{error}"));
        rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .and_then(Result::ok)
            .map(|der| der.to_vec())
            .unwrap_or_else(|| panic!("no certificate in {}", self.cert_file.display()))
    }

    /// Issues a new pair and renames it over the files, key first, as a
    /// certificate manager does; returns the new leaf.
    fn renew(&self) -> Vec<u8> {
        let (chain, key) = self.issue();
        replace_by_rename(&self.key_file, &key);
        replace_by_rename(&self.cert_file, &chain);
        self.leaf_der()
    }

    /// A proxy serving HTTPS with these files, in front of a fake upstream.
    async fn spawn_app(&self, settings: &[(&str, &str)]) -> TestApp {
        let cert = self.cert_file.to_string_lossy().into_owned();
        let key = self.key_file.to_string_lossy().into_owned();
        let tls = [
            ("TLS_CERT_FILE", cert.as_str()),
            ("TLS_KEY_FILE", key.as_str()),
        ];
        let mut app = spawn_app_with(&[&tls[..], settings].concat()).await;
        app.client = self.client(Alpn::Negotiated);
        app
    }

    /// A client that trusts only this root and opens a new connection.
    pub(crate) fn client(&self, alpn: Alpn) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = reqwest::Certificate::from_pem(self.root.pem().as_bytes())
            .unwrap_or_else(|error| panic!("root certificate: {error}"));
        let builder = reqwest::Client::builder()
            .tls_certs_only([root])
            .tls_info(true);
        let builder = match alpn {
            Alpn::Negotiated => builder,
            Alpn::Http1Only => builder.http1_only(),
        };
        builder
            .build()
            .unwrap_or_else(|error| panic!("HTTPS client: {error}"))
    }

    /// A TLS connection that agreed on `h2` and has sent nothing yet.
    async fn raw_h2_connection(
        &self,
        addr: std::net::SocketAddr,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.root.der().clone())
            .unwrap_or_else(|error| panic!("root certificate: {error}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|error| panic!("{error}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|error| panic!("connect: {error}"));
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
            .await
            .unwrap_or_else(|error| panic!("handshake: {error}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls
    }
}

/// Writes `contents` beside `path` and renames it over `path`.
fn replace_by_rename(path: &Path, contents: &str) {
    let fresh = path.with_extension("new");
    std::fs::write(&fresh, contents).unwrap_or_else(|error| panic!("{error}"));
    std::fs::rename(&fresh, path).unwrap_or_else(|error| panic!("{error}"));
}
