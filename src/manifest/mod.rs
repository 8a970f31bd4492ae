//! Finds manifest files and parses every document in them strictly, keeping each field's position.

pub mod positions;
pub mod raw;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::diagnostics::{Diagnostic, Location};
use positions::{Position, PositionIndex};
use raw::{Envelope, Manifest};

/// One parsed document and where it came from.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub file: PathBuf,
    pub positions: PositionIndex,
    pub manifest: Manifest,
}

impl SourceDocument {
    /// The location of a field path in this document (or of its nearest written ancestor).
    pub fn locate(&self, field: &str) -> Location {
        Location { file: self.file.clone(), position: self.positions.locate(field) }
    }
}

/// The kinds, as written in `kind:`.
pub const KINDS: [&str; 9] =
    ["Stack", "Role", "InstanceProfile", "Bucket", "Topic", "PackageGroup", "PrivateImage", "ImageCopy", "ImageShare"];

/// The manifest files under `paths`: files as given, directories searched recursively for *.yaml and *.yml.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        if !path.is_dir() {
            return Err(Diagnostic::error(format!("{}: no such file or directory", path.display())));
        }
        for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
            let entry = entry.map_err(|e| Diagnostic::error(format!("{}: {e}", path.display())))?;
            let is_yaml = matches!(entry.path().extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            if entry.file_type().is_file() && is_yaml {
                // `imagectl validate .` should print `stack.yaml`, not `./stack.yaml`.
                let path = entry.into_path();
                files.push(path.strip_prefix("./").map(Path::to_path_buf).unwrap_or(path));
            }
        }
    }
    if files.is_empty() {
        let searched: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Diagnostic::error(format!("no *.yaml or *.yml files in {}", searched.join(", "))));
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Parses every document of every file; returns the documents that parsed and a diagnostic for each that did not.
pub fn load(files: &[PathBuf]) -> (Vec<SourceDocument>, Vec<Diagnostic>) {
    let mut documents = Vec::new();
    let mut diagnostics = Vec::new();
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => {
                diagnostics.push(
                    Diagnostic::error(format!("cannot read the file: {e}"))
                        .at(Location { file: file.clone(), position: None }),
                );
                continue;
            }
        };
        match std::str::from_utf8(&bytes) {
            Ok(text) => parse_file(file, text, &mut documents, &mut diagnostics),
            Err(e) => {
                // Point at the first byte that is not UTF-8: an editor's "save as" in a legacy encoding leaves one
                // in a comment or description, and the file looks fine on screen.
                let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
                let line = valid.matches('\n').count() + 1;
                let column = valid.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
                diagnostics.push(
                    Diagnostic::error(format!(
                        "the file is not UTF-8 text: byte 0x{:02x} is not valid UTF-8",
                        bytes[e.valid_up_to()]
                    ))
                    .at(Location { file: file.clone(), position: Some(Position { line, column }) })
                    .help("save the file as UTF-8; manifests are YAML, which is read as UTF-8"),
                );
            }
        }
    }
    (documents, diagnostics)
}

/// Parses the documents of one file's text.
pub fn parse_file(file: &Path, text: &str, documents: &mut Vec<SourceDocument>, diagnostics: &mut Vec<Diagnostic>) {
    let mut indexes = positions::index_documents(text).into_iter();
    for deserializer in serde_yaml::Deserializer::from_str(text) {
        let positions = indexes.next().unwrap_or_default();
        let value = match <Value as serde::Deserialize>::deserialize(deserializer) {
            Ok(value) => value,
            Err(e) => {
                // A syntax error ends the file: later documents cannot be delimited reliably.
                let position = e.location().map(|l| Position { line: l.line(), column: l.column() });
                diagnostics.push(
                    Diagnostic::error(format!("invalid YAML: {}", syntax_message(&e.to_string(), file)))
                        .at(Location { file: file.to_path_buf(), position }),
                );
                return;
            }
        };
        let place = Place { file, positions: &positions };
        match parse_document(value, &place) {
            Ok(Some(manifest)) => documents.push(SourceDocument { file: file.to_path_buf(), positions, manifest }),
            Ok(None) => {}
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
}

/// serde_yaml writes "PROBLEM at line L column C, CONTEXT at line L column C". The problem's location is printed in
/// front of the diagnostic; the context (where the unclosed mapping or quote began) is often where the mistake is,
/// so it is kept, as `file:line:column` like every other position.
fn syntax_message(message: &str, file: &Path) -> String {
    static MARK: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r" at line (\d+) column (\d+)").expect("static pattern"));
    let Some(first) = MARK.find(message) else {
        return message.to_owned();
    };
    let problem = &message[..first.start()];
    let rest = message[first.end()..].trim_start_matches(',').trim();
    if rest.is_empty() {
        return problem.to_owned();
    }
    let context = MARK
        .replace_all(rest, |c: &regex::Captures<'_>| format!(" that begins at {}:{}:{}", file.display(), &c[1], &c[2]));
    format!("{problem} ({context})")
}

/// Where a document being parsed sits, for positions in its diagnostics.
struct Place<'a> {
    file: &'a Path,
    positions: &'a PositionIndex,
}

impl Place<'_> {
    fn locate(&self, field: &str) -> Location {
        Location { file: self.file.to_path_buf(), position: self.positions.locate(field) }
    }
}

fn parse_document(mut value: Value, document: &Place<'_>) -> Result<Option<Manifest>, Diagnostic> {
    if value.is_null() {
        return Ok(None); // an empty document, e.g. after a trailing `---`
    }
    value.apply_merge().map_err(|e| {
        // Point at the first `<<` key: serde_yaml does not say which merge failed.
        let field = document.positions.first_key_named("<<");
        let diagnostic = Diagnostic::error(format!("invalid merge key: {e}"))
            .at(document.locate(field.as_deref().unwrap_or("")))
            .help("`<<` merges a mapping, e.g. `<<: *defaults` with `defaults: &defaults {…}` written earlier");
        match field {
            Some(field) => diagnostic.field(field),
            None => diagnostic,
        }
    })?;
    let Value::Mapping(mut mapping) = value else {
        return Err(Diagnostic::error(
            "a manifest document must be a mapping with apiVersion, kind, metadata and spec",
        )
        .at(document.locate("")));
    };
    let kind = match mapping.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            return Err(Diagnostic::error("`kind` must be a string")
                .at(document.locate("kind"))
                .field("kind")
                .help(format!("one of {}", KINDS.join(", "))))
        }
        None => {
            return Err(Diagnostic::error("missing field `kind`")
                .at(document.locate(""))
                .help(format!("add `kind:` with one of {}", KINDS.join(", "))))
        }
    };
    let value = Value::Mapping(mapping);
    let manifest = match kind.as_str() {
        "Stack" => Manifest::Stack(envelope(&kind, value, document)?),
        "Role" => Manifest::Role(envelope(&kind, value, document)?),
        "InstanceProfile" => Manifest::InstanceProfile(envelope(&kind, value, document)?),
        "Bucket" => Manifest::Bucket(envelope(&kind, value, document)?),
        "Topic" => Manifest::Topic(envelope(&kind, value, document)?),
        "PackageGroup" => Manifest::PackageGroup(envelope(&kind, value, document)?),
        "PrivateImage" => Manifest::PrivateImage(envelope(&kind, value, document)?),
        "ImageCopy" => Manifest::ImageCopy(envelope(&kind, value, document)?),
        "ImageShare" => Manifest::ImageShare(envelope(&kind, value, document)?),
        other => {
            let help = match crate::model::ids::suggest(other, &KINDS) {
                Some(kinds) => format!("did you mean {kinds}? The kinds are {}", KINDS.join(", ")),
                None => format!("one of {}", KINDS.join(", ")),
            };
            return Err(Diagnostic::error(format!("unknown kind `{other}`"))
                .at(document.locate("kind"))
                .field("kind")
                .help(help));
        }
    };
    Ok(Some(manifest))
}

fn envelope<S: DeserializeOwned>(kind: &str, value: Value, document: &Place<'_>) -> Result<Envelope<S>, Diagnostic> {
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).map(str::to_owned);
    serde_path_to_error::deserialize::<_, Envelope<S>>(value).map_err(|error| {
        let mut field = field_path(error.path());
        let message = error.inner().to_string();
        // An unknown field is reported at the containing mapping; point at the offending key instead.
        if let Some(unknown) = backticked_after(&message, "unknown field `") {
            if !field.ends_with(&unknown) {
                field = if field.is_empty() { unknown } else { format!("{field}.{unknown}") };
            }
        }
        let help = serde_help(&message, &field);
        let mut diagnostic = Diagnostic::error(reword(&message)).at(document.locate(&field));
        if let Some(help) = help {
            diagnostic = diagnostic.help(help);
        }
        let diagnostic = if field.is_empty() { diagnostic } else { diagnostic.field(field) };
        diagnostic.resource(format!("{kind}/{}", name.as_deref().unwrap_or("?")))
    })
}

/// serde's "unknown variant" is Rust vocabulary; to a manifest author it is a value.
fn reword(message: &str) -> String {
    message.replacen("unknown variant", "unknown value", 1)
}

/// What would be right, for the serde errors whose message alone does not say.
fn serde_help(message: &str, field: &str) -> Option<String> {
    if let Some(missing) = backticked_after(message, "missing field `") {
        let parent = if field.is_empty() { "the document".to_owned() } else { format!("`{field}`") };
        return Some(format!("add `{missing}:` to {parent}"));
    }
    let found_scalar = ["invalid type: integer", "invalid type: floating point", "invalid type: boolean"]
        .iter()
        .any(|p| message.starts_with(p));
    if found_scalar && message.ends_with("expected a string") {
        // An account ID like 111122223333 is read as a number, `true` as a boolean: quoting keeps the text as written.
        let written = message.split('`').nth(1).unwrap_or("…");
        return Some(format!("quote the value so that YAML reads it as text: \"{written}\""));
    }
    if message.starts_with("invalid type:") {
        let expected = message.rsplit("expected ").next().unwrap_or_default();
        let hint = match expected {
            "a sequence" => "a list: `[a, b]`, or one `- item` per line",
            "a boolean" => "true or false",
            "u32" | "u64" | "u16" | "u8" => "a whole number, without quotes",
            "a map" | "struct" => "a mapping: `{key: value}`, or one `key: value` per line",
            _ if expected.starts_with("struct ") => "a mapping: `{key: value}`, or one `key: value` per line",
            _ => return None,
        };
        return Some(format!("write {hint}"));
    }
    None
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.find('`').map(|end| rest[..end].to_owned())
}

/// Renders a serde path the way the position index keys it: `spec.packages[1].path`.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}
