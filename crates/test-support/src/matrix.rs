//! A real Matrix homeserver for the Matrix channel's tests: Synapse from PyPI (installed by
//! `scripts/prerequisites --tests` into [`SYNAPSE_VENV`]), started on a loopback port with
//! its own SQLite database in a temporary directory, and a small client for the test's users.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::KillOnDrop;
use crate::mail::free_port;

/// Where the tests find Synapse (a Python virtual environment); `NANOCLAW_SYNAPSE_VENV`
/// overrides it.
pub const SYNAPSE_VENV: &str = "/opt/nanoclaw-tests/synapse";
/// The homeserver's name (user ids end in `:localhost`).
pub const SERVER_NAME: &str = "localhost";
const SHARED_SECRET: &str = "nanoclaw-test-registration-secret";

fn venv() -> PathBuf {
    std::env::var_os("NANOCLAW_SYNAPSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYNAPSE_VENV))
}

/// Synapse, running.
pub struct Synapse {
    dir: tempfile::TempDir,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Option<KillOnDrop>,
}

impl Synapse {
    pub fn start() -> Synapse {
        let python = venv().join("bin/python");
        assert!(
            python.exists(),
            "Synapse is not installed at {}: run scripts/prerequisites --tests",
            venv().display()
        );
        let dir = tempfile::Builder::new()
            .prefix("nanoclaw-synapse")
            .tempdir()
            .unwrap();
        let port = free_port();
        let d = dir.path().display();
        let burst = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            r#"server_name: "{SERVER_NAME}"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
media_store_path: {d}/media
registration_shared_secret: "{SHARED_SECRET}"
report_stats: false
macaroon_secret_key: "nanoclaw-test-macaroon"
form_secret: "nanoclaw-test-form"
signing_key_path: {d}/signing.key
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: false
rc_message: {burst}
rc_login:
  address: {burst}
  account: {burst}
  failed_attempts: {burst}
rc_joins:
  local: {burst}
  remote: {burst}
rc_invites:
  per_room: {burst}
  per_user: {burst}
  per_issuer: {burst}
rc_room_creation: {burst}
"#
        );
        std::fs::write(dir.path().join("hs.yaml"), config).unwrap();
        let status = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.path().join("hs.yaml"))
            .arg("--generate-keys")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "synapse --generate-keys failed");
        let mut synapse = Synapse {
            dir,
            port,
            base: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        synapse.run();
        synapse
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("synapse.log"))
            .unwrap();
        let child = Command::new(venv().join("bin/python"))
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.dir.path().join("hs.yaml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(KillOnDrop(child));
        let started = Instant::now();
        loop {
            if versions_answered(self.port) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Synapse did not start within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops Synapse (every sync long poll drops) and starts it again, same port and data.
    pub fn restart(&mut self) {
        self.child = None;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run();
    }

    /// What Synapse logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default()
    }

    /// Registers `localpart` (with the shared secret, as an operator does) and logs it in.
    pub async fn register(&self, localpart: &str, admin: bool) -> MatrixUser {
        let password = format!("{localpart}-password");
        let mut cmd = Command::new(venv().join("bin/register_new_matrix_user"));
        cmd.args(["-u", localpart, "-p", &password, "-k", SHARED_SECRET])
            .arg(if admin { "-a" } else { "--no-admin" })
            .arg(&self.base)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = tokio::task::block_in_place(|| cmd.output()).unwrap();
        assert!(
            out.status.success(),
            "registering {localpart}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{}/_matrix/client/v3/login", self.base))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        MatrixUser {
            user_id: login["user_id"].as_str().unwrap().to_owned(),
            token: login["access_token"].as_str().unwrap().to_owned(),
            base: self.base.clone(),
            http,
        }
    }
}

/// Whether `GET /_matrix/client/versions` answers 200 (Synapse listens before it serves).
fn versions_answered(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.0 200")
        || head.starts_with(b"HTTP/1.1 200")
}

/// A test user's client.
#[derive(Clone)]
pub struct MatrixUser {
    pub user_id: String,
    pub token: String,
    pub base: String,
    http: reqwest::Client,
}

fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl MatrixUser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// Creates a room and invites `invite`; `direct`: a DM.
    pub async fn create_room(&self, invite: &[&str], direct: bool) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(json!({"invite": invite, "is_direct": direct, "preset": "private_chat"})),
            )
            .await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    /// The device id of this user's token.
    pub async fn device_id(&self) -> String {
        let v = self
            .call(
                reqwest::Method::GET,
                "/_matrix/client/v3/account/whoami",
                None,
            )
            .await;
        v["device_id"].as_str().unwrap().to_owned()
    }

    /// Creates an end-to-end encrypted room (`m.room.encryption` in its initial state) and
    /// invites `invite`.
    pub async fn create_encrypted_room(&self, invite: &[&str], direct: bool) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(
                    json!({"invite": invite, "is_direct": direct, "preset": "private_chat",
                    "initial_state": [{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
                ),
            )
            .await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn leave(&self, room: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/leave", seg(room)),
            Some(json!({})),
        )
        .await;
    }

    /// The user ids of everyone joined to `room`.
    pub async fn joined_member_ids(&self, room: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{}/joined_members", seg(room)),
                None,
            )
            .await;
        v["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every timeline event in `room` (any type), oldest first.
    pub async fn events(&self, room: &str) -> Vec<Value> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                    seg(room)
                ),
                None,
            )
            .await;
        let mut events = v["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// `PUT /sendToDevice/{type}/{txn}` with `{user: {device: content}}`.
    pub async fn send_to_device(&self, kind: &str, messages: Value) {
        let txn = format!(
            "d{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        self.call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/sendToDevice/{}/{txn}", seg(kind)),
            Some(json!({"messages": messages})),
        )
        .await;
    }

    /// Any client-server call, answered 2xx (asserted), as JSON.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body).await
    }

    pub async fn join(&self, room: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/join", seg(room)),
            Some(json!({})),
        )
        .await;
    }

    pub async fn invite(&self, room: &str, user: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/invite", seg(room)),
            Some(json!({"user_id": user})),
        )
        .await;
    }

    /// How many have joined `room`.
    pub async fn joined_members(&self, room: &str) -> usize {
        self.joined_member_ids(room).await.len()
    }

    /// Sends an `m.room.message` with this content; returns its event id.
    pub async fn send(&self, room: &str, content: Value) -> String {
        self.send_event(room, "m.room.message", content).await
    }

    /// Sends an event the homeserver may refuse; `None` when it did.
    pub async fn try_send_event(&self, room: &str, kind: &str, content: Value) -> Option<String> {
        let txn = format!(
            "u{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let response = self
            .http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/send/{kind}/{txn}",
                self.base,
                seg(room)
            ))
            .bearer_auth(&self.token)
            .json(&content)
            .send()
            .await
            .unwrap();
        if !response.status().is_success() {
            return None;
        }
        let v: Value = response.json().await.unwrap();
        v["event_id"].as_str().map(str::to_owned)
    }

    /// Sends an event of any type (what a buggy or hostile client could send).
    pub async fn send_event(&self, room: &str, kind: &str, content: Value) -> String {
        let txn = format!(
            "t{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let v = self
            .call(
                reqwest::Method::PUT,
                &format!("/_matrix/client/v3/rooms/{}/send/{kind}/{txn}", seg(room)),
                Some(content),
            )
            .await;
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// Sends text; `mention` names the user in `m.mentions` and in the body.
    pub async fn say(&self, room: &str, text: &str, mention: Option<&str>) -> String {
        let content = match mention {
            Some(user) => json!({
                "msgtype": "m.text",
                "body": format!("{user}: {text}"),
                "m.mentions": {"user_ids": [user]},
            }),
            None => json!({"msgtype": "m.text", "body": text}),
        };
        self.send(room, content).await
    }

    pub async fn upload(&self, name: &str, data: &[u8]) -> String {
        let v: Value = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .query(&[("filename", name)])
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["content_uri"].as_str().unwrap().to_owned()
    }

    pub async fn download(&self, mxc: &str) -> Vec<u8> {
        let (server, id) = mxc.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
        self.http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{server}/{id}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// Every `m.room.message` event in `room`, oldest first.
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let mut events = self.events(room).await;
        events.retain(|e| e["type"] == "m.room.message");
        events
    }

    /// Synapse's admin API: limits `user`'s messages (`None` removes the override).
    pub async fn override_ratelimit(&self, user: &str, per_second: Option<(u32, u32)>) {
        let path = format!("/_synapse/admin/v1/users/{}/override_ratelimit", seg(user));
        match per_second {
            Some((messages_per_second, burst_count)) => {
                self.call(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"messages_per_second": messages_per_second, "burst_count": burst_count})),
                )
                .await;
            }
            None => {
                self.call(reqwest::Method::DELETE, &path, None).await;
            }
        }
    }
}
