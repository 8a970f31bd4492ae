//! The instance side, for real: the exact script imagectl hands to a build instance (`build::script`) runs against
//! the emulator's S3 with real installers, played by tests/player (an isolated root: namespaces, an overlay over /,
//! chroot — the host stays untouched). The five cases of the image-build issue — an installer that succeeds, one
//! that exits 3, one that hangs, one that waits for input, one that calls reboot — plus both delivery forms
//! (user data and SSM commands) found in the emulator and played side by side.
//!
//! Test side: boto3 (from the emulator's venv) creates the buckets, uploads the packages content-addressed and
//! presigns the URLs, as the AWS side of imagectl does; the reports are read back from S3 and judged with
//! `build::judge`. The tests skip (saying why) only where sandboxes cannot run: not root, no unshare, no overlayfs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imagectl::build::{
    self, script, BuildState, InstanceJob, InstanceResult, InstanceStatus, JobPackage, ReportKeys, ReportUrls,
};
use imagectl::model::Platform;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::Emulator;

const LOGS_BUCKET: &str = "imagectl-test-logs";
const ARTIFACTS_BUCKET: &str = "imagectl-test-artifacts";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn player() -> PathBuf {
    repo().join("tests/player/instance_player.py")
}

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

/// Whether sandboxes can run here (checked once): `instance_player.py check` exits 2 when a prerequisite is
/// missing (the tests skip, saying why) and 1 when the sandbox is broken (the tests fail).
fn sandbox_available(test: &str) -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        let output = Command::new(python()).arg(player()).arg("check").output().expect("run instance_player.py check");
        let said = String::from_utf8_lossy(&output.stdout).trim().to_string();
        match output.status.code() {
            Some(0) => Ok(()),
            Some(2) => Err(said),
            _ => panic!(
                "the instance sandbox is broken on this machine: {said}\n{}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    });
    match check {
        Ok(()) => true,
        Err(reason) => {
            eprintln!("SKIPPED {test}: instance sandboxes cannot run here: {reason}");
            false
        }
    }
}

/// Runs a Python snippet with boto3 against the emulator: `spec` on stdin as JSON, its stdout parsed as JSON.
fn boto3(emulator: &Emulator, snippet: &str, spec: &Value) -> Value {
    let program = format!(
        "import base64, json, sys, boto3\nfrom botocore.config import Config\n\
         S3 = boto3.client('s3', config=Config(signature_version='s3v4', s3={{'addressing_style': 'path'}}))\n\
         spec = json.load(sys.stdin)\n{snippet}"
    );
    let mut child = Command::new(python())
        .args(["-c", &program])
        .env_clear()
        .envs(emulator.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    serde_json::to_writer(child.stdin.take().unwrap(), spec).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "boto3 snippet failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the snippet prints JSON")
}

/// Buckets (the logs bucket versioned, so that every status the instance wrote is kept), the packages uploaded
/// content-addressed, presigned GET URLs for them and presigned PUT URLs for the reports.
const PREPARE: &str = r#"
for bucket in (spec['logs'], spec['artifacts']):
    S3.create_bucket(Bucket=bucket)
S3.put_bucket_versioning(Bucket=spec['logs'], VersioningConfiguration={'Status': 'Enabled'})
out = {'packages': [], 'reports': {}}
for package in spec['packages']:
    with open(package['path'], 'rb') as f:
        S3.put_object(Bucket=spec['artifacts'], Key=package['key'], Body=f.read())
    out['packages'].append(S3.generate_presigned_url('get_object', Params={'Bucket': spec['artifacts'], 'Key': package['key']}, ExpiresIn=3600))
for name, key in spec['reports'].items():
    out['reports'][name] = S3.generate_presigned_url('put_object', Params={'Bucket': spec['logs'], 'Key': key}, ExpiresIn=3600)
print(json.dumps(out))
"#;

/// Every version of every object under a prefix of the logs bucket, oldest first.
const READ_REPORTS: &str = r#"
out = {}
pages = S3.get_paginator('list_object_versions').paginate(Bucket=spec['logs'], Prefix=spec['prefix'])
for page in pages:
    for version in page.get('Versions', []):
        body = S3.get_object(Bucket=spec['logs'], Key=version['Key'], VersionId=version['VersionId'])['Body'].read()
        out.setdefault(version['Key'], []).append(body.decode('utf-8', 'replace'))
for key in out:
    out[key].reverse()  # S3 lists the newest version first
print(json.dumps(out))
"#;

/// One build's inputs: its ID, the installer and other package files, the settings of the job.
struct Case {
    build_id: &'static str,
    /// (file name, content); the first is the installer.
    files: Vec<(&'static str, String)>,
    installer_arguments: Vec<String>,
    timeout_seconds: u64,
    scan_command: Option<String>,
    generalize: bool,
    power_off_when_done: bool,
    /// Host files the sandbox hides (a base image without curl).
    hide: Vec<&'static str>,
    /// Hand the instance a wrong SHA-256 for the installer.
    wrong_checksum: bool,
}

impl Case {
    fn new(build_id: &'static str, installer: &str) -> Case {
        Case {
            build_id,
            files: vec![("install.sh", installer.to_string())],
            installer_arguments: vec![],
            timeout_seconds: 60,
            scan_command: None,
            generalize: false,
            power_off_when_done: false,
            hide: vec![],
            wrong_checksum: false,
        }
    }
}

/// A prepared build: the emulator holds its packages, and `job` is what imagectl would hand the instance.
struct Prepared {
    job: InstanceJob,
    keys: ReportKeys,
}

fn prepare(emulator: &Emulator, dir: &Path, case: &Case) -> Prepared {
    let keys = ReportKeys::for_build(case.build_id);
    let files_dir = dir.join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let mut packages = Vec::new();
    let mut specs = Vec::new();
    for (name, content) in &case.files {
        let path = files_dir.join(name);
        std::fs::write(&path, content).unwrap();
        let sha256 = hex::encode(Sha256::digest(content.as_bytes()));
        specs.push(json!({"path": path, "key": build::package_key(&sha256, name)}));
        packages.push((name.to_string(), sha256));
    }
    let spec = json!({
        "logs": LOGS_BUCKET,
        "artifacts": ARTIFACTS_BUCKET,
        "packages": specs,
        "reports": {"status": keys.status, "log": keys.log, "result": keys.result, "scan": keys.scan},
    });
    let urls = boto3(emulator, PREPARE, &spec);
    let url = |name: &str| urls["reports"][name].as_str().unwrap().to_string();
    let job = InstanceJob {
        build_id: case.build_id.to_string(),
        platform: Platform::Linux,
        packages: packages
            .into_iter()
            .zip(urls["packages"].as_array().unwrap())
            .map(|((file_name, sha256), url)| JobPackage { file_name, url: url.as_str().unwrap().to_string(), sha256 })
            .collect(),
        installer: case.files[0].0.to_string(),
        installer_arguments: case.installer_arguments.clone(),
        timeout_seconds: case.timeout_seconds,
        scan_command: case.scan_command.clone(),
        builtin_scan: true,
        generalize: case.generalize,
        report: ReportUrls { status: url("status"), log: url("log"), result: url("result"), scan: url("scan") },
        power_off_when_done: case.power_off_when_done,
    };
    Prepared { job, keys }
}

/// What came back: the instance's reports in S3 and the player's record of the sandbox.
struct Outcome {
    result: InstanceResult,
    statuses: Vec<InstanceStatus>,
    log: String,
    scan: String,
    /// The player's record: exitCode, durationSeconds, power, calls, upper.
    record: Value,
    /// The sandbox's overlay upper directory: every file the script changed.
    upper: PathBuf,
    wall: Duration,
    /// Holds the play (and `upper`) until the test ends.
    _dir: tempfile::TempDir,
}

impl Outcome {
    fn judged(&self) -> (BuildState, String) {
        build::judge(&self.result, &format!("s3://{LOGS_BUCKET}/{}", ReportKeys::for_build(&self.result.build_id).log))
    }
}

fn read_reports(emulator: &Emulator, keys: &ReportKeys) -> (InstanceResult, Vec<InstanceStatus>, String, String) {
    let prefix = keys.result.rsplit_once('/').unwrap().0.to_string() + "/";
    let objects = boto3(emulator, READ_REPORTS, &json!({"logs": LOGS_BUCKET, "prefix": prefix}));
    let versions = |key: &str| -> Vec<String> {
        objects[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in S3: {objects:#}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let latest = |key: &str| versions(key).pop().unwrap();
    let result: InstanceResult = serde_json::from_str(&latest(&keys.result))
        .unwrap_or_else(|e| panic!("result.json does not deserialize: {e}\n{}", latest(&keys.result)));
    let statuses = versions(&keys.status)
        .iter()
        .map(|s| serde_json::from_str(s).unwrap_or_else(|e| panic!("status.json does not deserialize: {e}\n{s}")))
        .collect();
    (result, statuses, latest(&keys.log), latest(&keys.scan))
}

/// Runs a script in the sandbox through `instance_player.py run`; returns the player's record.
fn play_script(dir: &Path, script: &str, hide: &[&str]) -> (Value, Duration) {
    let script_path = dir.join("handed-to-the-instance");
    std::fs::write(&script_path, script).unwrap();
    let started = Instant::now();
    let output = Command::new(python())
        .arg(player())
        .args(["run", "--max-seconds", "300", "--script"])
        .arg(&script_path)
        .arg("--workdir")
        .arg(dir.join("play"))
        .arg("--log")
        .arg(dir.join("player.log"))
        .args(hide.iter().flat_map(|path| ["--hide", path]))
        .output()
        .expect("run the instance player");
    let wall = started.elapsed();
    assert!(output.status.success(), "the player failed:\n{}", String::from_utf8_lossy(&output.stderr));
    (serde_json::from_slice(&output.stdout).expect("the player prints its record"), wall)
}

enum Delivery {
    UserData,
    Ssm,
}

/// Prepares the case in a fresh emulator, plays the script in the delivery form given, reads the reports back.
fn run_build(test: &str, case: &Case, delivery: Delivery) -> Outcome {
    let emulator = Emulator::start();
    let dir = tempfile::Builder::new().prefix("imagectl-instance-").tempdir().unwrap();
    let mut prepared = prepare(&emulator, dir.path(), case);
    if case.wrong_checksum {
        prepared.job.packages[0].sha256 = "0".repeat(64);
    }
    let script = match delivery {
        Delivery::UserData => script::render(&prepared.job),
        Delivery::Ssm => script::ssm_commands(&prepared.job).join("\n") + "\n",
    };
    let (record, wall) = play_script(dir.path(), &script, &case.hide);
    let (result, statuses, log, scan) = read_reports(&emulator, &prepared.keys);
    let upper = PathBuf::from(record["upper"].as_str().unwrap());
    eprintln!(
        "{test}: played in {:.2} s (sandbox {:.2} s), installer {} s, exit {:?}, timed out {}, reboot attempted {}",
        wall.as_secs_f64(),
        record["durationSeconds"].as_f64().unwrap(),
        result.duration_seconds,
        result.exit_code,
        result.timed_out,
        result.reboot_attempted
    );
    Outcome { result, statuses, log, scan, record, upper, wall, _dir: dir }
}

fn states(outcome: &Outcome) -> Vec<BuildState> {
    outcome.statuses.iter().map(|s| s.state).collect()
}

/// What must never change on the host: its machine ID, its SSH configuration, and nothing installed in /opt.
fn host_fingerprint() -> String {
    let machine_id = std::fs::read("/etc/machine-id").map(|b| hex::encode(Sha256::digest(b))).unwrap_or_default();
    let mut ssh: Vec<String> = std::fs::read_dir("/etc/ssh")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    ssh.sort();
    let installed = Path::new("/opt/imagectl-testapp").exists();
    format!("machine-id {machine_id}; /etc/ssh {ssh:?}; /opt/imagectl-testapp {installed}")
}

const SUCCEEDS: &str = r#"#!/bin/sh
# A well-behaved installer: unattended, synchronous, exits 0.
set -e
echo "installing testapp with arguments: $*"
mkdir -p /opt/imagectl-testapp
cp payload.txt /opt/imagectl-testapp/payload.txt
echo "installed" >/opt/imagectl-testapp/installed
# The host has no SSH host keys for the generalize step to remove; a base image would: plant one.
mkdir -p /etc/ssh
echo "not a real key" >/etc/ssh/ssh_host_ed25519_key
echo "testapp installed"
"#;

fn succeeding_case(build_id: &'static str) -> Case {
    Case {
        files: vec![("install.sh", SUCCEEDS.into()), ("payload.txt", "the payload\n".into())],
        installer_arguments: vec!["--accept-license".into(), "--prefix=/opt/it's here".into()],
        scan_command: Some("test -f /opt/imagectl-testapp/installed && echo 'scan command: testapp present'".into()),
        generalize: true,
        power_off_when_done: true,
        ..Case::new(build_id, "")
    }
}

#[test]
fn installer_that_succeeds_is_scanned_generalized_and_powered_off() {
    if !sandbox_available("installer_that_succeeds_is_scanned_generalized_and_powered_off") {
        return;
    }
    let host_before = host_fingerprint();
    let outcome = run_build("succeeds", &succeeding_case("app-r1-00000001"), Delivery::UserData);

    let result = &outcome.result;
    assert_eq!(result.build_id, "app-r1-00000001");
    assert_eq!(result.exit_code, Some(0), "{}", outcome.log);
    assert!(!result.timed_out && !result.reboot_attempted && result.error.is_none(), "{result:?}");
    let scan = result.scan.as_ref().expect("the scan ran");
    assert!(scan.passed && scan.findings.is_empty(), "{scan:?}\n{}", outcome.scan);
    assert!(result.generalized);
    assert_eq!(outcome.judged(), (BuildState::Scanning, "installed and scanned".to_string()));
    let output = std::fs::read_to_string(outcome.record["output"].as_str().unwrap()).unwrap();
    assert!(output.contains("transfers with curl"), "{output}");
    assert_eq!(states(&outcome), [BuildState::Building, BuildState::Scanning]);

    // The installer's output (arguments passed on, quotes intact) is in the log; the scan report has both scans.
    assert!(
        outcome.log.contains("installing testapp with arguments: --accept-license --prefix=/opt/it's here"),
        "{}",
        outcome.log
    );
    assert!(outcome.log.contains("testapp installed"), "{}", outcome.log);
    assert!(outcome.log.contains("imagectl: exit code 0, timed out false, reboot attempted false"), "{}", outcome.log);
    assert!(outcome.scan.contains("== built-in hygiene scan =="), "{}", outcome.scan);
    assert!(outcome.scan.contains("scan command: testapp present"), "{}", outcome.scan);
    assert!(outcome.scan.contains("imagectl: 0 finding(s)"), "{}", outcome.scan);

    // The "image": the installed files, generalized (machine-id emptied, host keys gone), the work dir removed.
    let upper = &outcome.upper;
    assert_eq!(std::fs::read_to_string(upper.join("opt/imagectl-testapp/payload.txt")).unwrap(), "the payload\n");
    assert_eq!(std::fs::read(upper.join("etc/machine-id")).unwrap(), b"");
    assert!(!upper.join("etc/ssh/ssh_host_ed25519_key").exists());
    let leftovers: Vec<_> = std::fs::read_dir(upper.join("var/tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "the build left {leftovers:?} in /var/tmp");

    // Powered off at the end, by absolute path: the player saw it; nothing reached the host.
    assert_eq!(outcome.record["power"], json!(["poweroff"]));
    assert_eq!(host_fingerprint(), host_before, "the host changed");
}

#[test]
fn installer_that_exits_3_is_issues_found_with_the_log_location() {
    if !sandbox_available("installer_that_exits_3_is_issues_found_with_the_log_location") {
        return;
    }
    let installer = "#!/bin/sh\necho 'unpacking'\necho 'error: libfoo.so.2 not found' >&2\nexit 3\n";
    let case = Case { power_off_when_done: true, generalize: true, ..Case::new("app-r1-00000003", installer) };
    let outcome = run_build("exits 3", &case, Delivery::UserData);

    let result = &outcome.result;
    assert_eq!(result.exit_code, Some(3));
    assert!(!result.timed_out && !result.reboot_attempted);
    assert_eq!(result.scan, None, "no scan after a failed installation");
    assert!(!result.generalized);
    let (state, message) = outcome.judged();
    assert_eq!(state, BuildState::IssuesFound);
    assert_eq!(
        message,
        "the installer exited with 3; log: s3://imagectl-test-logs/imagectl/builds/app-r1-00000003/install.log"
    );
    assert!(
        outcome.log.contains("unpacking") && outcome.log.contains("error: libfoo.so.2 not found"),
        "{}",
        outcome.log
    );
    assert_eq!(states(&outcome), [BuildState::Building]);
    assert!(outcome.scan.contains("the scan did not run"), "{}", outcome.scan);
    // Not generalized: the host's machine-id was never copied up, let alone emptied.
    assert!(!outcome.upper.join("etc/machine-id").exists());
    // Powered off all the same, so that the failed build's instance does not run on.
    assert_eq!(outcome.record["power"], json!(["poweroff"]));
}

#[test]
fn installer_that_hangs_is_stopped_at_the_timeout_and_investigating() {
    if !sandbox_available("installer_that_hangs_is_stopped_at_the_timeout_and_investigating") {
        return;
    }
    let installer = "#!/bin/sh\necho 'waiting for a service that never answers'\nsleep 3600\necho 'never printed'\n";
    let case = Case { timeout_seconds: 3, ..Case::new("app-r1-0000000a", installer) };
    let outcome = run_build("hangs", &case, Delivery::UserData);

    let result = &outcome.result;
    assert!(result.timed_out, "{result:?}");
    assert_eq!(result.exit_code, Some(124), "timeout(1) stopped it with SIGTERM");
    assert!((3..10).contains(&result.duration_seconds), "{result:?}");
    assert!(outcome.wall < Duration::from_secs(30), "the play took {:?}", outcome.wall);
    assert_eq!(outcome.judged().0, BuildState::Investigating);
    assert!(outcome.log.contains("waiting for a service") && !outcome.log.contains("never printed"), "{}", outcome.log);
    assert!(outcome.log.contains("did not finish within 3 s"), "{}", outcome.log);
    assert_eq!(result.scan, None);
    assert_eq!(outcome.record["power"], json!([]));
}

#[test]
fn installer_that_waits_for_input_fails_fast() {
    if !sandbox_available("installer_that_waits_for_input_fails_fast") {
        return;
    }
    let installer = "#!/bin/sh\necho 'Accept the license? [y/N]'\nread answer\nif [ \"$answer\" != y ]; then\n  echo 'license not accepted' >&2\n  exit 1\nfi\n";
    let case = Case { timeout_seconds: 120, ..Case::new("app-r1-0000000b", installer) };
    let outcome = run_build("waits for input", &case, Delivery::UserData);

    let result = &outcome.result;
    assert_eq!(result.exit_code, Some(1));
    assert!(!result.timed_out);
    // stdin is closed: `read` meets end-of-file at once, far from the 120 s timeout.
    assert!(result.duration_seconds < 5, "{result:?}");
    assert!(outcome.wall < Duration::from_secs(30), "the play took {:?}", outcome.wall);
    assert_eq!(outcome.judged().0, BuildState::IssuesFound);
    assert!(outcome.log.contains("license not accepted"), "{}", outcome.log);
}

#[test]
fn installer_that_calls_reboot_is_detected_and_fails() {
    if !sandbox_available("installer_that_calls_reboot_is_detected_and_fails") {
        return;
    }
    let installer = r#"#!/bin/sh
echo 'configuring'
reboot
echo "reboot answered $?"
# The other spellings of the same attempt.
systemctl reboot
shutdown -r now
init 6
# Harmless calls go through.
shutdown -c
systemctl --version >/dev/null && echo 'other systemctl calls pass'
exit 0
"#;
    let case = Case { generalize: true, ..Case::new("app-r1-0000000c", installer) };
    let outcome = run_build("calls reboot", &case, Delivery::UserData);

    let result = &outcome.result;
    assert!(result.reboot_attempted, "{result:?}");
    assert_eq!(result.exit_code, Some(0), "the installer carried on and exited 0: the reboot alone fails it");
    let (state, message) = outcome.judged();
    assert_eq!(state, BuildState::IssuesFound);
    assert!(message.starts_with("the installer tried to reboot the instance; log: s3://"), "{message}");
    assert!(outcome.log.contains("imagectl: reboot attempt: reboot"), "{}", outcome.log);
    for attempt in ["systemctl reboot", "shutdown -r now", "init 6"] {
        assert!(outcome.log.contains(&format!("imagectl: reboot attempt: {attempt}\n")), "{attempt}:\n{}", outcome.log);
    }
    assert!(!outcome.log.contains("reboot attempt: shutdown -c"), "{}", outcome.log);
    assert!(outcome.log.contains("reboot answered 1"), "{}", outcome.log);
    assert!(outcome.log.contains("other systemctl calls pass"), "{}", outcome.log);
    assert_eq!(result.scan, None);
    assert!(!result.generalized);
    // The build's own shims caught both: nothing reached the (sandbox's) machine power commands but the
    // pass-through `systemctl --version`.
    assert_eq!(outcome.record["power"], json!([]));
    assert_eq!(outcome.record["calls"], json!(["systemctl --version"]));
}

#[test]
fn ssm_commands_run_the_same_script() {
    if !sandbox_available("ssm_commands_run_the_same_script") {
        return;
    }
    let outcome = run_build("ssm form", &succeeding_case("app-r1-00000005"), Delivery::Ssm);
    assert_eq!(outcome.result.exit_code, Some(0), "{}", outcome.log);
    assert_eq!(outcome.judged().0, BuildState::Scanning);
    assert_eq!(states(&outcome), [BuildState::Building, BuildState::Scanning]);
    assert!(outcome.log.contains("testapp installed"));
    // The SSM commands' directory (script included) was the work directory, removed at the end.
    let leftovers: Vec<_> = std::fs::read_dir(outcome.upper.join("var/tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "the build left {leftovers:?} in /var/tmp");
}

#[test]
fn installer_that_leaves_secrets_behind_fails_the_builtin_scan() {
    if !sandbox_available("installer_that_leaves_secrets_behind_fails_the_builtin_scan") {
        return;
    }
    let installer = r#"#!/bin/sh
# Installs fine, but leaves traces that must never ship in an image: the built-in scan catches each one.
mkdir -p /root/.ssh /root/.aws /home/imagectl-builder/.ssh /usr/local/bin
echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample seller@laptop" >/root/.ssh/authorized_keys
echo "curl -u admin:hunter2 http://10.0.0.5/setup" >/root/.bash_history
printf '[default]\naws_access_key_id = AKIAEXAMPLEEXAMPLE\n' >/root/.aws/credentials
echo "ssh-rsa AAAAB3NzaC1yc2EExample builder" >/home/imagectl-builder/.ssh/authorized_keys
printf '#!/bin/sh\necho tool\n' >/usr/local/bin/imagectl-testtool
chmod 0777 /usr/local/bin/imagectl-testtool
echo "installed, traces and all"
"#;
    let case = Case { generalize: true, ..Case::new("app-r1-0000000d", installer) };
    let outcome = run_build("leaves secrets", &case, Delivery::UserData);

    let result = &outcome.result;
    assert_eq!(result.exit_code, Some(0));
    let scan = result.scan.as_ref().expect("the scan ran");
    assert!(!scan.passed);
    assert_eq!(
        scan.findings,
        [
            "leftover SSH authorized keys: /root/.ssh/authorized_keys",
            "shell history: /root/.bash_history",
            "credentials: /root/.aws/credentials",
            "leftover SSH authorized keys: /home/imagectl-builder/.ssh/authorized_keys",
            "world-writable system file: /usr/local/bin/imagectl-testtool",
        ],
        "{}",
        outcome.scan
    );
    assert!(!result.generalized, "a failed scan leaves the instance as it is, for inspection");
    let (state, message) = outcome.judged();
    assert_eq!(state, BuildState::IssuesFound);
    assert!(
        message.starts_with("the scan found 5 issue(s): leftover SSH authorized keys: /root/.ssh/authorized_keys; "),
        "{message}"
    );
    assert!(outcome.scan.contains("FINDING: shell history: /root/.bash_history"), "{}", outcome.scan);
    assert_eq!(states(&outcome), [BuildState::Building, BuildState::Scanning]);
}

#[test]
fn package_with_a_wrong_checksum_never_runs() {
    if !sandbox_available("package_with_a_wrong_checksum_never_runs") {
        return;
    }
    let case = Case { wrong_checksum: true, ..Case::new("app-r1-0000000e", "#!/bin/sh\necho 'must not run'\n") };
    let outcome = run_build("wrong checksum", &case, Delivery::UserData);

    let result = &outcome.result;
    assert_eq!(result.exit_code, None, "the installer never ran");
    let error = result.error.as_deref().unwrap();
    assert!(error.starts_with("checksum mismatch for install.sh: expected 0000"), "{error}");
    assert_eq!(outcome.judged().0, BuildState::Investigating);
    assert!(!outcome.log.contains("must not run"));
    assert!(outcome.log.contains(&format!("imagectl: error: {error}")), "{}", outcome.log);
}

#[test]
fn base_image_with_wget_only_downloads_and_reports_with_wget() {
    if !sandbox_available("base_image_with_wget_only_downloads_and_reports_with_wget") {
        return;
    }
    let case = Case { hide: vec!["/usr/bin/curl"], ..succeeding_case("app-r1-0000000f") };
    let outcome = run_build("wget only", &case, Delivery::UserData);
    assert_eq!(outcome.result.exit_code, Some(0), "{}", outcome.log);
    assert_eq!(outcome.judged().0, BuildState::Scanning);
    assert_eq!(states(&outcome), [BuildState::Building, BuildState::Scanning]);
    assert!(outcome.log.contains("testapp installed"), "{}", outcome.log);
    let output = std::fs::read_to_string(outcome.record["output"].as_str().unwrap()).unwrap();
    assert!(output.contains("transfers with wget"), "{output}");
}

/// Launches two build instances in the emulator — one handed the script as user data, one through SSM
/// SendCommand — and lets `instance_player.py play --once` find and play both, side by side.
const LAUNCH: &str = r#"
ec2 = boto3.client('ec2')
ssm = boto3.client('ssm')
out = {}
for build in spec['builds']:
    tags = [{'ResourceType': 'instance', 'Tags': [{'Key': 'imagectl:build-id', 'Value': build['buildId']}]}]
    kwargs = {'UserData': build['userData']} if build.get('userData') else {}
    instance = ec2.run_instances(ImageId='ami-0123456789abcdef0', MinCount=1, MaxCount=1, InstanceType='t3.micro', TagSpecifications=tags, **kwargs)['Instances'][0]['InstanceId']
    if build.get('commands'):
        ssm.send_command(InstanceIds=[instance], DocumentName='AWS-RunShellScript', Parameters={'commands': build['commands']})
    out[build['buildId']] = instance
print(json.dumps(out))
"#;

const INSTANCE_STATES: &str = r#"
ec2 = boto3.client('ec2')
reservations = ec2.describe_instances(InstanceIds=spec['instances'])['Reservations']
print(json.dumps({i['InstanceId']: i['State']['Name'] for r in reservations for i in r['Instances']}))
"#;

#[test]
fn player_finds_and_plays_both_delivery_forms_from_the_emulator() {
    if !sandbox_available("player_finds_and_plays_both_delivery_forms_from_the_emulator") {
        return;
    }
    let emulator = Emulator::start();
    let dir = tempfile::Builder::new().prefix("imagectl-instance-").tempdir().unwrap();
    let by_user_data = prepare(&emulator, &dir.path().join("a"), &succeeding_case("app-r2-000000ud"));
    let by_ssm = prepare(&emulator, &dir.path().join("b"), &succeeding_case("app-r2-00000ssm"));
    let launched = boto3(
        &emulator,
        LAUNCH,
        &json!({"builds": [
            {"buildId": "app-r2-000000ud", "userData": script::user_data(&by_user_data.job)},
            {"buildId": "app-r2-00000ssm", "commands": script::ssm_commands(&by_ssm.job)},
        ]}),
    );

    let started = Instant::now();
    let workdir = dir.path().join("player");
    let output = Command::new(python())
        .arg(player())
        .arg("--log")
        .arg(dir.path().join("player.log"))
        .args(["play", "--endpoint", &emulator.endpoint_url(), "--regions", "us-east-1", "--once", "--workdir"])
        .arg(&workdir)
        .output()
        .expect("run the instance player");
    let wall = started.elapsed();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "the player failed or was not quiet:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("both delivery forms: played side by side in {:.2} s", wall.as_secs_f64());

    for prepared in [&by_user_data, &by_ssm] {
        let (result, statuses, log, _) = read_reports(&emulator, &prepared.keys);
        assert_eq!(result.build_id, prepared.job.build_id);
        assert_eq!(result.exit_code, Some(0), "{log}");
        assert!(result.generalized);
        assert_eq!(statuses.iter().map(|s| s.state).collect::<Vec<_>>(), [BuildState::Building, BuildState::Scanning]);
    }
    // Both scripts powered off: the player stopped both instances, as the VMs would have stopped.
    let instances: Vec<&str> = launched.as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    let states = boto3(&emulator, INSTANCE_STATES, &json!({"instances": instances}));
    for instance in &instances {
        assert!(matches!(states[instance].as_str(), Some("stopping" | "stopped")), "{instance}: {states}");
    }
    // What was played is remembered, so that a restarted player plays nothing twice.
    let played: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(workdir.join("played.json")).unwrap()).unwrap();
    assert_eq!(played.len(), 2, "{played:?}");
    assert!(
        played.iter().any(|k| k.ends_with("/user-data")) && played.iter().any(|k| k.contains("/ssm-")),
        "{played:?}"
    );
}
