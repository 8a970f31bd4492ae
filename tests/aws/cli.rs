//! The `imagectl` binary end to end against the emulator — plan, apply and destroy of the reference stack's roles,
//! instance profile, buckets and topic, run as users and scheduled jobs run them (issue 4, "Done when").
//!
//! Each test starts its own emulator and writes its own copy of the stack. What is in AWS is checked with boto3,
//! an observer independent of imagectl's own reader; boto3 also plays the people who change AWS by hand.
//!
//! The stack and run helpers here are shared with the image-build tests (pipeline.rs).
//!
//! Snapshots live in tests/aws/snapshots/. After a deliberate change to the plan's rendering, review the new text
//! with `INSTA_UPDATE=always cargo test --test aws cli::` and `git diff tests/aws/snapshots`.

use std::fmt;
use std::fs;
use std::path::Path;

use regex::Regex;
use serde_json::{json, Value};
use tempfile::TempDir;

pub(crate) use crate::support::boto3::python;
use crate::support::Emulator;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/golden-image");
const STACK: &str = "golden-images";
const BUILD: &str = "image-build-instance";
const AUTOMATION: &str = "image-automation";
const ARTIFACTS: &str = "golden-images-artifacts";
const LOGS: &str = "golden-images-build-logs";
const TOPIC: &str = "image-build-events";
const SSM_CORE: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";
const BUILD_DESCRIPTION: &str = "Role of the instance that installs package groups";
const NO_CHANGES: &str = "No changes. 6 resource(s) match the manifests.";

/// A stack directory of the test's own, to edit.
pub(crate) struct Stack {
    pub(crate) dir: TempDir,
}

impl Stack {
    /// The reference stack's Stack, Role, InstanceProfile, Bucket and Topic documents (examples/golden-image
    /// without images.yaml: image kinds are not planned yet and would only add notes).
    pub(crate) fn reference() -> Stack {
        let dir = tempfile::Builder::new().prefix("imagectl-stack-").tempdir().expect("create a stack directory");
        let stack = Stack { dir };
        for file in ["stack.yaml", "iam.yaml", "storage.yaml"] {
            stack.restore(file);
        }
        stack
    }

    pub(crate) fn path(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temporary directory")
    }

    /// Puts the reference version of `file` back.
    pub(crate) fn restore(&self, file: &str) {
        fs::copy(Path::new(REFERENCE).join(file), self.dir.path().join(file)).expect("copy a reference manifest");
    }

    pub(crate) fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.path().join(file)).expect("read a manifest")
    }

    pub(crate) fn write(&self, file: &str, text: &str) {
        fs::write(self.dir.path().join(file), text).expect("write a manifest");
    }

    /// Replaces the one occurrence of `from` in `file`.
    pub(crate) fn edit(&self, file: &str, from: &str, to: &str) {
        let text = self.read(file);
        assert_eq!(text.matches(from).count(), 1, "{file} should hold `{from}` exactly once:\n{text}");
        self.write(file, &text.replacen(from, to, 1));
    }

    /// Removes the document of `kind` named `name` from `file`.
    pub(crate) fn remove(&self, file: &str, kind: &str, name: &str) {
        let text = self.read(file);
        let documents: Vec<&str> = text.split("\n---\n").collect();
        let kept: Vec<&str> = documents
            .iter()
            .copied()
            .filter(|d| !(d.contains(&format!("kind: {kind}\n")) && d.contains(&format!("{{name: {name}}}"))))
            .collect();
        assert_eq!(kept.len(), documents.len() - 1, "{file} should hold one {kind}/{name}:\n{text}");
        self.write(file, &format!("{}\n", kept.join("\n---\n").trim_end()));
    }
}

/// The reference stack, applied to the emulator's empty account.
fn applied_reference_stack(emulator: &Emulator) -> Stack {
    let stack = Stack::reference();
    let apply = run(emulator, &["apply", stack.path(), "--auto-approve"]).expect(0);
    apply.shows("Apply complete: 6 done.");
    stack
}

/// What one run of imagectl printed, and how it exited.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn run(emulator: &Emulator, args: &[&str]) -> Run {
    let output = emulator.imagectl_cmd().args(args).output().expect("run imagectl");
    Run {
        code: output.status.code().expect("imagectl exited rather than being killed"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

impl Run {
    /// The run itself, once it is known to have exited with `code`.
    #[track_caller]
    pub(crate) fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit code {code}:\n{self}");
        self
    }

    /// The plan's change headers, as "+ Role/x", "~ Bucket/y", "- Topic/z", "-/+ Role/w", in plan order.
    pub(crate) fn changes(&self) -> Vec<String> {
        let header = Regex::new(r"^ *(\+|~|-|-/\+) ([A-Za-z]+/\S+) (?:will be|must be)").unwrap();
        self.stdout.lines().filter_map(|l| header.captures(l)).map(|c| format!("{} {}", &c[1], &c[2])).collect()
    }

    /// Change headers sorted, for plans whose order among independent resources does not matter.
    fn sorted_changes(&self) -> Vec<String> {
        let mut changes = self.changes();
        changes.sort();
        changes
    }

    /// The lines a rendered document diff removes (`-`) or adds (`+`), without the sign and indentation.
    fn document_diff(&self, sign: char) -> Vec<String> {
        let prefix = format!("          {sign} ");
        self.stdout.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).map(|l| l.trim().to_owned()).collect()
    }

    /// Asserts that stdout holds `text`, comparing with runs of spaces squeezed to one so that column alignment
    /// does not matter.
    #[track_caller]
    pub(crate) fn shows(&self, text: &str) {
        let squeeze = |s: &str| {
            s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
        };
        let (stdout, text) = (squeeze(&self.stdout), squeeze(text));
        assert!(stdout.contains(&text), "stdout should show {text:?}:\n{self}");
    }

    /// Asserts that stderr holds `text`.
    #[track_caller]
    pub(crate) fn complains(&self, text: &str) {
        assert!(self.stderr.contains(text), "stderr should hold {text:?}:\n{self}");
    }

    /// The index of the first stdout line containing `text`.
    #[track_caller]
    pub(crate) fn line_of(&self, text: &str) -> usize {
        self.stdout.lines().position(|l| l.contains(text)).unwrap_or_else(|| panic!("no line with {text:?}:\n{self}"))
    }

    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Everything the tests look at, as boto3 reads it: every role, instance profile, bucket and topic of the account.
fn inventory(emulator: &Emulator) -> Value {
    const SCRIPT: &str = r#"
iam, s3, sns = boto3.client('iam'), boto3.client('s3'), boto3.client('sns')
def tags(pairs): return {t['Key']: t['Value'] for t in pairs}
roles = {}
for role in iam.list_roles()['Roles']:
    name = role['RoleName']
    roles[name] = {
        'description': role.get('Description'),
        'managed': sorted(p['PolicyArn'] for p in iam.list_attached_role_policies(RoleName=name)['AttachedPolicies']),
        'inline': {p: iam.get_role_policy(RoleName=name, PolicyName=p)['PolicyDocument']
                   for p in iam.list_role_policies(RoleName=name)['PolicyNames']},
        'tags': tags(iam.list_role_tags(RoleName=name)['Tags']),
    }
profiles = {p['InstanceProfileName']: [r['RoleName'] for r in p['Roles']]
            for p in iam.list_instance_profiles()['InstanceProfiles']}
buckets = {}
for bucket in s3.list_buckets()['Buckets']:
    name = bucket['Name']
    try:
        bucket_tags = tags(s3.get_bucket_tagging(Bucket=name)['TagSet'])
    except s3.exceptions.ClientError:
        bucket_tags = {}
    buckets[name] = {'tags': bucket_tags, 'objects': len(s3.list_object_versions(Bucket=name).get('Versions', []))}
topics = {}
for topic in sns.list_topics()['Topics']:
    arn = topic['TopicArn']
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=arn)['Subscriptions']
    topics[arn.split(':')[-1]] = sorted(s['Endpoint'] for s in subscriptions)
print(json.dumps({'roles': roles, 'profiles': profiles, 'buckets': buckets, 'topics': topics}))
"#;
    serde_json::from_str(&python(emulator, SCRIPT)).expect("the inventory is JSON")
}

/// The sorted names of an inventory section.
fn names(section: &Value) -> Vec<String> {
    let mut names: Vec<String> = section.as_object().expect("an inventory section").keys().cloned().collect();
    names.sort();
    names
}

/// The ownership tags imagectl puts on a resource of the reference stack, with the stack's own tag.
fn owned(resource: &str) -> Value {
    json!({"imagectl:stack": STACK, "imagectl:resource": resource, "team": "platform"})
}

/// Resources the reference stack must never touch: an untagged bucket and instance profile made by hand, another
/// stack's role and topic.
fn create_foreign_resources(emulator: &Emulator) {
    python(
        emulator,
        r#"
iam, s3, sns = boto3.client('iam'), boto3.client('s3'), boto3.client('sns')
statement = {'Effect': 'Allow', 'Principal': {'Service': 'ec2.amazonaws.com'}, 'Action': 'sts:AssumeRole'}
trust = json.dumps({'Version': '2012-10-17', 'Statement': [statement]})
other = [{'Key': 'imagectl:stack', 'Value': 'other-stack'}]
s3.create_bucket(Bucket='someone-elses-bucket')
iam.create_instance_profile(InstanceProfileName='hand-made')
iam.create_role(RoleName='other-stack-role', AssumeRolePolicyDocument=trust, Tags=other)
sns.create_topic(Name='other-stack-events', Tags=other)
"#,
    );
}

#[track_caller]
fn assert_foreign_resources_untouched(aws: &Value) {
    assert_eq!(aws["buckets"]["someone-elses-bucket"]["tags"], json!({}));
    assert_eq!(aws["profiles"]["hand-made"], json!([]));
    assert_eq!(aws["roles"]["other-stack-role"]["tags"], json!({"imagectl:stack": "other-stack"}));
    assert!(aws["topics"].get("other-stack-events").is_some(), "{aws:#}");
}

/// A snapshot of what users see, with anything that varies between runs masked.
#[track_caller]
fn assert_output_snapshot(name: &str, text: &str) {
    insta::with_settings!({
        omit_expression => true,
        filters => vec![
            (r"127\.0\.0\.1:\d+", "[emulator]"),
            (r"\(\d+\.\ds\)", "([elapsed])"),
            (r"\S*imagectl-stack-[^/\s]+", "[stack]"),
        ],
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn empty_account_plans_only_creates_then_apply_creates_and_converges() {
    let emulator = Emulator::start();
    let stack = Stack::reference();

    let plan = run(&emulator, &["plan", stack.path()]).expect(0);
    assert_eq!(
        plan.sorted_changes(),
        [
            "+ Bucket/golden-images-artifacts",
            "+ Bucket/golden-images-build-logs",
            "+ InstanceProfile/image-build-instance",
            "+ Role/image-automation",
            "+ Role/image-build-instance",
            "+ Topic/image-build-events",
        ],
        "{plan}"
    );
    assert!(plan.line_of("+ Role/image-build-instance") < plan.line_of("+ InstanceProfile/image-build-instance"));
    plan.shows("Plan: 6 to create, 0 to update, 0 to replace, 0 to delete.");
    assert_output_snapshot("creation-plan-text", &plan.stdout);

    let json = run(&emulator, &["plan", stack.path(), "--output", "json"]).expect(0);
    let document = json.json();
    assert_eq!(
        document["summary"],
        json!({"create": 6, "update": 0, "replace": 0, "delete": 0, "unchanged": 0, "conflicts": 0})
    );
    let changes = document["changes"].as_array().unwrap();
    assert!(changes.iter().all(|c| c["action"] == "create"), "{json}");
    assert_output_snapshot("creation-plan-json", &json.stdout);
    assert!(inventory(&emulator)["roles"].as_object().unwrap().is_empty(), "plan changed nothing");

    // Unattended (stdin is not a terminal) apply needs --auto-approve.
    let unconfirmed = run(&emulator, &["apply", stack.path()]).expect(1);
    unconfirmed.complains("pass --auto-approve to run unattended");
    assert!(inventory(&emulator)["roles"].as_object().unwrap().is_empty(), "nothing was created");

    let apply = run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(0);
    for resource in [
        "Role/image-automation",
        "Role/image-build-instance",
        "InstanceProfile/image-build-instance",
        "Bucket/golden-images-artifacts",
        "Bucket/golden-images-build-logs",
        "Topic/image-build-events",
    ] {
        apply.shows(&format!("{resource}: created ("));
    }
    apply.shows("Apply complete: 6 done.");

    let aws = inventory(&emulator);
    assert_eq!(names(&aws["roles"]), [AUTOMATION, BUILD]);
    let build = &aws["roles"][BUILD];
    assert_eq!(build["description"], BUILD_DESCRIPTION);
    assert_eq!(build["managed"], json!([SSM_CORE]));
    assert_eq!(names(&build["inline"]), ["read-artifacts", "write-build-logs"]);
    assert_eq!(build["tags"], owned("Role/image-build-instance"));
    let automation_policy = "arn:aws:iam::aws:policy/service-role/AmazonSSMAutomationRole";
    assert_eq!(aws["roles"][AUTOMATION]["managed"], json!([automation_policy]));
    assert_eq!(aws["profiles"], json!({BUILD: [BUILD]}));
    assert_eq!(names(&aws["buckets"]), [ARTIFACTS, LOGS]);
    assert_eq!(aws["buckets"][LOGS]["tags"], owned("Bucket/golden-images-build-logs"));
    assert_eq!(aws["topics"], json!({TOPIC: ["platform@example.com"]}));

    let again = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(0);
    assert_eq!(again.stdout.trim(), NO_CHANGES, "{again}");
}

#[test]
fn changed_inline_policy_plans_a_one_line_diff_and_updates_in_place() {
    let emulator = Emulator::start();
    let stack = applied_reference_stack(&emulator);
    stack.edit("iam.yaml", "arn:aws:s3:::golden-images-artifacts/*", "arn:aws:s3:::golden-images-artifacts/agents/*");

    let plan = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(2);
    assert_eq!(plan.changes(), ["~ Role/image-build-instance"], "{plan}");
    plan.shows("~ Role/image-build-instance will be updated in place");
    plan.shows("~ inlinePolicies.read-artifacts:");
    assert_eq!(plan.document_diff('-'), [r#""Resource": "arn:aws:s3:::golden-images-artifacts/*""#], "{plan}");
    assert_eq!(plan.document_diff('+'), [r#""Resource": "arn:aws:s3:::golden-images-artifacts/agents/*""#], "{plan}");
    plan.shows("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete.");
    assert_output_snapshot("inline-policy-update-plan-text", &plan.stdout);

    let apply = run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(0);
    apply.shows("Role/image-build-instance: updated (");
    apply.shows("Apply complete: 1 done.");
    let policy = &inventory(&emulator)["roles"][BUILD]["inline"]["read-artifacts"];
    assert_eq!(policy["Statement"][0]["Resource"], json!(["arn:aws:s3:::golden-images-artifacts/agents/*"]));

    let again = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(0);
    assert_eq!(again.stdout.trim(), NO_CHANGES, "{again}");
}

#[test]
fn role_edited_outside_imagectl_shows_as_drift_and_apply_restores_it() {
    let emulator = Emulator::start();
    let stack = applied_reference_stack(&emulator);
    python(
        &emulator,
        &format!(
            "iam = boto3.client('iam')\n\
             iam.attach_role_policy(RoleName='{BUILD}', PolicyArn='arn:aws:iam::aws:policy/ReadOnlyAccess')\n\
             iam.update_role(RoleName='{BUILD}', Description='Edited by hand')"
        ),
    );

    let plan = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(2);
    assert_eq!(plan.changes(), ["~ Role/image-build-instance"], "{plan}");
    plan.shows(&format!(r#"~ description = "Edited by hand" -> "{BUILD_DESCRIPTION}""#));
    plan.shows("arn:aws:iam::aws:policy/ReadOnlyAccess");
    plan.shows("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete.");
    let json = run(&emulator, &["plan", stack.path(), "--output", "json"]).expect(0).json();
    let fields = &json["changes"][0]["fields"];
    let managed = fields.as_array().unwrap().iter().find(|f| f["field"] == "managedPolicies");
    let managed = managed.expect("managed policies drifted");
    assert_eq!(managed["before"], json!([SSM_CORE, "arn:aws:iam::aws:policy/ReadOnlyAccess"]));
    assert_eq!(managed["after"], json!([SSM_CORE]));

    let apply = run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(0);
    apply.shows("Apply complete: 1 done.");
    let build = &inventory(&emulator)["roles"][BUILD];
    assert_eq!(build["managed"], json!([SSM_CORE]));
    assert_eq!(build["description"], BUILD_DESCRIPTION);

    let again = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(0);
    assert_eq!(again.stdout.trim(), NO_CHANGES, "{again}");
}

#[test]
fn saved_plan_is_refused_after_a_hand_edit_or_a_manifest_edit_and_applies_when_untouched() {
    let emulator = Emulator::start();
    let stack = applied_reference_stack(&emulator);
    let plans = tempfile::tempdir().unwrap();
    let plan_file = |name: &str| plans.path().join(name).to_str().unwrap().to_owned();
    let new_resource = "arn:aws:s3:::golden-images-artifacts/agents/*";
    let read_artifacts =
        |aws: &Value| aws["roles"][BUILD]["inline"]["read-artifacts"]["Statement"][0]["Resource"].clone();
    stack.edit("iam.yaml", "arn:aws:s3:::golden-images-artifacts/*", new_resource);

    // The role the plan updates is edited by hand after the plan was saved.
    let stale = plan_file("stale.json");
    let saved = run(&emulator, &["plan", stack.path(), "--out", &stale]).expect(0);
    saved.shows(&format!("Saved the plan to {stale}"));
    python(&emulator, &format!("boto3.client('iam').update_role(RoleName='{BUILD}', Description='Edited by hand')"));
    let refused = run(&emulator, &["apply", "--plan", &stale, "--auto-approve"]).expect(1);
    refused.complains(&format!("refusing the saved plan {stale}"));
    refused.complains("the live state changed since it was made");
    refused.complains("Role/image-build-instance changed in AWS");
    let aws = inventory(&emulator);
    assert_eq!(read_artifacts(&aws), json!(["arn:aws:s3:::golden-images-artifacts/*"]), "nothing was applied");
    assert_eq!(aws["roles"][BUILD]["description"], "Edited by hand");

    // The manifests change after the plan was saved.
    let outdated = plan_file("outdated.json");
    run(&emulator, &["plan", stack.path(), "--out", &outdated]).expect(0);
    stack.edit("storage.yaml", "expireAfterDays: 90", "expireAfterDays: 30");
    let refused = run(&emulator, &["apply", "--plan", &outdated, "--auto-approve"]).expect(1);
    refused.complains("the manifests changed since it was made");
    assert_eq!(read_artifacts(&inventory(&emulator)), json!(["arn:aws:s3:::golden-images-artifacts/*"]));

    // Untouched — a comment is no change to what the manifests mean — the saved plan applies exactly as shown.
    let current = plan_file("current.json");
    let shown = run(&emulator, &["plan", stack.path(), "--out", &current]).expect(0);
    assert_eq!(shown.sorted_changes(), ["~ Bucket/golden-images-build-logs", "~ Role/image-build-instance"], "{shown}");
    stack.write("storage.yaml", &format!("# Reviewed.\n{}", stack.read("storage.yaml")));
    let applied = run(&emulator, &["apply", "--plan", &current, "--auto-approve"]).expect(0);
    assert_eq!(applied.sorted_changes(), shown.sorted_changes());
    applied.shows("Apply complete: 2 done.");
    let aws = inventory(&emulator);
    assert_eq!(read_artifacts(&aws), json!([new_resource]));
    assert_eq!(aws["roles"][BUILD]["description"], BUILD_DESCRIPTION);
    let again = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(0);
    assert_eq!(again.stdout.trim(), NO_CHANGES, "{again}");
    // A saved plan applies once: what it was computed from is gone.
    let replayed = run(&emulator, &["apply", "--plan", &current, "--auto-approve"]).expect(1);
    replayed.complains("the live state changed since it was made");
}

#[test]
fn prune_deletes_only_owned_resources_that_left_the_manifests() {
    let emulator = Emulator::start();
    create_foreign_resources(&emulator);
    let stack = applied_reference_stack(&emulator);
    stack.remove("storage.yaml", "Topic", TOPIC);
    stack.remove("iam.yaml", "InstanceProfile", BUILD);

    let plan = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(0);
    assert_eq!(plan.changes(), Vec::<String>::new(), "no deletes without --prune:\n{plan}");
    for resource in ["InstanceProfile/image-build-instance", "Topic/image-build-events"] {
        plan.shows(&format!("{resource}: owned by this stack but no longer in the manifests: run with --prune"));
    }
    plan.shows("No changes. 4 resource(s) match the manifests.");

    let plan = run(&emulator, &["plan", stack.path(), "--prune", "--detailed-exitcode"]).expect(2);
    let deletes = ["- InstanceProfile/image-build-instance", "- Topic/image-build-events"];
    assert_eq!(plan.sorted_changes(), deletes, "{plan}");
    plan.shows("Plan: 0 to create, 0 to update, 0 to replace, 2 to delete.");

    let apply = run(&emulator, &["apply", stack.path(), "--prune", "--auto-approve"]).expect(0);
    apply.shows("Apply complete: 2 done.");
    let aws = inventory(&emulator);
    assert_eq!(names(&aws["roles"]), [AUTOMATION, BUILD, "other-stack-role"]);
    assert_eq!(names(&aws["profiles"]), ["hand-made"]);
    assert_eq!(names(&aws["buckets"]), [ARTIFACTS, LOGS, "someone-elses-bucket"]);
    assert_eq!(names(&aws["topics"]), ["other-stack-events"]);
    assert_foreign_resources_untouched(&aws);

    let again = run(&emulator, &["plan", stack.path(), "--prune", "--detailed-exitcode"]).expect(0);
    assert_eq!(again.stdout.trim(), "No changes. 4 resource(s) match the manifests.", "{again}");
}

#[test]
fn destroy_deletes_what_the_stack_owns_in_reverse_order_and_keeps_buckets_with_objects_unless_forced() {
    let emulator = Emulator::start();
    create_foreign_resources(&emulator);
    let stack = applied_reference_stack(&emulator);
    python(&emulator, &format!("boto3.client('s3').put_object(Bucket='{ARTIFACTS}', Key='agent.tar.gz', Body=b'x')"));

    let destroy = run(&emulator, &["destroy", stack.path(), "--auto-approve"]).expect(0);
    assert_eq!(
        destroy.sorted_changes(),
        [
            "- Bucket/golden-images-build-logs",
            "- InstanceProfile/image-build-instance",
            "- Role/image-automation",
            "- Role/image-build-instance",
            "- Topic/image-build-events",
        ],
        "{destroy}"
    );
    destroy.shows(
        "Bucket/golden-images-artifacts: not deleted: it still holds objects; set `forceDestroy: true` to delete the \
         bucket with its objects",
    );
    destroy.shows("Plan: 0 to create, 0 to update, 0 to replace, 5 to delete.");
    // Reverse dependency order: the profile is gone before its role's deletion starts.
    let profile_deleted = destroy.line_of("InstanceProfile/image-build-instance: deleted (");
    assert!(profile_deleted < destroy.line_of("Role/image-build-instance: deleting…"), "{destroy}");
    destroy.shows("Apply complete: 5 done.");
    let aws = inventory(&emulator);
    assert_eq!(names(&aws["roles"]), ["other-stack-role"]);
    assert_eq!(names(&aws["profiles"]), ["hand-made"]);
    assert_eq!(names(&aws["buckets"]), [ARTIFACTS, "someone-elses-bucket"]);
    assert_eq!(aws["buckets"][ARTIFACTS], json!({"tags": owned("Bucket/golden-images-artifacts"), "objects": 1}));
    assert_eq!(names(&aws["topics"]), ["other-stack-events"]);
    assert_foreign_resources_untouched(&aws);

    stack.edit("storage.yaml", "spec: {}", "spec: {forceDestroy: true}");
    let forced = run(&emulator, &["destroy", stack.path(), "--auto-approve"]).expect(0);
    assert_eq!(forced.changes(), ["- Bucket/golden-images-artifacts"], "{forced}");
    forced.shows("Apply complete: 1 done.");
    let aws = inventory(&emulator);
    assert_eq!(names(&aws["buckets"]), ["someone-elses-bucket"]);
    assert_foreign_resources_untouched(&aws);

    let again = run(&emulator, &["destroy", stack.path(), "--auto-approve"]).expect(0);
    assert_eq!(again.changes(), Vec::<String>::new(), "{again}");
}

#[test]
fn same_named_bucket_the_stack_does_not_own_is_a_conflict_and_left_untouched() {
    let emulator = Emulator::start();
    python(&emulator, &format!("boto3.client('s3').create_bucket(Bucket='{LOGS}')"));
    // The stack is applied without the bucket first, so that destroy has something of its own to delete.
    let stack = Stack::reference();
    stack.remove("storage.yaml", "Bucket", LOGS);
    run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(0);
    stack.restore("storage.yaml");
    stack.edit("iam.yaml", "arn:aws:s3:::golden-images-artifacts/*", "arn:aws:s3:::golden-images-artifacts/agents/*");

    let plan = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(1);
    plan.shows("Conflicts (left untouched):");
    plan.shows(
        "! Bucket/golden-images-build-logs: a Bucket named `golden-images-build-logs` already exists and it has no \
         imagectl:stack tag; imagectl leaves it untouched; to manage it, set `metadata.adopt: true`",
    );
    plan.complains("1 conflict(s)");

    let apply = run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(1);
    apply.complains("1 conflict(s): nothing was changed");
    let aws = inventory(&emulator);
    assert_eq!(aws["buckets"][LOGS], json!({"tags": {}, "objects": 0}));
    let policy = &aws["roles"][BUILD]["inline"]["read-artifacts"]["Statement"][0]["Resource"];
    assert_eq!(policy, &json!(["arn:aws:s3:::golden-images-artifacts/*"]), "a blocked plan changes nothing at all");

    let destroy = run(&emulator, &["destroy", stack.path(), "--auto-approve"]).expect(0);
    destroy.shows(
        "! Bucket/golden-images-build-logs: `golden-images-build-logs` exists but this stack does not own it; left \
         untouched",
    );
    assert_eq!(destroy.changes().len(), 5, "{destroy}");
    assert!(!destroy.changes().contains(&"- Bucket/golden-images-build-logs".to_owned()), "{destroy}");
    let aws = inventory(&emulator);
    assert_eq!(aws["buckets"], json!({LOGS: {"tags": {}, "objects": 0}}));
    assert_eq!((names(&aws["roles"]), names(&aws["profiles"]), names(&aws["topics"])), (vec![], vec![], vec![]));
}

#[test]
fn failing_resource_skips_its_dependents_lets_independent_branches_finish_and_a_rerun_converges() {
    let emulator = Emulator::start();
    let stack = Stack::reference();
    let missing = "arn:aws:iam::aws:policy/DoesNotExist";
    stack.edit("iam.yaml", &format!("managedPolicies: [{SSM_CORE}]"), &format!("managedPolicies: [{missing}]"));

    let apply = run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(1);
    for independent in [
        "Role/image-automation",
        "Bucket/golden-images-artifacts",
        "Bucket/golden-images-build-logs",
        "Topic/image-build-events",
    ] {
        apply.shows(&format!("{independent}: created ("));
    }
    apply.shows("InstanceProfile/image-build-instance: skipped (Role/image-build-instance did not succeed)");
    apply.shows("Apply failed: 4 done, 1 failed, 1 skipped.");
    // The failed step, then the AWS error: operation, code, message.
    let failed = format!(
        r"(?m)^  failed  Role/image-build-instance: attach {m} to {BUILD}: AttachRolePolicy {BUILD} {m}: NoSuchEntity: \S",
        m = regex::escape(missing)
    );
    assert!(Regex::new(&failed).unwrap().is_match(&apply.stdout), "{apply}");
    apply.shows("skipped InstanceProfile/image-build-instance: waits for Role/image-build-instance");
    let aws = inventory(&emulator);
    assert_eq!(names(&aws["buckets"]), [ARTIFACTS, LOGS]);
    assert_eq!(names(&aws["topics"]), [TOPIC]);
    assert_eq!(aws["profiles"], json!({}), "the skipped profile was not created");
    assert_eq!(aws["roles"][BUILD]["managed"], json!([]));

    stack.restore("iam.yaml");
    let rerun = run(&emulator, &["apply", stack.path(), "--auto-approve"]).expect(0);
    assert_eq!(rerun.changes(), ["~ Role/image-build-instance", "+ InstanceProfile/image-build-instance"], "{rerun}");
    rerun.shows("Apply complete: 2 done.");
    let aws = inventory(&emulator);
    assert_eq!(aws["roles"][BUILD]["managed"], json!([SSM_CORE]));
    assert_eq!(aws["profiles"], json!({BUILD: [BUILD]}));
    let again = run(&emulator, &["plan", stack.path(), "--detailed-exitcode"]).expect(0);
    assert_eq!(again.stdout.trim(), NO_CHANGES, "{again}");
}

#[test]
fn target_plans_only_that_resource_and_what_it_depends_on() {
    let emulator = Emulator::start();
    let stack = Stack::reference();

    let role = run(&emulator, &["plan", stack.path(), "--target", "Role/image-automation"]).expect(0);
    assert_eq!(role.changes(), ["+ Role/image-automation"], "{role}");
    role.shows("Plan: 1 to create, 0 to update, 0 to replace, 0 to delete.");

    let target = "InstanceProfile/image-build-instance";
    let profile = run(&emulator, &["plan", stack.path(), "--target", target]).expect(0);
    let creates = ["+ Role/image-build-instance", "+ InstanceProfile/image-build-instance"];
    assert_eq!(profile.changes(), creates, "{profile}");

    run(&emulator, &["apply", stack.path(), "--target", target, "--auto-approve"]).expect(0);
    let aws = inventory(&emulator);
    assert_eq!(names(&aws["roles"]), [BUILD]);
    assert_eq!(aws["profiles"], json!({BUILD: [BUILD]}));
    assert_eq!((names(&aws["buckets"]), names(&aws["topics"])), (vec![], vec![]));
    let rest = run(&emulator, &["plan", stack.path()]).expect(0);
    rest.shows("Plan: 4 to create, 0 to update, 0 to replace, 0 to delete.");

    let unknown = run(&emulator, &["plan", stack.path(), "--target", "Role/nobody"]).expect(1);
    unknown.complains("--target Role/nobody: no such resource in the manifests");
}
