//! A headless Chromium and one of its tabs, driven over the DevTools protocol (JSON over
//! a WebSocket): navigate, evaluate JavaScript, resize, take screenshots.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const PATIENCE: Duration = Duration::from_secs(30);

/// The Chromium binary, installed from Debian's packages the first time it is missing.
fn chromium_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let installed = PathBuf::from("/usr/bin/chromium");
        if !installed.exists() {
            // SAFETY: geteuid has no preconditions.
            let sudo = if unsafe { libc::geteuid() } == 0 {
                ""
            } else {
                "sudo "
            };
            let script = format!(
                "{sudo}apt-get install -y chromium >/dev/null 2>&1 || \
                 ({sudo}apt-get update >/dev/null && {sudo}apt-get install -y chromium >/dev/null)"
            );
            let status = Command::new("sh").args(["-c", &script]).status();
            assert!(
                installed.exists(),
                "Chromium is needed for the browser tests and could not be installed \
                 (apt-get install chromium: {status:?})"
            );
        }
        installed
    })
}

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// The browser's DevTools connection; page commands carry the tab's session.
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: Option<String>,
    next_id: u64,
}

impl Browser {
    /// Starts a headless Chromium with a fresh profile and opens a tab in it.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        // The flags keep Chromium off the network it cannot reach here (it would retry
        // Google's hosts at every start) and out of a sandbox that needs privileges.
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut lines = stderr.lines();
        let devtools = loop {
            let line = lines
                .next()
                .expect("chromium exited before listening")
                .expect("read chromium's stderr");
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let (socket, _) = tungstenite::connect(devtools.as_str()).expect("connect to chromium");
        // A browser that stops answering fails the test instead of hanging it.
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(PATIENCE))
                .expect("read timeout");
        }
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            session: None,
            next_id: 1,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().map(str::to_string);
        browser
    }

    /// Sends one DevTools command and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .expect("send to chromium");
        loop {
            let message = self.socket.read().expect("read from chromium");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(&format!("{url} to load"), |browser| {
            let ready = browser.eval("location.href + ' ' + document.readyState");
            (ready == json!(format!("{url} complete"))).then_some(())
        });
    }

    /// Polls `check` until it returns something.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&mut Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A PNG of the viewport at `width`×`height` (a phone when `mobile`).
    pub fn screenshot(&mut self, width: u32, height: u32, mobile: bool) -> Vec<u8> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many different colours a PNG has, up to `enough`: a blank page has one.
pub fn colours(png_bytes: &[u8], enough: usize) -> usize {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("PNG size")];
    let frame = reader.next_frame(&mut pixels).expect("PNG pixels");
    let channels = frame.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    for pixel in pixels[..frame.buffer_size()].chunks(channels) {
        seen.insert(pixel.to_vec());
        if seen.len() >= enough {
            break;
        }
    }
    seen.len()
}
