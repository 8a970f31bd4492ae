//! Runs a private moto_server (the AWS emulator) for one test, so tests are isolated and run in parallel.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A moto_server process, killed when this value is dropped.
pub struct Emulator {
    child: Child,
    port: u16,
    /// The server's stderr: its startup banner, then one access line per request.
    log: tempfile::NamedTempFile,
}

impl Emulator {
    /// Starts a fresh emulator and waits until it answers.
    pub fn start() -> Emulator {
        let server = moto_server_path();
        let log =
            tempfile::Builder::new().prefix("moto-").suffix(".log").tempfile().expect("create the emulator's log file");
        // Port 0: the server binds a free port itself and reports it in its log. Picking a port
        // here and handing it over would race with the other tests starting emulators in parallel.
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env("MOTO_ACCOUNT_ID", "123456789012")
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopen the emulator's log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", server.display()));
        // Owned from here on, so that a panic below still kills the process.
        let mut emulator = Emulator { child, port: 0, log };
        emulator.wait_until_ready();
        emulator
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points an AWS SDK (imagectl, boto3, the AWS CLI) at this emulator.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint_url().as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            // boto3 and the AWS CLI read this one instead of AWS_REGION.
            ("AWS_DEFAULT_REGION", "us-east-1"),
            // Otherwise credential resolution may probe the instance metadata service and stall.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The `imagectl` binary with an environment that reaches this emulator and nothing else.
    pub fn imagectl_cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from(self.imagectl_process())
    }

    /// The same as a plain process, for runs a test starts in the background (and may kill).
    pub fn imagectl_process(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagectl"));
        // Drop every inherited AWS_* setting: a developer's AWS_PROFILE, AWS_SESSION_TOKEN or
        // AWS_ENDPOINT_URL_S3 would otherwise leak into the test and might even reach real AWS.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env());
        cmd
    }

    /// Forgets every resource created so far (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let (status, body) = self.http("POST", "/moto-api/reset");
        assert_eq!(status, 200, "emulator reset failed: {body}");
    }

    /// Number of requests served so far, not counting the harness's own `/moto-api/` calls:
    /// compare it before and after a command to assert how many AWS requests the command made.
    pub fn request_count(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|line| line.contains("] \"") && line.contains(" HTTP/1.") && !line.contains(" /moto-api/"))
            .count()
    }

    /// A minimal HTTP/1.0 request to the emulator: returns the status code and the body.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        try_http(self.port, method, path)
            .unwrap_or_else(|e| panic!("{method} {path} to the emulator failed: {e}\n{}", self.log_tail()))
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll moto_server") {
                panic!("moto_server exited during startup ({status}):\n{}", self.log_tail());
            }
            if self.port == 0 {
                self.port = reported_port(&self.log_text()).unwrap_or(0);
            }
            if self.port != 0 && matches!(try_http(self.port, "GET", "/moto-api/"), Ok((200, _))) {
                return;
            }
            if Instant::now() > deadline {
                panic!("moto_server not ready after {READY_TIMEOUT:?}:\n{}", self.log_tail());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        fs::read(self.log.path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `IMAGECTL_MOTO_SERVER` (set by scripts/test), else the project's own venv.
fn moto_server_path() -> PathBuf {
    let path = std::env::var_os("IMAGECTL_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"));
    assert!(
        path.is_file(),
        "the AWS emulator is not installed at {}: run `scripts/emulator install` \
         (or run the whole suite with `scripts/test`)",
        path.display()
    );
    path
}

/// The port in werkzeug's startup line ` * Running on http://127.0.0.1:PORT`.
fn reported_port(log: &str) -> Option<u16> {
    const BANNER: &str = "Running on http://127.0.0.1:";
    let rest = &log[log.find(BANNER)? + BANNER.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn try_http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    // HTTP/1.0: the server closes the connection after the response, so reading to EOF is enough.
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n")?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let response = String::from_utf8_lossy(&bytes);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    Ok((status, body))
}
