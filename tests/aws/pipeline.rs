//! Image builds end to end through the `imagectl` binary (issue 5, "Done when"): the reference stack's PrivateImage
//! built, found again, rebuilt for new package bytes, retagged, resumed after a killed apply, left running by
//! `apply --no-wait` for a later apply to capture, and failed by its installer. The reference stack's package group
//! also has a test build (on amazon-linux-2023): it runs beside the image's build, through the same pipeline, and
//! is checked along the way.
//!
//! Each test has its own emulator and, beside it, the instance player (tests/support/player.rs), which plays every
//! build instance for real: the script imagectl hands the instance runs in a sandbox, talks to the emulator's S3 and
//! powers the instance off. What is in AWS is checked with boto3; the build notifications are read from an SQS queue
//! the stack's topic delivers to (a subscription in the manifest, so that it is no drift). The tests skip, saying
//! why, where the player cannot run (it needs root and overlayfs).
//!
//! Snapshots: tests/aws/snapshots/aws__pipeline__*.snap; review changes with
//! `INSTA_UPDATE=always cargo test --test aws pipeline` and `git diff tests/aws/snapshots`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};
use tempfile::{NamedTempFile, TempDir};

use crate::cli::{python, run, Run, Stack};
use crate::support::{Emulator, Player};

const STACK: &str = "golden-images";
const IMAGE: &str = "PrivateImage/web-base";
const GROUP: &str = "acme-agent-2-4-linux-r1";
const GROUP_RESOURCE: &str = "PackageGroup/acme-agent-2-4-linux-r1";
const TEST_BUILD: &str = "PackageGroup/acme-agent-2-4-linux-r1/test/amazon-linux-2023";
const LOGS: &str = "golden-images-build-logs";
const REGION: &str = "us-east-1";
/// The queue subscribed to the stack's topic.
const QUEUE: &str = "build-events";
const BUILD_ID: &str = "imagectl:build-id";
/// The longest a test waits for the player (it plays a build within a few seconds).
const PATIENCE: Duration = Duration::from_secs(60);
/// What the reference stack's first apply creates: roles, profile, buckets, topic, the group, its test build, the
/// image and its published ID.
const CREATED: &str = "Apply complete: 10 done.";
const NO_CHANGES: &str = "No changes. 11 resource(s) match the manifests.";

/// One test's world. Fields drop in order, so the player stops before its emulator.
struct Pipeline {
    player: Option<Player>,
    emulator: Emulator,
    stack: Stack,
    scratch: TempDir,
}

impl Pipeline {
    /// The reference stack, the player playing; None (the test skips) where the player cannot run.
    fn start(test: &str) -> Option<Pipeline> {
        let mut pipeline = Pipeline::without_player(test)?;
        pipeline.start_player();
        Some(pipeline)
    }

    /// The same, but nothing plays the build instances yet: they wait, like instances slow to boot.
    fn without_player(test: &str) -> Option<Pipeline> {
        if !Player::available(test) {
            return None;
        }
        let emulator = Emulator::start();
        let stack = reference_stack(&emulator);
        let scratch =
            tempfile::Builder::new().prefix("imagectl-pipeline-").tempdir().expect("create a scratch directory");
        Some(Pipeline { player: None, emulator, stack, scratch })
    }

    fn start_player(&mut self) {
        self.player = Some(Player::start(&self.emulator, &[REGION], &self.scratch.path().join("player")));
    }

    /// `imagectl ARGS… STACK`.
    fn imagectl(&self, args: &[&str]) -> Run {
        run(&self.emulator, &[args, &[self.stack.path()]].concat())
    }

    /// `imagectl apply --auto-approve ARGS… STACK`, which must exit with `code`; the player's log tells why not.
    #[track_caller]
    fn apply(&self, code: i32, args: &[&str]) -> Run {
        let apply = self.imagectl(&[&["apply", "--auto-approve"], args].concat());
        assert_eq!(apply.code, code, "expected exit code {code}:\n{apply}\n--- player\n{}", self.player_log());
        apply
    }

    /// Applies the reference stack and returns the image it built.
    #[track_caller]
    fn built(&self) -> Image {
        self.apply(0, &[]).shows(CREATED);
        let account = self.account();
        match &account.images[..] {
            [image] => image.clone(),
            _ => panic!("one image expected: {account:#?}"),
        }
    }

    /// A further plan is a no-op: `--detailed-exitcode` exits 0, nothing to change.
    #[track_caller]
    fn assert_converged(&self) {
        let again = self.imagectl(&["plan", "--detailed-exitcode"]).expect(0);
        assert_eq!(again.changes(), Vec::<String>::new(), "{again}");
        again.shows(NO_CHANGES);
    }

    /// `imagectl ARGS… STACK` in the background.
    fn spawn(&self, args: &[&str]) -> Background {
        let output = NamedTempFile::new().expect("create an output file");
        let child = self
            .emulator
            .imagectl_process()
            .args(args)
            .arg(self.stack.path())
            .stdin(Stdio::null())
            .stdout(output.reopen().expect("reopen the output file"))
            .stderr(output.reopen().expect("reopen the output file"))
            .spawn()
            .expect("run imagectl");
        Background { child, output }
    }

    /// What boto3 sees: every instance (terminated ones too), the account's own images, every bucket's keys.
    fn account(&self) -> Account {
        const SCRIPT: &str = r#"
ec2, s3 = boto3.client('ec2'), boto3.client('s3')
def tags(pairs): return {t['Key']: t['Value'] for t in pairs or []}
instances = [{'id': i['InstanceId'], 'state': i['State']['Name'], 'tags': tags(i.get('Tags'))}
             for r in ec2.describe_instances()['Reservations'] for i in r['Instances']]
images = [{'id': i['ImageId'], 'name': i['Name'], 'state': i['State'], 'tags': tags(i.get('Tags'))}
          for i in ec2.describe_images(Owners=['self'])['Images']]
objects = {b['Name']: sorted(o['Key'] for o in s3.list_objects_v2(Bucket=b['Name']).get('Contents', []))
           for b in s3.list_buckets()['Buckets']}
print(json.dumps({'instances': instances, 'images': images, 'objects': objects}))
"#;
        serde_json::from_str(&python(&self.emulator, SCRIPT)).expect("the account is JSON")
    }

    /// Polls the account until `done` holds; fails the test after a while, with what was seen.
    #[track_caller]
    fn wait_for(&self, what: &str, done: impl Fn(&Account) -> bool) -> Account {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let account = self.account();
            if done(&account) {
                return account;
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {what}:\n{account:#?}\n--- player\n{}",
                self.player_log()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// An object of the logs bucket, as text.
    fn log_object(&self, key: &str) -> String {
        python(
            &self.emulator,
            &format!(
                "print(boto3.client('s3').get_object(Bucket='{LOGS}', Key='{key}')['Body'].read().decode(), end='')"
            ),
        )
    }

    /// The image's notifications published since the last call (drained from the queue), oldest first: the JSON
    /// messages, with the SNS subject added.
    fn notifications(&self) -> Vec<Value> {
        let script = format!(
            r#"
sqs = boto3.client('sqs')
url = sqs.get_queue_url(QueueName='{QUEUE}')['QueueUrl']
while True:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get('Messages', [])
    if not got: break
    for m in got:
        envelope = json.loads(m['Body'])
        print(json.dumps(dict(json.loads(envelope['Message']), subject=envelope.get('Subject'))))
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m['ReceiptHandle'])
"#
        );
        let messages = python(&self.emulator, &script);
        let all = messages.lines().map(|line| serde_json::from_str::<Value>(line).expect("a JSON notification"));
        all.filter(|n| n["resource"] == IMAGE).collect()
    }

    fn player_log(&self) -> String {
        self.player.as_ref().map_or_else(|| "(not started)".to_owned(), Player::log)
    }
}

/// The reference stack (examples/golden-image) in a directory of the test's own, without the ImageCopy and
/// ImageShare documents — distribution is distribution.rs's subject, and here it would only add copies to every
/// plan — its topic also delivering to the test's SQS queue.
fn reference_stack(emulator: &Emulator) -> Stack {
    let stack = Stack::reference();
    fs::create_dir(stack.dir.path().join("packages")).expect("create the packages directory");
    for file in ["images.yaml", "packages/acme-agent-2.4.0.tar.gz", "packages/install.sh"] {
        stack.restore(file);
    }
    stack.remove("images.yaml", "ImageCopy", "web-base-replicas");
    stack.remove("images.yaml", "ImageShare", "web-base-consumers");
    python(emulator, &format!("boto3.client('sqs').create_queue(QueueName='{QUEUE}')"));
    let email = "    - {protocol: email, endpoint: platform@example.com}";
    let queue = format!("    - {{protocol: sqs, endpoint: \"arn:aws:sqs:{REGION}:123456789012:{QUEUE}\"}}");
    stack.edit("storage.yaml", email, &format!("{email}\n{queue}"));
    stack
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Account {
    instances: Vec<Instance>,
    images: Vec<Image>,
    /// bucket → keys
    objects: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Instance {
    id: String,
    state: String,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Image {
    id: String,
    name: String,
    state: String,
    tags: BTreeMap<String, String>,
}

impl Account {
    /// Every build instance ever launched, whatever its state: the image's and the test builds'.
    fn build_instances(&self) -> Vec<&Instance> {
        self.instances.iter().filter(|i| i.tags.contains_key(BUILD_ID)).collect()
    }

    /// The build instances of `resource` (`PrivateImage/…`; `PackageGroup/…` for its test builds).
    fn builds_of(&self, resource: &str) -> Vec<&Instance> {
        self.instances
            .iter()
            .filter(|i| i.tags.get("imagectl:resource").map(String::as_str) == Some(resource))
            .collect()
    }

    /// The one build instance of `resource`, and its build ID; the test fails if there are more, or none.
    #[track_caller]
    fn build_of(&self, resource: &str) -> (&Instance, String) {
        match &self.builds_of(resource)[..] {
            [instance] => (instance, instance.tags[BUILD_ID].clone()),
            other => panic!("one build instance of {resource} expected, found {}: {self:#?}", other.len()),
        }
    }

    /// Instances not terminated: once every build has finished, orphans.
    fn not_terminated(&self) -> Vec<&Instance> {
        self.instances.iter().filter(|i| i.state != "terminated").collect()
    }

    fn logs(&self) -> &[String] {
        self.objects.get(LOGS).map_or(&[], Vec::as_slice)
    }
}

/// An imagectl run in the background, killed if the test ends first.
struct Background {
    child: Child,
    output: NamedTempFile,
}

impl Background {
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash, an OOM kill or a cancelled CI job would end it: no chance to clean up.
    fn kill(&mut self) {
        self.child.kill().expect("kill imagectl");
        let status = self.child.wait().expect("reap imagectl");
        assert_eq!(status.signal(), Some(9), "imagectl ended before it was killed:\n{}", self.output());
    }

    fn output(&self) -> String {
        fs::read_to_string(self.output.path()).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The change of `resource` in a JSON plan (`plan --output json`).
#[track_caller]
fn change_of<'p>(plan: &'p Value, resource: &str) -> &'p Value {
    let changes = plan["changes"].as_array().expect("a JSON plan");
    changes
        .iter()
        .find(|c| c["resource"] == resource)
        .unwrap_or_else(|| panic!("the plan changes {resource}: {plan:#}"))
}

/// A field's new value in a change.
#[track_caller]
fn after(change: &Value, field: &str) -> String {
    let fields = change["fields"].as_array().expect("fields");
    let found = fields.iter().find(|f| f["field"] == field).unwrap_or_else(|| panic!("no field {field}: {change:#}"));
    found["after"].as_str().expect("a string").to_owned()
}

fn states(notifications: &[Value]) -> Vec<&str> {
    notifications.iter().map(|n| n["state"].as_str().expect("a state")).collect()
}

/// The fingerprint in an AMI name of the convention `web-base-r<revision, 4 digits>-<8 hex>`.
#[track_caller]
fn fingerprint_in(name: &str, revision: u32) -> String {
    let convention = Regex::new(&format!(r"^web-base-r{revision:04}-([0-9a-f]{{8}})$")).unwrap();
    let captures = convention.captures(name).unwrap_or_else(|| panic!("{name} does not follow the naming convention"));
    captures[1].to_owned()
}

/// The text from the line holding `marker` to the end.
#[track_caller]
fn from_line<'t>(text: &'t str, marker: &str) -> &'t str {
    let start = text.find(marker).unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"));
    &text[text[..start].rfind('\n').map_or(0, |n| n + 1)..]
}

/// A snapshot of what users see, with what varies between runs and versions masked: IDs, hashes, times.
#[track_caller]
fn assert_output_snapshot(name: &str, text: &str) {
    insta::with_settings!({
        omit_expression => true,
        filters => vec![
            (r"\b[0-9a-f]{64}\b", "[sha256]"),
            (r"\b[0-9a-f]{16}\b", "[digest]"),
            (r"\b(web-base-r\d+|amazon-linux-2023-r\d+)-[0-9a-f]{8}\b", "$1-[fingerprint]"),
            (r"\bami-[0-9a-f]{17}\b", "[ami]"),
            (r"\bi-[0-9a-f]{17}\b", "[instance]"),
            (r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
            (r"127\.0\.0\.1:\d+", "[emulator]"),
        ],
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn reference_stack_builds_its_image_publishes_each_state_and_converges() {
    let Some(pipeline) = Pipeline::start("reference_stack_builds_its_image_publishes_each_state_and_converges") else {
        return;
    };
    let plan = pipeline.imagectl(&["plan"]).expect(0);
    let changes = plan.changes();
    let builds =
        [format!("+ {GROUP_RESOURCE}"), format!("+ {TEST_BUILD}"), format!("+ {IMAGE}"), format!("+ {IMAGE}/publish")];
    assert_eq!(changes[changes.len() - builds.len()..], builds, "{plan}");
    plan.shows("Plan: 10 to create, 0 to update, 0 to replace, 0 to delete.");
    assert_output_snapshot("build-plan-text", from_line(&plan.stdout, &format!("+ {GROUP_RESOURCE} ")));
    let planned = pipeline.imagectl(&["plan", "--output", "json"]).expect(0).json();
    let (build_id, base) = (after(change_of(&planned, IMAGE), "build"), after(change_of(&planned, IMAGE), "baseImage"));

    let apply = pipeline.apply(0, &[]);
    apply.shows("PrivateImage/web-base: created (");
    apply.shows(CREATED);

    // The image — the only one: the test build's was dropped once scanned — named by the convention, tagged with
    // what it is made of.
    let account = pipeline.account();
    let [image] = &account.images[..] else { panic!("one image expected: {account:#?}") };
    let fingerprint = fingerprint_in(&image.name, 1);
    assert_eq!(build_id, format!("web-base-r1-{fingerprint}"));
    assert_eq!(image.state, "available");
    for (key, value) in [
        ("imagectl:stack", STACK),
        ("imagectl:resource", IMAGE),
        (BUILD_ID, &build_id),
        ("imagectl:revision", "1"),
        ("imagectl:base-image", &base),
        ("imagectl:package-group", GROUP),
        ("tier", "web"),
        ("team", "platform"),
    ] {
        assert_eq!(image.tags.get(key).map(String::as_str), Some(value), "tag {key}: {image:#?}");
    }
    assert!(image.tags["imagectl:fingerprint"].starts_with(&fingerprint), "{image:#?}");

    // The build instances are gone; the reports are in the logs bucket.
    let (instance, instance_build) = account.build_of(IMAGE);
    assert_eq!((instance.state.as_str(), instance_build.as_str()), ("terminated", build_id.as_str()));
    let (test_instance, test_build) = account.build_of(GROUP_RESOURCE);
    assert_eq!(test_instance.tags["imagectl:operating-system"], "amazon-linux-2023");
    assert_eq!(account.not_terminated(), Vec::<&Instance>::new());
    let prefix = format!("imagectl/builds/{build_id}/");
    for report in ["install.log", "result.json", "status.json", "scan.txt"] {
        assert!(account.logs().contains(&format!("{prefix}{report}")), "{report} in {:#?}", account.logs());
    }
    assert!(account.logs().contains(&format!("imagectl/builds/{test_build}/result.json")), "{:#?}", account.logs());
    let log = pipeline.log_object(&format!("{prefix}install.log"));
    assert!(log.contains("acme-agent installed in /opt/acme"), "{log}");
    let result: Value =
        serde_json::from_str(&pipeline.log_object(&format!("{prefix}result.json"))).expect("result.json");
    assert_eq!(
        (&result["exitCode"], &result["scan"]["passed"], &result["generalized"]),
        (&json!(0), &json!(true), &json!(true))
    );

    // Every state of the image's build was published, as the seller guide names them.
    let published = pipeline.notifications();
    assert_eq!(states(&published), ["Building", "Scanning", "Successful"], "{published:#?}");
    for notification in &published {
        assert_eq!(notification["stack"], STACK);
        assert_eq!(notification["buildId"], build_id);
        assert_eq!(notification["logs"], format!("s3://{LOGS}/{prefix}"));
        assert_eq!(notification["subject"], format!("imagectl {IMAGE}: {}", notification["state"].as_str().unwrap()));
    }
    assert_eq!(published[2]["imageId"], image.id);

    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!("{IMAGE} [{REGION}]: {} ({}, revision 1)", image.id, image.name));
    status.shows(&format!("{GROUP_RESOURCE}: Successful"));
    assert_output_snapshot("status-built", &status.stdout);
    let status = pipeline.imagectl(&["status", "--output", "json"]).expect(0).json();
    let created = status["images"][0]["current"]["created"].clone();
    assert!(created.as_str().is_some_and(|c| c.starts_with("20")), "{status:#}");
    let current = json!({"imageId": image.id, "name": image.name, "revision": 1, "created": created});
    assert_eq!(
        status["images"],
        json!([{"resource": IMAGE, "region": REGION, "current": current, "latestBuild": null}])
    );
    let group = &status["packageGroups"][0];
    assert_eq!((&group["resource"], &group["state"]), (&json!(GROUP_RESOURCE), &json!("Successful")), "{status:#}");
    assert_eq!(group["builds"][0]["buildId"], test_build);

    pipeline.assert_converged();
}

#[test]
fn new_package_bytes_are_refused_under_the_same_group_name_and_build_revision_2_under_a_new_one() {
    let Some(pipeline) =
        Pipeline::start("new_package_bytes_are_refused_under_the_same_group_name_and_build_revision_2_under_a_new_one")
    else {
        return;
    };
    let first = pipeline.built();
    let installer = pipeline.stack.read("packages/install.sh");
    pipeline.stack.write("packages/install.sh", &format!("{installer}# 2.4.0-2: reinstall-safe\n"));

    // The same name: refused before anything is uploaded, bound, launched or captured.
    let before = pipeline.account();
    for command in [&["plan"][..], &["apply", "--auto-approve"]] {
        let refused = pipeline.imagectl(command).expect(1);
        refused.complains(&format!(
            "{GROUP_RESOURCE}: metadata.name: package group `{GROUP}` was first used with other content"
        ));
        refused.complains("a name can never be used again, even after a failed build");
        refused.complains("help: bump the revision in the name, e.g. acme-agent-2-4-linux-r2");
        assert_eq!(refused.changes(), Vec::<String>::new(), "{refused}");
    }
    assert_eq!(pipeline.account(), before, "a refused plan changes nothing");

    // A new revision of the group: the image is rebuilt, and the plan says why.
    let images = pipeline.stack.read("images.yaml");
    pipeline.stack.write("images.yaml", &images.replace(GROUP, "acme-agent-2-4-linux-r2"));
    let plan = pipeline.imagectl(&["plan", "--detailed-exitcode"]).expect(2);
    let changes = [
        "+ PackageGroup/acme-agent-2-4-linux-r2",
        "+ PackageGroup/acme-agent-2-4-linux-r2/test/amazon-linux-2023",
        "-/+ PrivateImage/web-base",
        "~ PrivateImage/web-base/publish",
    ];
    assert_eq!(plan.changes(), changes, "{plan}");
    plan.shows(&format!("-/+ {IMAGE} must be replaced: package group changed {GROUP} → acme-agent-2-4-linux-r2"));
    plan.shows("Plan: 2 to create, 1 to update, 1 to replace, 0 to delete.");
    // Content-addressed: only the changed file is uploaded again.
    let uploads: Vec<&str> = plan.stdout.lines().filter(|l| l.trim_start().starts_with("+ packages")).collect();
    assert!(matches!(&uploads[..], [upload] if upload.ends_with("/install.sh\"")), "{plan}");
    assert_output_snapshot("rebuild-plan-text", &plan.stdout);

    let apply = pipeline.apply(0, &[]);
    apply.shows("PrivateImage/web-base: replaced (");
    apply.shows("Apply complete: 4 done.");
    let account = pipeline.account();
    assert_eq!(account.images.len(), 2, "the first image is kept: {account:#?}");
    assert!(account.images.contains(&first), "{account:#?}");
    let second = account.images.iter().find(|i| i.id != first.id).expect("a second image");
    let fingerprint = fingerprint_in(&second.name, 2);
    assert_ne!(fingerprint, fingerprint_in(&first.name, 1));
    assert_eq!(second.tags[BUILD_ID], format!("web-base-r2-{fingerprint}"));
    assert_eq!(second.tags["imagectl:revision"], "2");
    assert_eq!(second.tags["imagectl:package-group"], "acme-agent-2-4-linux-r2");
    assert_eq!(account.builds_of(IMAGE).len(), 2, "one build per revision: {account:#?}");
    assert_eq!(account.not_terminated(), Vec::<&Instance>::new());

    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!("{IMAGE} [{REGION}]: {} ({}, revision 2)", second.id, second.name));
    pipeline.assert_converged();
}

#[test]
fn changing_only_the_image_tags_retags_the_ami_in_place() {
    let Some(pipeline) = Pipeline::start("changing_only_the_image_tags_retags_the_ami_in_place") else {
        return;
    };
    let image = pipeline.built();
    pipeline.stack.edit("images.yaml", "tags: {tier: web}", "tags: {tier: frontend, owner: web-team}");

    let plan = pipeline.imagectl(&["plan", "--detailed-exitcode"]).expect(2);
    assert_eq!(plan.changes(), [format!("~ {IMAGE}")], "{plan}");
    plan.shows("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete.");
    assert_output_snapshot("retag-plan-text", &plan.stdout);
    let json = pipeline.imagectl(&["plan", "--output", "json"]).expect(0).json();
    let steps = change_of(&json, IMAGE)["steps"].as_array().expect("steps").clone();
    assert!(
        !steps.is_empty() && steps.iter().all(|s| !s.as_str().unwrap().starts_with("build")),
        "no build: {steps:?}"
    );

    let apply = pipeline.apply(0, &[]);
    apply.shows("PrivateImage/web-base: updated (");
    apply.shows("Apply complete: 1 done.");
    let account = pipeline.account();
    let [retagged] = &account.images[..] else { panic!("still one image: {account:#?}") };
    assert_eq!((&retagged.id, &retagged.name), (&image.id, &image.name));
    let mut expected = image.tags.clone();
    expected.insert("tier".into(), "frontend".into());
    expected.insert("owner".into(), "web-team".into());
    assert_eq!(retagged.tags, expected, "only the tags of the manifest changed; the build's own are kept");
    assert_eq!(account.builds_of(IMAGE).len(), 1, "no build instance launched: {account:#?}");
    pipeline.assert_converged();
}

#[test]
fn apply_killed_mid_build_is_finished_by_the_next_apply_with_one_instance_and_one_image() {
    let Some(mut pipeline) = Pipeline::without_player(
        "apply_killed_mid_build_is_finished_by_the_next_apply_with_one_instance_and_one_image",
    ) else {
        return;
    };
    // Nothing plays the instances yet: the apply launches them, then waits for results that cannot come.
    let mut apply = pipeline.spawn(&["apply", "--auto-approve"]);
    let account = pipeline.wait_for("the image's and the test build's instances", |a| a.build_instances().len() == 2);
    assert!(apply.is_running(), "the apply should be waiting for its builds:\n{}", apply.output());
    apply.kill();
    let (instance, build_id) = account.build_of(IMAGE);
    let (test_instance, test_build) = account.build_of(GROUP_RESOURCE);

    // What a killed apply leaves: the instances, found again by their tags.
    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!("build {build_id}: Building — instance {} running, launched ", instance.id));
    status.shows(&format!("logs: s3://{LOGS}/imagectl/builds/{build_id}/"));
    assert_output_snapshot("status-building", &status.stdout);
    let plan = pipeline.imagectl(&["plan", "--output", "json"]).expect(0).json();
    assert_eq!(
        plan["summary"]["create"], 3,
        "the builds and the published ID; the rest was done before the kill: {plan:#}"
    );
    let change = change_of(&plan, IMAGE);
    assert_eq!(change["reason"], format!("resumes build {build_id}, in progress"));
    assert_eq!(after(change, "build"), build_id);
    assert_eq!(change_of(&plan, TEST_BUILD)["reason"], format!("resumes test build {test_build}, in progress"));

    pipeline.start_player();
    let resumed = pipeline.apply(0, &[]);
    assert_eq!(
        resumed.changes(),
        [format!("+ {TEST_BUILD}"), format!("+ {IMAGE}"), format!("+ {IMAGE}/publish")],
        "{resumed}"
    );
    resumed.shows("PrivateImage/web-base: created (");
    resumed.shows("Apply complete: 3 done.");

    // One instance ever launched per build, none left behind; one image.
    let account = pipeline.account();
    assert_eq!(account.build_of(IMAGE).0.id, instance.id);
    assert_eq!(account.build_of(GROUP_RESOURCE).0.id, test_instance.id);
    assert_eq!(account.instances.len(), 2, "no other instance at all: {account:#?}");
    assert_eq!(account.not_terminated(), Vec::<&Instance>::new());
    let [image] = &account.images[..] else { panic!("one image expected: {account:#?}") };
    assert_eq!((image.tags[BUILD_ID].as_str(), image.state.as_str()), (build_id.as_str(), "available"));
    // Building came from the killed run (unless it died first); never a second launch, never a failure.
    let published = pipeline.notifications();
    let states = states(&published);
    assert!(states.iter().filter(|s| **s == "Building").count() <= 1, "{published:#?}");
    assert_eq!(
        states.iter().filter(|s| **s != "Building").collect::<Vec<_>>(),
        [&"Scanning", &"Successful"],
        "{published:#?}"
    );
    assert_eq!(published.last().unwrap()["imageId"], image.id);
    pipeline.assert_converged();
}

#[test]
fn apply_no_wait_returns_while_the_build_runs_and_a_later_apply_captures_the_image() {
    let Some(mut pipeline) =
        Pipeline::without_player("apply_no_wait_returns_while_the_build_runs_and_a_later_apply_captures_the_image")
    else {
        return;
    };
    // Nothing plays the instances yet: an apply that waited would wait for good.
    let started = pipeline.apply(0, &["--no-wait"]);
    started.shows("Apply complete: 9 done.");
    started.shows(&format!("{IMAGE}: build web-base-r1-"));
    started.shows("only starts (--no-wait): its copies, shares and published ID follow on the apply that captures it");
    let account = pipeline.account();
    let (instance, build_id) = account.build_of(IMAGE);
    assert_eq!(instance.state, "running");
    assert_eq!(account.build_of(GROUP_RESOURCE).0.state, "running");
    assert!(account.images.is_empty(), "{account:#?}");
    assert!(!account.logs().iter().any(|k| k.ends_with("/result.json")), "not finished: {account:#?}");
    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!("{IMAGE} [{REGION}]: no image yet"));
    status.shows(&format!("build {build_id}: Building — instance {} running", instance.id));

    // The instances install, scan, and power themselves off: stopped, they wait to be captured.
    pipeline.start_player();
    pipeline.wait_for("the build instances to power off", |a| a.build_instances().iter().all(|i| i.state == "stopped"));
    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!(
        "build {build_id}: Scanning — installed and scanned; instance stopped, waiting to be captured"
    ));
    assert_output_snapshot("status-waiting-to-be-captured", &status.stdout);
    let json = pipeline.imagectl(&["status", "--output", "json"]).expect(0).json();
    assert_eq!(json["images"][0]["latestBuild"]["state"], "Scanning");
    assert_eq!(json["images"][0]["latestBuild"]["instance"], instance.id);

    let captured = pipeline.apply(0, &[]);
    assert_eq!(
        captured.changes(),
        [format!("+ {TEST_BUILD}"), format!("+ {IMAGE}"), format!("+ {IMAGE}/publish")],
        "{captured}"
    );
    captured.shows("Apply complete: 3 done.");
    let account = pipeline.account();
    let [image] = &account.images[..] else { panic!("one image expected: {account:#?}") };
    assert_eq!(image.tags[BUILD_ID], build_id);
    assert_eq!(account.build_instances().len(), 2, "{account:#?}");
    assert_eq!(account.not_terminated(), Vec::<&Instance>::new());
    let published = pipeline.notifications();
    assert_eq!(states(&published), ["Building", "Scanning", "Successful"], "{published:#?}");
    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!("{IMAGE} [{REGION}]: {} ({}, revision 1)", image.id, image.name));
    pipeline.assert_converged();
}

#[test]
fn installer_exiting_3_is_issues_found_with_its_log_and_the_same_configuration_is_not_rebuilt() {
    let Some(pipeline) =
        Pipeline::start("installer_exiting_3_is_issues_found_with_its_log_and_the_same_configuration_is_not_rebuilt")
    else {
        return;
    };
    pipeline.stack.write(
        "packages/install.sh",
        "#!/bin/sh\n# Fails the way an installer with a missing dependency does.\necho 'acme-agent: libacme.so.2 not found' >&2\nexit 3\n",
    );

    let failed = pipeline.apply(1, &[]);
    let account = pipeline.account();
    let (_, build_id) = account.build_of(IMAGE);
    let (_, test_build) = account.build_of(GROUP_RESOURCE);
    let log_of = |build: &str| format!("s3://{LOGS}/imagectl/builds/{build}/install.log");
    let log = log_of(&build_id);
    failed.shows("PrivateImage/web-base: failed after");
    failed.shows(&format!("IssuesFound: the installer exited with 3; log: {log}"));
    failed.shows(&format!("IssuesFound: the installer exited with 3; log: {}", log_of(&test_build)));
    failed.shows("PrivateImage/web-base/publish: skipped (PrivateImage/web-base did not succeed)");
    failed.shows("Apply failed: 7 done, 2 failed, 1 skipped.");
    assert_eq!(account.not_terminated(), Vec::<&Instance>::new(), "both instances terminated");
    assert!(account.images.is_empty(), "no image: {account:#?}");
    let install_log = pipeline.log_object(&format!("imagectl/builds/{build_id}/install.log"));
    assert!(install_log.contains("acme-agent: libacme.so.2 not found"), "{install_log}");
    let published = pipeline.notifications();
    assert_eq!(states(&published), ["Building", "Issues Found"], "{published:#?}");
    assert_eq!(published[1]["message"], format!("the installer exited with 3; log: {log}"));
    assert_eq!(published[1].get("imageId"), None);

    let status = pipeline.imagectl(&["status"]).expect(0);
    status.shows(&format!("build {build_id}: Issues Found — the installer exited with 3; log: {log}"));
    status.shows(&format!("{GROUP_RESOURCE}: Issues Found"));
    assert_output_snapshot("status-issues-found", &status.stdout);
    let json = pipeline.imagectl(&["status", "--output", "json"]).expect(0).json();
    let image = &json["images"][0];
    assert_eq!(image["current"], Value::Null);
    assert_eq!(image["latestBuild"]["state"], "Issues Found");
    assert_eq!(image["latestBuild"]["logs"], format!("s3://{LOGS}/imagectl/builds/{build_id}/"));

    // The same configuration again: not rebuilt; the plan says what failed and what to change.
    let again = pipeline.apply(0, &[]);
    assert_eq!(again.changes(), Vec::<String>::new(), "{again}");
    again.shows(&format!(
        "{IMAGE}: build {build_id} of this exact configuration ended Issues Found: the installer exited with 3; log: {log}; \
         change the package group (new revision) or a build setting to build again"
    ));
    again.shows(&format!(
        "{GROUP_RESOURCE}: test build {test_build} on amazon-linux-2023 ended Issues Found: the installer exited with 3; \
         log: {}; publish a new revision of the group to test again",
        log_of(&test_build)
    ));
    again.shows("No changes.");
    let account = pipeline.account();
    assert_eq!((account.build_instances().len(), account.images.len()), (2, 0), "nothing launched again: {account:#?}");
    assert!(pipeline.notifications().is_empty());
}
