//! The manifest language end to end, through the real binary: the corpus of broken manifests (one mistake each,
//! every error located and snapshot-tested), the examples, the committed JSON Schema and the dependency graph.
//!
//! Snapshots live in tests/snapshots/. After a deliberate change to a message, review the new text with
//! `INSTA_UPDATE=always cargo test --test manifests` and `git diff tests/snapshots`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use assert_cmd::Command;
use regex::Regex;
use serde::Deserialize;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn imagectl() -> Command {
    Command::cargo_bin("imagectl").expect("the imagectl binary is built for integration tests")
}

/// What one run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `imagectl ARGS` in `dir`, so that paths in messages are relative to it and stable.
fn run_in(dir: &Path, args: &[&str]) -> Run {
    let output = imagectl().current_dir(dir).args(args).output().expect("imagectl runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// The case directories of one corpus group, sorted by name: a new directory is a new case.
fn cases(group: &str) -> Vec<(String, PathBuf)> {
    let root = repo().join("tests/corpus").join(group);
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.expect("a readable corpus entry").path())
        .filter(|path| path.is_dir())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), path))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", root.display());
    cases
}

/// The first comment line of a case's stack.yaml, which says what its mistake is.
fn mistake(case: &Path) -> String {
    // Lossy: one case is deliberately not UTF-8.
    let bytes = std::fs::read(case.join("stack.yaml")).expect("every case has a stack.yaml");
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("# "), "{}: the first line of stack.yaml should say what is wrong", case.display());
    first.trim_start_matches("# ").to_owned()
}

/// A diagnostic's first line: `file:line:column: error|warning: …`.
static LOCATED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^\s:]+\.(yaml|yml|sh|run|ps1|bat|cmd):\d+:\d+: (error|warning): \S").unwrap());
static SUMMARY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d+ errors? in the manifests$").unwrap());

/// Checks the shape of `validate`'s stderr on invalid input: every diagnostic is located, the last line counts the
/// errors, and that count is the number of error lines.
fn check_error_report(stderr: &str) -> Result<(), String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let Some((summary, diagnostics)) = lines.split_last() else {
        return Err("stderr is empty".into());
    };
    if !SUMMARY.is_match(summary) {
        return Err(format!("the last line should count the errors, it is {summary:?}"));
    }
    let mut errors = 0;
    for line in diagnostics.iter().filter(|l| !l.starts_with("  help: ")) {
        if !LOCATED.is_match(line) {
            return Err(format!("not located at file:line:column: {line:?}"));
        }
        errors += usize::from(line.contains(": error: "));
    }
    let counted: usize = summary.split(' ').next().unwrap().parse().unwrap();
    if errors == 0 || errors != counted {
        return Err(format!("{errors} error lines, but the summary says {counted}"));
    }
    Ok(())
}

/// Runs every case, collecting failures so that one broken case does not hide the others.
fn for_each_case(group: &str, check: impl Fn(&str, &Path) -> Result<(), String>) {
    let mut failures = Vec::new();
    for (name, dir) in cases(group) {
        match catch_unwind(AssertUnwindSafe(|| check(&name, &dir))) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{name}: {why}")),
            Err(_) => failures.push(format!("{name}: see the panic above")),
        }
    }
    assert!(failures.is_empty(), "{} case(s) of tests/corpus/{group} failed:\n{}", failures.len(), failures.join("\n"));
}

fn snapshot(name: &str, input: &Path, description: &str, text: &str) {
    let input = input.strip_prefix(repo()).unwrap_or(input).to_path_buf();
    insta::with_settings!({ description => description, input_file => input, omit_expression => true }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn every_invalid_case_exits_1_with_located_errors() {
    for_each_case("invalid", |name, dir| {
        let run = run_in(dir, &["validate", "."]);
        snapshot(name, &dir.join("stack.yaml"), &mistake(dir), &run.stderr);
        if run.code != Some(1) {
            return Err(format!("exit code {:?}, expected 1; stderr:\n{}", run.code, run.stderr));
        }
        if !run.stdout.is_empty() {
            return Err(format!("nothing belongs on stdout of a failed validation, got {:?}", run.stdout));
        }
        check_error_report(&run.stderr)
    });
}

#[test]
fn warnings_are_located_and_do_not_fail_validation() {
    for_each_case("warnings", |name, dir| {
        let run = run_in(dir, &["validate", "."]);
        snapshot(&format!("warning-{name}"), &dir.join("stack.yaml"), &mistake(dir), &run.stderr);
        if run.code != Some(0) {
            return Err(format!("exit code {:?}, expected 0; stderr:\n{}", run.code, run.stderr));
        }
        if !run.stdout.contains("is valid") || !run.stdout.contains("warning") {
            return Err(format!("the summary should count the warnings: {:?}", run.stdout));
        }
        let warnings: Vec<&str> = run.stderr.lines().filter(|l| !l.starts_with("  help: ")).collect();
        if warnings.is_empty() || warnings.iter().any(|l| !LOCATED.is_match(l) || !l.contains(": warning: ")) {
            return Err(format!("every stderr line should be a located warning:\n{}", run.stderr));
        }
        Ok(())
    });
}

#[test]
fn every_mistake_of_a_run_is_reported_in_file_order_and_nothing_else() {
    let dir = repo().join("tests/corpus/multiple-mistakes");
    let run = run_in(&dir, &["validate", "."]);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    check_error_report(&run.stderr).unwrap();
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains(": error: ")).collect();
    let files: Vec<&str> = errors.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(files, ["broken.yaml", "images.yaml", "stack.yaml", "stack.yaml"], "stderr:\n{}", run.stderr);
    // The Bucket that did not parse is still defined: the image's reference to it is not a second error.
    assert!(!run.stderr.contains("no Bucket named"), "stderr:\n{}", run.stderr);
    snapshot("multiple-mistakes", &dir, "four mistakes in three files", &run.stderr);
}

/// Directories under examples/ holding a `kind: Stack` document (examples/ci holds CI workflow files).
fn example_stacks() -> Vec<PathBuf> {
    let mut stacks = Vec::new();
    for entry in walkdir::WalkDir::new(repo().join("examples")).sort_by_file_name() {
        let entry = entry.expect("a readable examples entry");
        let path = entry.path();
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if !entry.file_type().is_file() || !is_yaml || path.starts_with(repo().join("examples/ci")) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a readable example");
        let has_stack = text.lines().any(|l| l.split('#').next().unwrap().trim() == "kind: Stack");
        let dir = path.parent().unwrap().to_path_buf();
        if has_stack && !stacks.contains(&dir) {
            stacks.push(dir);
        }
    }
    stacks
}

#[test]
fn every_example_validates() {
    let stacks = example_stacks();
    for required in ["examples/golden-image", "examples/minimal"] {
        assert!(stacks.contains(&repo().join(required)), "{required} is not found as an example stack: {stacks:?}");
    }
    for dir in stacks {
        let run = run_in(&repo(), &["validate", dir.strip_prefix(repo()).unwrap().to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{} does not validate:\n{}", dir.display(), run.stderr);
        assert!(
            run.stdout.starts_with("Stack ") && run.stdout.contains(" is valid: "),
            "{}: {:?}",
            dir.display(),
            run.stdout
        );
        assert_eq!(run.stdout.lines().count(), 1, "valid input prints a one-line summary: {:?}", run.stdout);
        assert!(!run.stderr.contains("error"), "{}:\n{}", dir.display(), run.stderr);
    }
}

const SCHEMA_FILE: &str = "schema/imagectl.schema.json";

#[test]
fn committed_schema_is_up_to_date() {
    let run = run_in(&repo(), &["schema"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let committed = std::fs::read_to_string(repo().join(SCHEMA_FILE)).unwrap_or_default();
    assert!(
        committed == run.stdout,
        "{SCHEMA_FILE} is stale: it differs from what `imagectl schema` prints. \
         Regenerate it with `cargo run -q -- schema > {SCHEMA_FILE}` and commit it."
    );
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join(SCHEMA_FILE)).expect("the committed schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// Every document of a YAML file, as JSON, the way an editor's YAML language server sees it.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let value = serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn schema_errors(validator: &jsonschema::Validator, document: &serde_json::Value) -> Vec<String> {
    validator.iter_errors(document).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn schema_accepts_every_example_document() {
    let validator = schema_validator();
    let mut checked = 0;
    for dir in example_stacks() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                continue;
            }
            for document in yaml_documents(&path) {
                let errors = schema_errors(&validator, &document);
                assert!(
                    errors.is_empty(),
                    "{}: the schema rejects {}:\n{}",
                    path.display(),
                    document["kind"],
                    errors.join("\n")
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 13, "only {checked} example documents were checked");
}

/// Every object the schema describes field by field is closed (`additionalProperties: false`), like the parser's
/// `deny_unknown_fields`: each kind's variant of the `oneOf`, its spec and every nested mapping. Open maps (tags,
/// policy documents, perRegion) have no `properties` and are not concerned.
#[test]
fn every_object_in_the_schema_is_closed() {
    fn walk(node: &serde_json::Value, path: &str, closed: &mut Vec<String>, open: &mut Vec<String>) {
        match node {
            serde_json::Value::Object(map) => {
                if map.contains_key("properties") {
                    match map.get("additionalProperties") {
                        Some(serde_json::Value::Bool(false)) => closed.push(path.to_owned()),
                        _ => open.push(path.to_owned()),
                    }
                }
                for (key, value) in map {
                    walk(value, &format!("{path}/{key}"), closed, open);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    walk(value, &format!("{path}/{i}"), closed, open);
                }
            }
            _ => {}
        }
    }
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(SCHEMA_FILE)).unwrap()).unwrap();
    let (mut closed, mut open) = (Vec::new(), Vec::new());
    walk(&schema, "#", &mut closed, &mut open);
    assert!(open.is_empty(), "objects that accept unknown fields: {open:?}");
    let variants = schema["oneOf"].as_array().expect("the manifest is a oneOf of kinds");
    assert_eq!(variants.len(), 9, "one variant per kind");
    for variant in variants {
        assert_eq!(
            variant["properties"]["kind"]["const"].as_str().map(|_| ()),
            Some(()),
            "each variant fixes `kind`: {variant}"
        );
        assert_eq!(variant["additionalProperties"], false, "{variant}");
    }
    assert!(closed.len() >= 25, "only {} closed objects: {closed:?}", closed.len());
}

/// The reference stack's document of `kind` named `name`, as JSON.
fn reference_document(kind: &str, name: &str) -> serde_json::Value {
    for file in ["stack.yaml", "iam.yaml", "storage.yaml", "images.yaml"] {
        for document in yaml_documents(&repo().join("examples/golden-image").join(file)) {
            if document["kind"] == kind && document["metadata"]["name"] == name {
                return document;
            }
        }
    }
    panic!("no {kind}/{name} in examples/golden-image");
}

#[test]
fn schema_rejects_unknown_fields_kinds_and_versions() {
    let validator = schema_validator();
    let bucket = reference_document("Bucket", "golden-images-build-logs");
    let group = reference_document("PackageGroup", "acme-agent-2-4-linux-r1");
    let image = reference_document("PrivateImage", "web-base");
    // The unchanged documents pass, so each rejection below is the change's doing.
    for document in [&bucket, &group, &image] {
        assert!(validator.is_valid(document), "{}", schema_errors(&validator, document).join("\n"));
    }
    let mutations: Vec<(&str, serde_json::Value)> = vec![
        ("unknown top-level field", with(&bucket, |d| d["labels"] = serde_json::json!({"team": "platform"}))),
        ("unknown metadata field", with(&bucket, |d| d["metadata"]["namespace"] = "default".into())),
        ("unknown spec field", with(&bucket, |d| d["spec"]["expireAfterDay"] = 90.into())),
        ("unknown nested field", with(&group, |d| d["spec"]["packages"][1]["instaler"] = true.into())),
        (
            "unknown field two levels down",
            with(&image, |d| d["spec"]["baseImage"]["lookup"]["owner"] = "amazon".into()),
        ),
        ("unknown kind", with(&bucket, |d| d["kind"] = "Image".into())),
        ("missing kind", with(&bucket, |d| _ = d.as_object_mut().unwrap().remove("kind"))),
        ("unknown apiVersion", with(&bucket, |d| d["apiVersion"] = "imagectl/v2".into())),
        ("missing spec field", with(&image, |d| _ = d["spec"].as_object_mut().unwrap().remove("imageName"))),
        ("wrong type", with(&bucket, |d| d["spec"]["expireAfterDays"] = "ninety".into())),
        ("unknown enum value", with(&group, |d| d["spec"]["platform"] = "macos".into())),
        ("another kind's spec field", with(&bucket, |d| d["spec"]["platform"] = "linux".into())),
    ];
    for (what, document) in mutations {
        assert!(!validator.is_valid(&document), "the schema accepts a document with an {what}: {document}");
    }
}

fn with(document: &serde_json::Value, change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut document = document.clone();
    change(&mut document);
    document
}

/// The schema and the parser agree: corpus cases the parser rejects before any semantic check hold a document the
/// schema rejects, and cases that parse hold none.
#[test]
fn schema_agrees_with_the_parser_on_the_corpus() {
    let validator = schema_validator();
    let parse_errors = [
        "unknown-field-top-level",
        "unknown-field-in-spec",
        "unknown-field-nested",
        "wrong-type",
        "wrong-type-list",
        "account-id-unquoted",
        "missing-field",
        "missing-kind",
        "kind-not-a-string",
        "unknown-kind",
        "unknown-api-version",
        "unknown-enum-value",
    ];
    for name in parse_errors {
        let documents = yaml_documents(&repo().join("tests/corpus/invalid").join(name).join("stack.yaml"));
        let rejected = documents.iter().filter(|d| !validator.is_valid(d)).count();
        assert_eq!(rejected, 1, "{name}: the schema should reject exactly the one broken document");
    }
    for name in ["dangling-reference", "dependency-cycle", "logs-bucket-other-region", "account-id-not-12-digits"] {
        for document in yaml_documents(&repo().join("tests/corpus/invalid").join(name).join("stack.yaml")) {
            let errors = schema_errors(&validator, &document);
            assert!(
                errors.is_empty(),
                "{name}: a semantic mistake is not the schema's to find:\n{}",
                errors.join("\n")
            );
        }
    }
}

#[test]
fn graph_lists_the_reference_stack_in_dependency_order() {
    let run = run_in(&repo(), &["graph", "examples/golden-image"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Every resource comes after everything it needs.
    let line = Regex::new(r"^ *(\d+)\. (\S+)(?:  \(needs (.+)\))?$").unwrap();
    let mut listed: Vec<String> = Vec::new();
    for text in run.stdout.lines() {
        let captures = line.captures(text).unwrap_or_else(|| panic!("unexpected graph line {text:?}"));
        assert_eq!(captures[1].parse::<usize>().unwrap(), listed.len() + 1, "numbered in order: {text:?}");
        for need in captures.get(3).map(|m| m.as_str().split(", ").collect()).unwrap_or_else(Vec::new) {
            assert!(listed.iter().any(|l| l == need), "{} is listed before {need}, which it needs", &captures[2]);
        }
        listed.push(captures[2].to_owned());
    }
    assert_eq!(listed.len(), 10, "the reference stack has 10 resources:\n{}", run.stdout);
    insta::assert_snapshot!("graph-golden-image-text", run.stdout);
}

#[test]
fn graph_prints_dot() {
    let run = run_in(&repo(), &["graph", "examples/golden-image", "--format", "dot"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("digraph imagectl {") && run.stdout.trim_end().ends_with('}'), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            r#""PrivateImage/web-base" -> "PackageGroup/acme-agent-2-4-linux-r1" [label="spec.packageGroup"];"#
        ),
        "an arrow runs from a resource to what it needs, labelled with the field:\n{}",
        run.stdout
    );
    insta::assert_snapshot!("graph-golden-image-dot", run.stdout);
}

#[test]
fn a_cycle_is_reported_with_its_members() {
    let dir = repo().join("tests/corpus/invalid/dependency-cycle");
    for command in ["validate", "graph"] {
        let run = run_in(&dir, &[command, "."]);
        assert_eq!(run.code, Some(1), "{command}: {}", run.stderr);
        let cycle = run
            .stderr
            .lines()
            .find(|l| l.contains("dependency cycle: "))
            .unwrap_or_else(|| panic!("{command}: {}", run.stderr));
        let ring = cycle.split("dependency cycle: ").nth(1).unwrap();
        let members: Vec<&str> = ring.split(" → ").collect();
        assert_eq!(members.len(), 3, "the ring returns to its start: {ring}");
        assert_eq!(members.first(), members.last(), "{ring}");
        let mut sorted = members[..2].to_vec();
        sorted.sort();
        assert_eq!(sorted, ["PrivateImage/app-base", "PrivateImage/web-base"], "{ring}");
        // The error points at a reference that closes the ring.
        assert!(LOCATED.is_match(cycle) && cycle.contains("spec.baseImage.image"), "{cycle}");
    }
}
