//! Renders the script a build instance runs (Linux shell, Windows PowerShell) from an `InstanceJob`.
//!
//! One script per platform, the same whatever the delivery: as EC2 user data (Linux: cloud-init runs it as root;
//! Windows: wrapped by [`user_data`] in `<powershell>` tags for EC2Launch) or through SSM Run Command
//! ([`ssm_commands`] writes it to a file on the instance and runs it). It downloads the package group through
//! presigned GET URLs, checks every file's SHA-256, runs the installer unattended (stdin closed, a timeout, reboots
//! refused and recorded), scans the result, generalizes it, and reports through presigned PUT URLs: the status at
//! each stage (`InstanceStatus`), the installer's log, the scan report and finally the `InstanceResult`, which is
//! the build's truth in both delivery modes. The instance holds no AWS credentials.
//!
//! Values from the job are embedded as single-quoted literals (shell: `'` → `'\''`; PowerShell: `'` → `''`), so
//! nothing in a URL (`&`, `$`, `?`) or in a scan command is interpreted before the script means it to be.
//!
//! What the script can and cannot detect is documented beside each step (see `LINUX_BODY` and `WINDOWS_BODY`).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::InstanceJob;
use crate::model::Platform;

/// The script the build instance runs: bash for Linux (starts with `#!/bin/bash`), PowerShell 5.1 for Windows.
pub fn render(job: &InstanceJob) -> String {
    match job.platform {
        Platform::Linux => render_linux(job),
        Platform::Windows => render_windows(job),
    }
}

/// The EC2 user data for the job: the Linux script as it is (cloud-init runs a `#!` script), the Windows script
/// in the `<powershell>` tags EC2Launch looks for.
pub fn user_data(job: &InstanceJob) -> String {
    match job.platform {
        Platform::Linux => render_linux(job),
        Platform::Windows => format!("<powershell>\n{}</powershell>\n", render_windows(job)),
    }
}

/// The `commands` parameter of `AWS-RunShellScript` (Linux) or `AWS-RunPowerShellScript` (Windows): writes
/// [`render`]'s script to a file in a private directory and runs it there, so that it behaves exactly as when
/// delivered as user data. The agent joins the lines with newlines into one script.
pub fn ssm_commands(job: &InstanceJob) -> Vec<String> {
    let script = render(job);
    match job.platform {
        Platform::Linux => {
            // A quoted here-doc: the shell expands nothing inside. Its delimiter carries the script's own hash,
            // so no line of the script can be equal to it.
            let delimiter = format!("IMAGECTL_SCRIPT_{}", &hex::encode(Sha256::digest(script.as_bytes()))[..16]);
            let mut commands = vec![
                "# imagectl: write the build script to a private directory, then run it (it removes the directory when done)".to_owned(),
                "IMAGECTL_WORK=\"$(mktemp -d /var/tmp/imagectl-build.XXXXXX)\" || exit 1".to_owned(),
                format!("cat >\"$IMAGECTL_WORK/build.sh\" <<'{delimiter}'"),
            ];
            commands.extend(script.lines().map(str::to_owned));
            commands.push(delimiter);
            commands.push("export IMAGECTL_WORK".to_owned());
            commands.push("exec bash \"$IMAGECTL_WORK/build.sh\"".to_owned());
            commands
        }
        Platform::Windows => {
            // One single-quoted literal per line (a here-string could be ended early by a line of the script).
            // Windows PowerShell 5.1 reads a .ps1 without a byte-order mark as ANSI, hence UTF-8 *with* a BOM.
            let mut commands = vec![
                "# imagectl: write the build script to a private directory, then run it (it removes the directory when done)".to_owned(),
                "$ErrorActionPreference = 'Stop'".to_owned(),
                "$env:IMAGECTL_WORK = Join-Path $env:ProgramData ('imagectl\\build-' + [guid]::NewGuid().ToString('N'))".to_owned(),
                "New-Item -ItemType Directory -Force -Path $env:IMAGECTL_WORK | Out-Null".to_owned(),
                "$imagectlScript = @(".to_owned(),
            ];
            let lines: Vec<&str> = script.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let comma = if i + 1 < lines.len() { "," } else { "" };
                commands.push(format!("  {}{comma}", ps_quote(line)));
            }
            commands.push(")".to_owned());
            commands.push("$imagectlPath = Join-Path $env:IMAGECTL_WORK 'build.ps1'".to_owned());
            commands.push("[IO.File]::WriteAllLines($imagectlPath, [string[]]$imagectlScript, (New-Object Text.UTF8Encoding $true))".to_owned());
            commands.push(
                "& powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File $imagectlPath".to_owned(),
            );
            commands.push("exit $LASTEXITCODE".to_owned());
            commands
        }
    }
}

/// A bash single-quoted literal: `'` becomes `'\''`; NUL (which bash cannot hold) is dropped.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\0', "").replace('\'', r"'\''"))
}

fn sh_array<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = values.into_iter().map(sh_quote).collect();
    format!("({})", items.join(" "))
}

/// A PowerShell single-quoted literal: `'` (and its typographic variants, which PowerShell also accepts as
/// quotes) doubled.
fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\0' => {}
            '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => {
                out.push(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn ps_array<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = values.into_iter().map(ps_quote).collect();
    format!("@({})", items.join(", "))
}

fn render_linux(job: &InstanceJob) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(s, "# imagectl build script for build {}.", job.build_id.replace(['\n', '\r'], " "));
    s.push_str(LINUX_HEADER);
    let _ = writeln!(s, "BUILD_ID={}", sh_quote(&job.build_id));
    let _ = writeln!(s, "# Package files: name, presigned GET URL and SHA-256, by position.");
    let _ = writeln!(s, "PACKAGE_NAMES={}", sh_array(job.packages.iter().map(|p| p.file_name.as_str())));
    let _ = writeln!(s, "PACKAGE_URLS={}", sh_array(job.packages.iter().map(|p| p.url.as_str())));
    let _ = writeln!(s, "PACKAGE_SHA256={}", sh_array(job.packages.iter().map(|p| p.sha256.as_str())));
    let _ = writeln!(s, "INSTALLER={}", sh_quote(&job.installer));
    let _ = writeln!(s, "INSTALLER_ARGUMENTS={}", sh_array(job.installer_arguments.iter().map(String::as_str)));
    let _ = writeln!(s, "TIMEOUT_SECONDS={}", job.timeout_seconds.max(1));
    let _ = writeln!(s, "SCAN_COMMAND={}", sh_quote(job.scan_command.as_deref().unwrap_or("")));
    let _ = writeln!(s, "BUILTIN_SCAN={}", job.builtin_scan);
    let _ = writeln!(s, "GENERALIZE={}", job.generalize);
    let _ = writeln!(s, "POWER_OFF_WHEN_DONE={}", job.power_off_when_done);
    let _ = writeln!(s, "# Presigned PUT URLs of the reports.");
    let _ = writeln!(s, "STATUS_URL={}", sh_quote(&job.report.status));
    let _ = writeln!(s, "LOG_URL={}", sh_quote(&job.report.log));
    let _ = writeln!(s, "SCAN_URL={}", sh_quote(&job.report.scan));
    let _ = writeln!(s, "RESULT_URL={}", sh_quote(&job.report.result));
    s.push_str(LINUX_BODY);
    s
}

fn render_windows(job: &InstanceJob) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# imagectl build script for build {}.", job.build_id.replace(['\n', '\r'], " "));
    s.push_str(WINDOWS_HEADER);
    let _ = writeln!(s, "$BuildId = {}", ps_quote(&job.build_id));
    let _ = writeln!(s, "# Package files: name, presigned GET URL and SHA-256, by position.");
    let _ = writeln!(s, "$PackageNames = {}", ps_array(job.packages.iter().map(|p| p.file_name.as_str())));
    let _ = writeln!(s, "$PackageUrls = {}", ps_array(job.packages.iter().map(|p| p.url.as_str())));
    let _ = writeln!(s, "$PackageSha256 = {}", ps_array(job.packages.iter().map(|p| p.sha256.as_str())));
    let _ = writeln!(s, "$Installer = {}", ps_quote(&job.installer));
    let _ = writeln!(s, "$InstallerArguments = {}", ps_array(job.installer_arguments.iter().map(String::as_str)));
    let _ = writeln!(s, "$TimeoutSeconds = {}", job.timeout_seconds.max(1));
    let _ = writeln!(s, "$ScanCommand = {}", ps_quote(job.scan_command.as_deref().unwrap_or("")));
    let _ = writeln!(s, "$BuiltinScan = ${}", job.builtin_scan);
    let _ = writeln!(s, "$Generalize = ${}", job.generalize);
    let _ = writeln!(s, "$PowerOffWhenDone = ${}", job.power_off_when_done);
    let _ = writeln!(s, "# Presigned PUT URLs of the reports.");
    let _ = writeln!(s, "$StatusUrl = {}", ps_quote(&job.report.status));
    let _ = writeln!(s, "$LogUrl = {}", ps_quote(&job.report.log));
    let _ = writeln!(s, "$ScanUrl = {}", ps_quote(&job.report.scan));
    let _ = writeln!(s, "$ResultUrl = {}", ps_quote(&job.report.result));
    s.push_str(WINDOWS_BODY);
    s
}

const LINUX_HEADER: &str = r##"# Generated by imagectl. Runs as root on the build instance, delivered as EC2 user data (cloud-init runs it once)
# or through SSM Run Command (the same script, written to a file first). It installs the package group unattended,
# scans the result, generalizes it and reports everything to S3 through presigned URLs: the instance has no AWS
# credentials and no internet, only the URLs below.
#
# Deliberately no `set -e`: a failing step, above all the installer, must end in a report, never in an abort.
# Exit status: 0 installed and scanned clean, 1 the build failed (see the result), 2 the result could not be sent.

# ---- The job. Values are single-quoted literals: nothing in them is expanded. ----
"##;

const LINUX_BODY: &str = r##"
# ---- A predictable environment ----
# cloud-init and the SSM agent start scripts with a minimal environment: fix PATH, HOME and the file mode mask.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME="${HOME:-/root}"
umask 022

log() { printf 'imagectl: %s\n' "$*"; }
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# A JSON string literal. Besides the usual escapes, anything outside printable ASCII (control characters, bytes of
# another encoding in a file name) becomes '?', so the reports are valid JSON whatever a finding contains.
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=$(printf '%s' "$s" | LC_ALL=C tr -c ' -~' '?')
  printf '"%s"' "$s"
}

# ---- Step 1: a private working directory ----
# mktemp -d creates it with mode 0700. Through SSM, the commands have already made one (IMAGECTL_WORK) and written
# this script into it. It is removed at the end, so that nothing of the build stays in the image.
WORK=${IMAGECTL_WORK:-}
case "$WORK" in
  */imagectl-build.*) ;;
  *) WORK= ;; # only a directory made for this purpose: it is removed at the end
esac
if [ -z "$WORK" ] || [ ! -d "$WORK" ]; then
  WORK=$(mktemp -d /var/tmp/imagectl-build.XXXXXX 2>/dev/null || mktemp -d /tmp/imagectl-build.XXXXXX) || {
    log "cannot create a working directory"
    exit 2
  }
fi
chmod 700 "$WORK"
PACKAGES_DIR="$WORK/packages"
SHIMS_DIR="$WORK/shims"
INSTALL_LOG="$WORK/install.log"
SCAN_REPORT="$WORK/scan.txt"
REBOOT_RECORD="$WORK/reboot-attempts"
mkdir -p "$PACKAGES_DIR" "$SHIMS_DIR"
: >"$INSTALL_LOG"
: >"$REBOOT_RECORD"

# What the result reports; filled in as the steps run.
EXIT_CODE=null
TIMED_OUT=false
REBOOT_ATTEMPTED=false
DURATION=0
ERROR=
SCAN_RAN=false
FINDINGS=()
GENERALIZED=false
INSTALL_OK=false

# ---- Transfers: curl, or wget when the image has no curl (the seller guide requires one of the two) ----
if command -v curl >/dev/null 2>&1; then
  HTTP_CLIENT=curl
elif command -v wget >/dev/null 2>&1; then
  HTTP_CLIENT=wget
else
  HTTP_CLIENT=
fi

# fetch URL FILE: a presigned GET, retried (the network of a fresh instance can take a moment).
fetch() {
  local url=$1 file=$2 attempt
  for attempt in 1 2 3 4 5; do
    case "$HTTP_CLIENT" in
      curl) curl -fsSL --connect-timeout 10 --max-time 3600 -o "$file" "$url" && return 0 ;;
      wget) wget -q --timeout=30 --tries=1 -O "$file" "$url" && return 0 ;;
      *) return 1 ;;
    esac
    sleep $((attempt * 2))
  done
  return 1
}

# upload FILE URL: a presigned PUT, retried. `Expect:` stops curl from waiting for a 100-continue on big logs.
upload() {
  local file=$1 url=$2 attempt
  for attempt in 1 2 3 4 5; do
    case "$HTTP_CLIENT" in
      curl) curl -fsS -X PUT -H 'Expect:' --connect-timeout 10 --max-time 600 --upload-file "$file" -o /dev/null "$url" && return 0 ;;
      wget)
        # wget would label the body application/x-www-form-urlencoded; some servers then parse it as a form.
        wget -q --timeout=30 --tries=1 --method=PUT --header='Content-Type: application/octet-stream' \
          --body-file="$file" -O /dev/null "$url" && return 0
        ;;
      *) return 1 ;;
    esac
    sleep $((attempt * 2))
  done
  log "upload of ${file##*/} failed"
  return 1
}

# put_status STATE: the InstanceStatus JSON that lets `imagectl status` follow the build.
put_status() {
  printf '{"buildId":%s,"state":%s,"at":%s}\n' \
    "$(json_string "$BUILD_ID")" "$(json_string "$1")" "$(json_string "$(now)")" >"$WORK/status.json"
  upload "$WORK/status.json" "$STATUS_URL"
}

# ---- The end: reports, clean-up, power-off. Runs once, also when the script is interrupted. ----
FINISHED=false
finish() {
  $FINISHED && return
  FINISHED=true
  trap - EXIT TERM INT HUP

  # The installer's log, with a footer for whoever reads it in S3.
  {
    echo
    if [ -n "$ERROR" ]; then echo "imagectl: error: $ERROR"; fi
    echo "imagectl: exit code $EXIT_CODE, timed out $TIMED_OUT, reboot attempted $REBOOT_ATTEMPTED, ${DURATION} s"
  } >>"$INSTALL_LOG"
  upload "$INSTALL_LOG" "$LOG_URL"

  # The scan report (a short note when the scan did not run, so the key always explains itself).
  if ! $SCAN_RAN; then
    echo "imagectl: the scan did not run: the installation did not succeed" >"$SCAN_REPORT"
  fi
  upload "$SCAN_REPORT" "$SCAN_URL"

  # The InstanceResult, last: its presence tells imagectl that the instance is done.
  local scan=null error=null findings= item passed=true
  if $SCAN_RAN; then
    for item in "${FINDINGS[@]}"; do
      findings="$findings${findings:+,}$(json_string "$item")"
      passed=false
    done
    scan="{\"passed\":$passed,\"findings\":[$findings]}"
  fi
  if [ -n "$ERROR" ]; then error=$(json_string "$ERROR"); fi
  printf '{"buildId":%s,"exitCode":%s,"timedOut":%s,"rebootAttempted":%s,"durationSeconds":%s,"error":%s,"scan":%s,"generalized":%s}\n' \
    "$(json_string "$BUILD_ID")" "$EXIT_CODE" "$TIMED_OUT" "$REBOOT_ATTEMPTED" "$DURATION" "$error" "$scan" \
    "$GENERALIZED" >"$WORK/result.json"
  local status=1
  if $INSTALL_OK && [ "$passed" = true ]; then status=0; fi
  if upload "$WORK/result.json" "$RESULT_URL"; then
    log "result sent: $(cat "$WORK/result.json")"
  else
    status=2
  fi

  # Nothing of the build stays in the image: packages, logs, shims, and (through SSM) this script.
  cd / || true
  case "$WORK" in */imagectl-build.*) rm -rf -- "$WORK" ;; esac

  # Powered off, the instance can be captured by whoever comes next, even if no imagectl is waiting. Called by
  # absolute path: the reboot shims are only in the installer's PATH, but better safe.
  if $POWER_OFF_WHEN_DONE; then
    log "powering off"
    if [ -x /sbin/poweroff ]; then
      /sbin/poweroff
    elif [ -x /usr/sbin/poweroff ]; then
      /usr/sbin/poweroff
    elif [ -x /sbin/shutdown ]; then
      /sbin/shutdown -h now
    else
      /usr/sbin/shutdown -h now
    fi
  fi
  exit "$status"
}
# An unexpected end (a signal: SSM's execution timeout, a cancelled command) still reports what is known.
trap 'ERROR=${ERROR:-"the build script ended unexpectedly"}; finish' EXIT
trap 'ERROR="the build script was stopped by a signal"; exit 143' TERM INT HUP

# ---- Step 2: Building ----
run_build() {
  log "build $BUILD_ID: working in $WORK, transfers with ${HTTP_CLIENT:-nothing}"
  put_status Building

  if [ -z "$HTTP_CLIENT" ]; then
    ERROR="neither curl nor wget is installed on the base image"
    return
  fi

  # ---- Step 3: download every package and check its SHA-256 (a truncated or swapped file never runs) ----
  local i name actual
  for i in "${!PACKAGE_NAMES[@]}"; do
    name=${PACKAGE_NAMES[$i]}
    case "$name" in
      '' | . | .. | */*)
        ERROR="refusing the package file name '$name'"
        return
        ;;
    esac
    log "downloading $name"
    if ! fetch "${PACKAGE_URLS[$i]}" "$PACKAGES_DIR/$name"; then
      ERROR="could not download $name"
      return
    fi
    actual=$(sha256sum "$PACKAGES_DIR/$name" | cut -d' ' -f1)
    if [ "$actual" != "${PACKAGE_SHA256[$i]}" ]; then
      ERROR="checksum mismatch for $name: expected ${PACKAGE_SHA256[$i]}, got $actual"
      return
    fi
  done
  if [ ! -f "$PACKAGES_DIR/$INSTALLER" ]; then
    ERROR="the installer $INSTALLER is not among the packages"
    return
  fi

  # ---- Step 4: shims that refuse reboots ----
  # The seller guide: the installer cannot reboot the instance (it would kill the build). These come first in
  # the installer's PATH, record the attempt and fail. They catch what is looked up through PATH (`reboot`,
  # `shutdown -r now`, `systemctl reboot`, `init 6`); an absolute path (/sbin/reboot) or the reboot(2) system call
  # is not caught: such a build never reports, and imagectl's wait ends in Investigating.
  local shim real
  for shim in reboot shutdown poweroff halt init telinit systemctl; do
    real=$(command -v "$shim" 2>/dev/null)
    {
      echo '#!/bin/bash'
      echo "# imagectl: stands in for $shim while the installer runs; reboots and power-offs are refused and recorded."
      printf 'record=%q\n' "$REBOOT_RECORD"
      printf 'real=%q\n' "$real"
      case "$shim" in
        systemctl)
          # Everything but the power verbs (and their targets) goes to the real systemctl.
          echo 'for arg in "$@"; do'
          echo '  case "$arg" in'
          echo '    reboot | poweroff | halt | kexec | soft-reboot | reboot.target | poweroff.target | halt.target | kexec.target)'
          echo '      printf "%s %s\n" systemctl "$*" >>"$record"'
          echo '      echo "imagectl: systemctl $* is not allowed during an unattended installation (recorded)" >&2'
          echo '      exit 1 ;;'
          echo '  esac'
          echo 'done'
          ;;
        init | telinit)
          # Only runlevels 0 and 6 halt or reboot; `telinit q` and the like go through.
          echo 'case "$1" in'
          echo '  0 | 6)'
          echo "    printf '%s %s\\n' ${shim} \"\$*\" >>\"\$record\""
          echo "    echo \"imagectl: ${shim} \$* is not allowed during an unattended installation (recorded)\" >&2"
          echo '    exit 1 ;;'
          echo 'esac'
          ;;
        shutdown)
          # Cancelling a scheduled shutdown is harmless.
          echo '[ "$1" = -c ] && exit 0'
          echo "printf '%s %s\\n' shutdown \"\$*\" >>\"\$record\""
          echo 'echo "imagectl: shutdown $* is not allowed during an unattended installation (recorded)" >&2'
          echo 'exit 1'
          ;;
        *)
          echo "printf '%s %s\\n' ${shim} \"\$*\" >>\"\$record\""
          echo "echo \"imagectl: ${shim} \$* is not allowed during an unattended installation (recorded)\" >&2"
          echo 'exit 1'
          ;;
      esac
      echo '[ -n "$real" ] && exec "$real" "$@"'
      echo 'echo "imagectl: ${0##*/}: command not found" >&2'
      echo 'exit 127'
    } >"$SHIMS_DIR/$shim"
    chmod 755 "$SHIMS_DIR/$shim"
  done

  # ---- Step 5: the installer command for its type (the seller guide's Linux types) ----
  local installer="$PACKAGES_DIR/$INSTALLER"
  local install_command=()
  case "$INSTALLER" in
    *.sh) install_command=(bash "$installer" "${INSTALLER_ARGUMENTS[@]}") ;;
    *.run | *.exe)
      # Self-extracting archives and binaries run as they are; one without a `#!` line runs under /bin/sh.
      chmod 755 "$installer"
      install_command=("$installer" "${INSTALLER_ARGUMENTS[@]}")
      ;;
    *.rpm)
      # Arguments go to the package manager. Repositories must be local (no internet during the build).
      if command -v dnf >/dev/null 2>&1; then
        install_command=(dnf install -y "${INSTALLER_ARGUMENTS[@]}" "$installer")
      elif command -v yum >/dev/null 2>&1; then
        install_command=(yum install -y "${INSTALLER_ARGUMENTS[@]}" "$installer")
      else
        install_command=(rpm -Uvh "${INSTALLER_ARGUMENTS[@]}" "$installer")
      fi
      ;;
    *.deb)
      # Keep existing configuration files rather than asking about them.
      if command -v apt-get >/dev/null 2>&1; then
        install_command=(apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
          "${INSTALLER_ARGUMENTS[@]}" "$installer")
      else
        install_command=(dpkg -i --force-confdef --force-confold "${INSTALLER_ARGUMENTS[@]}" "$installer")
      fi
      ;;
    *)
      ERROR="unsupported installer type: $INSTALLER (.sh, .run, .rpm, .deb or .exe)"
      return
      ;;
  esac

  # ---- Step 6: run it unattended ----
  # stdin is /dev/null, so a prompt reads end-of-file at once instead of waiting forever; DEBIAN_FRONTEND keeps
  # debconf quiet; `timeout` ends the installer's whole process group after TIMEOUT_SECONDS (SIGTERM, then
  # SIGKILL 30 s later); stdout and stderr go to the log, which ends up in the logs bucket. A scheduled shutdown
  # (systemd's marker file appearing) also counts as a reboot attempt.
  local scheduled_before=false start
  [ -e /run/systemd/shutdown/scheduled ] && scheduled_before=true
  {
    echo "imagectl: build $BUILD_ID, installer $INSTALLER, timeout ${TIMEOUT_SECONDS} s, started $(now)"
    printf 'imagectl: command:'
    printf ' %q' "${install_command[@]}"
    echo
  } >>"$INSTALL_LOG"
  log "running the installer $INSTALLER (timeout ${TIMEOUT_SECONDS} s)"
  start=$(date +%s)
  (
    cd "$PACKAGES_DIR" || exit 1
    exec env DEBIAN_FRONTEND=noninteractive PATH="$SHIMS_DIR:$PATH" \
      timeout --kill-after=30 "$TIMEOUT_SECONDS" "${install_command[@]}"
  ) </dev/null >>"$INSTALL_LOG" 2>&1
  EXIT_CODE=$?
  DURATION=$(($(date +%s) - start))

  # ---- Step 7: what happened ----
  # timeout(1) answers 124 when it stopped the installer, 137 when it had to kill it; an installer of its own
  # choosing exits with those codes too, but not after running for the whole timeout.
  if { [ "$EXIT_CODE" -eq 124 ] || [ "$EXIT_CODE" -eq 137 ]; } && [ "$DURATION" -ge "$TIMEOUT_SECONDS" ]; then
    TIMED_OUT=true
    echo "imagectl: the installer did not finish within ${TIMEOUT_SECONDS} s and was stopped" >>"$INSTALL_LOG"
  fi
  if [ -s "$REBOOT_RECORD" ]; then
    REBOOT_ATTEMPTED=true
    sed 's/^/imagectl: reboot attempt: /' "$REBOOT_RECORD" >>"$INSTALL_LOG"
  fi
  if ! $scheduled_before && [ -e /run/systemd/shutdown/scheduled ]; then
    REBOOT_ATTEMPTED=true
    echo "imagectl: reboot attempt: the installer scheduled a shutdown" >>"$INSTALL_LOG"
  fi
  log "installer exited with $EXIT_CODE after ${DURATION} s (timed out: $TIMED_OUT, reboot attempted: $REBOOT_ATTEMPTED)"
  if [ "$EXIT_CODE" -ne 0 ] || $TIMED_OUT || $REBOOT_ATTEMPTED; then
    return
  fi
  INSTALL_OK=true

  # ---- Step 8: Scanning ----
  put_status Scanning
  run_scan

  # ---- Step 9: generalize, when asked and everything passed ----
  if $GENERALIZE && [ "${#FINDINGS[@]}" -eq 0 ]; then
    generalize
  fi
}

# finding TEXT: one problem, for the result and the report.
finding() {
  FINDINGS+=("$1")
  printf 'FINDING: %s\n' "$1" >>"$SCAN_REPORT"
}

run_scan() {
  SCAN_RAN=true
  echo "imagectl scan of build $BUILD_ID, $(now)" >"$SCAN_REPORT"
  if $BUILTIN_SCAN; then
    builtin_scan
  fi
  if [ -n "$SCAN_COMMAND" ]; then
    # The configured scan: a non-zero exit is a finding; its output goes into the report.
    {
      echo
      echo "== scan command =="
      printf '%s\n' "$SCAN_COMMAND"
      echo "== output =="
    } >>"$SCAN_REPORT"
    local code
    (
      cd "$PACKAGES_DIR" || exit 1
      exec env PATH="$SHIMS_DIR:$PATH" timeout --kill-after=30 "$TIMEOUT_SECONDS" bash -c "$SCAN_COMMAND"
    ) </dev/null >>"$SCAN_REPORT" 2>&1
    code=$?
    if [ "$code" -ne 0 ]; then
      finding "the scan command exited with $code"
    fi
  fi
  if ! $BUILTIN_SCAN && [ -z "$SCAN_COMMAND" ]; then
    echo "no scan is configured" >>"$SCAN_REPORT"
  fi
  echo >>"$SCAN_REPORT"
  echo "imagectl: ${#FINDINGS[@]} finding(s)" >>"$SCAN_REPORT"
  log "scan: ${#FINDINGS[@]} finding(s)"
}

# The built-in hygiene scan: what must not ship in an image others will launch.
builtin_scan() {
  {
    echo
    echo "== built-in hygiene scan =="
    echo "checks: SSH authorized keys and shell history under /root and /home/*; credentials in well-known files;"
    echo "        world-writable regular files under /etc /usr/bin /usr/sbin /usr/lib /usr/local/bin"
  } >>"$SCAN_REPORT"
  local home file
  for home in /root /home/*; do
    [ -d "$home" ] || continue
    # Leftover keys let whoever holds them into every instance launched from the image.
    for file in .ssh/authorized_keys .ssh/authorized_keys2; do
      if [ -s "$home/$file" ]; then finding "leftover SSH authorized keys: $home/$file"; fi
    done
    # History files tell what was typed on the build machine, secrets included.
    for file in .bash_history .zsh_history .sh_history .ash_history .history .local/share/fish/fish_history; do
      if [ -s "$home/$file" ]; then finding "shell history: $home/$file"; fi
    done
    # Credentials in the files tools read them from.
    for file in .aws/credentials .netrc .git-credentials .pgpass; do
      if [ -s "$home/$file" ]; then finding "credentials: $home/$file"; fi
    done
    if [ -s "$home/.docker/config.json" ] && grep -q '"auth"' "$home/.docker/config.json" 2>/dev/null; then
      finding "credentials: $home/.docker/config.json"
    fi
  done
  # A world-writable system file lets any user change what root runs. -xdev: only the root file system.
  local count=0
  while IFS= read -r file; do
    count=$((count + 1))
    if [ "$count" -le 50 ]; then finding "world-writable system file: $file"; fi
  done < <(find -H /etc /usr/bin /usr/sbin /usr/lib /usr/local/bin -xdev -type f -perm -0002 -print 2>/dev/null)
  if [ "$count" -gt 50 ]; then finding "world-writable system files: $((count - 50)) more"; fi
}

# Generalize: what must differ on every instance launched from the image, or must not be shared by them.
generalize() {
  log "generalizing"
  local ok=true
  {
    echo
    echo "imagectl: generalizing"
  } >>"$INSTALL_LOG"
  # cloud-init runs its per-instance set-up again on the next boot (and forgets this instance's user data).
  if command -v cloud-init >/dev/null 2>&1; then
    cloud-init clean --logs >>"$INSTALL_LOG" 2>&1 || ok=false
  fi
  # An empty machine-id is regenerated at boot; a shared one confuses journald, DHCP and monitoring.
  if [ -e /etc/machine-id ]; then
    : >/etc/machine-id || ok=false
  fi
  # Host keys are regenerated at boot; shared ones would let one instance impersonate another.
  rm -f /etc/ssh/ssh_host_* || ok=false
  rm -f /root/.bash_history || ok=false
  GENERALIZED=$ok
}

run_build
finish
"##;

const WINDOWS_HEADER: &str = r##"# Generated by imagectl. Runs as SYSTEM on the build instance through SSM Run Command (AWS-RunPowerShellScript,
# written to a file first) or as EC2 user data (in <powershell> tags). Windows PowerShell 5.1 compatible. It
# installs the package group unattended, scans the result, generalizes it with EC2Launch and reports everything to
# S3 through presigned URLs: the instance has no AWS credentials and no internet, only the URLs below.
# Exit status: 0 installed and scanned clean, 1 the build failed (see the result), 2 the result could not be sent.

# ---- The job. Values are single-quoted literals: nothing in them is expanded. ----
"##;

const WINDOWS_BODY: &str = r##"
# ---- A predictable environment ----
# Errors are handled where they happen: a failing step, above all the installer, must end in a report.
$ErrorActionPreference = 'Continue'
# The progress bar makes Invoke-WebRequest many times slower in Windows PowerShell 5.1.
$ProgressPreference = 'SilentlyContinue'
[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
$Utf8 = New-Object Text.UTF8Encoding $false

# Write-Host, not Write-Output: a function's output is its return value.
function Write-Step([string]$Message) { Write-Host "imagectl: $Message" }
function Get-Now { [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'") }
# Appends lines to a file as UTF-8 without a byte-order mark (Set-Content -Encoding UTF8 would add one).
function Add-Text([string]$Path, [string]$Text) { [IO.File]::AppendAllText($Path, $Text + "`r`n", $Utf8) }

# ---- Step 1: a private working directory ----
# Under ProgramData, which only administrators and SYSTEM may write. Through SSM, the commands have already made
# one (IMAGECTL_WORK) and written this script into it. It is removed at the end.
$Work = $env:IMAGECTL_WORK
if (-not $Work -or $Work -notlike '*\imagectl\build-*' -or -not (Test-Path -LiteralPath $Work)) {
    $Work = Join-Path $env:ProgramData ('imagectl\build-' + [guid]::NewGuid().ToString('N'))
    New-Item -ItemType Directory -Force -Path $Work | Out-Null
}
$PackagesDir = Join-Path $Work 'packages'
New-Item -ItemType Directory -Force -Path $PackagesDir | Out-Null
$InstallLog = Join-Path $Work 'install.log'
$ScanReport = Join-Path $Work 'scan.txt'
$EmptyInput = Join-Path $Work 'stdin.txt'
$RebootRecord = Join-Path $Work 'reboot-attempts.txt'
[IO.File]::WriteAllText($InstallLog, '', $Utf8)
[IO.File]::WriteAllText($EmptyInput, '', $Utf8)

# What the result reports; filled in as the steps run.
$ExitCode = $null
$TimedOut = $false
$RebootAttempted = $false
$Duration = 0
$BuildError = $null
$ScanRan = $false
$Findings = New-Object System.Collections.Generic.List[string]
$Generalized = $false
$InstallOk = $false

# ---- Transfers: presigned GETs and PUTs, retried ----
function Invoke-Download([string]$Url, [string]$Path) {
    for ($attempt = 1; $attempt -le 5; $attempt++) {
        try {
            Invoke-WebRequest -UseBasicParsing -Uri $Url -OutFile $Path -TimeoutSec 3600
            return $true
        } catch {
            Start-Sleep -Seconds ($attempt * 2)
        }
    }
    return $false
}

function Send-File([string]$Path, [string]$Url) {
    for ($attempt = 1; $attempt -le 5; $attempt++) {
        try {
            Invoke-WebRequest -UseBasicParsing -Uri $Url -Method Put -InFile $Path -TimeoutSec 600 | Out-Null
            return $true
        } catch {
            Start-Sleep -Seconds ($attempt * 2)
        }
    }
    Write-Step "upload of $(Split-Path -Leaf $Path) failed"
    return $false
}

# Writes an object as compact JSON (UTF-8, no byte-order mark) and uploads it.
function Send-Json($Object, [string]$Url, [string]$Name) {
    $path = Join-Path $Work $Name
    [IO.File]::WriteAllText($path, (ConvertTo-Json -InputObject $Object -Compress -Depth 5), $Utf8)
    return (Send-File $path $Url)
}

# The InstanceStatus JSON that lets `imagectl status` follow the build.
function Send-Status([string]$State) {
    $status = [ordered]@{ buildId = $BuildId; state = $State; at = (Get-Now) }
    Send-Json $status $StatusUrl 'status.json' | Out-Null
}

function Add-Finding([string]$Text) {
    $script:Findings.Add($Text)
    Add-Text $ScanReport "FINDING: $Text"
}

# ---- Step 2..7: Building ----
function Invoke-Build {
    Write-Step "build ${BuildId}: working in $Work"
    Send-Status 'Building'

    # ---- Step 3: download every package and check its SHA-256 (a truncated or swapped file never runs) ----
    for ($i = 0; $i -lt $PackageNames.Count; $i++) {
        $name = $PackageNames[$i]
        if (-not $name -or $name -eq '.' -or $name -eq '..' -or $name.IndexOfAny([char[]]'\/:') -ge 0) {
            $script:BuildError = "refusing the package file name '$name'"
            return
        }
        Write-Step "downloading $name"
        $path = Join-Path $PackagesDir $name
        if (-not (Invoke-Download $PackageUrls[$i] $path)) {
            $script:BuildError = "could not download $name"
            return
        }
        $actual = (Get-FileHash -Algorithm SHA256 -LiteralPath $path).Hash.ToLowerInvariant()
        if ($actual -ne $PackageSha256[$i].ToLowerInvariant()) {
            $script:BuildError = "checksum mismatch for ${name}: expected $($PackageSha256[$i]), got $actual"
            return
        }
    }
    $installerPath = Join-Path $PackagesDir $Installer
    if (-not (Test-Path -LiteralPath $installerPath)) {
        $script:BuildError = "the installer $Installer is not among the packages"
        return
    }

    # ---- Step 4: the installer command for its type (the seller guide's Windows types) ----
    # Arguments are quoted for the Windows command line (Start-Process joins them with spaces).
    $quoted = @($InstallerArguments | ForEach-Object { Format-Argument $_ })
    switch -Regex ($Installer) {
        '\.msi$' {
            # Quiet, never restarting; msiexec's own verbose log is appended to the installer log afterwards.
            $msiLog = Join-Path $Work 'msiexec.log'
            $file = Join-Path $env:SystemRoot 'System32\msiexec.exe'
            $arguments = @('/i', (Format-Argument $installerPath), '/qn', '/norestart', '/l*v', (Format-Argument $msiLog)) + $quoted
            break
        }
        '\.ps1$' {
            # Through a wrapper that shadows Restart-Computer and Stop-Computer in the installer's own session
            # (a function wins over a cmdlet of the same name), so those calls are refused and recorded.
            $wrapper = Join-Path $Work 'run-installer.ps1'
            [IO.File]::WriteAllText($wrapper, (New-Wrapper $installerPath), (New-Object Text.UTF8Encoding $true))
            $file = Join-Path $PSHOME 'powershell.exe'
            $arguments = @('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', (Format-Argument $wrapper)) + $quoted
            break
        }
        '\.bat$' {
            # cmd /c with the whole command line in one more pair of quotes, as cmd expects.
            $file = Join-Path $env:SystemRoot 'System32\cmd.exe'
            $arguments = @('/c', ('"' + ((@((Format-Argument $installerPath)) + $quoted) -join ' ') + '"'))
            break
        }
        '\.exe$' {
            $file = $installerPath
            $arguments = $quoted
            break
        }
        default {
            $script:BuildError = "unsupported installer type: $Installer (.msi, .ps1, .bat or .exe)"
            return
        }
    }

    # ---- Step 5: run it unattended ----
    # Standard input is an empty file, so a prompt (Read-Host, pause, set /p) reads end-of-input at once instead
    # of waiting forever; output goes to files appended to the log; after TimeoutSeconds the installer and every
    # process it started are killed (taskkill /T).
    $stdout = Join-Path $Work 'installer.out.txt'
    $stderr = Join-Path $Work 'installer.err.txt'
    Add-Text $InstallLog "imagectl: build $BuildId, installer $Installer, timeout $TimeoutSeconds s, started $(Get-Now)"
    Add-Text $InstallLog "imagectl: command: $file $($arguments -join ' ')"
    Write-Step "running the installer $Installer (timeout $TimeoutSeconds s)"
    $started = Get-Date
    $startArgs = @{
        FilePath               = $file
        WorkingDirectory       = $PackagesDir
        NoNewWindow            = $true
        PassThru               = $true
        RedirectStandardInput  = $EmptyInput
        RedirectStandardOutput = $stdout
        RedirectStandardError  = $stderr
    }
    if ($arguments.Count -gt 0) { $startArgs.ArgumentList = $arguments }
    try {
        $process = Start-Process @startArgs
    } catch {
        $script:BuildError = "the installer could not be started: $($_.Exception.Message)"
        return
    }
    # Reading the handle now keeps the exit code available after the process ends (a Start-Process quirk).
    $null = $process.Handle
    $process | Wait-Process -Timeout $TimeoutSeconds -ErrorAction SilentlyContinue
    if (-not $process.HasExited) {
        $script:TimedOut = $true
        & taskkill.exe /T /F /PID $process.Id | Out-Null
        $process | Wait-Process -Timeout 30 -ErrorAction SilentlyContinue
    }
    $process.WaitForExit() | Out-Null
    $script:ExitCode = $process.ExitCode
    $script:Duration = [int][Math]::Floor(((Get-Date) - $started).TotalSeconds)
    foreach ($part in @($stdout, $stderr, $msiLog)) {
        if ($part -and (Test-Path -LiteralPath $part)) {
            Add-Text $InstallLog ([IO.File]::ReadAllText($part))
        }
    }

    # ---- Step 6: what happened ----
    # Detectable reboot attempts: exit codes 3010 (a reboot is required) and 1641 (the installer started one);
    # Restart-Computer and Stop-Computer called by a .ps1 installer in its own session (the wrapper records them);
    # and any restart or shutdown a process initiated through Windows (System log event 1074), which is aborted
    # at once while it is still pending (shutdown /a). Not detectable: a child process that restarts the machine
    # immediately (the build then never reports, and imagectl's wait ends in Investigating).
    if ($ExitCode -eq 3010 -or $ExitCode -eq 1641) {
        $script:RebootAttempted = $true
        Add-Text $InstallLog "imagectl: reboot attempt: the installer exited with $ExitCode (reboot required or initiated)"
    }
    if ((Test-Path -LiteralPath $RebootRecord) -and (Get-Item -LiteralPath $RebootRecord).Length -gt 0) {
        $script:RebootAttempted = $true
        foreach ($line in [IO.File]::ReadAllLines($RebootRecord)) { Add-Text $InstallLog "imagectl: reboot attempt: $line" }
    }
    $events = @(Get-WinEvent -FilterHashtable @{ LogName = 'System'; Id = 1074; StartTime = $started } -ErrorAction SilentlyContinue)
    if ($events.Count -gt 0) {
        $script:RebootAttempted = $true
        & shutdown.exe /a 2>&1 | Out-Null
        foreach ($entry in $events) { Add-Text $InstallLog "imagectl: reboot attempt: $($entry.Message)" }
    }
    if ($TimedOut) {
        Add-Text $InstallLog "imagectl: the installer did not finish within $TimeoutSeconds s and was stopped"
    }
    Write-Step "installer exited with $ExitCode after $Duration s (timed out: $TimedOut, reboot attempted: $RebootAttempted)"
    if ($ExitCode -ne 0 -or $TimedOut -or $RebootAttempted) { return }
    $script:InstallOk = $true

    # ---- Step 7: Scanning ----
    Send-Status 'Scanning'
    Invoke-Scan

    # ---- Step 8: generalize, when asked and everything passed ----
    if ($Generalize -and $Findings.Count -eq 0) { Invoke-Generalize }
}

# A Windows command-line argument: quoted when it has spaces or quotes (backslashes before a quote doubled).
function Format-Argument([string]$Value) {
    if ($Value -ne '' -and $Value -notmatch '[\s"]') { return $Value }
    $escaped = [regex]::Replace($Value, '(\\*)"', { param($m) $m.Groups[1].Value + $m.Groups[1].Value + '\"' })
    $escaped = [regex]::Replace($escaped, '(\\+)$', { param($m) $m.Groups[1].Value + $m.Groups[1].Value })
    return '"' + $escaped + '"'
}

# The .ps1 wrapper: shadows the cmdlets that restart or stop the machine, then runs the installer with its
# arguments and exits with its exit code.
function New-Wrapper([string]$Path) {
    $record = $RebootRecord -replace "'", "''"
    $target = $Path -replace "'", "''"
    return @(
        "# imagectl: runs the installer with Restart-Computer and Stop-Computer refused and recorded."
        "function global:Restart-Computer { [IO.File]::AppendAllText('$record', ""Restart-Computer `$args``r``n""); Write-Warning 'imagectl: Restart-Computer is not allowed during an unattended installation (recorded)'; `$global:LASTEXITCODE = 1 }"
        "function global:Stop-Computer { [IO.File]::AppendAllText('$record', ""Stop-Computer `$args``r``n""); Write-Warning 'imagectl: Stop-Computer is not allowed during an unattended installation (recorded)'; `$global:LASTEXITCODE = 1 }"
        "`$global:LASTEXITCODE = 0"
        "try { & '$target' @args } catch { Write-Error `$_; exit 1 }"
        "exit `$LASTEXITCODE"
    ) -join "`r`n"
}

# ---- The scan ----
function Invoke-Scan {
    $script:ScanRan = $true
    [IO.File]::WriteAllText($ScanReport, "imagectl scan of build $BuildId, $(Get-Now)`r`n", $Utf8)
    if ($BuiltinScan) { Invoke-BuiltinScan }
    if ($ScanCommand) {
        # The configured scan: a non-zero exit is a finding; its output goes into the report.
        Add-Text $ScanReport "`r`n== scan command ==`r`n$ScanCommand`r`n== output =="
        $scanOut = Join-Path $Work 'scan.out.txt'
        $scanErr = Join-Path $Work 'scan.err.txt'
        $encoded = [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes($ScanCommand))
        $scan = Start-Process -FilePath (Join-Path $PSHOME 'powershell.exe') -NoNewWindow -PassThru `
            -ArgumentList @('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-EncodedCommand', $encoded) `
            -WorkingDirectory $PackagesDir -RedirectStandardInput $EmptyInput `
            -RedirectStandardOutput $scanOut -RedirectStandardError $scanErr
        $null = $scan.Handle
        $scan | Wait-Process -Timeout $TimeoutSeconds -ErrorAction SilentlyContinue
        if (-not $scan.HasExited) { & taskkill.exe /T /F /PID $scan.Id | Out-Null }
        $scan.WaitForExit() | Out-Null
        foreach ($part in @($scanOut, $scanErr)) {
            if (Test-Path -LiteralPath $part) { Add-Text $ScanReport ([IO.File]::ReadAllText($part)) }
        }
        if ($scan.ExitCode -ne 0) { Add-Finding "the scan command exited with $($scan.ExitCode)" }
    }
    if (-not $BuiltinScan -and -not $ScanCommand) { Add-Text $ScanReport 'no scan is configured' }
    Add-Text $ScanReport "`r`nimagectl: $($Findings.Count) finding(s)"
    Write-Step "scan: $($Findings.Count) finding(s)"
}

# The built-in hygiene scan: what must not ship in an image others will launch. (World-writable system files are
# a Linux check: Windows permissions are ACLs, left to a configured scan command.)
function Invoke-BuiltinScan {
    Add-Text $ScanReport "`r`n== built-in hygiene scan =="
    Add-Text $ScanReport 'checks: unattend files with passwords; PowerShell history, SSH authorized keys and credentials in well-known files under every profile'
    # Answer files left by setup or by the installer can hold administrator passwords in clear text.
    $unattend = @(
        "$env:SystemDrive\unattend.xml", "$env:SystemDrive\autounattend.xml",
        "$env:SystemRoot\Panther\unattend.xml", "$env:SystemRoot\Panther\autounattend.xml",
        "$env:SystemRoot\Panther\Unattend\unattend.xml", "$env:SystemRoot\System32\Sysprep\unattend.xml",
        "$env:SystemRoot\System32\Sysprep\Panther\unattend.xml"
    )
    foreach ($file in $unattend) {
        if (Test-Path -LiteralPath $file) {
            $text = [IO.File]::ReadAllText($file)
            if ($text -match '(?s)<(AdministratorPassword|Password)>\s*<Value>[^<]+</Value>') {
                Add-Finding "password in an unattend file: $file"
            }
        }
    }
    # Every profile, the system profile included (an installer runs as SYSTEM).
    $profiles = @(Get-ChildItem -Path "$env:SystemDrive\Users" -Directory -Force -ErrorAction SilentlyContinue | ForEach-Object { $_.FullName })
    $profiles += "$env:SystemRoot\System32\config\systemprofile"
    foreach ($profileDir in $profiles) {
        $history = Join-Path $profileDir 'AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\ConsoleHost_history.txt'
        if ((Test-Path -LiteralPath $history) -and (Get-Item -LiteralPath $history -Force).Length -gt 0) {
            Add-Finding "PowerShell history: $history"
        }
        foreach ($name in @('.ssh\authorized_keys', '.aws\credentials', '.git-credentials', '.netrc', '_netrc')) {
            $file = Join-Path $profileDir $name
            if ((Test-Path -LiteralPath $file) -and (Get-Item -LiteralPath $file -Force).Length -gt 0) {
                if ($name -eq '.ssh\authorized_keys') { Add-Finding "leftover SSH authorized keys: $file" }
                else { Add-Finding "credentials: $file" }
            }
        }
        $docker = Join-Path $profileDir '.docker\config.json'
        if ((Test-Path -LiteralPath $docker) -and ([IO.File]::ReadAllText($docker) -match '"auth"')) {
            Add-Finding "credentials: $docker"
        }
    }
    $adminKeys = "$env:ProgramData\ssh\administrators_authorized_keys"
    if ((Test-Path -LiteralPath $adminKeys) -and (Get-Item -LiteralPath $adminKeys -Force).Length -gt 0) {
        Add-Finding "leftover SSH authorized keys: $adminKeys"
    }
}

# ---- Generalize: sysprep through EC2Launch v2, else the EC2Launch v1 scripts ----
# Without shutting down: the reports still have to be sent; the power-off comes last.
function Invoke-Generalize {
    Write-Step 'generalizing'
    Add-Text $InstallLog "`r`nimagectl: generalizing"
    $v2 = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
    $v1 = Join-Path $env:ProgramData 'Amazon\EC2-Windows\Launch\Scripts'
    if (Test-Path -LiteralPath $v2) {
        $output = & $v2 sysprep '--shutdown=false' 2>&1
        Add-Text $InstallLog ($output | Out-String)
        $script:Generalized = ($LASTEXITCODE -eq 0)
    } elseif (Test-Path -LiteralPath (Join-Path $v1 'SysprepInstance.ps1')) {
        $output = & (Join-Path $v1 'InitializeInstance.ps1') -Schedule 2>&1
        Add-Text $InstallLog ($output | Out-String)
        $output = & (Join-Path $v1 'SysprepInstance.ps1') -NoShutdown 2>&1
        Add-Text $InstallLog ($output | Out-String)
        $script:Generalized = $?
    } else {
        Add-Text $InstallLog 'imagectl: neither EC2Launch v2 nor EC2Launch v1 is installed: the image is not generalized'
    }
}

# ---- The end: reports, clean-up, power-off ----
function Complete-Build {
    $footer = "imagectl: exit code $ExitCode, timed out $TimedOut, reboot attempted $RebootAttempted, $Duration s"
    if ($BuildError) { $footer = "imagectl: error: $BuildError`r`n$footer" }
    Add-Text $InstallLog "`r`n$footer"
    Send-File $InstallLog $LogUrl | Out-Null

    # The scan report (a short note when the scan did not run, so the key always explains itself).
    if (-not $ScanRan) {
        [IO.File]::WriteAllText($ScanReport, "imagectl: the scan did not run: the installation did not succeed`r`n", $Utf8)
    }
    Send-File $ScanReport $ScanUrl | Out-Null

    # The InstanceResult, last: its presence tells imagectl that the instance is done.
    $scan = $null
    if ($ScanRan) { $scan = [ordered]@{ passed = ($Findings.Count -eq 0); findings = [string[]]$Findings.ToArray() } }
    $result = [ordered]@{
        buildId          = $BuildId
        exitCode         = $ExitCode
        timedOut         = $TimedOut
        rebootAttempted  = $RebootAttempted
        durationSeconds  = $Duration
        error            = $BuildError
        scan             = $scan
        generalized      = $Generalized
    }
    $status = 1
    if ($InstallOk -and $Findings.Count -eq 0) { $status = 0 }
    if (Send-Json $result $ResultUrl 'result.json') {
        Write-Step 'result sent'
    } else {
        $status = 2
    }

    # Nothing of the build stays in the image: packages, logs, and (through SSM) this script.
    # Only a directory this script (or the SSM commands) made: never whatever IMAGECTL_WORK might say.
    Set-Location -Path "$env:SystemDrive\"
    if ($Work -like '*\imagectl\build-*') {
        Remove-Item -LiteralPath $Work -Recurse -Force -ErrorAction SilentlyContinue
    }

    if ($PowerOffWhenDone) {
        Write-Step 'powering off'
        Stop-Computer -Force
    }
    exit $status
}

try {
    Invoke-Build
} catch {
    if (-not $BuildError) { $BuildError = "the build script failed: $($_.Exception.Message)" }
}
Complete-Build
"##;

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::build::{JobPackage, ReportUrls};

    fn url(key: &str, method: &str) -> String {
        format!(
            "https://logs.s3.eu-west-1.amazonaws.com/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F{method}&X-Amz-Signature=0f'x"
        )
    }

    fn job(platform: Platform) -> InstanceJob {
        let installer = match platform {
            Platform::Linux => "install.sh",
            Platform::Windows => "setup.msi",
        };
        InstanceJob {
            build_id: "web-base-r3-0123abcd".into(),
            platform,
            packages: vec![
                JobPackage {
                    file_name: installer.into(),
                    url: url("imagectl/packages/aaaa/install", "GET"),
                    sha256: "a".repeat(64),
                },
                JobPackage {
                    file_name: "data file.tar.gz".into(),
                    url: url("imagectl/packages/bbbb/data", "GET"),
                    sha256: "b".repeat(64),
                },
            ],
            installer: installer.into(),
            installer_arguments: vec!["--quiet".into(), "--prefix=/opt/it's here".into(), "$HOME".into()],
            timeout_seconds: 1800,
            scan_command: Some("test -x /opt/app/bin/app && echo \"ok: $(date)\"".into()),
            builtin_scan: true,
            generalize: true,
            report: ReportUrls {
                status: url("imagectl/builds/web-base-r3-0123abcd/status.json", "PUT"),
                log: url("imagectl/builds/web-base-r3-0123abcd/install.log", "PUT"),
                result: url("imagectl/builds/web-base-r3-0123abcd/result.json", "PUT"),
                scan: url("imagectl/builds/web-base-r3-0123abcd/scan.txt", "PUT"),
            },
            power_off_when_done: true,
        }
    }

    fn bash_accepts(script: &str) {
        let mut child =
            Command::new("bash").arg("-n").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run bash -n");
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "bash -n rejects the script:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    #[test]
    fn linux_script_snapshot() {
        insta::assert_snapshot!("linux-script", render(&job(Platform::Linux)));
    }

    #[test]
    fn windows_script_snapshot() {
        insta::assert_snapshot!("windows-script", render(&job(Platform::Windows)));
    }

    #[test]
    fn ssm_command_snapshots() {
        // The wrappers only: the scripts inside are the ones snapshotted above.
        let wrapper = |platform: Platform, head: usize| {
            let commands = ssm_commands(&job(platform));
            let script_lines = render(&job(platform)).lines().count();
            let mut shown: Vec<String> = commands[..head].to_vec();
            shown.push(format!("… the {script_lines} lines of the script …"));
            shown.extend(commands[head + script_lines..].iter().cloned());
            shown.join("\n")
        };
        insta::assert_snapshot!("linux-ssm-commands", wrapper(Platform::Linux, 3));
        insta::assert_snapshot!("windows-ssm-commands", wrapper(Platform::Windows, 5));
    }

    #[test]
    fn linux_script_is_valid_bash_and_embeds_every_value_literally() {
        let job = job(Platform::Linux);
        let script = render(&job);
        assert!(script.starts_with("#!/bin/bash\n"));
        bash_accepts(&script);
        // Evaluating the job block alone gives back every value byte for byte (quotes, `&`, `$`, spaces).
        let block_end = script.find("# ---- A predictable environment").unwrap();
        let probe = format!(
            "{}\nprintf '%s\\n' \"$BUILD_ID\" \"${{PACKAGE_NAMES[@]}}\" \"${{PACKAGE_URLS[@]}}\" \"${{INSTALLER_ARGUMENTS[@]}}\" \"$SCAN_COMMAND\" \"$RESULT_URL\"",
            &script[..block_end]
        );
        let output = Command::new("bash").args(["-c", &probe]).output().unwrap();
        let mut expected = vec![job.build_id.clone()];
        expected.extend(job.packages.iter().map(|p| p.file_name.clone()));
        expected.extend(job.packages.iter().map(|p| p.url.clone()));
        expected.extend(job.installer_arguments.iter().cloned());
        expected.push(job.scan_command.clone().unwrap());
        expected.push(job.report.result.clone());
        assert_eq!(String::from_utf8_lossy(&output.stdout), expected.join("\n") + "\n");
        // No `set -e` anywhere: the installer's failure must be reported, not abort the script.
        assert!(!script.lines().any(|l| l.trim_start().starts_with("set -e")));
    }

    #[test]
    fn linux_ssm_commands_write_the_same_script_and_run_it() {
        let job = job(Platform::Linux);
        let script = render(&job);
        let commands = ssm_commands(&job).join("\n") + "\n";
        bash_accepts(&commands);
        // Run the commands with `bash` replaced by `cat`: they write the script and hand over exactly it.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("bin");
        std::fs::create_dir(&fake).unwrap();
        std::fs::write(fake.join("bash"), "#!/bin/sh\nexec cat \"$1\"\n").unwrap();
        Command::new("chmod").args(["755", fake.join("bash").to_str().unwrap()]).status().unwrap();
        let here = format!("{}/imagectl-build", dir.path().display());
        let commands = commands.replace("/var/tmp/imagectl-build", &here);
        let output = Command::new("sh")
            .args(["-c", &commands])
            .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        // (The script's own fallback path was redirected along with the commands'.)
        assert!(
            String::from_utf8_lossy(&output.stdout) == script.replace("/var/tmp/imagectl-build", &here),
            "the script written differs"
        );
    }

    #[test]
    fn windows_script_is_unattended_bounded_and_reports_everywhere() {
        let job = job(Platform::Windows);
        let script = render(&job);
        // Every URL, as a PowerShell literal.
        for url in job.packages.iter().map(|p| &p.url).chain([
            &job.report.status,
            &job.report.log,
            &job.report.scan,
            &job.report.result,
        ]) {
            assert!(script.contains(&ps_quote(url)), "{url} is missing");
        }
        // Standard input closed, a timeout, no window, output redirected.
        for needle in [
            "RedirectStandardInput  = $EmptyInput",
            "Wait-Process -Timeout $TimeoutSeconds",
            "taskkill.exe /T /F",
            "NoNewWindow            = $true",
            "RedirectStandardOutput = $stdout",
            "'/qn', '/norestart'",
            "'-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File'",
            "System32\\cmd.exe",
            "$ExitCode -eq 3010 -or $ExitCode -eq 1641",
            "Get-FileHash -Algorithm SHA256",
            "Invoke-WebRequest -UseBasicParsing -Uri $Url -OutFile",
            "& $v2 sysprep '--shutdown=false'",
            "SysprepInstance.ps1') -NoShutdown",
            "Stop-Computer -Force",
            "ConsoleHost_history.txt",
        ] {
            assert!(script.contains(needle), "the Windows script lacks {needle:?}");
        }
        assert!(script.contains("$TimeoutSeconds = 1800\n"));
        // The reports' keys are camelCase, as `InstanceResult` deserializes them.
        for key in
            ["buildId", "exitCode", "timedOut", "rebootAttempted", "durationSeconds", "error", "scan", "generalized"]
        {
            assert!(script.contains(&format!("        {key} ")), "result key {key} is missing");
        }
        // Balanced braces and parentheses outside literals: a cheap guard against a broken edit (no pwsh here).
        let code: String = strip_ps_literals(&script);
        for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
            assert_eq!(code.matches(open).count(), code.matches(close).count(), "unbalanced {open}{close}");
        }
        let user_data = user_data(&job);
        assert!(user_data.starts_with("<powershell>\n") && user_data.ends_with("</powershell>\n"));
        let commands = ssm_commands(&job).join("\n");
        assert!(commands.contains("New-Object Text.UTF8Encoding $true"));
        assert!(commands.contains(&ps_quote("$BuildId = 'web-base-r3-0123abcd'")));
    }

    /// The script without comments and the contents of single- and double-quoted strings.
    fn strip_ps_literals(script: &str) -> String {
        let mut out = String::new();
        for line in script.lines() {
            let mut chars = line.chars().peekable();
            let mut quote: Option<char> = None;
            while let Some(c) = chars.next() {
                match quote {
                    Some(q) if c == q => {
                        if chars.peek() == Some(&q) {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                    Some('"') if c == '`' => {
                        chars.next();
                    }
                    Some(_) => {}
                    None if c == '#' => break,
                    None if c == '\'' || c == '"' => quote = Some(c),
                    None if c == '`' => {
                        chars.next();
                    }
                    None => out.push(c),
                }
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn quoting_round_trips() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(sh_array(["x", "y z"]), "('x' 'y z')");
        assert_eq!(sh_array([]), "()");
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_array([]), "@()");
    }
}
