//! The AWS side of image builds against the emulator: base images, owned images and build instances, package-group
//! records, uploaded packages and build reports read back by `read_live`; the package steps; and the build pipeline.
//!
//! The emulator never runs an instance, so these tests play it minimally themselves: they write the instance's
//! reports (status.json, result.json) with boto3, as the instance's script does through its presigned URLs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use imagectl::aws::{Aws, AwsError};
use imagectl::build::{
    self, tags as build_tags, BuildPackage, BuildPlan, BuildSettings, PackageGroupRecord, ReportKeys,
};
use imagectl::live::{BaseImageQuery, ReadScope, RESOURCE_TAG, STACK_TAG};
use imagectl::model::{AmiId, Delivery, Platform, Tags};
use imagectl::plan::step::Step;
use serde_json::{json, Value};

use crate::support::boto3::{python, python_async};
use crate::support::sdk::{region, tags, with_emulator};
use crate::support::Emulator;

const STACK: &str = "web";
const ACCOUNT: &str = "123456789012";
const LOGS: &str = "web-logs";
const ARTIFACTS: &str = "web-artifacts";
const PROFILE: &str = "web-build";
const AL2023: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

fn owned(resource: &str) -> Tags {
    tags(&[(STACK_TAG, STACK), (RESOURCE_TAG, resource)])
}

/// A build step must never hang a test: a pipeline waiting for a result that never comes fails it instead.
async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future).await.expect("the step hangs")
}

async fn run_all(aws: &Aws, steps: &[Step]) {
    for step in steps {
        aws.execute(step).await.unwrap_or_else(|e| panic!("{}: {e}", step.describe()));
    }
}

/// Registers an image of our own; the emulator dates images to the second.
fn register_image(emulator: &Emulator, name: &str) -> String {
    let id =
        python(emulator, &format!("print(ec2.register_image(Name='{name}', RootDeviceName='/dev/xvda')['ImageId'])"));
    id.trim().to_owned()
}

/// What a build needs to exist: the instance profile, the automation role, the two buckets, the topic, and an SQS
/// queue subscribed to the topic (to read the notifications back). Returns the queue URL and the role ARN.
async fn build_prerequisites(emulator: &Arc<Emulator>, aws: &Aws) -> (String, String) {
    let use1 = region("us-east-1");
    let trust = |service: &str| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
            .to_string()
    };
    run_all(
        aws,
        &[
            Step::CreateRole {
                name: "web-build".into(),
                path: "/".into(),
                trust_policy: trust("ec2.amazonaws.com"),
                description: None,
                max_session_duration: None,
                tags: owned("Role/build"),
            },
            Step::CreateRole {
                name: "web-automation".into(),
                path: "/".into(),
                trust_policy: trust("ec2.amazonaws.com"),
                description: None,
                max_session_duration: None,
                tags: owned("Role/automation"),
            },
            Step::CreateInstanceProfile {
                name: PROFILE.into(),
                path: "/".into(),
                tags: owned("InstanceProfile/build"),
            },
            Step::AddRoleToInstanceProfile { profile: PROFILE.into(), role: "web-build".into() },
            Step::CreateBucket { name: LOGS.into(), region: use1.clone(), tags: owned("Bucket/logs") },
            Step::CreateBucket { name: ARTIFACTS.into(), region: use1.clone(), tags: owned("Bucket/artifacts") },
            Step::CreateTopic {
                name: "web-events".into(),
                region: use1,
                attributes: BTreeMap::new(),
                tags: owned("Topic/events"),
            },
        ],
    )
    .await;
    let queue = python_async(
        emulator,
        format!(
            "url = sqs.create_queue(QueueName='events')['QueueUrl']\n\
             arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
             sns.subscribe(TopicArn='{}', Protocol='sqs', Endpoint=arn)\n\
             print(url)",
            topic_arn()
        ),
    )
    .await;
    (queue.trim().to_owned(), format!("arn:aws:iam::{ACCOUNT}:role/web-automation"))
}

fn topic_arn() -> String {
    format!("arn:aws:sns:us-east-1:{ACCOUNT}:web-events")
}

/// The notifications published so far (drained from the queue): (subject, message).
async fn notifications(emulator: &Arc<Emulator>, queue: &str) -> Vec<(String, Value)> {
    let out = python_async(
        emulator,
        format!(
            "while True:\n\
             \x20   got = sqs.receive_message(QueueUrl='{queue}', MaxNumberOfMessages=10).get('Messages', [])\n\
             \x20   if not got: break\n\
             \x20   for m in got:\n\
             \x20       body = json.loads(m['Body'])\n\
             \x20       print(json.dumps([body.get('Subject'), json.loads(body['Message'])]))\n\
             \x20       sqs.delete_message(QueueUrl='{queue}', ReceiptHandle=m['ReceiptHandle'])"
        ),
    )
    .await;
    out.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn states(notifications: &[(String, Value)]) -> Vec<String> {
    notifications.iter().map(|(_, m)| m["state"].as_str().unwrap().to_owned()).collect()
}

fn settings(delivery: Delivery, timeout_minutes: u32) -> BuildSettings {
    BuildSettings {
        platform: Platform::Linux,
        instance_type: "t3.micro".into(),
        delivery,
        installer_arguments: vec!["--quiet".into()],
        timeout_minutes,
        scan_command: None,
        builtin_scan: true,
        generalize: true,
        no_reboot: false,
        block_devices: vec![],
    }
}

/// A build of `PrivateImage/web-base` on `base`, with its package already uploaded.
fn plan(base: &str, revision: u32, settings: BuildSettings, automation_role: Option<String>) -> BuildPlan {
    let base = AmiId::parse(base).unwrap();
    let fingerprint = build::fingerprint(&base, "digest-1", &settings);
    let build_id = build::build_id("web-base", revision, &fingerprint);
    let mut image_tags = owned("PrivateImage/web-base");
    for (key, value) in [
        (build_tags::BUILD_ID, build_id.clone()),
        (build_tags::REVISION, revision.to_string()),
        (build_tags::FINGERPRINT, fingerprint.clone()),
        (build_tags::BASE_IMAGE, base.to_string()),
        (build_tags::PACKAGE_GROUP, "acme-agent-r1".into()),
    ] {
        image_tags.insert(key.to_owned(), value);
    }
    image_tags.insert("team".into(), "platform".into());
    BuildPlan {
        build_id,
        stack: STACK.into(),
        resource: "PrivateImage/web-base".into(),
        region: region("us-east-1"),
        revision,
        fingerprint: fingerprint.clone(),
        base_image: base,
        ami_name: build::ami_name("web-base", revision, &fingerprint),
        description: Some("Web base image".into()),
        settings,
        instance_profile: PROFILE.into(),
        automation_role_arn: automation_role,
        subnet: None,
        security_groups: vec![],
        associate_public_ip: false,
        artifacts_bucket: ARTIFACTS.into(),
        packages: vec![BuildPackage {
            file_name: "install.sh".into(),
            key: build::package_key(&"ab".repeat(32), "install.sh"),
            sha256: "ab".repeat(32),
        }],
        installer: "install.sh".into(),
        logs_bucket: LOGS.into(),
        topic_arn: Some(topic_arn()),
        tags: image_tags,
        keep_image: true,
    }
}

fn result_json(build_id: &str, exit_code: i32) -> String {
    json!({
        "buildId": build_id,
        "exitCode": exit_code,
        "timedOut": false,
        "rebootAttempted": false,
        "durationSeconds": 3,
        "scan": if exit_code == 0 { json!({"passed": true, "findings": []}) } else { Value::Null },
        "generalized": exit_code == 0,
    })
    .to_string()
}

/// Writes a report object as the instance would.
async fn write_report(emulator: &Arc<Emulator>, key: &str, body: &str) {
    python_async(emulator, format!("s3.put_object(Bucket='{LOGS}', Key='{key}', Body={body:?}.encode())")).await;
}

/// Every instance of the build, whatever its state: [(id, state)].
async fn instances_of(emulator: &Arc<Emulator>, build_id: &str) -> Vec<(String, String)> {
    let out = python_async(
        emulator,
        format!(
            "for r in ec2.describe_instances(Filters=[{{'Name': 'tag:{}', 'Values': ['{build_id}']}}])['Reservations']:\n\
             \x20   for i in r['Instances']: print(i['InstanceId'], i['State']['Name'])",
            build_tags::BUILD_ID
        ),
    )
    .await;
    out.lines().map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap()).collect()
}

/// Images of ours with that name: the parsed `DescribeImages` entries.
async fn images_named(emulator: &Arc<Emulator>, name: &str) -> Vec<Value> {
    let out = python_async(
        emulator,
        format!("print(json.dumps(ec2.describe_images(Owners=['self'], Filters=[{{'Name': 'name', 'Values': ['{name}']}}])['Images'], default=str))"),
    )
    .await;
    serde_json::from_str::<Vec<Value>>(out.trim()).unwrap()
}

/// The tags of a snapshot, as boto3 reads them.
async fn snapshot_tags(emulator: &Arc<Emulator>, snapshot: &str) -> Tags {
    let script = format!(
        "print(json.dumps(ec2.describe_snapshots(SnapshotIds=['{snapshot}'])['Snapshots'][0].get('Tags', [])))"
    );
    tag_map(&serde_json::from_str(&python_async(emulator, script).await).unwrap())
}

fn tag_map(tags: &Value) -> Tags {
    tags.as_array()
        .map(|a| {
            a.iter().map(|t| (t["Key"].as_str().unwrap().to_owned(), t["Value"].as_str().unwrap().to_owned())).collect()
        })
        .unwrap_or_default()
}

#[test]
fn read_live_resolves_base_images_and_finds_what_the_stack_owns() {
    with_emulator(|emulator, aws| async move {
        let use1 = region("us-east-1");
        // Three generations of a golden image, a second apart (the emulator dates images to the second), and an
        // image whose name does not match.
        let mut golden = Vec::new();
        for n in 1..=3 {
            golden.push(register_image(&emulator, &format!("golden-base-{n}")));
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        register_image(&emulator, "other-base-9");
        let id = BaseImageQuery::Id { region: use1.clone(), id: AmiId::parse(&golden[0]).unwrap() };
        let missing_id =
            BaseImageQuery::Id { region: use1.clone(), id: AmiId::parse("ami-0123456789abcdef0").unwrap() };
        let lookup = BaseImageQuery::Lookup {
            region: use1.clone(),
            owners: vec!["self".into()],
            name: "golden-base-*".into(),
            architecture: None,
        };
        let amazon = BaseImageQuery::Lookup {
            region: use1.clone(),
            owners: vec!["amazon".into()],
            name: "al2023-ami-2023.*-x86_64".into(),
            architecture: Some("x86_64".into()),
        };
        let amazon_arm = BaseImageQuery::Lookup {
            region: use1.clone(),
            owners: vec!["amazon".into()],
            name: "al2023-ami-2023.*-x86_64".into(),
            architecture: Some("arm64".into()),
        };
        let parameter = BaseImageQuery::Parameter { region: use1.clone(), name: AL2023.into() };
        let missing_parameter = BaseImageQuery::Parameter { region: use1.clone(), name: "/imagectl/test/none".into() };

        // Images and instances: the stack's, another stack's, an untagged one; a terminated instance of the stack.
        let base = golden[0].clone();
        let out = python_async(
            &emulator,
            format!(
                "def run(tags, terminate=False):\n\
                 \x20   spec = [{{'ResourceType': 'instance', 'Tags': [{{'Key': k, 'Value': v}} for k, v in tags.items()]}}] if tags else []\n\
                 \x20   i = ec2.run_instances(ImageId='{base}', MinCount=1, MaxCount=1, TagSpecifications=spec)['Instances'][0]['InstanceId']\n\
                 \x20   if terminate: ec2.terminate_instances(InstanceIds=[i])\n\
                 \x20   return i\n\
                 def image(name, tags):\n\
                 \x20   i = run({{}}, False)\n\
                 \x20   spec = [{{'ResourceType': 'image', 'Tags': [{{'Key': k, 'Value': v}} for k, v in tags.items()]}}] if tags else []\n\
                 \x20   return ec2.create_image(InstanceId=i, Name=name, TagSpecifications=spec)['ImageId']\n\
                 print(image('web-base-r0001-aaaaaaaa', {{'{STACK_TAG}': 'web', '{RESOURCE_TAG}': 'PrivateImage/web-base', '{build_id}': 'web-base-r1-aaaaaaaa'}}))\n\
                 image('db-base-r0001-bbbbbbbb', {{'{STACK_TAG}': 'db'}})\n\
                 image('hand-made', {{}})\n\
                 print(run({{'{STACK_TAG}': 'web', '{build_id}': 'web-base-r2-cccccccc', '{logs}': '{LOGS}'}}))\n\
                 run({{'{STACK_TAG}': 'db', '{build_id}': 'db-base-r1-dddddddd', '{logs}': '{LOGS}'}})\n\
                 run({{'{STACK_TAG}': 'web', '{build_id}': 'web-base-r3-eeeeeeee'}}, True)",
                build_id = build_tags::BUILD_ID,
                logs = build_tags::LOGS_BUCKET,
            ),
        )
        .await;
        let mut printed = out.lines();
        let (owned_image, running) = (printed.next().unwrap().to_owned(), printed.next().unwrap().to_owned());

        // Package groups and reports in the buckets: a bound group, a package, the status of the running build,
        // and the reports of a finished build whose instance is gone (two revisions: the newest is read).
        run_all(
            &aws,
            &[
                Step::CreateBucket { name: LOGS.into(), region: use1.clone(), tags: owned("Bucket/logs") },
                Step::CreateBucket {
                    name: ARTIFACTS.into(),
                    region: region("eu-west-1"),
                    tags: owned("Bucket/artifacts"),
                },
                Step::BindPackageGroup {
                    bucket: ARTIFACTS.into(),
                    region: region("eu-west-1"),
                    key: build::package_group_key("acme-agent-r1"),
                    record: record("acme-agent-r1", "d1"),
                },
            ],
        )
        .await;
        let package_key = build::package_key(&"cd".repeat(32), "agent.rpm");
        python_async(
            &emulator,
            format!(
                "s3e = boto3.client('s3', region_name='eu-west-1')\n\
                 s3e.put_object(Bucket='{ARTIFACTS}', Key='{package_key}', Body=b'rpm')\n\
                 s3e.put_object(Bucket='{ARTIFACTS}', Key='unrelated/file', Body=b'x')"
            ),
        )
        .await;
        let status =
            |id: &str, state: &str| json!({"buildId": id, "state": state, "at": "2025-01-01T00:00:00Z"}).to_string();
        for (id, state) in
            [("web-base-r2-cccccccc", "Building"), ("app-r4-ffffffff", "Building"), ("app-r5-ffffffff", "Scanning")]
        {
            write_report(&emulator, &ReportKeys::for_build(id).status, &status(id, state)).await;
        }
        write_report(&emulator, &ReportKeys::for_build("app-r5-ffffffff").result, &result_json("app-r5-ffffffff", 3))
            .await;
        // The captured build's reports exist too, and are not read: its image is available.
        write_report(
            &emulator,
            &ReportKeys::for_build("web-base-r1-aaaaaaaa").result,
            &result_json("web-base-r1-aaaaaaaa", 0),
        )
        .await;

        let scope = ReadScope {
            stack: STACK.into(),
            regions: [use1.clone()].into(),
            base_images: [&id, &missing_id, &lookup, &amazon, &amazon_arm, &parameter, &missing_parameter]
                .map(Clone::clone)
                .into(),
            package_groups: [("acme-agent-r1", ARTIFACTS), ("never-used-r1", ARTIFACTS)]
                .map(|(n, b)| (n.to_owned(), b.to_owned()))
                .into(),
            logs_buckets: [LOGS.to_owned()].into(),
            ..ReadScope::default()
        };
        aws.account_id().await.unwrap();
        let before = emulator.request_count();
        let live = aws.read_live(&scope).await.unwrap();
        // The emulator logs a request once its answer is sent: give the last line a moment to land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let requests = emulator.request_count() - before;

        let bases = &live.base_images;
        assert_eq!(bases[&id.key()].id.as_str(), golden[0]);
        assert_eq!(bases[&id.key()].name, "golden-base-1");
        assert!(!bases.contains_key(&missing_id.key()), "an image that does not exist resolves to nothing");
        assert_eq!(bases[&lookup.key()].id.as_str(), golden[2], "the newest of the matching images");
        let al2023 = &bases[&amazon.key()];
        assert!(al2023.name.starts_with("al2023-ami-2023.") && al2023.name.ends_with("-x86_64"), "{al2023:?}");
        assert_eq!(
            (al2023.architecture.as_str(), al2023.root_device_type.as_str(), al2023.platform.as_deref()),
            ("x86_64", "ebs", None)
        );
        assert!(!bases.contains_key(&amazon_arm.key()), "no arm64 image has an x86_64 name");
        let from_parameter = &bases[&parameter.key()];
        assert!(from_parameter.name.starts_with("al2023-ami-"), "{from_parameter:?}");
        assert_eq!(from_parameter.state, "available");
        assert!(!bases.contains_key(&missing_parameter.key()));

        assert_eq!(
            live.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            [owned_image.as_str()],
            "only the stack's images"
        );
        let image = &live.images[0];
        assert_eq!(
            (image.name.as_str(), image.state.as_str(), image.region.as_str()),
            ("web-base-r0001-aaaaaaaa", "available", "us-east-1")
        );
        assert_eq!(image.snapshot_ids.len(), 1);
        assert_eq!(image.tags[RESOURCE_TAG], "PrivateImage/web-base");
        assert_eq!(
            live.build_instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            [running.as_str()],
            "the stack's live instances"
        );
        let instance = &live.build_instances[0];
        assert!(matches!(instance.state.as_str(), "pending" | "running"), "{instance:?}");
        assert!(
            instance.launch_time.ends_with('Z') && instance.launch_time.contains('T'),
            "RFC 3339: {}",
            instance.launch_time
        );

        assert_eq!(live.package_groups["acme-agent-r1"], Some(record("acme-agent-r1", "d1")));
        assert_eq!(live.package_groups["never-used-r1"], None);
        assert_eq!(live.packages_present[ARTIFACTS], [package_key].into());

        assert_eq!(live.build_reports.keys().collect::<Vec<_>>(), ["app-r5-ffffffff", "web-base-r2-cccccccc"]);
        let running_reports = &live.build_reports["web-base-r2-cccccccc"];
        assert_eq!(running_reports.status.as_ref().unwrap().state, build::BuildState::Building);
        assert_eq!(running_reports.result, None);
        let finished = &live.build_reports["app-r5-ffffffff"];
        assert_eq!(finished.result.as_ref().unwrap().exit_code, Some(3));

        // Account: cached. IAM 2 (GetAccountAuthorizationDetails finds no role to keep, so no ListRoles;
        // ListInstanceProfiles). S3: ListBuckets, then per bucket (2)
        // GetBucketLocation + GetBucketTagging + 4 settings (the stack owns both) = 1 + 2×6. SNS: ListTopics +
        // ListSubscriptions = 2. EC2, one region: DescribeImages (owned) + DescribeInstances = 2; base images:
        // 1 GetParameters (2 names), 1 DescribeImages by image-id (2 IDs), 3 lookups = 5. Buckets: 2 GetObject
        // (records) + 1 ListObjectsV2 (packages) + 1 ListObjectsV2 (builds) + 2×2 GetObject (reports of the live
        // build and of app's newest) = 8.
        let expected = 2 + (1 + 2 * 6) + 2 + 2 + 5 + 8;
        assert_eq!(requests, expected, "read_live made {requests} requests");
    });
}

fn record(name: &str, digest: &str) -> PackageGroupRecord {
    PackageGroupRecord {
        name: name.into(),
        content_digest: digest.into(),
        packages: [("install.sh".to_owned(), "ab".repeat(32))].into(),
        installer: "install.sh".into(),
        stack: STACK.into(),
    }
}

#[test]
fn package_steps_upload_once_and_bind_a_name_for_good() {
    with_emulator(|emulator, aws| async move {
        let use1 = region("us-east-1");
        run_all(
            &aws,
            &[Step::CreateBucket { name: ARTIFACTS.into(), region: use1.clone(), tags: owned("Bucket/artifacts") }],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("install.sh");
        std::fs::write(&source, b"#!/bin/sh\necho installed\n").unwrap();
        let sha256 = "c3b9e0e2dbe8d8a6d1ab1c1a7e6e1f8f7e1b2c47ad6a3b8f3e2d0a9b8c7d6e5f".to_owned(); // wrong on purpose
        let actual = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(std::fs::read(&source).unwrap()))
        };
        let key = build::package_key(&actual, "install.sh");
        let upload = |sha256: &str| Step::UploadPackage {
            bucket: ARTIFACTS.into(),
            region: use1.clone(),
            key: key.clone(),
            source: source.clone(),
            sha256: sha256.to_owned(),
        };

        let changed = aws.execute(&upload(&sha256)).await.expect_err("the file is not what the plan hashed");
        assert!(changed.message.contains("changed since the plan was made"), "{changed}");

        aws.execute(&upload(&actual)).await.unwrap();
        let before = emulator.request_count();
        aws.execute(&upload(&actual)).await.unwrap();
        assert_eq!(emulator.request_count() - before, 1, "a second upload is one HeadObject");
        let out = python_async(
            &emulator,
            format!(
                "objs = s3.list_objects_v2(Bucket='{ARTIFACTS}')['Contents']\n\
                 print(len(objs))\n\
                 head = s3.head_object(Bucket='{ARTIFACTS}', Key='{key}')\n\
                 print(head['Metadata']['sha256'])\n\
                 print(s3.get_object(Bucket='{ARTIFACTS}', Key='{key}')['Body'].read().decode())"
            ),
        )
        .await;
        assert_eq!(out, format!("1\n{actual}\n#!/bin/sh\necho installed\n\n"));

        let bind = |digest: &str| Step::BindPackageGroup {
            bucket: ARTIFACTS.into(),
            region: use1.clone(),
            key: build::package_group_key("acme-agent-r1"),
            record: record("acme-agent-r1", digest),
        };
        aws.execute(&bind("0123456789abcdef0123")).await.unwrap();
        aws.execute(&bind("0123456789abcdef0123")).await.expect("the same content again: already bound");
        let error = aws.execute(&bind("fedcba9876543210fedc")).await.expect_err("other content under a used name");
        assert_eq!(error.code.as_deref(), Some("PreconditionFailed"));
        assert_eq!(
            error.message,
            "package group `acme-agent-r1` is already bound to other content (digest 0123456789ab…, this content fedcba987654…); \
             a name can never be reused — bump its revision, e.g. acme-agent-r2"
        );
        let scope = ReadScope {
            stack: STACK.into(),
            package_groups: [("acme-agent-r1".to_owned(), ARTIFACTS.to_owned())].into(),
            ..ReadScope::default()
        };
        let live = aws.read_live(&scope).await.unwrap();
        assert_eq!(
            live.package_groups["acme-agent-r1"].as_ref().unwrap().content_digest,
            "0123456789abcdef0123",
            "never overwritten"
        );
    });
}

#[test]
fn image_steps_change_tags_and_description_in_place() {
    with_emulator(|emulator, aws| async move {
        let base = register_image(&emulator, "golden-base-1");
        let image = python_async(
            &emulator,
            format!(
                "i = ec2.run_instances(ImageId='{base}', MinCount=1, MaxCount=1)['Instances'][0]['InstanceId']\n\
                 print(ec2.create_image(InstanceId=i, Name='web-base-r0001-aaaaaaaa', TagSpecifications=[{{'ResourceType': 'image', 'Tags': [{{'Key': 'team', 'Value': 'a'}}, {{'Key': 'old', 'Value': '1'}}]}}])['ImageId'])"
            ),
        )
        .await;
        let image = image.trim().to_owned();
        let use1 = region("us-east-1");
        run_all(
            &aws,
            &[
                Step::TagImage {
                    image_id: image.clone(),
                    region: use1.clone(),
                    tags: tags(&[("team", "b"), ("cost", "7")]),
                },
                Step::UntagImage { image_id: image.clone(), region: use1.clone(), keys: vec!["old".into()] },
                Step::SetImageDescription {
                    image_id: image.clone(),
                    region: use1.clone(),
                    description: "Web base".into(),
                },
            ],
        )
        .await;
        let found = &images_named(&emulator, "web-base-r0001-aaaaaaaa").await[0];
        assert_eq!(tag_map(&found["Tags"]), tags(&[("team", "b"), ("cost", "7")]));
        // The emulator answers ModifyImageAttribute's Description with 200 and changes nothing (moto 5.2.5): that
        // the step succeeds is all that can be checked here.
        let snapshot = found["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap();
        let snapshot_tags = snapshot_tags(&emulator, snapshot).await;
        assert_eq!(snapshot_tags, tags(&[("team", "b"), ("cost", "7")]), "snapshots follow");
        // Removing tags from an image that is gone is done already.
        aws.execute(&Step::UntagImage {
            image_id: "ami-0123456789abcdef0".into(),
            region: use1,
            keys: vec!["x".into()],
        })
        .await
        .unwrap();
    });
}

#[test]
fn build_launches_once_resumes_and_captures_one_image() {
    with_emulator(|emulator, aws| async move {
        let (queue, role) = build_prerequisites(&emulator, &aws).await;
        let base = register_image(&emulator, "golden-base-1");
        let plan = plan(&base, 1, settings(Delivery::Ssm, 60), Some(role));
        let keys = ReportKeys::for_build(&plan.build_id);
        let step = |wait| Step::BuildImage { build: Box::new(plan.clone()), wait };

        // Started without waiting: launched, the command sent, Building published.
        within(60, aws.execute(&step(false))).await.unwrap();
        let instances = instances_of(&emulator, &plan.build_id).await;
        assert_eq!(instances.len(), 1, "{instances:?}");
        let instance = instances[0].0.clone();
        let described = python_async(
            &emulator,
            format!(
                "i = ec2.describe_instances(InstanceIds=['{instance}'])['Reservations'][0]['Instances'][0]\n\
                 print(json.dumps({{'tags': i['Tags'], 'profile': i.get('IamInstanceProfile', {{}}).get('Arn'), 'type': i['InstanceType'], 'image': i['ImageId'], 'imds': i['MetadataOptions']['HttpTokens']}}))\n\
                 print(json.dumps(ssm.list_commands(InstanceId='{instance}')['Commands'], default=str))"
            ),
        )
        .await;
        let mut lines = described.lines();
        let described: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let instance_tags = tag_map(&described["tags"]);
        assert_eq!(instance_tags[build_tags::BUILD_ID], plan.build_id);
        assert_eq!(instance_tags[build_tags::LOGS_BUCKET], LOGS);
        assert_eq!(instance_tags[STACK_TAG], STACK);
        assert!(
            described["profile"].as_str().unwrap().ends_with(&format!("instance-profile/{PROFILE}")),
            "{described}"
        );
        assert_eq!(
            (described["type"].as_str(), described["image"].as_str(), described["imds"].as_str()),
            (Some("t3.micro"), Some(base.as_str()), Some("required"))
        );
        let commands: Vec<Value> = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(commands.len(), 1);
        let command = &commands[0];
        assert_eq!(command["Comment"], plan.build_id);
        assert_eq!(command["DocumentName"], "AWS-RunShellScript");
        assert_eq!(command["OutputS3BucketName"], LOGS);
        assert_eq!(command["OutputS3KeyPrefix"], format!("imagectl/builds/{}/ssm/", plan.build_id));
        assert_eq!(command["Parameters"]["executionTimeout"], json!([(60 * 60 + 30 * 60).to_string()]));
        let script = command["Parameters"]["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(script.contains(&format!("/{LOGS}/{}", keys.result)), "the script holds the result's presigned URL");
        assert!(script.contains("X-Amz-Expires=6000"), "timeout 60 min + margin 30 min + agent window 10 min");
        assert_eq!(states(&notifications(&emulator, &queue).await), ["Building"]);

        // Resumed and waiting: the instance reports Scanning, then its result; the step captures the image.
        let running = tokio::spawn({
            let aws = aws.clone();
            let step = step(true);
            async move { aws.execute(&step).await }
        });
        let scanning = json!({"buildId": plan.build_id, "state": "Scanning", "at": "2025-01-01T00:00:00Z"}).to_string();
        write_report(&emulator, &keys.status, &scanning).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!running.is_finished(), "no result yet: still waiting");
        write_report(&emulator, &keys.result, &result_json(&plan.build_id, 0)).await;
        tokio::time::timeout(Duration::from_secs(60), running).await.expect("the build finishes").unwrap().unwrap();

        let images = images_named(&emulator, &plan.ami_name).await;
        assert_eq!(images.len(), 1);
        let image = &images[0];
        assert_eq!(tag_map(&image["Tags"]), plan.tags);
        assert_eq!(image["Description"], "Web base image");
        assert_eq!(image["State"], "available");
        let image_id = image["ImageId"].as_str().unwrap().to_owned();
        let snapshot = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap();
        let snapshot_tags = snapshot_tags(&emulator, snapshot).await;
        assert_eq!(snapshot_tags, plan.tags);
        assert_eq!(instances_of(&emulator, &plan.build_id).await, [(instance.clone(), "terminated".to_owned())]);
        let published = notifications(&emulator, &queue).await;
        assert_eq!(states(&published), ["Scanning", "Successful"]);
        let (subject, successful) = &published[1];
        assert_eq!(subject, "imagectl PrivateImage/web-base: Successful");
        assert_eq!(successful["imageId"], image_id);
        assert_eq!(successful["buildId"], plan.build_id);
        assert_eq!(successful["stack"], STACK);
        assert_eq!(successful["logs"], format!("s3://{LOGS}/imagectl/builds/{}/", plan.build_id));

        // A third run finds the image: nothing launched, captured or published again.
        within(60, aws.execute(&step(true))).await.unwrap();
        assert_eq!(instances_of(&emulator, &plan.build_id).await.len(), 1);
        assert_eq!(images_named(&emulator, &plan.ami_name).await.len(), 1);
        assert!(notifications(&emulator, &queue).await.is_empty());

        // read_live sees the image, no live instance, and no reports to read (the build has its image).
        let scope = ReadScope {
            stack: STACK.into(),
            regions: [region("us-east-1")].into(),
            logs_buckets: [LOGS.to_owned()].into(),
            ..ReadScope::default()
        };
        let live = aws.read_live(&scope).await.unwrap();
        assert_eq!(live.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [image_id.as_str()]);
        assert!(live.build_instances.is_empty());
        assert!(live.build_reports.is_empty(), "{:?}", live.build_reports);
    });
}

#[test]
fn a_failed_installer_is_issues_found_with_the_log_and_no_image() {
    with_emulator(|emulator, aws| async move {
        let (queue, _role) = build_prerequisites(&emulator, &aws).await;
        let base = register_image(&emulator, "golden-base-1");
        // User-data delivery and the caller's own credentials this time.
        let plan = plan(&base, 1, settings(Delivery::UserData, 60), None);
        let keys = ReportKeys::for_build(&plan.build_id);
        let step = |wait| Step::BuildImage { build: Box::new(plan.clone()), wait };
        within(60, aws.execute(&step(false))).await.unwrap();
        let instance = instances_of(&emulator, &plan.build_id).await[0].0.clone();
        let user_data = python_async(
            &emulator,
            format!("print(ec2.describe_instance_attribute(InstanceId='{instance}', Attribute='userData')['UserData']['Value'])"),
        )
        .await;
        let user_data = String::from_utf8(decode_base64(user_data.trim())).unwrap();
        assert!(user_data.starts_with("#!/bin/bash"), "{}", &user_data[..80.min(user_data.len())]);
        assert!(user_data.contains(&keys.result), "the script reports to the result key");

        write_report(&emulator, &keys.result, &result_json(&plan.build_id, 3)).await;
        let error: AwsError = within(60, aws.execute(&step(true))).await.expect_err("the installer failed");
        let log = format!("s3://{LOGS}/{}", keys.log);
        assert_eq!(error.code.as_deref(), Some("IssuesFound"));
        assert_eq!(error.message, format!("the installer exited with 3; log: {log}"));
        assert_eq!(instances_of(&emulator, &plan.build_id).await, [(instance, "terminated".to_owned())]);
        assert!(images_named(&emulator, &plan.ami_name).await.is_empty());
        let published = notifications(&emulator, &queue).await;
        assert_eq!(states(&published), ["Building", "Issues Found"]);
        assert_eq!(published[1].0, "imagectl PrivateImage/web-base: Issues Found");
        assert_eq!(published[1].1["message"], format!("the installer exited with 3; log: {log}"));

        // Run again: the verdict stands; nothing is launched again (the build ID is spent).
        let again = within(60, aws.execute(&step(true))).await.expect_err("still failed");
        assert_eq!(again.code.as_deref(), Some("IssuesFound"));
        assert_eq!(instances_of(&emulator, &plan.build_id).await.len(), 1);

        // The finished build's reports are found without its instance, for the planner's next revision.
        let scope = ReadScope {
            stack: STACK.into(),
            regions: [region("us-east-1")].into(),
            logs_buckets: [LOGS.to_owned()].into(),
            ..ReadScope::default()
        };
        let live = aws.read_live(&scope).await.unwrap();
        assert!(live.build_instances.is_empty());
        assert_eq!(live.build_reports[&plan.build_id].result.as_ref().unwrap().exit_code, Some(3));
    });
}

#[test]
fn no_result_before_the_deadline_is_investigating() {
    with_emulator(|emulator, aws| async move {
        let (queue, role) = build_prerequisites(&emulator, &aws).await;
        let base = register_image(&emulator, "golden-base-1");
        // A zero timeout: the deadline (launch + timeout + a margin as long as the timeout) has passed at once.
        let plan = plan(&base, 2, settings(Delivery::Ssm, 0), Some(role));
        let error = within(60, aws.execute(&Step::BuildImage { build: Box::new(plan.clone()), wait: true }))
            .await
            .expect_err("no result");
        assert_eq!(error.code.as_deref(), Some("Investigating"), "{error}");
        assert!(error.message.starts_with("no result from instance i-"), "{error}");
        assert!(
            error.message.ends_with(&format!("log: s3://{LOGS}/imagectl/builds/{}/install.log", plan.build_id)),
            "{error}"
        );
        let instances = instances_of(&emulator, &plan.build_id).await;
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].1, "terminated");
        assert!(images_named(&emulator, &plan.ami_name).await.is_empty());
        assert_eq!(states(&notifications(&emulator, &queue).await), ["Building", "Investigating"]);
    });
}

#[test]
fn a_launch_error_is_investigating_at_once() {
    // The instance-profile retry window (2 minutes) is too long to sit through here; what is checked is that any
    // other launch error fails at once, publishing Investigating with AWS's own error.
    with_emulator(|emulator, aws| async move {
        let (queue, _role) = build_prerequisites(&emulator, &aws).await;
        let base = register_image(&emulator, "golden-base-1");
        let mut plan = plan(&base, 1, settings(Delivery::Ssm, 60), None);
        plan.subnet = Some("subnet-0123456789abcdef0".into());
        plan.security_groups = vec!["sg-0123456789abcdef0".into()];
        let started = std::time::Instant::now();
        let step = Step::BuildImage { build: Box::new(plan.clone()), wait: true };
        let error = within(60, aws.execute(&step)).await.expect_err("no such subnet");
        assert!(started.elapsed() < Duration::from_secs(20), "not retried: {:?}", started.elapsed());
        assert_eq!(error.code.as_deref(), Some("InvalidSubnetID.NotFound"), "{error}");
        assert!(instances_of(&emulator, &plan.build_id).await.is_empty());
        let published = notifications(&emulator, &queue).await;
        assert_eq!(states(&published), ["Investigating"]);
        assert!(published[0].1["message"].as_str().unwrap().contains("InvalidSubnetID.NotFound"), "{published:?}");
    });
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    bytes
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | u32::from(*v) << (18 - 6 * i));
            let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.into_iter().take(chunk.len() - 1).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_build_killed_after_capture_is_finished_by_the_next_run() {
    with_emulator(|emulator, aws| async move {
        let (queue, role) = build_prerequisites(&emulator, &aws).await;
        let base = register_image(&emulator, "golden-base-1");
        let plan = plan(&base, 1, settings(Delivery::Ssm, 60), Some(role));
        let step = |wait| Step::BuildImage { build: Box::new(plan.clone()), wait };
        within(60, aws.execute(&step(false))).await.unwrap();
        write_report(&emulator, &ReportKeys::for_build(&plan.build_id).result, &result_json(&plan.build_id, 0)).await;
        // What a run killed right after CreateImage leaves: a stopped instance and the image, tagged with the
        // build ID, its snapshots not yet tagged, nothing published.
        let instance = instances_of(&emulator, &plan.build_id).await[0].0.clone();
        let image_tags =
            serde_json::to_string(&plan.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>())
                .unwrap();
        let image_id = python_async(
            &emulator,
            format!(
                "ec2.stop_instances(InstanceIds=['{instance}'])\n\
                 print(ec2.create_image(InstanceId='{instance}', Name='{}', TagSpecifications=[{{'ResourceType': 'image', 'Tags': json.loads('{image_tags}')}}])['ImageId'])",
                plan.ami_name
            ),
        )
        .await;
        let image_id = image_id.trim().to_owned();
        assert_eq!(states(&notifications(&emulator, &queue).await), ["Building"]);

        within(60, aws.execute(&step(true))).await.unwrap();
        let images = images_named(&emulator, &plan.ami_name).await;
        assert_eq!(images.len(), 1, "no second image");
        assert_eq!(images[0]["ImageId"], image_id);
        let snapshot = images[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap();
        let snapshot_tags = snapshot_tags(&emulator, snapshot).await;
        assert_eq!(snapshot_tags, plan.tags);
        assert_eq!(instances_of(&emulator, &plan.build_id).await, [(instance, "terminated".to_owned())]);
        let published = notifications(&emulator, &queue).await;
        assert_eq!(states(&published), ["Successful"]);
        assert_eq!(published[0].1["imageId"], image_id);
    });
}

#[test]
fn a_test_build_keeps_no_image() {
    with_emulator(|emulator, aws| async move {
        let (queue, role) = build_prerequisites(&emulator, &aws).await;
        let base = register_image(&emulator, "golden-base-1");
        let mut plan = plan(&base, 1, settings(Delivery::Ssm, 60), Some(role));
        plan.keep_image = false;
        let step = |wait| Step::BuildImage { build: Box::new(plan.clone()), wait };
        within(60, aws.execute(&step(false))).await.unwrap();
        write_report(&emulator, &ReportKeys::for_build(&plan.build_id).result, &result_json(&plan.build_id, 0)).await;
        within(60, aws.execute(&step(true))).await.unwrap();

        let published = notifications(&emulator, &queue).await;
        // The result came before any poll saw the Scanning status: Scanning is published with the verdict.
        assert_eq!(states(&published), ["Building", "Scanning", "Successful"]);
        let image_id = published[2].1["imageId"].as_str().unwrap().to_owned();
        assert!(images_named(&emulator, &plan.ami_name).await.is_empty(), "deregistered once scanned");
        let snapshots = python_async(
            &emulator,
            format!("print(len(ec2.describe_snapshots(OwnerIds=['self'], Filters=[{{'Name': 'description', 'Values': ['*{image_id}*']}}])['Snapshots']))"),
        )
        .await;
        assert_eq!(snapshots.trim(), "0", "its snapshots deleted too");
        assert_eq!(instances_of(&emulator, &plan.build_id).await[0].1, "terminated");

        // Run again: finished; nothing launched, nothing published.
        within(60, aws.execute(&step(true))).await.unwrap();
        assert_eq!(instances_of(&emulator, &plan.build_id).await.len(), 1);
        assert!(notifications(&emulator, &queue).await.is_empty());
    });
}
