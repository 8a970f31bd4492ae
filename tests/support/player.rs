//! The test-side instance player (tests/player/instance_player.py) beside one test's emulator: it plays each build
//! instance imagectl launches there — runs the script the instance was handed in a sandbox and stops the instance
//! when the script powers off — so that image builds run for real, except the VM.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::Emulator;

/// How long the player may take to end its sandboxes after SIGTERM before it is killed outright.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `instance_player.py play`, stopped when this value is dropped.
pub struct Player {
    child: Child,
    log: PathBuf,
}

impl Player {
    /// Whether sandboxes can run here (asked once per test binary): `instance_player.py check` exits 2 when a
    /// prerequisite is missing (not root, no overlayfs) — the test then skips, saying why — and 1 when the sandbox
    /// is broken, which fails the test.
    pub fn available(test: &str) -> bool {
        static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
        let check = CHECK.get_or_init(|| {
            let output =
                Command::new(python()).arg(script()).arg("check").output().expect("run instance_player.py check");
            let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            match output.status.code() {
                Some(0) => Ok(()),
                Some(2) => Err(said),
                _ => panic!("the instance sandbox is broken here: {said}\n{}", String::from_utf8_lossy(&output.stderr)),
            }
        });
        match check {
            Ok(()) => true,
            Err(reason) => {
                eprintln!("SKIPPED {test}: the instance player cannot run here: {reason}");
                false
            }
        }
    }

    /// Starts playing the build instances of `regions` in the emulator; its records and log go to `workdir`.
    pub fn start(emulator: &Emulator, regions: &[&str], workdir: &Path) -> Player {
        std::fs::create_dir_all(workdir).expect("create the player's directory");
        let log = workdir.join("player.log");
        // Warnings go to stderr: kept beside the log rather than mixed into the test's output.
        let stderr = File::create(workdir.join("player.stderr")).expect("create the player's stderr file");
        let child = Command::new(python())
            .arg(script())
            .arg("--log")
            .arg(&log)
            .args(["play", "--endpoint", &emulator.endpoint_url(), "--regions", &regions.join(",")])
            .args(["--poll-interval", "0.25", "--workdir"])
            .arg(workdir.join("plays"))
            .env_clear()
            .envs(emulator.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run instance_player.py play");
        Player { child, log }
    }

    /// What the player logged so far (what it played, how each play ended), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the player then ends the sandboxes it runs (each in a session of its own), which a
        // kill of the player alone would leave behind.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

fn script() -> PathBuf {
    repo().join("tests/player/instance_player.py")
}
