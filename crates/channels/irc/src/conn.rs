//! One connection to the server: TCP or TLS, a reader of bounded lines, a writer task that
//! paces every line through the flood-control bucket, and registration (CAP negotiation,
//! SASL PLAIN, PASS, nick fallback on a collision).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use nanoclaw_channel::ChannelError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::flood::TokenBucket;
use crate::proto::{self, Message};

/// How long registration (connect to 001) may take.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How many alternative nicks (`nick_`, `nick__`, …) are tried on a collision.
const NICK_TRIES: usize = 6;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The network or the server broke the link: try again later.
    #[error("{0}")]
    Io(String),
    /// The server refused us for good (password, SASL, a banned or invalid nick): trying
    /// again cannot help until the owner changes something.
    #[error("{0}")]
    Refused(String),
    /// Our settings cannot work (an unreadable CA file, a bad server address).
    #[error("{0}")]
    Setup(String),
}

impl ConnError {
    pub fn into_channel_error(self) -> ChannelError {
        match self {
            ConnError::Io(e) => ChannelError::Failed(e),
            ConnError::Refused(detail) => ChannelError::Unauthorized {
                platform: crate::NAME.to_owned(),
                detail,
            },
            ConnError::Setup(e) => ChannelError::Setup(e),
        }
    }
}

/// What a connection needs to know.
#[derive(Clone)]
pub struct Options {
    pub server: String,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub nick: String,
    pub username: String,
    pub realname: String,
    pub sasl: bool,
    pub password: Option<SecretString>,
    pub flood_burst: u32,
    pub flood_per_sec: f64,
}

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The host part of `host:port` (IPv6 in brackets: `[::1]:6697`).
fn host_of(server: &str) -> Result<&str, ConnError> {
    let bad = || {
        ConnError::Setup(format!(
            "server {server:?}: write host:port, e.g. irc.libera.chat:6697"
        ))
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

/// TLS with the system's roots plus, when set, the certificates in `ca_file` (a private
/// network's CA); the provider is explicit so it never depends on what other crates enabled.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ConnError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot use is skipped; the others still verify.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ConnError::Setup(format!("ca_file {}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| ConnError::Setup(format!("ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ConnError::Setup(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ConnError::Setup(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnError::Setup(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens the TCP (and TLS) connection.
pub async fn open(options: &Options) -> Result<Box<dyn Io>, ConnError> {
    let host = host_of(&options.server)?.to_owned();
    let tcp = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::net::TcpStream::connect(&options.server),
    )
    .await
    .map_err(|_| ConnError::Io(format!("connecting to {}: timed out", options.server)))?
    .map_err(|e| ConnError::Io(format!("connecting to {}: {e}", options.server)))?;
    let _ = tcp.set_nodelay(true);
    if !options.tls {
        return Ok(Box::new(tcp));
    }
    let config = tls_config(options.ca_file.as_deref())?;
    let name = ServerName::try_from(host.clone())
        .map_err(|e| ConnError::Setup(format!("server name {host:?}: {e}")))?;
    let tls = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| ConnError::Io(format!("TLS with {}: timed out", options.server)))?
    // A certificate that does not verify is not a passing network fault, but it may be
    // one (a captive portal), and the owner sees it in `channel status` either way.
    .map_err(|e| ConnError::Io(format!("TLS with {}: {e}", options.server)))?;
    Ok(Box::new(tls))
}

/// One line for the writer; `done` hears whether it was written.
struct Out {
    line: String,
    done: Option<oneshot::Sender<bool>>,
}

/// Sends lines on a connection (cheap to clone; the deliver path holds one).
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Out>,
}

impl Sender {
    /// Queues `line` (already encoded, no CR LF) without waiting for it to be written.
    pub async fn queue(&self, line: String) -> Result<(), ConnError> {
        self.tx
            .send(Out { line, done: None })
            .await
            .map_err(|_| ConnError::Io("the connection is closed".into()))
    }

    /// Sends `line` and waits until it was written to the socket (after flood control).
    /// A line that was not written (the connection closed first, or the write failed: a
    /// partial line without CR LF is dropped by the server) certainly never reached anyone.
    pub async fn send(&self, line: String) -> Result<(), ChannelError> {
        let (done, written) = oneshot::channel();
        self.tx
            .send(Out {
                line,
                done: Some(done),
            })
            .await
            .map_err(|_| ChannelError::NotConnected("IRC connection closed".into()))?;
        match written.await {
            Ok(true) => Ok(()),
            _ => Err(ChannelError::NotConnected(
                "the IRC connection broke before the line was written".into(),
            )),
        }
    }
}

/// A live connection: read lines from it, send through [`Conn::sender`].
pub struct Conn {
    reader: BufReader<ReadHalf<Box<dyn Io>>>,
    sender: Sender,
    writer: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl Conn {
    pub fn new(stream: Box<dyn Io>, flood_burst: u32, flood_per_sec: f64) -> Conn {
        let (read, write) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(256);
        let writer = tokio::spawn(write_loop(
            write,
            rx,
            TokenBucket::new(flood_burst, flood_per_sec),
        ));
        Conn {
            reader: BufReader::new(read),
            sender: Sender { tx },
            writer,
        }
    }

    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Whether the writer has stopped (its socket failed).
    pub fn writer_gone(&self) -> bool {
        self.writer.is_finished()
    }

    /// The next line from the server: `Ok(None)` for a line that is not IRC (skipped),
    /// an error when the connection ended.
    pub async fn next(&mut self) -> Result<Option<Message>, ConnError> {
        match read_line(&mut self.reader, proto::MAX_READ).await {
            Ok(Some(Ok(bytes))) => {
                // Many IRC clients still send Latin-1 or broken UTF-8: replaced, not refused.
                let text = String::from_utf8_lossy(&bytes);
                let parsed = proto::parse(&text);
                if parsed.is_none() && !text.trim().is_empty() {
                    tracing::debug!(line = %text.chars().take(200).collect::<String>(), "irc: unparseable line skipped");
                }
                Ok(parsed)
            }
            Ok(Some(Err(len))) => {
                tracing::warn!(bytes = len, "irc: overlong line from the server skipped");
                Ok(None)
            }
            Ok(None) => Err(ConnError::Io("the server closed the connection".into())),
            Err(e) => Err(ConnError::Io(format!("reading from the server: {e}"))),
        }
    }
}

async fn write_loop(
    mut write: tokio::io::WriteHalf<Box<dyn Io>>,
    mut rx: mpsc::Receiver<Out>,
    mut bucket: TokenBucket,
) {
    while let Some(out) = rx.recv().await {
        bucket.take().await;
        let mut bytes = out.line.into_bytes();
        bytes.extend_from_slice(b"\r\n");
        let ok = write.write_all(&bytes).await.is_ok() && write.flush().await.is_ok();
        if let Some(done) = out.done {
            let _ = done.send(ok);
        }
        if !ok {
            break;
        }
    }
    let _ = write.shutdown().await;
}

/// Reads one line (without CR LF). `Ok(None)` at the end of the stream; `Some(Err(len))`
/// for a line over `max` bytes, which is read to its end and dropped (a server cannot make
/// us buffer without bound).
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
    let mut line = Vec::new();
    let mut dropped = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(None);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if line.len() > max {
            dropped += line.len();
            line.clear();
        }
        if done {
            break;
        }
    }
    if dropped > 0 {
        return Ok(Some(Err(dropped + line.len())));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(Ok(line)))
}

/// What registration found out.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Our nick as the server knows it (`nick_` after a collision).
    pub nick: String,
    /// The capabilities the server acknowledged.
    pub caps: Vec<String>,
}

fn line(command: &str, params: &[&str]) -> Result<String, ConnError> {
    proto::encode(command, params).map_err(|e| ConnError::Setup(format!("{command}: {e}")))
}

/// The SASL PLAIN response, base64 in chunks of at most 400 bytes, with a `+` after a
/// full last chunk (IRCv3 SASL: "AUTHENTICATE" continuation).
pub fn sasl_plain_chunks(account: &str, password: &str) -> Vec<String> {
    let payload = format!("{account}\0{account}\0{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(payload.as_bytes());
    let mut chunks: Vec<String> = encoded
        .as_bytes()
        .chunks(400)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    if chunks.last().is_none_or(|c| c.len() == 400) {
        chunks.push("+".to_owned());
    }
    chunks
}

/// Registers on a fresh connection: PASS (a server password, when not used for SASL), CAP
/// LS, NICK/USER, CAP REQ for `server-time`, `message-tags` and (with `sasl`) `sasl`, SASL
/// PLAIN, CAP END, and waits for 001. A nick in use (433) is retried as `nick_`, `nick__`…
pub async fn register(conn: &mut Conn, options: &Options) -> Result<Registered, ConnError> {
    tokio::time::timeout(REGISTER_TIMEOUT, register_inner(conn, options))
        .await
        .map_err(|_| ConnError::Io("the server did not finish registration in 30 s".into()))?
}

async fn register_inner(conn: &mut Conn, options: &Options) -> Result<Registered, ConnError> {
    let out = conn.sender();
    if options.sasl && options.password.is_none() {
        return Err(ConnError::Setup(
            "sasl = true needs the secret irc.password".into(),
        ));
    }
    if let (Some(password), false) = (&options.password, options.sasl) {
        out.queue(line("PASS", &[password.expose_secret()])?)
            .await?;
    }
    out.queue(line("CAP", &["LS", "302"])?).await?;
    let mut nick = options.nick.clone();
    out.queue(line("NICK", &[&nick])?).await?;
    out.queue(line(
        "USER",
        &[&options.username, "0", "*", &options.realname],
    )?)
    .await?;
    let mut offered: Vec<String> = Vec::new();
    let mut acked: Vec<String> = Vec::new();
    let mut nick_tries = 0;
    loop {
        let Some(message) = conn.next().await? else {
            continue;
        };
        match message.command.as_str() {
            "PING" => out.queue(line("PONG", &[message.param(0)])?).await?,
            "CAP" => match message.param(1) {
                "LS" => {
                    // `CAP * LS * :caps` has more lines coming; the last has no `*`.
                    let more = message.params.len() > 3 && message.param(2) == "*";
                    let list = message.params.last().map_or("", String::as_str);
                    offered.extend(list.split_whitespace().map(str::to_owned));
                    if more {
                        continue;
                    }
                    let mut wanted: Vec<&str> = Vec::new();
                    for cap in ["server-time", "message-tags"] {
                        if offered
                            .iter()
                            .any(|o| o == cap || o.starts_with(&format!("{cap}=")))
                        {
                            wanted.push(cap);
                        }
                    }
                    if options.sasl {
                        let sasl = offered
                            .iter()
                            .find(|o| *o == "sasl" || o.starts_with("sasl="));
                        match sasl {
                            Some(s)
                                if s == "sasl"
                                    || s["sasl=".len()..]
                                        .split(',')
                                        .any(|m| m.eq_ignore_ascii_case("PLAIN")) =>
                            {
                                wanted.push("sasl")
                            }
                            _ => {
                                return Err(ConnError::Refused(
                                    "sasl = true, but the server offers no SASL PLAIN".into(),
                                ));
                            }
                        }
                    }
                    if wanted.is_empty() {
                        out.queue(line("CAP", &["END"])?).await?;
                    } else {
                        out.queue(line("CAP", &["REQ", &wanted.join(" ")])?).await?;
                    }
                }
                "ACK" => {
                    let list = message.params.last().map_or("", String::as_str);
                    acked.extend(
                        list.split_whitespace()
                            .map(|c| c.trim_start_matches('-').to_owned()),
                    );
                    if options.sasl && acked.iter().any(|c| c == "sasl") {
                        out.queue(line("AUTHENTICATE", &["PLAIN"])?).await?;
                    } else {
                        out.queue(line("CAP", &["END"])?).await?;
                    }
                }
                "NAK" => {
                    if options.sasl {
                        return Err(ConnError::Refused(
                            "the server refused the sasl capability".into(),
                        ));
                    }
                    out.queue(line("CAP", &["END"])?).await?;
                }
                _ => {}
            },
            "AUTHENTICATE" if message.param(0) == "+" => {
                let password = options
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
                    .unwrap_or_default();
                for chunk in sasl_plain_chunks(&options.username, &password) {
                    out.queue(line("AUTHENTICATE", &[&chunk])?).await?;
                }
            }
            // 903: SASL succeeded.
            "903" => out.queue(line("CAP", &["END"])?).await?,
            "902" | "904" | "905" | "906" | "908" => {
                return Err(ConnError::Refused(format!(
                    "SASL login failed ({}): {}",
                    message.command,
                    message.params.last().map_or("", String::as_str)
                )));
            }
            // Nick in use, or temporarily unavailable.
            "433" | "437" => {
                nick_tries += 1;
                if nick_tries > NICK_TRIES {
                    return Err(ConnError::Io(format!(
                        "the nick {} and {NICK_TRIES} alternatives are in use",
                        options.nick
                    )));
                }
                nick = format!("{}{}", options.nick, "_".repeat(nick_tries));
                tracing::info!(%nick, "irc: nick in use; trying another");
                out.queue(line("NICK", &[&nick])?).await?;
            }
            "432" => {
                return Err(ConnError::Refused(format!(
                    "the server refuses the nick {nick:?}: {}",
                    message.params.last().map_or("", String::as_str)
                )));
            }
            "464" | "465" => {
                return Err(ConnError::Refused(format!(
                    "the server refused us ({}): {}",
                    message.command,
                    message.params.last().map_or("", String::as_str)
                )));
            }
            "ERROR" => {
                return Err(ConnError::Io(format!(
                    "the server closed the connection: {}",
                    message.param(0)
                )));
            }
            "001" => {
                let nick = match message.param(0) {
                    "" | "*" => nick,
                    given => given.to_owned(),
                };
                return Ok(Registered { nick, caps: acked });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn long_lines_are_dropped_and_the_next_one_read() {
        let data = format!("{}\r\nPING :x\r\n", "a".repeat(10_000));
        let mut reader = BufReader::with_capacity(64, data.as_bytes());
        assert!(matches!(
            read_line(&mut reader, 512).await.unwrap(),
            Some(Err(_))
        ));
        assert_eq!(
            read_line(&mut reader, 512).await.unwrap(),
            Some(Ok(b"PING :x".to_vec()))
        );
        assert_eq!(read_line(&mut reader, 512).await.unwrap(), None);
    }

    #[test]
    fn sasl_plain_is_base64_of_account_account_password() {
        let chunks = sasl_plain_chunks("andy", "secret");
        assert_eq!(chunks, vec!["YW5keQBhbmR5AHNlY3JldA==".to_owned()]);
        let long = sasl_plain_chunks("andy", &"p".repeat(290));
        // 300 bytes of payload is exactly 400 base64 characters: a `+` follows.
        assert_eq!(long.len(), 2);
        assert_eq!(long[0].len(), 400);
        assert_eq!(long[1], "+");
    }

    /// The AUTHENTICATE exchange against a scripted server (ngircd, which the other tests
    /// use, has no SASL): what we send, in order, and that 903 ends with CAP END and 001.
    #[tokio::test]
    async fn sasl_plain_exchange_against_a_scripted_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = tokio::io::split(socket);
            let mut lines = BufReader::new(read).lines();
            let mut seen = Vec::new();
            let mut expect = |want: &str, got: Option<String>| {
                let got = got.unwrap_or_default();
                assert_eq!(got, want);
                seen.push(got);
            };
            expect("CAP LS 302", lines.next_line().await.unwrap());
            expect("NICK andy", lines.next_line().await.unwrap());
            expect("USER andy 0 * nanoclaw", lines.next_line().await.unwrap());
            write
                .write_all(b":srv CAP * LS :multi-prefix sasl=PLAIN,EXTERNAL server-time\r\n")
                .await
                .unwrap();
            expect(
                "CAP REQ :server-time sasl",
                lines.next_line().await.unwrap(),
            );
            write
                .write_all(b":srv CAP * ACK :server-time sasl\r\n")
                .await
                .unwrap();
            expect("AUTHENTICATE PLAIN", lines.next_line().await.unwrap());
            write.write_all(b"AUTHENTICATE +\r\n").await.unwrap();
            expect(
                "AUTHENTICATE YW5keQBhbmR5AHNlY3JldA==",
                lines.next_line().await.unwrap(),
            );
            write
                .write_all(b":srv 900 andy andy!a@h andy :You are now logged in\r\n:srv 903 andy :SASL authentication successful\r\n")
                .await
                .unwrap();
            expect("CAP END", lines.next_line().await.unwrap());
            write
                .write_all(b":srv 001 andy :Welcome\r\n")
                .await
                .unwrap();
            seen
        });
        let options = Options {
            server: addr.to_string(),
            tls: false,
            ca_file: None,
            nick: "andy".into(),
            username: "andy".into(),
            realname: "nanoclaw".into(),
            sasl: true,
            password: Some(SecretString::from("secret")),
            flood_burst: 10,
            flood_per_sec: 10.0,
        };
        let stream = open(&options).await.unwrap();
        let mut conn = Conn::new(stream, 10, 10.0);
        let registered = register(&mut conn, &options).await.unwrap();
        assert_eq!(registered.nick, "andy");
        assert_eq!(registered.caps, vec!["server-time", "sasl"]);
        // The password never went as PASS when it is for SASL.
        assert!(!server.await.unwrap().iter().any(|l| l.starts_with("PASS")));
    }

    #[tokio::test]
    async fn a_failed_sasl_login_is_refused_not_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket
                .write_all(b":srv CAP * LS :sasl\r\n:srv CAP * ACK :sasl\r\nAUTHENTICATE +\r\n:srv 904 * :SASL authentication failed\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let options = Options {
            server: addr.to_string(),
            tls: false,
            ca_file: None,
            nick: "andy".into(),
            username: "andy".into(),
            realname: "nanoclaw".into(),
            sasl: true,
            password: Some(SecretString::from("wrong")),
            flood_burst: 10,
            flood_per_sec: 10.0,
        };
        let mut conn = Conn::new(open(&options).await.unwrap(), 10, 10.0);
        let err = register(&mut conn, &options).await.unwrap_err();
        assert!(
            matches!(err, ConnError::Refused(ref e) if e.contains("904")),
            "{err}"
        );
    }
}
