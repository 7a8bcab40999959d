//! Real notice receivers for the tests: an SMTP server (Python's aiosmtpd) and a webhook
//! receiver that checks sekisho's HMAC signature, each storing what it accepted as files,
//! run on the host or inside a topology's namespace and killed by PID on drop.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a receiver may take to start, and a test to wait for a message.
pub const WAIT: Duration = Duration::from_secs(20);

pub const SMTP_SERVER: &str = r#"
# A loopback SMTP server that stores each message: N.eml (raw) and N.json (decoded).
import json, os, sys, time, email, email.header, email.policy
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]

class Store:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Store.count += 1
        base = os.path.join(out, "%d" % Store.count)
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        decoded = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # RFC 2047 decoding of the raw header: Python's address parser keeps the space
            # between two encoded-words of one display name, which RFC 2047 §6.2 drops.
            "from": str(email.header.make_header(email.header.decode_header(
                email.message_from_bytes(raw)["From"]))),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "key": msg["X-Sekisho-Key"],
            "reference": msg["X-Sekisho-Reference"],
            "drill": msg["X-Sekisho-Drill"],
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "body": msg.get_content(),
        }
        with open(base + ".eml.tmp", "wb") as f:
            f.write(raw)
        with open(base + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(decoded, f, ensure_ascii=False)
        os.rename(base + ".eml.tmp", base + ".eml")
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK stored"

controller = Controller(Store(), hostname="127.0.0.1", port=port)
controller.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
"#;

pub const WEBHOOK_RECEIVER: &str = r#"
# A loopback webhook receiver: checks the sekisho signature, stores accepted bodies.
import hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

secret, out = open(sys.argv[1], "rb").read().strip(), sys.argv[2]
count = 0

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        ts = self.headers.get("X-Sekisho-Timestamp", "")
        sig = self.headers.get("X-Sekisho-Signature", "")
        mac = hmac.new(secret, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300
        if not (fresh and hmac.compare_digest("sha256=" + mac, sig)):
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"bad signature")
            return
        count += 1
        record = {
            "path": self.path,
            "content_type": self.headers["Content-Type"],
            "idempotency_key": self.headers["Idempotency-Key"],
            "timestamp": ts,
            "signature": sig,
            "body": json.loads(raw),
        }
        path = os.path.join(out, "%d.json" % count)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(path + ".tmp", path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("READY %d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A child process killed (SIGKILL, by its PID) and reaped on drop.
pub struct KillOnDrop {
    child: Child,
    what: &'static str,
}

impl KillOnDrop {
    /// Starts `python3 -u SCRIPT ARGS…` (inside network namespace `ns` when given) and
    /// waits for its `READY…` line; returns the line.
    pub fn python(
        what: &'static str,
        script: &Path,
        args: &[&str],
        ns: Option<&str>,
    ) -> (KillOnDrop, String) {
        let mut cmd = match ns {
            Some(ns) => crate::netns::command_in(ns, "python3")
                .unwrap_or_else(|err| panic!("enter {ns} for {what}: {err}")),
            None => Command::new("python3"),
        };
        let mut child = cmd
            .arg("-u")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("start {what}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let guard = KillOnDrop { child, what };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Drain the rest so the child never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(WAIT) {
            Ok(line) if line.starts_with("READY") => (guard, line),
            Ok(line) => panic!("{what} said {line:?} instead of READY"),
            Err(_) => panic!("{what} did not get ready within {WAIT:?}"),
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = self.child.id();
        if let Err(err) = self.child.kill() {
            eprintln!("kill {} (pid {pid}): {err}", self.what);
        }
        let _ = self.child.wait();
    }
}

/// Installs `aiosmtpd` for python3 when it is missing.
pub fn ensure_aiosmtpd() {
    let present = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if present {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
        .status()
        .unwrap_or_else(|err| panic!("run pip: {err}"));
    assert!(status.success(), "python3 -m pip install aiosmtpd failed");
}

/// The files in `dir` ending in `.SUFFIX`, sorted.
pub fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext.to_string_lossy() == suffix)
        })
        .collect();
    found.sort();
    found
}

/// Waits until `dir` holds `count` `*.json` files (up to `limit`); returns them parsed.
pub fn wait_for_json(dir: &Path, count: usize, limit: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let found = files(dir, "json");
        if found.len() >= count {
            return found
                .iter()
                .map(|path| {
                    let text = std::fs::read_to_string(path)
                        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
                    serde_json::from_str(&text)
                        .unwrap_or_else(|err| panic!("parse {}: {err}", path.display()))
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} holds {} messages, expected {count}",
            dir.display(),
            found.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An aiosmtpd server on 127.0.0.1:`port` (in `ns` when given) storing into `out`.
pub fn start_smtp(scratch: &Path, port: u16, out: &Path, ns: Option<&str>) -> KillOnDrop {
    ensure_aiosmtpd();
    let script = scratch.join("smtp_server.py");
    std::fs::write(&script, SMTP_SERVER).expect("write smtp script");
    let (guard, _) = KillOnDrop::python(
        "aiosmtpd",
        &script,
        &[&port.to_string(), &out.to_string_lossy()],
        ns,
    );
    guard
}

/// A webhook receiver checking the secret in `key_file` (in `ns` when given), storing into
/// `out`; returns it and its port.
pub fn start_webhook(
    scratch: &Path,
    key_file: &Path,
    out: &Path,
    ns: Option<&str>,
) -> (KillOnDrop, u16) {
    let script = scratch.join("webhook_receiver.py");
    std::fs::write(&script, WEBHOOK_RECEIVER).expect("write receiver script");
    let (guard, ready) = KillOnDrop::python(
        "webhook receiver",
        &script,
        &[&key_file.to_string_lossy(), &out.to_string_lossy()],
        ns,
    );
    let port = ready
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("receiver said {ready:?}"));
    (guard, port)
}
