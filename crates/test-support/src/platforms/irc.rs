//! A real IRC server for the IRC channel's tests and the host's conformance suite: `ngircd`
//! (the Debian package) started on loopback with its own temporary config, a plain listener
//! and a TLS listener whose certificate a fresh test CA (rcgen) signed.
//!
//! [`FakeIrc`] is not a fake but a *driver*: the users are real IRC client connections
//! ([`IrcUser`]) that join channels and send PRIVMSGs through ngircd, and what the bot "sent"
//! is what those users received. The bot connects through a small TCP relay so that the
//! test can cut its connection ([`FakePlatform::drop_connections`]) and count reconnects;
//! the server and the users' connections stay up.
//!
//! What cannot apply to IRC (see the conformance suite's IRC entry): a server never
//! redelivers a message, never answers a send with a rate-limit reply, never acknowledges a
//! PRIVMSG (so there is no response to withhold), and carries no files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{FakeChat, FakePlatform, Posted, SentMessage};

/// The bot's nick in the driver's settings.
pub const BOT_NICK: &str = "nanobot";
/// Another bot, listed in `ignore_nicks`.
pub const OTHER_BOT_NICK: &str = "otherbot";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A test CA and a server certificate it signed (for `localhost` and `127.0.0.1`).
pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn generate() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nanoclaw IRC test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, &ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        TestCa {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A running ngircd on loopback.
pub struct Ngircd {
    dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    child: Mutex<Option<Child>>,
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Ngircd {
    /// Starts ngircd (foreground, `-n`) with a plain and a TLS listener; waits until both
    /// take connections.
    pub async fn start() -> Ngircd {
        let dir = tempfile::Builder::new()
            .prefix("nanoclaw-ngircd")
            .tempdir()
            .expect("temp dir");
        // Started as root, ngircd drops to `nobody`: it must still read its files.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let ca = TestCa::generate();
        std::fs::write(dir.path().join("ca.pem"), &ca.ca_pem).expect("ca");
        std::fs::write(dir.path().join("cert.pem"), &ca.cert_pem).expect("cert");
        std::fs::write(dir.path().join("key.pem"), &ca.key_pem).expect("key");
        let port = free_port();
        let tls_port = free_port();
        let conf = format!(
            "[Global]\n\
             Name = irc.nanoclaw.test\n\
             Info = nanoclaw test server\n\
             AdminInfo1 = test\nAdminInfo2 = test\nAdminEMail = test@invalid\n\
             Listen = 127.0.0.1\n\
             Ports = {port}\n\
             MotdPhrase = \"nanoclaw test\"\n\
             [Limits]\n\
             MaxConnectionsIP = 0\n\
             MaxNickLength = 30\n\
             [Options]\n\
             PAM = no\n\
             DNS = no\n\
             Ident = no\n\
             [SSL]\n\
             CertFile = {dir}/cert.pem\n\
             KeyFile = {dir}/key.pem\n\
             Ports = {tls_port}\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("ngircd.conf"), conf).expect("conf");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["ca.pem", "cert.pem", "key.pem", "ngircd.conf"] {
                std::fs::set_permissions(
                    dir.path().join(f),
                    std::fs::Permissions::from_mode(0o644),
                )
                .expect("chmod");
            }
        }
        let server = Ngircd {
            dir,
            port,
            tls_port,
            child: Mutex::new(None),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ngircd.log"))
            .expect("log");
        let child = Command::new("ngircd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("ngircd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ngircd starts (apt-get install ngircd; scripts/prerequisites --tests)");
        *self.child.lock().unwrap() = Some(child);
        for port in [self.port, self.tls_port] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "ngircd did not listen on {port}: {}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (every connection drops) and starts it again on the same ports.
    pub async fn restart(&self) {
        self.kill();
        self.spawn().await;
    }

    /// Stops the server for good (until [`Ngircd::restart`]).
    pub fn stop(&self) {
        self.kill();
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TLS listener, by the name its certificate carries.
    pub fn tls_addr(&self) -> String {
        format!("localhost:{}", self.tls_port)
    }

    /// The test CA that signed the TLS listener's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What ngircd logged (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }
}

/// One line a test client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub raw: String,
    /// `nick` of the source.
    pub from: String,
    pub command: String,
    pub params: Vec<String>,
    /// When it was read.
    pub at: std::time::Instant,
}

fn parse_line(raw: &str) -> Line {
    let mut rest = raw;
    if rest.starts_with('@') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    let mut from = String::new();
    if let Some(r) = rest.strip_prefix(':') {
        let (source, after) = r.split_once(' ').unwrap_or((r, ""));
        from = source.split(['!', '@']).next().unwrap_or("").to_owned();
        rest = after;
    }
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut params = Vec::new();
    while !rest.is_empty() {
        if let Some(t) = rest.strip_prefix(':') {
            params.push(t.to_owned());
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p.to_owned());
                rest = r;
            }
            None => {
                params.push(rest.to_owned());
                break;
            }
        }
    }
    Line {
        raw: raw.to_owned(),
        from,
        command: command.to_ascii_uppercase(),
        params,
        at: std::time::Instant::now(),
    }
}

/// A real IRC client connection, as a test user: it registers, joins, talks, and keeps
/// every line it receives.
pub struct IrcUser {
    pub nick: String,
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    lines: Arc<Mutex<Vec<Line>>>,
    events: broadcast::Sender<Line>,
    reader: JoinHandle<()>,
}

impl Drop for IrcUser {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl IrcUser {
    /// Connects to `addr` as `nick` and waits for the welcome (001).
    pub async fn connect(addr: &str, nick: &str) -> IrcUser {
        let stream = TcpStream::connect(addr).await.expect("connect to ngircd");
        let (read, write) = stream.into_split();
        let (events, _) = broadcast::channel(4096);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut welcome = events.subscribe();
        let reader = {
            let events = events.clone();
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = BufReader::new(read);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let raw = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    let line = parse_line(&raw);
                    lines.lock().unwrap().push(line.clone());
                    let _ = events.send(line);
                }
            })
        };
        let user = IrcUser {
            nick: nick.to_owned(),
            write: tokio::sync::Mutex::new(write),
            lines,
            events,
            reader,
        };
        user.raw(&format!("NICK {nick}\r\nUSER {nick} 0 * :test user\r\n"))
            .await;
        let deadline = Duration::from_secs(15);
        tokio::time::timeout(deadline, async {
            loop {
                match welcome.recv().await {
                    Ok(l) if l.command == "001" => return,
                    Ok(l) if l.command == "433" => panic!("nick {nick} in use"),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("{nick}: connection ended before 001: {e}"),
                }
            }
        })
        .await
        .expect("registered in 15 s");
        user
    }

    /// Writes raw bytes (several lines, or garbage) as they are.
    pub async fn raw_bytes(&self, bytes: &[u8]) {
        let mut write = self.write.lock().await;
        write.write_all(bytes).await.expect("write");
        write.flush().await.expect("flush");
    }

    pub async fn raw(&self, text: &str) {
        self.raw_bytes(text.as_bytes()).await;
    }

    /// Sends `line` and waits for the first reply whose command is one of `until`.
    pub async fn request(&self, line: &str, until: &[&str]) -> Vec<Line> {
        let mut rx = self.events.subscribe();
        self.raw(&format!("{line}\r\n")).await;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match rx.recv().await {
                    Ok(l) => {
                        let done = until.contains(&l.command.as_str());
                        got.push(l);
                        if done {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("{}: connection ended: {e}", self.nick),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: no {until:?} reply to {line:?}", self.nick));
        got
    }

    /// Joins `channel` and waits until the server confirms (end of NAMES).
    pub async fn join(&self, channel: &str) {
        self.request(
            &format!("JOIN {channel}"),
            &["366", "403", "471", "473", "474", "475"],
        )
        .await;
    }

    pub async fn say(&self, target: &str, text: &str) {
        self.raw(&format!("PRIVMSG {target} :{text}\r\n")).await;
    }

    /// Whether `nick` is on the server (ISON).
    pub async fn is_online(&self, nick: &str) -> bool {
        let reply = self.request(&format!("ISON {nick}"), &["303"]).await;
        reply.last().is_some_and(|l| {
            l.params
                .last()
                .is_some_and(|n| n.split_whitespace().any(|n| n.eq_ignore_ascii_case(nick)))
        })
    }

    /// The nicks in `channel` (NAMES, prefixes like `@` removed).
    pub async fn names(&self, channel: &str) -> Vec<String> {
        let reply = self.request(&format!("NAMES {channel}"), &["366"]).await;
        reply
            .iter()
            .filter(|l| l.command == "353")
            .flat_map(|l| {
                l.params
                    .last()
                    .cloned()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|n| n.trim_start_matches(['@', '+', '%']).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }

    /// The PRIVMSG lines received from nicks starting with `from` to `target`, in order.
    pub fn privmsg_lines_from(&self, from: &str, target: &str) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l.command == "PRIVMSG"
                    && l.from
                        .to_ascii_lowercase()
                        .starts_with(&from.to_ascii_lowercase())
                    && l.params
                        .first()
                        .is_some_and(|t| t.eq_ignore_ascii_case(target))
            })
            .collect()
    }

    /// The PRIVMSG texts received from nicks starting with `from` (the bot, `nanobot_`
    /// included) to `target`, in order.
    pub fn privmsgs_from(&self, from: &str, target: &str) -> Vec<String> {
        self.privmsg_lines_from(from, target)
            .into_iter()
            .map(|l| l.params.get(1).cloned().unwrap_or_default())
            .collect()
    }
}

/// A TCP relay in front of the server for the bot: counts its connections and can cut them.
struct Relay {
    port: u16,
    accepted: Arc<AtomicU64>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.acceptor.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicU64::new(0));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let accepted = Arc::clone(&accepted);
            let links = Arc::clone(&links);
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            })
        };
        Relay {
            port,
            accepted,
            links,
            acceptor,
        }
    }

    /// Closes every relayed connection (both sides see it at once).
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// The conformance driver: ngircd, the relay for the bot, and one real client per chat.
pub struct FakeIrc {
    pub server: Ngircd,
    relay: Relay,
    users: tokio::sync::Mutex<HashMap<String, Arc<IrcUser>>>,
    /// After a drop: the bot counts as back only from this many relay connections on (the
    /// server may still show the dropped session for a moment).
    back_after: AtomicU64,
}

impl FakeIrc {
    pub async fn start() -> FakeIrc {
        let server = Ngircd::start().await;
        let relay = Relay::start(server.addr()).await;
        FakeIrc {
            server,
            relay,
            users: tokio::sync::Mutex::default(),
            back_after: AtomicU64::new(0),
        }
    }

    /// The client speaking as `nick` (connected, and in `channel` when given).
    async fn user(&self, nick: &str, channel: Option<&str>) -> Arc<IrcUser> {
        let mut users = self.users.lock().await;
        let user = match users.get(nick) {
            Some(u) => Arc::clone(u),
            None => {
                let u = Arc::new(IrcUser::connect(&self.server.addr(), nick).await);
                users.insert(nick.to_owned(), Arc::clone(&u));
                u
            }
        };
        drop(users);
        if let Some(channel) = channel
            && !user
                .names(channel)
                .await
                .iter()
                .any(|n| n.eq_ignore_ascii_case(nick))
        {
            user.join(channel).await;
        }
        user
    }

    fn user_nick(chat: &FakeChat) -> String {
        chat.user_name.clone()
    }

    /// Waits until the bot is where `chat` is (on the server for a DM, in the channel for a
    /// group): IRC keeps nothing for someone who is not there, so a user waits, as a person
    /// would, until the bot is back before speaking.
    async fn wait_for_bot(&self, user: &IrcUser, chat: &FakeChat) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let reconnected = self.relay.accepted.load(Ordering::SeqCst)
                >= self.back_after.load(Ordering::SeqCst);
            let present = reconnected
                && if chat.is_group {
                    user.names(&chat.platform_id)
                        .await
                        .iter()
                        .any(|n| n.to_ascii_lowercase().starts_with(BOT_NICK))
                } else {
                    user.is_online(BOT_NICK).await
                };
            if present {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bot never came to {}",
                chat.platform_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where a message for `chat` goes: the channel, or the bot's nick for a DM.
    fn target(chat: &FakeChat) -> String {
        if chat.is_group {
            chat.platform_id.clone()
        } else {
            BOT_NICK.to_owned()
        }
    }
}

#[async_trait]
impl FakePlatform for FakeIrc {
    fn channel(&self) -> &'static str {
        "irc"
    }

    fn settings_toml(&self) -> String {
        format!(
            "enabled = true\n\
             server = \"127.0.0.1:{}\"\n\
             tls = false\n\
             nick = \"{BOT_NICK}\"\n\
             channels = [\"#chat1\", \"#chat2\", \"#chat3\"]\n\
             ignore_nicks = [\"{OTHER_BOT_NICK}\"]\n\
             flood_burst = 5\n\
             flood_per_sec = 2.0\n",
            self.relay.port
        )
    }

    fn secrets(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The text of one PRIVMSG: 512 bytes a line, less the relay prefix and the command.
    fn max_message_len(&self) -> usize {
        420
    }

    fn chat(&self, n: u32, is_group: bool) -> FakeChat {
        if is_group {
            FakeChat {
                platform_id: format!("#chat{n}"),
                is_group,
                user_id: format!("member{n}"),
                user_name: format!("member{n}"),
            }
        } else {
            // A DM's chat id is the other side's nick.
            FakeChat {
                platform_id: format!("dm{n}"),
                is_group,
                user_id: format!("dm{n}"),
                user_name: format!("dm{n}"),
            }
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, mention: bool) -> Posted {
        let channel = chat.is_group.then_some(chat.platform_id.as_str());
        let user = self.user(&Self::user_nick(chat), channel).await;
        self.wait_for_bot(&user, chat).await;
        let text = if chat.is_group && mention {
            format!("{BOT_NICK}: {text}")
        } else {
            text.to_owned()
        };
        user.say(&Self::target(chat), &text).await;
        Posted {
            chat_id: chat.platform_id.clone(),
            // IRC has no message ids; the adapter makes one the driver cannot know.
            message_id: String::new(),
        }
    }

    /// Not applicable: IRC has no attachments (the suite leaves the check out).
    async fn user_sends_file(&self, _: &FakeChat, _: &str, _: &[u8], _: &str) -> Posted {
        panic!("IRC has no attachments: inbound files cannot apply")
    }

    async fn other_bot_says(&self, chat: &FakeChat, text: &str) -> Posted {
        let channel = chat.is_group.then_some(chat.platform_id.as_str());
        let bot = self.user(OTHER_BOT_NICK, channel).await;
        self.wait_for_bot(&bot, chat).await;
        let target = Self::target(chat);
        bot.say(&target, &format!("{BOT_NICK}: {text}")).await;
        Posted {
            chat_id: chat.platform_id.clone(),
            message_id: String::new(),
        }
    }

    /// Not applicable: an IRC server never delivers a message twice.
    async fn redeliver(&self, _: &FakeChat, _: &Posted) {
        panic!("IRC never redelivers a message")
    }

    /// What a real server relays that is not clean text: broken UTF-8, a line of only
    /// formatting codes, an empty CTCP request, a CTCP with no end marker; and from another
    /// connection a line over 512 bytes (ngircd cuts or refuses it itself; either way the bot
    /// must carry on).
    async fn push_malformed(&self, chat: &FakeChat) {
        let channel = chat.is_group.then_some(chat.platform_id.as_str());
        let user = self.user(&Self::user_nick(chat), channel).await;
        self.wait_for_bot(&user, chat).await;
        let target = Self::target(chat);
        let mut bytes = Vec::new();
        for text in [
            &b"\xff\xfe\xc3 not utf-8 \x80"[..],
            b"\x02\x03\x0f",
            b"\x01\x01",
            b"\x01VERSION",
        ] {
            bytes.extend_from_slice(format!("PRIVMSG {target} :").as_bytes());
            bytes.extend_from_slice(text);
            bytes.extend_from_slice(b"\r\n");
        }
        user.raw_bytes(&bytes).await;
        let rude = IrcUser::connect(&self.server.addr(), "rude").await;
        rude.raw(&format!("PRIVMSG {target} :{}\r\n", "x".repeat(2000)))
            .await;
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        let user = self.users.lock().await.get(&Self::user_nick(chat)).cloned();
        let Some(user) = user else {
            return Vec::new();
        };
        user.privmsgs_from(BOT_NICK, &chat.platform_id)
            .into_iter()
            .map(|text| SentMessage {
                chat: chat.platform_id.clone(),
                text,
                files: Vec::new(),
                thread: None,
                reply_to: None,
            })
            .collect()
    }

    async fn drop_connections(&self) {
        self.back_after.store(
            self.relay.accepted.load(Ordering::SeqCst) + 1,
            Ordering::SeqCst,
        );
        self.relay.cut();
    }

    fn connections(&self) -> u64 {
        self.relay.accepted.load(Ordering::SeqCst)
    }

    /// Not applicable: IRC servers throttle or disconnect, they never answer "retry after".
    fn rate_limit_sends(&self, _: u32, _: Duration) {
        panic!("IRC has no rate-limit reply")
    }

    fn rate_limit_log(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        Vec::new()
    }

    /// Not applicable: a PRIVMSG gets no response that could be withheld.
    fn hold_sends(&self) {
        panic!("IRC acknowledges no message")
    }

    fn release_sends(&self) {}

    fn held_sends(&self) -> usize {
        0
    }
}
