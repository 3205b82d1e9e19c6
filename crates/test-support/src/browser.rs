//! A real headless Chromium (Debian's `chromium-headless-shell`) driven over the Chrome
//! DevTools Protocol, for tests that need a browser to run a page's own scripts; and
//! [`compare_screenshot`], a tolerant PNG comparison against a recorded reference.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const DEFAULT_BINARY: &str = "/usr/bin/chromium-headless-shell";
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The DevTools connection shared by the browser and its pages: commands go out through the
/// writer task, answers come back through the reader task to the oneshot waiting on their id.
struct Conn {
    next_id: AtomicU64,
    /// `None` once the connection is gone, so later commands fail at once instead of timing out.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Value>>>>,
    out: mpsc::UnboundedSender<String>,
}

impl Conn {
    /// Sends one command (to the browser, or to a page's session) and waits for its answer:
    /// the `result` object, or an error naming the method.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            msg["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().unwrap().as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(format!("CDP {method}: the browser connection is closed")),
        };
        if self.out.send(msg.to_string()).is_err() {
            return Err(format!("CDP {method}: the browser connection is closed"));
        }
        let answer = match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => {
                return Err(format!(
                    "CDP {method}: the browser connection closed before the answer"
                ));
            }
            Err(_) => {
                if let Some(pending) = self.pending.lock().unwrap().as_mut() {
                    pending.remove(&id);
                }
                return Err(format!(
                    "CDP {method}: no answer within {COMMAND_TIMEOUT:?}"
                ));
            }
        };
        if let Some(error) = answer.get("error") {
            return Err(format!("CDP {method} failed: {error}"));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// A running headless Chromium. Dropping it kills the browser and removes its profile.
pub struct Browser {
    conn: Arc<Conn>,
    tasks: Vec<JoinHandle<()>>,
    // Fields drop in order: the browser is killed before its profile is removed.
    _process: ProcessGroup,
    _profile: tempfile::TempDir,
}

/// The browser's process group, killed as a whole on drop: Debian's
/// `/usr/bin/chromium-headless-shell` is a shell script that does not `exec`, so killing the
/// child alone would leave Chromium and its helpers running.
struct ProcessGroup {
    child: Child,
    pgid: i32,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; pgid is the group made at spawn.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let _ = self.child.start_kill();
        // Wait (at most 2 s, blocking: this is test teardown) until the group is gone, so the
        // profile is not removed under a still-running browser.
        for _ in 0..200 {
            let _ = self.child.try_wait();
            // SAFETY: as above; signal 0 only checks whether the group still exists.
            if unsafe { libc::kill(-self.pgid, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Browser {
    /// Starts `chromium-headless-shell` (`NANOCLAW_CHROMIUM` overrides the path) with a fresh
    /// profile and a 1280×800 window, and connects to its DevTools WebSocket.
    pub async fn launch() -> Browser {
        let binary = std::env::var_os("NANOCLAW_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        assert!(
            binary.is_file(),
            "headless Chromium not found at {}: install the Debian package `chromium-headless-shell` \
             (scripts/prerequisites --tests does), or point NANOCLAW_CHROMIUM at a Chromium binary",
            binary.display()
        );
        let profile = tempfile::tempdir().expect("a temporary Chromium profile directory");
        let mut cmd = Command::new(&binary);
        cmd.arg("--headless");
        // Chromium will not start as root with its sandbox on (tests in containers often run as root); as
        // another user the sandbox stays on.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--no-sandbox");
        }
        cmd.args([
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            &format!("--window-size={WIDTH},{HEIGHT}"),
            "--force-device-scale-factor=1",
            "--font-render-hinting=none",
            "--no-first-run",
            "--disable-extensions",
            "--mute-audio",
            "about:blank",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so all of Chromium's processes can be killed together.
        .process_group(0)
        .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let pgid = child.id().expect("the browser's pid") as i32;
        let mut process = ProcessGroup { child, pgid };

        // The port is chosen by Chromium (port 0) and only announced on stderr.
        let mut lines = BufReader::new(process.child.stderr.take().expect("piped stderr")).lines();
        let mut seen = String::new();
        let found = tokio::time::timeout(LAUNCH_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push_str(&line);
                seen.push('\n');
                if let Some(at) = line.find("DevTools listening on ") {
                    return Some(
                        line[at + "DevTools listening on ".len()..]
                            .trim()
                            .to_string(),
                    );
                }
            }
            None
        })
        .await;
        let ws_url = match found {
            Ok(Some(url)) => url,
            Ok(None) => panic!(
                "{} exited ({:?}) before announcing its DevTools endpoint; stderr:\n{seen}",
                binary.display(),
                process.child.try_wait()
            ),
            Err(_) => panic!(
                "{} did not announce its DevTools endpoint within {LAUNCH_TIMEOUT:?}; stderr so far:\n{seen}",
                binary.display()
            ),
        };
        // Keep reading stderr: a full pipe would block Chromium.
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to Chromium's DevTools at {ws_url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let conn = Arc::new(Conn {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Some(HashMap::new())),
            out,
        });
        let writer = tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let reader_conn = Arc::clone(&conn);
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                // Events (no id) are not needed: page state is polled through Runtime.evaluate.
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let waiter = reader_conn
                    .pending
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|p| p.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(value);
                }
            }
            // Dropping the waiters wakes every pending command with an error.
            reader_conn.pending.lock().unwrap().take();
        });
        Browser {
            conn,
            tasks: vec![drain, writer, reader],
            _process: process,
            _profile: profile,
        }
    }

    /// Opens a new tab at about:blank, 1280×800 at scale 1, with the Page and Runtime domains on.
    pub async fn new_page(&self) -> Page {
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let session_id = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let page = Page {
            conn: Arc::clone(&self.conn),
            session_id,
            target_id,
        };
        page.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page.cmd("Page.enable", json!({})).await;
        page.cmd("Runtime.enable", json!({})).await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The process group and the profile go with the fields, after this.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One tab of a [`Browser`], attached through its own CDP session.
pub struct Page {
    conn: Arc<Conn>,
    session_id: String,
    target_id: String,
}

impl Page {
    /// A command in this page's session; panics naming the method when it fails.
    async fn cmd(&self, method: &str, params: Value) -> Value {
        self.conn
            .call(Some(&self.session_id), method, params)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Navigates to `url` and waits (up to 20 s) until the new document's `readyState` is
    /// `complete`. Errs when the navigation fails (`errorText`, e.g. a refused connection).
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        // Marks the current document, so the wait below cannot be satisfied by the old one.
        self.eval("document.__nanoclawOldDocument = true").await?;
        let nav = self
            .conn
            .call(Some(&self.session_id), "Page.navigate", json!({"url": url}))
            .await?;
        if let Some(error) = nav.get("errorText").and_then(Value::as_str) {
            return Err(format!("navigating to {url}: {error}"));
        }
        // A same-document navigation (fragment only) has no loaderId and keeps the document.
        let condition = if nav.get("loaderId").is_some() {
            "!document.__nanoclawOldDocument && document.readyState === 'complete'"
        } else {
            "document.readyState === 'complete'"
        };
        self.poll(condition).await.map_err(|last| {
            format!("{url} did not finish loading within {WAIT_TIMEOUT:?} (last: {last})")
        })
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value as JSON
    /// (`null` for `undefined`); a thrown exception or a CDP error is an `Err` with its text.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let result = self
            .conn
            .call(
                Some(&self.session_id),
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            return Err(format!("evaluating `{expression}`: {text}"));
        }
        Ok(result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Polls `expression` every 100 ms until it evaluates to `true`; after 20 s panics naming
    /// `what` and the last value (or error) seen.
    pub async fn wait_for(&self, expression: &str, what: &str) {
        if let Err(last) = self.poll(expression).await {
            panic!(
                "timed out after {WAIT_TIMEOUT:?} waiting for {what} (`{expression}`); last value: {last}"
            );
        }
    }

    /// Polls until `expression` is `true`; on timeout the last value or error, as text.
    async fn poll(&self, expression: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            // An error (e.g. the context being replaced mid-navigation) is retried like `false`.
            let last = match self.eval(expression).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(value) => value.to_string(),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// A PNG of the viewport (1280×800).
    pub async fn screenshot(&self) -> Vec<u8> {
        let shot = self
            .cmd(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 screenshot data")
    }

    /// The current document's URL.
    pub async fn url(&self) -> String {
        match self.eval("location.href").await {
            Ok(Value::String(url)) => url,
            other => panic!("reading location.href: {other:?}"),
        }
    }

    /// Closes the tab.
    pub async fn close(self) {
        self.conn
            .call(
                None,
                "Target.closeTarget",
                json!({"targetId": self.target_id}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The largest per-channel difference above which a pixel counts as different: generous, so
/// anti-aliasing and font rasterisation noise between machines does not count.
const CHANNEL_TOLERANCE: u8 = 48;
/// The share of differing pixels allowed, in tenths of a percent (0.5 %).
const ALLOWED_PER_MILLE: usize = 5;

/// Compares a screenshot with `<reference_dir>/<name>.png`. With
/// `NANOCLAW_UPDATE_SCREENSHOTS=1` it records `actual_png` as the reference instead.
/// Panics when more than 0.5 % of the pixels differ by more than 48 in some channel, or the
/// sizes differ, writing the actual image and a diff image for inspection.
pub fn compare_screenshot(name: &str, actual_png: &[u8], reference_dir: &Path) {
    if std::env::var("NANOCLAW_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let reference = reference_dir.join(format!("{name}.png"));
        std::fs::create_dir_all(reference_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", reference_dir.display()));
        std::fs::write(&reference, actual_png)
            .unwrap_or_else(|e| panic!("writing {}: {e}", reference.display()));
        return;
    }
    compare_screenshot_to_reference(name, actual_png, reference_dir);
}

/// [`compare_screenshot`] without the recording mode: always compares, whatever the
/// environment says (for tests of the comparison itself).
pub fn compare_screenshot_to_reference(name: &str, actual_png: &[u8], reference_dir: &Path) {
    let reference_path = reference_dir.join(format!("{name}.png"));
    let out_dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("screenshots");
    let actual_path = out_dir.join(format!("{name}.actual.png"));
    let diff_path = out_dir.join(format!("{name}.diff.png"));
    let save_actual = || {
        std::fs::create_dir_all(&out_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", out_dir.display()));
        std::fs::write(&actual_path, actual_png)
            .unwrap_or_else(|e| panic!("writing {}: {e}", actual_path.display()));
    };

    let reference_png = match std::fs::read(&reference_path) {
        Ok(bytes) => bytes,
        Err(e) => {
            save_actual();
            panic!(
                "no reference screenshot {} ({e}); record it with `NANOCLAW_UPDATE_SCREENSHOTS=1 cargo test ...` \
                 (the actual one is at {})",
                reference_path.display(),
                actual_path.display()
            );
        }
    };
    let actual = decode_rgba(actual_png)
        .unwrap_or_else(|e| panic!("decoding the actual screenshot {name}: {e}"));
    let reference = decode_rgba(&reference_png)
        .unwrap_or_else(|e| panic!("decoding {}: {e}", reference_path.display()));
    if (actual.width, actual.height) != (reference.width, reference.height) {
        save_actual();
        panic!(
            "screenshot {name} is {}×{}, its reference {} is {}×{} (the actual one is at {})",
            actual.width,
            actual.height,
            reference_path.display(),
            reference.width,
            reference.height,
            actual_path.display()
        );
    }

    let mut diff = Vec::with_capacity(actual.pixels.len());
    let mut differing = 0usize;
    for (a, r) in actual
        .pixels
        .chunks_exact(4)
        .zip(reference.pixels.chunks_exact(4))
    {
        let largest = a
            .iter()
            .zip(r)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0);
        if largest > CHANNEL_TOLERANCE {
            differing += 1;
            diff.extend_from_slice(&[255, 0, 0, 255]);
        } else {
            // A faded copy of the actual pixel (a third of the way from white), for context.
            diff.extend(a[..3].iter().map(|c| 255 - (255 - c) / 3));
            diff.push(255);
        }
    }
    let total = actual.width as usize * actual.height as usize;
    if differing * 1000 > total * ALLOWED_PER_MILLE {
        save_actual();
        std::fs::write(&diff_path, encode_rgba(actual.width, actual.height, &diff))
            .unwrap_or_else(|e| panic!("writing {}: {e}", diff_path.display()));
        panic!(
            "screenshot {name} differs from {}: {differing} of {total} pixels ({:.2} %) differ by more than \
             {CHANNEL_TOLERANCE} in a channel, at most {:.1} % may; actual: {}, diff (red = different): {}",
            reference_path.display(),
            differing as f64 * 100.0 / total as f64,
            ALLOWED_PER_MILLE as f64 / 10.0,
            actual_path.display(),
            diff_path.display()
        );
    }
}

struct Rgba {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Decodes a PNG to 8-bit RGBA (palette, 16-bit, grey and RGB images normalised).
fn decode_rgba(png_bytes: &[u8]) -> Result<Rgba, String> {
    let mut decoder = png::Decoder::new(Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!("unsupported bit depth {:?}", info.bit_depth));
    }
    let data = &buf[..info.buffer_size()];
    let pixels = match info.color_type {
        png::ColorType::Rgba => data.to_vec(),
        png::ColorType::Rgb => data
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => data
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => data.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        other => return Err(format!("unsupported colour type {other:?}")),
    };
    Ok(Rgba {
        width: info.width,
        height: info.height,
        pixels,
    })
}

/// Encodes 8-bit RGBA pixels as a PNG.
fn encode_rgba(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("PNG header");
    writer.write_image_data(pixels).expect("PNG image data");
    writer.finish().expect("PNG end");
    out
}
