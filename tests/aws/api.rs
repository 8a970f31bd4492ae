//! The `aws` module against the emulator: steps create, re-run, refuse and delete; `read_live` reads them back
//! with a bounded number of requests.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use imagectl::aws::{Aws, AwsError, ConnectOptions};
use imagectl::live::{LiveState, ReadScope, RESOURCE_TAG, STACK_TAG};
use imagectl::model::{BucketEncryption, Subscription, Tags};
use imagectl::plan::step::Step;
use serde_json::json;

use crate::support::sdk::{isolate_aws_environment, region, tags, with_emulator};
use crate::support::Emulator;

const STACK: &str = "web";
const ACCOUNT: &str = "123456789012";
const SSM_CORE: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";

/// The tags imagectl puts on a resource of stack `web`, plus a user tag.
fn owned(resource: &str) -> Tags {
    tags(&[(STACK_TAG, STACK), (RESOURCE_TAG, resource), ("team", "platform")])
}

fn trust(service: &str) -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
}

fn logs_policy() -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::web-logs-use1/*"}]})
}

/// The create steps of a small stack: two roles, a profile, a bucket in each of two regions, a topic with an
/// email subscription. The topic ARN is known in advance, as the planner derives it from the account.
fn create_steps() -> Vec<Step> {
    let use1 = region("us-east-1");
    let euw1 = region("eu-west-1");
    let topic_arn = format!("arn:aws:sns:us-east-1:{ACCOUNT}:web-events");
    vec![
        Step::CreateRole {
            name: "web-build".into(),
            path: "/imagectl/".into(),
            trust_policy: trust("ec2.amazonaws.com").to_string(),
            description: Some("Builds images".into()),
            max_session_duration: Some(7200),
            tags: owned("Role/build"),
        },
        Step::PutRolePolicy { role: "web-build".into(), policy: "logs".into(), document: logs_policy().to_string() },
        Step::AttachRolePolicy { role: "web-build".into(), policy_arn: SSM_CORE.into() },
        Step::CreateRole {
            name: "web-automation".into(),
            path: "/".into(),
            trust_policy: trust("ssm.amazonaws.com").to_string(),
            description: None,
            max_session_duration: None,
            tags: owned("Role/automation"),
        },
        Step::CreateInstanceProfile {
            name: "web-build".into(),
            path: "/".into(),
            tags: owned("InstanceProfile/build"),
        },
        Step::AddRoleToInstanceProfile { profile: "web-build".into(), role: "web-build".into() },
        Step::CreateBucket { name: "web-logs-use1".into(), region: use1.clone(), tags: owned("Bucket/logs") },
        Step::SetPublicAccessBlock { name: "web-logs-use1".into(), region: use1.clone(), block: true },
        Step::PutBucketEncryption {
            name: "web-logs-use1".into(),
            region: use1.clone(),
            encryption: BucketEncryption::S3,
        },
        Step::PutBucketVersioning { name: "web-logs-use1".into(), region: use1.clone(), enabled: true },
        Step::PutBucketLifecycle { name: "web-logs-use1".into(), region: use1.clone(), expire_after_days: Some(30) },
        Step::CreateBucket { name: "web-artifacts-euw1".into(), region: euw1.clone(), tags: owned("Bucket/artifacts") },
        Step::SetPublicAccessBlock { name: "web-artifacts-euw1".into(), region: euw1.clone(), block: true },
        Step::PutBucketEncryption {
            name: "web-artifacts-euw1".into(),
            region: euw1.clone(),
            encryption: BucketEncryption::Kms { key: None },
        },
        Step::CreateTopic {
            name: "web-events".into(),
            region: use1.clone(),
            attributes: [("DisplayName".to_string(), "Web events".to_string())].into(),
            tags: owned("Topic/events"),
        },
        Step::Subscribe { topic_arn, region: use1, protocol: "email".into(), endpoint: "ops@example.com".into() },
    ]
}

fn stack_scope() -> ReadScope {
    ReadScope {
        stack: STACK.into(),
        regions: [region("us-east-1"), region("eu-west-1")].into(),
        roles: ["web-build", "web-automation"].map(String::from).into(),
        instance_profiles: ["web-build"].map(String::from).into(),
        buckets: ["web-logs-use1", "web-artifacts-euw1"].map(String::from).into(),
        topics: [(region("us-east-1"), ["web-events"].map(String::from).into())].into(),
        ..ReadScope::default()
    }
}

/// Runs a Python snippet with boto3 (from the emulator's venv) against the emulator, for what imagectl never does
/// itself, such as writing objects.
fn boto3(emulator: &Emulator, script: &str) {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let output = Command::new(python)
        .args(["-c", &format!("import boto3\n{script}")])
        .env_clear()
        .envs(emulator.env())
        .output()
        .expect("run python");
    assert!(output.status.success(), "boto3 script failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

async fn run_all(aws: &Aws, steps: &[Step]) {
    for step in steps {
        aws.execute(step).await.unwrap_or_else(|e| panic!("{}: {e}", step.describe()));
    }
}

fn assert_stack_read_back(live: &LiveState) {
    assert_eq!(live.account.as_ref().map(|a| a.as_str()), Some(ACCOUNT));

    assert_eq!(live.roles.keys().collect::<Vec<_>>(), ["web-automation", "web-build"]);
    let build = &live.roles["web-build"];
    assert_eq!(build.arn, format!("arn:aws:iam::{ACCOUNT}:role/imagectl/web-build"));
    assert_eq!(build.path, "/imagectl/");
    assert_eq!(build.description.as_deref(), Some("Builds images"));
    assert_eq!(build.max_session_duration, Some(7200));
    assert_eq!(build.trust_policy, trust("ec2.amazonaws.com"));
    assert_eq!(build.inline_policies, BTreeMap::from([("logs".to_string(), logs_policy())]));
    assert_eq!(build.managed_policies, BTreeSet::from([SSM_CORE.to_string()]));
    assert_eq!(build.tags, owned("Role/build"));
    let automation = &live.roles["web-automation"];
    assert_eq!(automation.description, None);
    assert_eq!(automation.max_session_duration, Some(3600), "IAM's default");
    assert!(automation.inline_policies.is_empty() && automation.managed_policies.is_empty());

    let profile = &live.instance_profiles["web-build"];
    assert_eq!(profile.roles, ["web-build"]);
    assert_eq!(profile.arn, format!("arn:aws:iam::{ACCOUNT}:instance-profile/web-build"));
    assert_eq!(profile.tags, owned("InstanceProfile/build"));

    let logs = &live.buckets["web-logs-use1"];
    assert_eq!(logs.region.as_str(), "us-east-1");
    assert_eq!(logs.tags, owned("Bucket/logs"));
    let settings = logs.settings.as_ref().expect("settings of a named bucket");
    assert_eq!(settings.expire_after_days, Some(30));
    assert_eq!(settings.other_lifecycle_rules, 0);
    assert!(settings.versioning && settings.block_public_access);
    assert_eq!(settings.encryption, Some(BucketEncryption::S3));
    assert_eq!(logs.has_objects, None, "not asked for");
    let artifacts = &live.buckets["web-artifacts-euw1"];
    assert_eq!(artifacts.region.as_str(), "eu-west-1");
    let settings = artifacts.settings.as_ref().unwrap();
    assert_eq!(settings.encryption, Some(BucketEncryption::Kms { key: None }));
    assert_eq!((settings.versioning, settings.expire_after_days), (false, None));

    assert_eq!(live.topics.keys().collect::<Vec<_>>(), [&region("us-east-1")]);
    let topic = &live.topics[&region("us-east-1")]["web-events"];
    assert_eq!(topic.arn, format!("arn:aws:sns:us-east-1:{ACCOUNT}:web-events"));
    assert_eq!(topic.display_name.as_deref(), Some("Web events"));
    assert_eq!(topic.kms_key, None);
    assert_eq!(topic.tags, owned("Topic/events"));
    let email = Subscription { protocol: "email".into(), endpoint: "ops@example.com".into() };
    assert_eq!(topic.subscriptions.keys().collect::<Vec<_>>(), [&email]);
}

#[test]
fn steps_create_rerun_and_delete_what_read_live_reports() {
    with_emulator(|_emulator, aws| async move {
        let empty = aws.read_live(&stack_scope()).await.unwrap();
        assert!(empty.roles.is_empty() && empty.instance_profiles.is_empty());
        assert!(empty.buckets.is_empty() && empty.topics.is_empty());

        let steps = create_steps();
        run_all(&aws, &steps).await;
        let live = aws.read_live(&stack_scope()).await.unwrap();
        assert_stack_read_back(&live);

        // Every create step again, as a retried or resumed apply would: all succeed, nothing changes.
        run_all(&aws, &steps).await;
        assert_eq!(aws.read_live(&stack_scope()).await.unwrap(), live);

        // Owned resources are found without being named: that is how --prune and destroy find them.
        let unnamed = ReadScope { stack: STACK.into(), regions: stack_scope().regions, ..ReadScope::default() };
        let found = aws.read_live(&unnamed).await.unwrap();
        assert_eq!(found.roles.len(), 2);
        assert_eq!(found.instance_profiles.len(), 1);
        assert!(found.buckets.values().all(|b| b.settings.is_some()));
        assert_eq!(found.topics[&region("us-east-1")].len(), 1);

        let use1 = region("us-east-1");
        let euw1 = region("eu-west-1");
        let topic = &live.topics[&use1]["web-events"];
        let subscription_arn = topic.subscriptions.values().next().unwrap().clone();
        let deletes = vec![
            Step::Unsubscribe { subscription_arn, region: use1.clone() },
            Step::DeleteTopic { topic_arn: topic.arn.clone(), region: use1.clone() },
            Step::RemoveRoleFromInstanceProfile { profile: "web-build".into(), role: "web-build".into() },
            Step::DeleteInstanceProfile { profile: "web-build".into() },
            Step::DeleteRolePolicy { role: "web-build".into(), policy: "logs".into() },
            Step::DetachRolePolicy { role: "web-build".into(), policy_arn: SSM_CORE.into() },
            Step::UntagRole { role: "web-build".into(), keys: vec!["team".into()] },
            Step::DeleteRole { role: "web-build".into() },
            Step::DeleteRole { role: "web-automation".into() },
            Step::EmptyBucket { name: "web-logs-use1".into(), region: use1.clone() },
            Step::DeleteBucket { name: "web-logs-use1".into(), region: use1.clone() },
            Step::SetPublicAccessBlock { name: "web-artifacts-euw1".into(), region: euw1.clone(), block: false },
            Step::PutBucketLifecycle {
                name: "web-artifacts-euw1".into(),
                region: euw1.clone(),
                expire_after_days: None,
            },
            Step::DeleteBucket { name: "web-artifacts-euw1".into(), region: euw1.clone() },
        ];
        run_all(&aws, &deletes).await;
        let gone = aws.read_live(&stack_scope()).await.unwrap();
        assert!(gone.roles.is_empty() && gone.instance_profiles.is_empty(), "{gone:#?}");
        assert!(gone.buckets.is_empty() && gone.topics.is_empty(), "{gone:#?}");
        // Deleting what is already gone succeeds too. (Settings steps on a deleted bucket fail, as they should.)
        let again: Vec<Step> = deletes
            .into_iter()
            .filter(|s| !matches!(s, Step::SetPublicAccessBlock { .. } | Step::PutBucketLifecycle { .. }))
            .collect();
        run_all(&aws, &again).await;
    });
}

#[test]
fn updates_change_what_read_live_reports() {
    with_emulator(|_emulator, aws| async move {
        run_all(&aws, &create_steps()).await;
        let use1 = region("us-east-1");
        let euw1 = region("eu-west-1");
        let topic_arn = format!("arn:aws:sns:us-east-1:{ACCOUNT}:web-events");
        let changed_policy =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]});
        run_all(
            &aws,
            &[
                Step::UpdateTrustPolicy { role: "web-build".into(), document: trust("ssm.amazonaws.com").to_string() },
                Step::UpdateRole {
                    role: "web-build".into(),
                    description: Some("Builds web images".into()),
                    max_session_duration: Some(3600),
                },
                Step::PutRolePolicy {
                    role: "web-build".into(),
                    policy: "logs".into(),
                    document: changed_policy.to_string(),
                },
                Step::TagRole { role: "web-build".into(), tags: tags(&[("team", "web")]) },
                Step::TagInstanceProfile { profile: "web-build".into(), tags: tags(&[("cost", "1")]) },
                Step::UntagInstanceProfile { profile: "web-build".into(), keys: vec!["team".into()] },
                Step::PutBucketTagging {
                    name: "web-artifacts-euw1".into(),
                    region: euw1.clone(),
                    tags: tags(&[(STACK_TAG, STACK), (RESOURCE_TAG, "Bucket/artifacts")]),
                },
                Step::PutBucketVersioning { name: "web-logs-use1".into(), region: use1.clone(), enabled: false },
                Step::PutBucketLifecycle {
                    name: "web-logs-use1".into(),
                    region: use1.clone(),
                    expire_after_days: Some(7),
                },
                Step::SetPublicAccessBlock { name: "web-logs-use1".into(), region: use1.clone(), block: false },
                Step::SetTopicAttribute {
                    topic_arn: topic_arn.clone(),
                    region: use1.clone(),
                    attribute: "DisplayName".into(),
                    value: "Events".into(),
                },
                Step::TagTopic { topic_arn: topic_arn.clone(), region: use1.clone(), tags: tags(&[("team", "web")]) },
                Step::UntagTopic { topic_arn: topic_arn.clone(), region: use1.clone(), keys: vec!["nothing".into()] },
            ],
        )
        .await;
        let live = aws.read_live(&stack_scope()).await.unwrap();
        let build = &live.roles["web-build"];
        assert_eq!(build.trust_policy, trust("ssm.amazonaws.com"));
        assert_eq!(build.description.as_deref(), Some("Builds web images"));
        assert_eq!(build.max_session_duration, Some(3600));
        assert_eq!(build.inline_policies["logs"], changed_policy);
        assert_eq!(build.tags["team"], "web");
        let profile_tags = &live.instance_profiles["web-build"].tags;
        assert_eq!((profile_tags.get("team"), profile_tags.get("cost")), (None, Some(&"1".to_string())));
        assert_eq!(live.buckets["web-artifacts-euw1"].tags.get("team"), None);
        let logs = live.buckets["web-logs-use1"].settings.clone().unwrap();
        assert_eq!((logs.versioning, logs.expire_after_days, logs.block_public_access), (false, Some(7), false));
        let topic = &live.topics[&use1]["web-events"];
        assert_eq!(topic.display_name.as_deref(), Some("Events"));
        assert_eq!(topic.tags["team"], "web");
    });
}

#[test]
fn creates_refuse_same_named_resources_the_stack_does_not_own() {
    with_emulator(|_emulator, aws| async move {
        let use1 = region("us-east-1");
        let euw1 = region("eu-west-1");
        let foreign = tags(&[(STACK_TAG, "db"), (RESOURCE_TAG, "Role/build")]);
        run_all(
            &aws,
            &[
                Step::CreateRole {
                    name: "web-build".into(),
                    path: "/".into(),
                    trust_policy: trust("ec2.amazonaws.com").to_string(),
                    description: None,
                    max_session_duration: None,
                    tags: foreign.clone(),
                },
                // Made by hand: no tags at all.
                Step::CreateRole {
                    name: "web-automation".into(),
                    path: "/".into(),
                    trust_policy: trust("ssm.amazonaws.com").to_string(),
                    description: None,
                    max_session_duration: None,
                    tags: Tags::new(),
                },
                Step::CreateInstanceProfile { name: "web-build".into(), path: "/".into(), tags: foreign.clone() },
                Step::CreateBucket { name: "web-logs-use1".into(), region: use1.clone(), tags: foreign.clone() },
                Step::CreateBucket { name: "web-artifacts-euw1".into(), region: euw1.clone(), tags: foreign.clone() },
            ],
        )
        .await;

        let steps = create_steps();
        let refused = |name: &str, error: Result<(), AwsError>| {
            let error = error.expect_err(name);
            eprintln!("{error}");
            error
        };
        let role = refused("role", aws.execute(&steps[0]).await);
        assert_eq!(role.code.as_deref(), Some("EntityAlreadyExists"));
        assert!(role
            .to_string()
            .starts_with("CreateRole web-build: EntityAlreadyExists: role web-build already exists"));
        assert!(role.message.contains("imagectl:stack=db"), "{role}");
        let untagged = refused("untagged role", aws.execute(&steps[3]).await);
        assert!(untagged.message.contains("no imagectl ownership tags"), "{untagged}");
        let profile = refused("profile", aws.execute(&steps[4]).await);
        assert!(profile.message.contains("instance profile web-build already exists"), "{profile}");
        let bucket = refused("bucket us-east-1", aws.execute(&steps[6]).await);
        assert!(bucket.message.contains("bucket web-logs-use1 already exists"), "{bucket}");
        let bucket = refused("bucket eu-west-1", aws.execute(&steps[11]).await);
        assert!(bucket.message.contains("imagectl:stack=db"), "{bucket}");

        // Nothing was touched; named resources are read whoever owns them (the plan reports the conflict),
        // and unnamed ones of other stacks are not read at all.
        let live = aws.read_live(&stack_scope()).await.unwrap();
        assert_eq!(live.roles["web-build"].tags, foreign);
        assert_eq!(live.roles["web-automation"].tags, Tags::new());
        assert_eq!(live.instance_profiles["web-build"].tags, foreign);
        assert_eq!(live.buckets["web-logs-use1"].tags, foreign);
        assert_eq!(live.buckets["web-artifacts-euw1"].tags, foreign);
        let unnamed = aws
            .read_live(&ReadScope { stack: STACK.into(), regions: stack_scope().regions, ..ReadScope::default() })
            .await
            .unwrap();
        assert!(unnamed.roles.is_empty() && unnamed.instance_profiles.is_empty());
        assert!(unnamed.buckets.values().all(|b| b.settings.is_none()), "other stacks' buckets: listed, not read");
    });
}

/// Outside us-east-1 S3 answers `BucketAlreadyOwnedByYou` to the create of a bucket the account already has: one
/// made by hand carries no ownership tags and must be refused, not tagged into the stack.
#[test]
fn create_bucket_refuses_an_untagged_bucket_that_was_already_there() {
    with_emulator(|emulator, aws| async move {
        let bucket = "web-artifacts-euw1";
        boto3(
            &emulator,
            &format!(
                "boto3.client('s3', region_name='eu-west-1').create_bucket(Bucket='{bucket}', \
                 CreateBucketConfiguration={{'LocationConstraint': 'eu-west-1'}})"
            ),
        );
        let step =
            Step::CreateBucket { name: bucket.into(), region: region("eu-west-1"), tags: owned("Bucket/artifacts") };
        let error = aws.execute(&step).await.expect_err("a hand-made bucket is not the stack's");
        assert_eq!(error.code.as_deref(), Some("BucketAlreadyOwnedByYou"), "{error}");
        assert!(error.message.contains("no imagectl ownership tags"), "{error}");
        let live = aws.read_live(&stack_scope()).await.unwrap();
        assert_eq!(live.buckets[bucket].tags, Tags::new(), "left untagged");
    });
}

#[test]
fn read_live_batches_its_requests() {
    with_emulator(|emulator, aws| async move {
        run_all(&aws, &create_steps()).await;
        // Another stack's role, a profile and a topic of nobody's: listed with the rest, at no extra call for the
        // role.
        run_all(
            &aws,
            &[
                Step::CreateRole {
                    name: "db-backup".into(),
                    path: "/".into(),
                    trust_policy: trust("ec2.amazonaws.com").to_string(),
                    description: None,
                    max_session_duration: None,
                    tags: tags(&[(STACK_TAG, "db")]),
                },
                // Made by hand, untagged: its listing carries no tags, so they are asked for.
                Step::CreateInstanceProfile { name: "manual".into(), path: "/".into(), tags: Tags::new() },
                Step::CreateTopic {
                    name: "alarms".into(),
                    region: region("eu-west-1"),
                    attributes: BTreeMap::new(),
                    tags: Tags::new(),
                },
            ],
        )
        .await;
        aws.account_id().await.unwrap();

        let before = emulator.request_count();
        aws.read_live(&stack_scope()).await.unwrap();
        let requests = emulator.request_count() - before;
        // Account (STS): cached per connection, 0 here.
        // IAM: GetAccountAuthorizationDetails 1 + ListRoles 1 + ListInstanceProfiles 1 (the emulator lists tags,
        //      AWS does not) + GetInstanceProfile for the one profile listed without tags.
        // S3: ListBuckets 1 + per bucket (2) GetBucketLocation (the emulator's listing lacks BucketRegion) and
        //     GetBucketTagging, + per named bucket 4 settings = 1 + 2×2 + 2×4.
        // SNS, per region (2): ListTopics + ListSubscriptions, + ListTagsForResource per topic (2) and
        //     GetTopicAttributes per kept topic (1) = 2×2 + 2 + 1.
        // EC2, per region (2): DescribeImages (the stack's images) + DescribeInstances (its build instances).
        let expected = 4 + (1 + 2 * 2 + 2 * 4) + (2 * 2 + 2 + 1) + 2 * 2;
        assert_eq!(requests, expected, "read_live made {requests} requests");

        let before = emulator.request_count();
        let scope = ReadScope { count_bucket_objects: true, ..stack_scope() };
        let live = aws.read_live(&scope).await.unwrap();
        assert_eq!(emulator.request_count() - before, expected + 2, "one ListObjectVersions per owned bucket");
        assert!(live.buckets.values().all(|b| b.has_objects == Some(false)));
    });
}

#[test]
fn external_references_are_checked_by_the_cheapest_means() {
    with_emulator(|emulator, aws| async move {
        run_all(&aws, &create_steps()).await;
        let existing_role = format!("arn:aws:iam::{ACCOUNT}:role/imagectl/web-build");
        let missing_role = format!("arn:aws:iam::{ACCOUNT}:role/nobody");
        let other_account_role = "arn:aws:iam::210987654321:role/web-build".to_string();
        let existing_profile = format!("arn:aws:iam::{ACCOUNT}:instance-profile/web-build");
        let missing_profile = format!("arn:aws:iam::{ACCOUNT}:instance-profile/nobody");
        let existing_topic = format!("arn:aws:sns:us-east-1:{ACCOUNT}:web-events");
        let missing_listed_topic = format!("arn:aws:sns:us-east-1:{ACCOUNT}:nobody");
        let missing_unlisted_topic = format!("arn:aws:sns:eu-central-1:{ACCOUNT}:nobody");
        let scope = ReadScope {
            stack: "other".into(),
            regions: [region("us-east-1")].into(),
            external_roles: [&existing_role, &missing_role, &other_account_role].map(String::clone).into(),
            external_instance_profiles: [&existing_profile, &missing_profile].map(String::clone).into(),
            external_buckets: ["web-logs-use1", "web-artifacts-euw1", "nobody-has-this-bucket"]
                .map(String::from)
                .into(),
            external_topics: [&existing_topic, &missing_listed_topic, &missing_unlisted_topic]
                .map(String::clone)
                .into(),
            ..ReadScope::default()
        };
        let before = emulator.request_count();
        let live = aws.read_live(&scope).await.unwrap();
        let expected: BTreeMap<String, bool> = [
            (existing_role, true),
            (missing_role, false),
            (existing_profile, true),
            (missing_profile, false),
            ("web-logs-use1".to_string(), true),
            ("web-artifacts-euw1".to_string(), true),
            ("nobody-has-this-bucket".to_string(), false),
            (existing_topic, true),
            (missing_listed_topic, false),
            (missing_unlisted_topic, false),
        ]
        .into();
        assert_eq!(live.external, expected, "another account's role is unknown, hence absent");
        // Nothing of the stack "other": the account (STS), roles and profiles only listed; buckets listed, located and tag-read;
        // externals outside the listings: one HeadBucket, one GetTopicAttributes. EC2: DescribeImages and
        // DescribeInstances of the stack's (none) in its one region.
        let listings = 1 + 1 + 1 + (1 + 2 * 2) + (2 + 1) + 2;
        assert_eq!(emulator.request_count() - before, listings + 1 + 1);
    });
}

#[test]
fn emptying_a_bucket_removes_versions_and_delete_markers() {
    with_emulator(|emulator, aws| async move {
        let use1 = region("us-east-1");
        let bucket = "web-logs-use1";
        run_all(
            &aws,
            &[
                Step::CreateBucket { name: bucket.into(), region: use1.clone(), tags: owned("Bucket/logs") },
                Step::PutBucketVersioning { name: bucket.into(), region: use1.clone(), enabled: true },
            ],
        )
        .await;
        // Two versions of one key, another key, and a delete marker.
        boto3(
            &emulator,
            &format!(
                "s3 = boto3.client('s3')\n\
                 for key in ['a', 'a', 'b']: s3.put_object(Bucket='{bucket}', Key=key, Body=b'x')\n\
                 s3.delete_object(Bucket='{bucket}', Key='b')"
            ),
        );
        let scope = ReadScope { count_bucket_objects: true, ..stack_scope() };
        assert_eq!(aws.read_live(&scope).await.unwrap().buckets[bucket].has_objects, Some(true));

        let delete = Step::DeleteBucket { name: bucket.into(), region: use1.clone() };
        let not_empty = aws.execute(&delete).await.expect_err("a bucket holding versions cannot be deleted");
        assert_eq!(not_empty.code.as_deref(), Some("BucketNotEmpty"), "{not_empty}");

        aws.execute(&Step::EmptyBucket { name: bucket.into(), region: use1.clone() }).await.unwrap();
        assert_eq!(aws.read_live(&scope).await.unwrap().buckets[bucket].has_objects, Some(false));
        aws.execute(&delete).await.unwrap();
        assert!(aws.read_live(&scope).await.unwrap().buckets.is_empty());
        // Emptying a bucket that is gone is done already.
        aws.execute(&Step::EmptyBucket { name: bucket.into(), region: use1 }).await.unwrap();
    });
}

#[test]
fn errors_carry_the_aws_code_and_message() {
    with_emulator(|_emulator, aws| async move {
        run_all(&aws, &create_steps()[..1]).await;
        let missing = "arn:aws:iam::aws:policy/NoSuchPolicyAnywhere";
        let step = Step::AttachRolePolicy { role: "web-build".into(), policy_arn: missing.into() };
        let error = aws.execute(&step).await.expect_err("the policy does not exist");
        assert_eq!(error.operation, format!("AttachRolePolicy web-build {missing}"));
        assert_eq!(error.code.as_deref(), Some("NoSuchEntity"));
        assert!(!error.message.is_empty());
        assert_eq!(error.to_string(), format!("{}: NoSuchEntity: {}", error.operation, error.message));

        // A pending subscription has no ARN to unsubscribe with.
        let pending = Step::Unsubscribe { subscription_arn: "PendingConfirmation".into(), region: region("us-east-1") };
        let error = aws.execute(&pending).await.expect_err("nothing to unsubscribe");
        assert!(error.message.contains("pending confirmation"), "{error}");
    });
}

#[test]
fn connect_requires_a_region() {
    isolate_aws_environment();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let error = runtime.block_on(Aws::connect(&ConnectOptions::default())).expect_err("no region anywhere");
    assert!(error.message.contains("--region") && error.message.contains("AWS_REGION"), "{error}");
}
