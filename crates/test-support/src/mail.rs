//! A real mail system on loopback for the email channel's tests: Dovecot (IMAP with IDLE,
//! LMTP delivery, the SASL service Postfix asks) and Postfix (submission with STARTTLS and
//! with implicit TLS), both from Debian, configured in a temporary directory with their own
//! certificate authority. Mail submitted to Postfix for `@example.test` is delivered to
//! Dovecot over LMTP, so what the channel sends lands in a mailbox the test reads, and
//! what a test "user" writes is delivered straight to the bot's mailbox over LMTP.
//!
//! Postfix's master must start as root (it drops privileges to `postfix` itself); the
//! tests that use it say so when run otherwise.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::KillOnDrop;

/// The mail domain the servers serve.
pub const DOMAIN: &str = "example.test";

/// A certificate authority and a `localhost`/`127.0.0.1` server certificate it signed.
pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn localhost() -> TestCa {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nanoclaw test mail CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        TestCa {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not listen on 127.0.0.1:{port} within 20 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How the OAuth 2 passdb checks bearer tokens (Gmail's XOAUTH2, against a local token
/// endpoint): Dovecot asks `introspection_url` + the token.
#[derive(Debug, Clone)]
pub struct OAuthIntrospection {
    /// E.g. `http://127.0.0.1:PORT/tokeninfo?access_token=`.
    pub url: String,
}

/// Dovecot and Postfix, running.
pub struct MailServers {
    dir: tempfile::TempDir,
    pub imap_port: u16,
    /// Submission with STARTTLS (like port 587).
    pub submission_port: u16,
    /// Submission over implicit TLS (like port 465).
    pub smtps_port: u16,
    pub lmtp_port: u16,
    dovecot: Option<KillOnDrop>,
    postfix: Option<KillOnDrop>,
    oauth: Option<OAuthIntrospection>,
    /// Postfix asks it at the end of every submitted message (before answering the DATA).
    pub policy: Policy,
}

/// A Postfix policy service (the documented `name=value` lines protocol) that Postfix asks
/// at the end of each submitted message: it can hold the answer (the client waits for its
/// `250` after DATA) or refuse with a temporary `450`, as a busy or rate-limiting server does.
#[derive(Clone, Default)]
pub struct Policy(std::sync::Arc<(std::sync::Mutex<PolicyState>, std::sync::Condvar)>);

#[derive(Default)]
struct PolicyState {
    holding: bool,
    held: usize,
    defer: u32,
    /// (when a message was refused, when the next one came)
    deferred_at: Option<Instant>,
    defer_log: Vec<(Instant, Instant)>,
    port: u16,
}

impl Policy {
    fn start() -> Policy {
        let policy = Policy::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        policy.0.0.lock().unwrap().port = listener.local_addr().unwrap().port();
        let served = policy.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let served = served.clone();
                std::thread::spawn(move || served.serve(stream));
            }
        });
        policy
    }

    fn port(&self) -> u16 {
        self.0.0.lock().unwrap().port
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            // One request: attribute lines up to an empty line.
            let mut any = false;
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.trim().is_empty() {
                    break;
                }
                any = true;
            }
            if !any {
                continue;
            }
            let action = self.decide();
            if writer
                .write_all(format!("action={action}\n\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    }

    fn decide(&self) -> &'static str {
        let (lock, wake) = &*self.0;
        let mut state = lock.lock().unwrap();
        let now = Instant::now();
        if let Some(refused) = state.deferred_at.take() {
            state.defer_log.push((refused, now));
        }
        if state.defer > 0 {
            state.defer -= 1;
            state.deferred_at = Some(now);
            return "DEFER_IF_PERMIT 4.7.0 Too many messages, try again later";
        }
        if state.holding {
            state.held += 1;
            while state.holding {
                state = wake.wait(state).unwrap();
            }
        }
        "DUNNO"
    }

    /// From now on, answers are withheld until [`Policy::release`].
    pub fn hold(&self) {
        self.0.0.lock().unwrap().holding = true;
    }

    pub fn release(&self) {
        self.0.0.lock().unwrap().holding = false;
        self.0.1.notify_all();
    }

    /// Messages whose answer was withheld.
    pub fn held(&self) -> usize {
        self.0.0.lock().unwrap().held
    }

    /// The next `count` messages are refused with a temporary error.
    pub fn defer_next(&self, count: u32) {
        self.0.0.lock().unwrap().defer = count;
    }

    /// (refused, next attempt) for each refusal that was followed by another message.
    pub fn defer_log(&self) -> Vec<(Instant, Instant)> {
        self.0.0.lock().unwrap().defer_log.clone()
    }
}

impl MailServers {
    /// Starts both servers with these `(address, password)` accounts (all `@example.test`).
    pub fn start(accounts: &[(&str, &str)]) -> MailServers {
        MailServers::start_with(accounts, None)
    }

    /// As [`MailServers::start`]; with `oauth`, Dovecot also takes XOAUTH2/OAUTHBEARER
    /// tokens, checked at the introspection URL (the account needs no password then).
    pub fn start_with(accounts: &[(&str, &str)], oauth: Option<OAuthIntrospection>) -> MailServers {
        assert!(
            is_root(),
            "the mail tests start Postfix, whose master process must start as root (it drops to the postfix user itself); run them as root"
        );
        for bin in ["/usr/sbin/dovecot", "/usr/sbin/postfix"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/prerequisites --tests (Debian's dovecot-imapd, dovecot-lmtpd and postfix)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("nanoclaw-mail")
            .tempdir()
            .unwrap();
        // Dovecot's and Postfix's users must reach their files.
        set_mode(dir.path(), 0o755);
        let mut servers = MailServers {
            dir,
            imap_port: free_port(),
            submission_port: free_port(),
            smtps_port: free_port(),
            lmtp_port: free_port(),
            dovecot: None,
            postfix: None,
            oauth,
            policy: Policy::start(),
        };
        let ca = TestCa::localhost();
        std::fs::write(servers.path("ca.pem"), &ca.ca_pem).unwrap();
        std::fs::write(servers.path("cert.pem"), &ca.cert_pem).unwrap();
        std::fs::write(servers.path("key.pem"), &ca.key_pem).unwrap();
        let users: String = accounts
            .iter()
            .map(|(user, pass)| format!("{user}:{{PLAIN}}{pass}\n"))
            .collect();
        std::fs::write(servers.path("users"), users).unwrap();
        servers.write_dovecot_config();
        servers.write_postfix_config();
        servers.start_dovecot();
        servers.start_postfix();
        servers
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed both servers' certificate (for the channel's `ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn write_dovecot_config(&self) {
        let d = self.dir.path().display();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(self.path(sub)).unwrap();
        }
        chown(&self.path("mail"), "dovecot");
        let oauth = match &self.oauth {
            Some(o) => {
                std::fs::write(
                    self.path("oauth2.conf"),
                    format!(
                        "introspection_mode = get\nintrospection_url = {}\nusername_attribute = email\nactive_attribute = email_verified\nactive_value = true\nforce_introspection = yes\n",
                        o.url
                    ),
                )
                .unwrap();
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {d}/oauth2.conf\n}}\n"
                )
            }
            None => String::new(),
        };
        let mechanisms = if self.oauth.is_some() {
            "plain login xoauth2 oauthbearer"
        } else {
            "plain login"
        };
        let config = format!(
            r#"first_valid_uid = 1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
auth_mechanisms = {mechanisms}
mail_location = maildir:{d}/mail/%u
imap_idle_notify_interval = 1 secs
{oauth}passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imap}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
"#,
            imap = self.imap_port,
            lmtp = self.lmtp_port,
        );
        std::fs::write(self.path("dovecot.conf"), config).unwrap();
    }

    fn write_postfix_config(&self) {
        let d = self.dir.path().display();
        for sub in ["postfix", "pq", "pdata"] {
            std::fs::create_dir_all(self.path(sub)).unwrap();
        }
        chown(&self.path("pdata"), "postfix");
        let main = format!(
            "compatibility_level = 3.6
queue_directory = {d}/pq
data_directory = {d}/pdata
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.{DOMAIN}
mydestination =
local_recipient_maps =
virtual_mailbox_domains = {DOMAIN}
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
smtpd_sasl_type = dovecot
smtpd_sasl_path = {d}/run/auth-postfix
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_end_of_data_restrictions = check_policy_service inet:127.0.0.1:{policy}
maillog_file_prefixes = {d}
maillog_file = {d}/postfix.log
biff = no
",
            lmtp = self.lmtp_port,
            policy = self.policy.port(),
        );
        std::fs::write(self.path("postfix/main.cf"), main).unwrap();
        let master = format!(
            "127.0.0.1:{sub} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{smtps} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
",
            sub = self.submission_port,
            smtps = self.smtps_port
        );
        std::fs::write(self.path("postfix/master.cf"), master).unwrap();
    }

    fn start_dovecot(&mut self) {
        use std::os::unix::process::CommandExt;
        let child = Command::new("/usr/sbin/dovecot")
            // Its own process group: stopping it ends every IMAP session too (a killed
            // master leaves logged-in sessions running).
            .process_group(0)
            .arg("-F")
            .arg("-c")
            .arg(self.path("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.dovecot = Some(KillOnDrop(child));
        wait_for_port(self.imap_port, "dovecot (IMAP)", &self.path("dovecot.log"));
        wait_for_port(self.lmtp_port, "dovecot (LMTP)", &self.path("dovecot.log"));
    }

    fn start_postfix(&mut self) {
        let child = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.path("postfix"))
            .arg("start-fg")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.postfix = Some(KillOnDrop(child));
        wait_for_port(
            self.submission_port,
            "postfix (submission)",
            &self.path("postfix.log"),
        );
        wait_for_port(
            self.smtps_port,
            "postfix (smtps)",
            &self.path("postfix.log"),
        );
    }

    /// Stops Dovecot (every IMAP connection drops) and starts it again on the same port.
    pub fn restart_dovecot(&mut self) {
        self.stop_dovecot();
        self.start_dovecot();
    }

    fn stop_dovecot(&mut self) {
        if let Some(mut child) = self.dovecot.take() {
            // SIGTERM to the whole group: the master removes its pid file, the sessions end.
            let _ = Command::new("kill")
                .arg("--")
                .arg(format!("-{}", child.0.id()))
                .status();
            let _ = child.0.wait();
        }
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.imap_port)).is_ok()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Delivers `raw` to `to`'s INBOX over LMTP, as the domain's mail exchanger would
    /// (headers kept as written: a test can forge what a sender could).
    pub fn deliver(&self, to: &str, from: &str, raw: &[u8]) {
        let stream = TcpStream::connect(("127.0.0.1", self.lmtp_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut expect = |code: &str| loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(
                line.starts_with(code),
                "LMTP: expected {code}, got {line:?}"
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        };
        expect("220");
        writer.write_all(b"LHLO test.local\r\n").unwrap();
        expect("250");
        writer
            .write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
            .unwrap();
        expect("250");
        writer
            .write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())
            .unwrap();
        expect("250");
        writer.write_all(b"DATA\r\n").unwrap();
        expect("354");
        let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        for line in text.lines() {
            if line.starts_with('.') {
                writer.write_all(b".").unwrap();
            }
            writer.write_all(line.as_bytes()).unwrap();
            writer.write_all(b"\r\n").unwrap();
        }
        writer.write_all(b".\r\n").unwrap();
        expect("250");
        writer.write_all(b"QUIT\r\n").unwrap();
    }

    /// Every message in `user`'s INBOX (delivered and not yet expunged), oldest first, read
    /// from the maildir.
    pub fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        let root = self.path("mail").join(user);
        let mut files: Vec<(PathBuf, std::time::SystemTime)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((entry.path(), modified));
            }
        }
        // Maildir names start with the delivery time in seconds, then a unique part: sort
        // by (mtime, name) for delivery order.
        files.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        files
            .into_iter()
            .filter_map(|(path, _)| std::fs::read(path).ok())
            .collect()
    }

    /// Waits until `user`'s INBOX holds at least `count` messages; returns them all.
    pub async fn wait_for_mail(&self, user: &str, count: usize) -> Vec<Vec<u8>> {
        let started = Instant::now();
        loop {
            let mail = self.mailbox(user);
            if mail.len() >= count {
                return mail;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(self.path("postfix.log")).unwrap_or_default();
                panic!(
                    "{user} has {} messages, waited 30 s for {count}; postfix log:\n{log}",
                    mail.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// IMAP logins Dovecot has accepted so far (rises after a reconnect).
    pub fn imap_logins(&self) -> u64 {
        self.dovecot_log()
            .lines()
            .filter(|l| l.contains("imap-login: Info: Login:"))
            .count() as u64
    }

    /// Dovecot's log so far (for failure messages).
    pub fn dovecot_log(&self) -> String {
        std::fs::read_to_string(self.path("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for MailServers {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.path("postfix"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.stop_dovecot();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown(path: &Path, user: &str) {
    let status = Command::new("chown").arg(user).arg(path).status().unwrap();
    assert!(status.success(), "chown {user} {}", path.display());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Google's OAuth 2 endpoints as its public documentation describes them, for one account:
/// `/auth` (the consent page, answered at once with a redirect carrying a code),
/// `/token` (`authorization_code` with PKCE S256, and `refresh_token` grants; errors as
/// `{"error": …, "error_description": …}` with 400) and `/tokeninfo` (what Dovecot's
/// oauth2 passdb asks to check a bearer token). Access tokens live `token_lifetime`; every
/// refresh rotates the refresh token, as providers may.
pub struct FakeOAuth {
    pub base: String,
    state: std::sync::Arc<std::sync::Mutex<OAuthState>>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct OAuthState {
    email: String,
    lifetime_secs: u64,
    /// refresh token → still valid
    refresh_tokens: std::collections::HashMap<String, bool>,
    /// access token → expiry
    access_tokens: std::collections::HashMap<String, Instant>,
    /// code → PKCE challenge
    codes: std::collections::HashMap<String, String>,
    refreshes: u32,
    counter: u64,
}

impl OAuthState {
    fn issue(&mut self) -> serde_json::Value {
        self.counter += 1;
        let access = format!("ya29.access-{}", self.counter);
        let refresh = format!("1//refresh-{}", self.counter);
        self.access_tokens.insert(
            access.clone(),
            Instant::now() + Duration::from_secs(self.lifetime_secs),
        );
        self.refresh_tokens.insert(refresh.clone(), true);
        serde_json::json!({
            "access_token": access,
            "expires_in": self.lifetime_secs,
            "refresh_token": refresh,
            "scope": "https://mail.google.com/",
            "token_type": "Bearer",
        })
    }
}

impl FakeOAuth {
    /// Serves tokens for `email`, each access token valid for `token_lifetime`.
    pub async fn start(email: &str, token_lifetime: Duration) -> FakeOAuth {
        use axum::extract::{Form, Query, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::{get, post};
        use std::collections::HashMap;

        type Shared = std::sync::Arc<std::sync::Mutex<OAuthState>>;
        let state: Shared = std::sync::Arc::new(std::sync::Mutex::new(OAuthState {
            email: email.to_owned(),
            lifetime_secs: token_lifetime.as_secs(),
            ..OAuthState::default()
        }));
        fn error(status: StatusCode, error: &str, description: &str) -> axum::response::Response {
            (
                status,
                axum::Json(serde_json::json!({"error": error, "error_description": description})),
            )
                .into_response()
        }
        async fn auth(
            State(state): State<Shared>,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let (Some(redirect), Some(challenge)) =
                (q.get("redirect_uri"), q.get("code_challenge"))
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing required parameter",
                );
            };
            if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code_challenge_method",
                );
            }
            let mut s = state.lock().unwrap();
            s.counter += 1;
            let code = format!("4/code-{}", s.counter);
            s.codes.insert(code.clone(), challenge.clone());
            let state_param = q.get("state").cloned().unwrap_or_default();
            Redirect::to(&format!(
                "{redirect}?code={code}&state={state_param}&scope=https://mail.google.com/"
            ))
            .into_response()
        }
        async fn token(
            State(state): State<Shared>,
            Form(f): Form<HashMap<String, String>>,
        ) -> axum::response::Response {
            use base64::Engine as _;
            use sha2::Digest;
            let mut s = state.lock().unwrap();
            match f.get("grant_type").map(String::as_str) {
                Some("authorization_code") => {
                    let Some(challenge) = f.get("code").and_then(|c| s.codes.remove(c)) else {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "Malformed auth code.",
                        );
                    };
                    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
                    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(sha2::Sha256::digest(verifier.as_bytes()));
                    if computed != challenge {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "Invalid code verifier.",
                        );
                    }
                    axum::Json(s.issue()).into_response()
                }
                Some("refresh_token") => {
                    let token = f.get("refresh_token").cloned().unwrap_or_default();
                    if s.refresh_tokens.get(&token) != Some(&true) {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "Token has been expired or revoked.",
                        );
                    }
                    // Rotation: the old refresh token stops working.
                    s.refresh_tokens.insert(token, false);
                    s.refreshes += 1;
                    axum::Json(s.issue()).into_response()
                }
                _ => error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "Invalid grant_type",
                ),
            }
        }
        async fn tokeninfo(
            State(state): State<Shared>,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let s = state.lock().unwrap();
            let token = q.get("access_token").cloned().unwrap_or_default();
            match s.access_tokens.get(&token) {
                Some(expires) if *expires > Instant::now() => axum::Json(serde_json::json!({
                    "email": s.email,
                    "email_verified": "true",
                    "expires_in": expires.saturating_duration_since(Instant::now()).as_secs().to_string(),
                    "scope": "https://mail.google.com/",
                }))
                .into_response(),
                _ => error(StatusCode::BAD_REQUEST, "invalid_token", "Invalid Value"),
            }
        }
        let app = axum::Router::new()
            .route("/auth", get(auth))
            .route("/token", post(token))
            .route("/tokeninfo", get(tokeninfo))
            .with_state(std::sync::Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOAuth {
            base,
            state,
            _server: server,
        }
    }

    /// A refresh token for the account, as if the owner had linked it earlier.
    pub fn grant_refresh_token(&self) -> String {
        let mut s = self.state.lock().unwrap();
        s.issue()["refresh_token"].as_str().unwrap().to_owned()
    }

    /// How many refresh grants were served.
    pub fn refreshes(&self) -> u32 {
        self.state.lock().unwrap().refreshes
    }

    /// Whether `token` is a refresh token that still works.
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.state.lock().unwrap().refresh_tokens.get(token) == Some(&true)
    }

    /// What Dovecot's oauth2 passdb should ask.
    pub fn introspection(&self) -> OAuthIntrospection {
        OAuthIntrospection {
            url: format!("{}/tokeninfo?access_token=", self.base),
        }
    }
}
