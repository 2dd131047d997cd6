//! The reverse-proxy deployment of the README: Debian's nginx, running the
//! committed `docs/deploy/nginx.conf` in front of a real tokenrelay. A proxy
//! that buffers would deliver the whole answer in one lump at the end, so
//! the test watches the fake upstream: the client must see the first token
//! while the upstream is still sending.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Version;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{Transcript, spawn_app};
use crate::tls::{Alpn, Pki, paced_answer};

/// Where Debian's `nginx` package puts the server.
const NGINX: &str = "/usr/sbin/nginx";

/// The configuration as committed.
const CONF: &str = include_str!("../../docs/deploy/nginx.conf");

/// Every wait on nginx; generous because CI is noisy.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn behind_nginx_tokens_arrive_one_by_one_over_http2() {
    // Arrange
    let app = spawn_app().await;
    let (reply, full) = paced_answer(10, Duration::from_millis(150));
    app.upstream.push(reply);
    let pki = Pki::new("nginx");
    let nginx = Nginx::start(app.addr, &pki).await;

    // Act
    let response = pki
        .client(Alpn::Negotiated)
        .post(nginx.url("/api/chat"))
        .header("content-type", "application/json")
        .body(json!({ "prompt": "hello" }).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/chat through nginx: {error}"));

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2, "browsers get HTTP/2");
    let (transcript, streamed) = Transcript::read_as_it_streams(response, &app.upstream).await;
    assert!(
        streamed,
        "the first token arrived only after the upstream had finished: nginx buffered the answer"
    );
    assert_eq!(transcript.text_of("token"), full);
    assert!(transcript.ends_with_done());
    let forwarded = app.upstream.requests();
    assert_eq!(forwarded.len(), 1, "one generation upstream");
}

/// nginx in the foreground, with its pid, logs and temporary files in a
/// directory of its own; killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Runs `docs/deploy/nginx.conf` on a free loopback port, in front of
    /// `tokenrelay`, with the certificate of `pki`.
    async fn start(tokenrelay: SocketAddr, pki: &Pki) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: run scripts/setup.sh to install nginx for the reverse-proxy test"
        );
        let port = free_port().await;
        let dir = pki.dir.join("nginx");
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, configure(&dir, port, tokenrelay, pki))
            .unwrap_or_else(|error| panic!("{error}"));
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {NGINX}: {error}"));
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_until_listening().await;
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                panic!("nginx is not listening ({exited:?}); its error log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The committed configuration with our ports and files, and everything
/// nginx writes kept in `dir`. Each replaced line must be there exactly
/// once, so a changed file fails here instead of running untested.
fn configure(dir: &Path, port: u16, tokenrelay: SocketAddr, pki: &Pki) -> String {
    let dir = dir.display();
    let replacements = [
        (
            "server 127.0.0.1:3000;".to_owned(),
            format!("server {tokenrelay};"),
        ),
        (
            "listen 443 ssl http2;".to_owned(),
            format!("listen 127.0.0.1:{port} ssl http2;"),
        ),
        (
            "/etc/ssl/tokenrelay/fullchain.pem".to_owned(),
            pki.cert_file.display().to_string(),
        ),
        (
            "/etc/ssl/tokenrelay/privkey.pem".to_owned(),
            pki.key_file.display().to_string(),
        ),
        (
            "http {".to_owned(),
            format!(
                "http {{\n    access_log {dir}/access.log;\n    client_body_temp_path {dir}/client_body;\n    proxy_temp_path {dir}/proxy;\n    fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    scgi_temp_path {dir}/scgi;"
            ),
        ),
    ];
    let mut conf = CONF.to_owned();
    for (from, to) in replacements {
        assert_eq!(
            conf.matches(&from).count(),
            1,
            "docs/deploy/nginx.conf should hold `{from}` once"
        );
        conf = conf.replace(&from, &to);
    }
    format!("daemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n{conf}")
}

/// A loopback port nothing listens on right now.
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("bind: {error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("addr: {error}"))
        .port()
}
