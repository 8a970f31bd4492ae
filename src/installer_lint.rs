//! Static checks of installer scripts (.sh, .ps1, .bat) against the package-group rules: unattended, synchronous,
//! complete (no downloads), no reboot, no routing changes.
//!
//! Errors are what the seller guide forbids outright and what would make a build hang or fail: interactive input,
//! reboots, downloads, detached work. Routing changes are warnings: the guide forbids only changes that make the
//! host unreachable, which a static check cannot tell.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::diagnostics::{Diagnostic, Location, Severity};
use crate::manifest::positions::Position;
use crate::manifest::SourceDocument;
use crate::model::Platform;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    InteractiveInput,
    Reboot,
    Download,
    RoutingChange,
    Detached,
}

impl Rule {
    pub fn severity(self) -> Severity {
        match self {
            Rule::RoutingChange => Severity::Warning,
            _ => Severity::Error,
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Rule::InteractiveInput => {
                "the installation must be unattended: stdin is closed on the build instance; pass every answer as a parameter or switch"
            }
            Rule::Reboot => "the installer cannot reboot: a reboot kills the agent that tracks the build and fails it",
            Rule::Download => {
                "packages must be complete: the build has no internet access; add the file to the package group instead"
            }
            Rule::RoutingChange => "the installer must not change network routing in a way that makes the host unreachable",
            Rule::Detached => {
                "the installer must be synchronous: it may not exit before the installation is complete; wait for background work"
            }
        }
    }
}

/// Script dialects the checks understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Shell,
    PowerShell,
    Batch,
}

impl Dialect {
    /// The dialect of an installer file, or None when it is not a script (.rpm, .msi, …).
    pub fn of(path: &Path) -> Option<Dialect> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "sh" | "run" => Some(Dialect::Shell),
            "ps1" => Some(Dialect::PowerShell),
            "bat" | "cmd" => Some(Dialect::Batch),
            _ => None,
        }
    }
}

/// One problem on one line of an installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub position: Position,
    /// The matched text.
    pub text: String,
}

impl Finding {
    /// A diagnostic located on the installer's line, naming the manifest field that lists the installer.
    pub fn into_diagnostic(self, written_path: &str, document: &SourceDocument, field: &str) -> Diagnostic {
        let installer_file =
            document.file.parent().map(|d| d.join(written_path)).unwrap_or_else(|| written_path.into());
        let diagnostic = match self.rule.severity() {
            Severity::Error => Diagnostic::error(format!("installer `{written_path}` runs `{}`", self.text)),
            Severity::Warning => Diagnostic::warning(format!("installer `{written_path}` runs `{}`", self.text)),
        };
        diagnostic
            .at(Location { file: installer_file, position: Some(self.position) })
            .field(field)
            .help(self.rule.explanation())
    }
}

/// Checks an installer file; files that are not scripts, or cannot be read as text, have no findings.
pub fn lint_file(path: &Path, platform: Platform) -> Vec<Finding> {
    let Some(dialect) = Dialect::of(path) else {
        return Vec::new();
    };
    // A .sh installer on Windows (or .ps1 on Linux) is refused elsewhere; check it in its own dialect anyway.
    let _ = platform;
    match std::fs::read_to_string(path) {
        Ok(text) => lint(&text, dialect),
        Err(_) => Vec::new(),
    }
}

struct Pattern {
    rule: Rule,
    regex: Regex,
}

fn patterns(specs: &[(Rule, &str)]) -> Vec<Pattern> {
    specs.iter().map(|(rule, re)| Pattern { rule: *rule, regex: Regex::new(re).expect("static pattern") }).collect()
}

/// Where a command may begin: start of line, after a separator or a keyword that takes a command.
const CMD: &str = r"(?:^|[;&|({`]\s*|\b(?:then|do|else|sudo|exec|time)\s+)";

static SHELL: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    patterns(&[
        (Rule::InteractiveInput, &format!(r"{CMD}(read)\b")),
        (Rule::InteractiveInput, r"^\s*(select\s+\w+\s+in)\b"),
        (
            Rule::Reboot,
            &format!(
                r"{CMD}((?:/\S*/)?(?:reboot|shutdown|poweroff|halt)|systemctl\s+(?:reboot|poweroff|halt|kexec)|(?:tel)?init\s+[06])(?:\s|;|&|\||$)"
            ),
        ),
        (Rule::Download, r"\b((?:curl|wget)\b.*?https?://\S*)"),
        (
            Rule::RoutingChange,
            r"\b(ip\s+(?:-\d\s+)?route\s+\w+|route\s+(?:add|del)|ip6?tables\b|nft\s+\w+|ufw\s+\w+|firewall-cmd\b)",
        ),
        (Rule::Detached, &format!(r"{CMD}(nohup|setsid|disown)\b")),
    ])
});

static POWERSHELL: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    patterns(&[
        (Rule::InteractiveInput, r"(?i)\b(Read-Host|Get-Credential|PromptForChoice)\b"),
        (Rule::InteractiveInput, r"(?i)^\s*(pause)\s*$"),
        (Rule::Reboot, r"(?i)\b(Restart-Computer|Stop-Computer|shutdown(?:\.exe)?\s+/[rsg])"),
        (
            Rule::Download,
            r"(?i)\b((?:Invoke-WebRequest|iwr|Invoke-RestMethod|irm|Start-BitsTransfer|DownloadFile|DownloadString|curl|wget)\b.*?https?://\S*)",
        ),
        (
            Rule::RoutingChange,
            r"(?i)\b(netsh\s+\w+|route(?:\.exe)?\s+(?:add|delete|change)|(?:New|Remove|Set)-NetRoute|(?:New|Set)-NetFirewallRule)\b",
        ),
        (Rule::Detached, r"(?i)\b(Start-Job|Start-ThreadJob)\b"),
    ])
});

static BATCH: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    patterns(&[
        (Rule::InteractiveInput, r"(?i)(?:^|&\s*)\s*(pause|set\s+/p|choice)\b"),
        (Rule::Reboot, r"(?i)\b(shutdown(?:\.exe)?\s+/[rsg])"),
        (Rule::Download, r"(?i)\b((?:curl|bitsadmin|certutil|powershell)\b.*?https?://\S*)"),
        (Rule::RoutingChange, r"(?i)\b(netsh\s+\w+|route(?:\.exe)?\s+(?:add|delete|change))\b"),
    ])
});

static START_PROCESS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b(Start-Process)\b").unwrap());
static WAIT_SWITCH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\s-Wait\b").unwrap());
static BATCH_START: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)(?:^|&)\s*(start)\s").unwrap());
static BATCH_WAIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\s/wait\b").unwrap());
static TRAILING_AMPERSAND: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[^&|>]\s*(&)\s*$").unwrap());
static SHELL_WAIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?:^|[;&|]\s*)wait\b").unwrap());
static READ_FROM_INPUT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\|\s*(?:while\s+)?read\b|\bread\b.*<|\bread\s+-t\b|\bdone\s*<").unwrap());

/// Checks a script's text.
pub fn lint(text: &str, dialect: Dialect) -> Vec<Finding> {
    let lines: Vec<&str> = text.lines().collect();
    let waits_later = |from: usize| lines[from..].iter().any(|l| SHELL_WAIT.is_match(strip_comment(l, dialect)));
    let mut findings = Vec::new();
    for (index, raw_line) in lines.iter().enumerate() {
        let line = strip_comment(raw_line, dialect);
        let mut found = |rule: Rule, m: regex::Match<'_>| {
            findings.push(Finding {
                rule,
                position: Position { line: index + 1, column: raw_line[..m.start()].chars().count() + 1 },
                text: m.as_str().trim().to_owned(),
            });
        };
        let table: &[Pattern] = match dialect {
            Dialect::Shell => &SHELL,
            Dialect::PowerShell => &POWERSHELL,
            Dialect::Batch => &BATCH,
        };
        for pattern in table {
            let Some(m) = pattern.regex.captures(line).and_then(|c| c.get(1)) else {
                continue;
            };
            // `read` fed by a pipe, a redirect or a loop over a file never waits for a person.
            if pattern.rule == Rule::InteractiveInput && dialect == Dialect::Shell && m.as_str() == "read" {
                let loop_fed =
                    lines[index..].iter().take(50).any(|l| l.trim_start().starts_with("done") && l.contains('<'));
                if READ_FROM_INPUT.is_match(line) || loop_fed {
                    continue;
                }
            }
            found(pattern.rule, m);
        }
        match dialect {
            Dialect::Shell => {
                if let Some(m) = TRAILING_AMPERSAND.captures(line).and_then(|c| c.get(1)) {
                    if !waits_later(index + 1) {
                        found(Rule::Detached, m);
                    }
                }
            }
            Dialect::PowerShell => {
                if let Some(m) = START_PROCESS.captures(line).and_then(|c| c.get(1)) {
                    if !WAIT_SWITCH.is_match(line) {
                        found(Rule::Detached, m);
                    }
                }
            }
            Dialect::Batch => {
                if let Some(m) = BATCH_START.captures(line).and_then(|c| c.get(1)) {
                    if !BATCH_WAIT.is_match(line) {
                        found(Rule::Detached, m);
                    }
                }
            }
        }
    }
    findings
}

/// The line without its comment, so that documentation of what not to do is not flagged.
fn strip_comment(line: &str, dialect: Dialect) -> &str {
    match dialect {
        Dialect::Shell | Dialect::PowerShell => {
            let mut in_single = false;
            let mut in_double = false;
            let mut previous = ' ';
            for (i, c) in line.char_indices() {
                match c {
                    '\'' if !in_double => in_single = !in_single,
                    '"' if !in_single => in_double = !in_double,
                    '#' if !in_single && !in_double && (previous.is_whitespace() || i == 0) => return &line[..i],
                    _ => {}
                }
                previous = c;
            }
            line
        }
        Dialect::Batch => {
            let trimmed = line.trim_start().to_ascii_lowercase();
            if trimmed.starts_with("rem ") || trimmed == "rem" || trimmed.starts_with("::") {
                ""
            } else {
                line
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str, dialect: Dialect) -> Vec<(Rule, usize)> {
        lint(text, dialect).into_iter().map(|f| (f.rule, f.position.line)).collect()
    }

    #[test]
    fn shell_findings_point_at_their_lines() {
        let script = "#!/bin/sh\n# do not reboot here\nread -p 'Continue?' answer\nsudo reboot\ncurl -fsSL https://example.com/x.sh | sh\nip route add default via 10.0.0.1\nnohup ./agent &\nsystemctl reboot\n";
        assert_eq!(
            rules(script, Dialect::Shell),
            vec![
                (Rule::InteractiveInput, 3),
                (Rule::Reboot, 4),
                (Rule::Download, 5),
                (Rule::RoutingChange, 6),
                (Rule::Detached, 7),
                (Rule::Detached, 7),
                (Rule::Reboot, 8),
            ]
        );
    }

    #[test]
    fn quiet_on_safe_shell() {
        let script = "set -eu\nwhile read -r line; do echo \"$line\"; done < list.txt\ncat f | while read x; do :; done\n./build.sh --no-reboot\ntar xzf acme.tar.gz -C /opt\n./worker &\nwait\necho 'reboot later' # reboot\n";
        assert_eq!(rules(script, Dialect::Shell), vec![]);
    }

    #[test]
    fn powershell_and_batch() {
        let ps = "Start-Process msiexec.exe -ArgumentList '/i a.msi /qn'\nStart-Process setup.exe -Wait\n$x = Read-Host 'Name'\nRestart-Computer -Force\nInvoke-WebRequest -Uri https://x/y -OutFile y\nnetsh advfirewall set allprofiles state off\n";
        assert_eq!(
            rules(ps, Dialect::PowerShell),
            vec![
                (Rule::Detached, 1),
                (Rule::InteractiveInput, 3),
                (Rule::Reboot, 4),
                (Rule::Download, 5),
                (Rule::RoutingChange, 6)
            ]
        );
        let bat = "@echo off\nREM pause here\nmsiexec /i a.msi /qn\nstart setup.exe\nstart /wait setup.exe\npause\nshutdown /r /t 0\n";
        assert_eq!(
            rules(bat, Dialect::Batch),
            vec![(Rule::Detached, 4), (Rule::InteractiveInput, 6), (Rule::Reboot, 7)]
        );
    }
}
