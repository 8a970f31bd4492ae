//! Planner tests: manifests and hand-written live snapshots in, plans out. No AWS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::json;

use super::render::{self, Palette};
use super::*;
use crate::live::{BucketSettings, LiveBucket, LiveInstanceProfile, LiveRole, LiveState, LiveTopic};
use crate::model::{AccountId, Subscription};

const STACK: &str = r#"
apiVersion: imagectl/v1
kind: Stack
metadata: {name: golden}
spec: {region: us-east-1, tags: {team: platform}}
---
apiVersion: imagectl/v1
kind: Role
metadata: {name: build}
spec:
  assumedBy: [ec2.amazonaws.com]
  managedPolicies: [arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore]
  inlinePolicies:
    read:
      Version: "2012-10-17"
      Statement:
        - {Effect: Allow, Action: ["s3:GetObject"], Resource: ["arn:aws:s3:::artifacts/*"]}
---
apiVersion: imagectl/v1
kind: InstanceProfile
metadata: {name: build}
spec: {role: build}
---
apiVersion: imagectl/v1
kind: Bucket
metadata: {name: golden-logs}
spec: {expireAfterDays: 90}
---
apiVersion: imagectl/v1
kind: Topic
metadata: {name: events}
spec:
  subscriptions: [{protocol: email, endpoint: ops@example.com}]
"#;

fn model(text: &str) -> Model {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    crate::manifest::parse_file(Path::new("stack.yaml"), text, &mut documents, &mut problems);
    crate::validate::validate(&documents, problems).expect("valid manifests").model
}

fn tags(resource: &str, extra: &[(&str, &str)]) -> Tags {
    let mut tags: Tags = [("team", "platform"), ("imagectl:stack", "golden"), ("imagectl:resource", resource)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    tags.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    tags
}

/// The live state after a faithful apply of STACK, written the way AWS returns it.
fn converged() -> LiveState {
    let us_east_1 = Region::parse("us-east-1").unwrap();
    let mut live = LiveState { account: Some(AccountId::parse("123456789012").unwrap()), ..LiveState::default() };
    live.roles.insert(
        "build".into(),
        LiveRole {
            name: "build".into(),
            arn: "arn:aws:iam::123456789012:role/build".into(),
            path: "/".into(),
            description: None,
            // IAM hands documents back with single values unwrapped and keys reordered.
            trust_policy: json!({"Version": "2012-10-17", "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}]}),
            managed_policies: BTreeSet::from(["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".to_owned()]),
            inline_policies: BTreeMap::from([(
                "read".to_owned(),
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::artifacts/*"}]}),
            )]),
            max_session_duration: Some(3600),
            tags: tags("Role/build", &[]),
        },
    );
    live.instance_profiles.insert(
        "build".into(),
        LiveInstanceProfile {
            name: "build".into(),
            arn: "arn:aws:iam::123456789012:instance-profile/build".into(),
            path: "/".into(),
            roles: vec!["build".into()],
            tags: tags("InstanceProfile/build", &[]),
        },
    );
    live.buckets.insert(
        "golden-logs".into(),
        LiveBucket {
            name: "golden-logs".into(),
            region: us_east_1.clone(),
            tags: tags("Bucket/golden-logs", &[]),
            settings: Some(BucketSettings {
                expire_after_days: Some(90),
                other_lifecycle_rules: 0,
                versioning: false,
                block_public_access: true,
                encryption: Some(crate::model::BucketEncryption::S3),
            }),
            has_objects: Some(true),
        },
    );
    let topic = LiveTopic {
        name: "events".into(),
        arn: "arn:aws:sns:us-east-1:123456789012:events".into(),
        region: us_east_1.clone(),
        tags: tags("Topic/events", &[]),
        display_name: None,
        kms_key: None,
        subscriptions: BTreeMap::from([(
            Subscription { protocol: "email".into(), endpoint: "ops@example.com".into() },
            "arn:aws:sns:us-east-1:123456789012:events:1".to_owned(),
        )]),
    };
    live.topics.entry(us_east_1).or_default().insert("events".into(), topic);
    live
}

fn empty_account() -> LiveState {
    LiveState { account: Some(AccountId::parse("123456789012").unwrap()), ..LiveState::default() }
}

fn make(model: &Model, live: &LiveState, options: PlanOptions) -> Plan {
    plan(model, live, &options, &[]).expect("plan")
}

fn actions(plan: &Plan) -> Vec<(String, Action)> {
    plan.changes.iter().map(|c| (c.resource.to_string(), c.action)).collect()
}

#[test]
fn an_empty_account_gets_only_creates_in_dependency_order() {
    let plan = make(&model(STACK), &empty_account(), PlanOptions::default());
    assert_eq!(
        actions(&plan),
        vec![
            ("Role/build".into(), Action::Create),
            ("InstanceProfile/build".into(), Action::Create),
            ("Bucket/golden-logs".into(), Action::Create),
            ("Topic/events".into(), Action::Create),
        ]
    );
    let profile = &plan.changes[1];
    assert_eq!(profile.after, vec![ResourceId::new(Kind::Role, "build")]);
    let Step::CreateRole { tags, .. } = &plan.changes[0].steps[0] else { panic!("role is created first") };
    assert_eq!(tags.get("imagectl:stack").map(String::as_str), Some("golden"));
    assert_eq!(tags.get("imagectl:resource").map(String::as_str), Some("Role/build"));
    assert!(plan.changes[2].steps.contains(&Step::SetPublicAccessBlock {
        name: "golden-logs".into(),
        region: Region::parse("us-east-1").unwrap(),
        block: true
    }));
    let Step::Subscribe { topic_arn, .. } = &plan.changes[3].steps[1] else { panic!("topic subscribes after creation") };
    assert_eq!(topic_arn, "arn:aws:sns:us-east-1:123456789012:events");
    insta::assert_snapshot!("create_text", render::text(&plan, &Palette::plain()));
}

#[test]
fn a_converged_account_plans_no_changes() {
    let plan = make(&model(STACK), &converged(), PlanOptions::default());
    assert_eq!(actions(&plan), vec![]);
    assert_eq!(plan.unchanged, 4);
    assert_eq!(render::summary_line(&plan), "No changes. 4 resource(s) match the manifests.");
}

#[test]
fn a_changed_inline_policy_is_an_in_place_update_with_a_one_line_diff() {
    let changed = STACK.replace(r#"Action: ["s3:GetObject"]"#, r#"Action: ["s3:GetObject", "s3:ListBucket"]"#);
    let plan = make(&model(&changed), &converged(), PlanOptions::default());
    assert_eq!(actions(&plan), vec![("Role/build".into(), Action::Update)]);
    let change = &plan.changes[0];
    assert_eq!(change.fields.len(), 1);
    assert_eq!(change.fields[0].field, "inlinePolicies.read");
    assert!(matches!(&change.steps[..], [Step::PutRolePolicy { policy, .. }] if policy == "read"));
    let text = render::text(&plan, &Palette::plain());
    let removed = text.lines().filter(|l| l.trim_start().starts_with("- ")).count();
    assert_eq!(removed, 1, "{text}");
    insta::assert_snapshot!("inline_policy_update", text);
}

#[test]
fn drift_made_outside_imagectl_is_planned_back() {
    let mut live = converged();
    let role = live.roles.get_mut("build").unwrap();
    role.managed_policies.insert("arn:aws:iam::aws:policy/AdministratorAccess".into());
    role.tags.insert("owner".into(), "someone".into());
    live.buckets.get_mut("golden-logs").unwrap().settings.as_mut().unwrap().block_public_access = false;
    let plan = make(&model(STACK), &live, PlanOptions::default());
    assert_eq!(actions(&plan), vec![("Role/build".into(), Action::Update), ("Bucket/golden-logs".into(), Action::Update)]);
    assert!(plan.changes[0].steps.contains(&Step::DetachRolePolicy {
        role: "build".into(),
        policy_arn: "arn:aws:iam::aws:policy/AdministratorAccess".into()
    }));
    assert!(plan.changes[0].steps.contains(&Step::UntagRole { role: "build".into(), keys: vec!["owner".into()] }));
}

#[test]
fn a_same_named_resource_the_stack_does_not_own_is_a_conflict_left_untouched() {
    let mut live = converged();
    live.buckets.get_mut("golden-logs").unwrap().tags = Tags::from([("owner".to_owned(), "data-team".to_owned())]);
    let plan = make(&model(STACK), &live, PlanOptions::default());
    assert!(plan.changes.iter().all(|c| c.resource.kind != Kind::Bucket));
    assert_eq!(plan.conflicts.len(), 1);
    assert!(plan.conflicts[0].message.contains("no imagectl:stack tag"), "{:?}", plan.conflicts);
    assert!(plan.blocked());
    // Adopting it is explicit.
    let adopted = STACK.replace("metadata: {name: golden-logs}", "metadata: {name: golden-logs, adopt: true}");
    let plan = make(&model(&adopted), &live, PlanOptions::default());
    assert!(plan.conflicts.is_empty());
    assert!(matches!(&plan.changes[0].steps[..], [Step::PutBucketTagging { tags, .. }] if tags.contains_key("imagectl:stack")));
}

#[test]
fn removed_resources_are_deleted_only_with_prune_and_in_reverse_order() {
    let only_bucket_and_topic = STACK
        .split("---")
        .filter(|doc| !doc.contains("kind: Role") && !doc.contains("kind: InstanceProfile"))
        .collect::<Vec<_>>()
        .join("---");
    let model = model(&only_bucket_and_topic);
    let plan = make(&model, &converged(), PlanOptions::default());
    assert_eq!(actions(&plan), vec![]);
    assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
    let plan = make(&model, &converged(), PlanOptions { prune: true, ..PlanOptions::default() });
    assert_eq!(actions(&plan), vec![("InstanceProfile/build".into(), Action::Delete), ("Role/build".into(), Action::Delete)]);
    assert_eq!(plan.changes[1].after, vec![ResourceId::new(Kind::InstanceProfile, "build")]);
    let role_steps: Vec<String> = plan.changes[1].steps.iter().map(Step::describe).collect();
    assert_eq!(role_steps.last().unwrap(), "delete role build");
}

#[test]
fn destroy_deletes_what_the_stack_owns_except_retained_and_non_empty_buckets() {
    let retained = STACK.replace("metadata: {name: events}", "metadata: {name: events, deletionPolicy: retain}");
    let plan = make(&model(&retained), &converged(), PlanOptions { mode: Mode::Destroy, ..PlanOptions::default() });
    assert_eq!(actions(&plan), vec![("InstanceProfile/build".into(), Action::Delete), ("Role/build".into(), Action::Delete)]);
    let notes: Vec<String> = plan.notes.iter().map(|n| format!("{}: {}", n.resource, n.message)).collect();
    assert!(notes.iter().any(|n| n.starts_with("Topic/events: deletionPolicy: retain")), "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("Bucket/golden-logs: not deleted: it still holds objects")), "{notes:?}");
    let forced = STACK.replace("spec: {expireAfterDays: 90}", "spec: {expireAfterDays: 90, forceDestroy: true}");
    let plan = make(&model(&forced), &converged(), PlanOptions { mode: Mode::Destroy, ..PlanOptions::default() });
    let bucket = plan.changes.iter().find(|c| c.resource.kind == Kind::Bucket).expect("bucket deleted");
    assert!(matches!(&bucket.steps[..], [Step::EmptyBucket { .. }, Step::DeleteBucket { .. }]));
}

#[test]
fn a_path_change_replaces_the_role_and_the_profile_takes_it_back() {
    let moved = STACK.replace("  assumedBy: [ec2.amazonaws.com]", "  path: /imagectl/\n  assumedBy: [ec2.amazonaws.com]");
    let plan = make(&model(&moved), &converged(), PlanOptions::default());
    assert_eq!(actions(&plan), vec![("Role/build".into(), Action::Replace), ("InstanceProfile/build".into(), Action::Update)]);
    assert_eq!(plan.changes[0].reason.as_deref(), Some("path forces replacement (/ → /imagectl/)"));
    assert!(plan.changes[0].fields.iter().any(|f| f.field == "path" && f.forces_replacement));
    assert!(plan.changes[1].steps.contains(&Step::AddRoleToInstanceProfile { profile: "build".into(), role: "build".into() }));
    assert_eq!(plan.changes[1].after, vec![ResourceId::new(Kind::Role, "build")]);
}

#[test]
fn targets_plan_a_resource_with_what_it_depends_on() {
    let options = PlanOptions { targets: BTreeSet::from([ResourceId::new(Kind::InstanceProfile, "build")]), ..PlanOptions::default() };
    let plan = make(&model(STACK), &empty_account(), options);
    assert_eq!(actions(&plan), vec![("Role/build".into(), Action::Create), ("InstanceProfile/build".into(), Action::Create)]);
}

#[test]
fn a_missing_external_reference_is_a_plan_error_naming_the_field() {
    let external = STACK.replace("spec: {role: build}", "spec: {role: \"arn:aws:iam::123456789012:role/elsewhere\"}");
    let mut live = empty_account();
    live.external.insert("arn:aws:iam::123456789012:role/elsewhere".into(), false);
    let error = plan(&model(&external), &live, &PlanOptions::default(), &[]).unwrap_err();
    let message = error.diagnostics[0].to_string();
    assert!(message.starts_with("stack.yaml:"), "{message}");
    assert!(message.contains("InstanceProfile/build: spec.role: `arn:aws:iam::123456789012:role/elsewhere` does not exist"), "{message}");
}

#[test]
fn the_json_form_is_stable() {
    let changed = STACK.replace("expireAfterDays: 90", "expireAfterDays: 30");
    let plan = make(&model(&changed), &converged(), PlanOptions::default());
    insta::assert_json_snapshot!("bucket_update_json", render::json(&plan));
}

#[test]
fn the_live_digest_changes_when_the_live_object_does() {
    let before = make(&model(STACK), &converged(), PlanOptions::default());
    let mut live = converged();
    live.roles.get_mut("build").unwrap().description = Some("edited by hand".into());
    let after = make(&model(STACK), &live, PlanOptions::default());
    let role = ResourceId::new(Kind::Role, "build");
    assert_ne!(before.inputs.live[&role], after.inputs.live[&role]);
    let bucket = ResourceId::new(Kind::Bucket, "golden-logs");
    assert_eq!(before.inputs.live[&bucket], after.inputs.live[&bucket]);
}
