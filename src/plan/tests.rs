//! Planner tests: manifests and hand-written live snapshots in, plans out. No AWS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::json;

use super::render::{self, Palette};
use super::*;
use crate::live::{BucketSettings, LiveBucket, LiveInstanceProfile, LiveRole, LiveState, LiveTopic};
use crate::model::{AccountId, AmiId, Subscription};

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
    model_in(Path::new("stack.yaml"), text)
}

/// Parses and validates `text` as if it were the file `file` (package paths resolve beside it).
fn model_in(file: &Path, text: &str) -> Model {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    crate::manifest::parse_file(file, text, &mut documents, &mut problems);
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
    let Step::Subscribe { topic_arn, .. } = &plan.changes[3].steps[1] else {
        panic!("topic subscribes after creation")
    };
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
    assert_eq!(
        actions(&plan),
        vec![("Role/build".into(), Action::Update), ("Bucket/golden-logs".into(), Action::Update)]
    );
    assert!(plan.changes[0].steps.contains(&Step::DetachRolePolicy {
        role: "build".into(),
        policy_arn: "arn:aws:iam::aws:policy/AdministratorAccess".into()
    }));
    assert!(plan.changes[0].steps.contains(&Step::UntagRole { role: "build".into(), keys: vec!["owner".into()] }));
}

#[test]
fn missing_default_encryption_is_planned_as_added_not_diffed_against_null() {
    let mut live = converged();
    live.buckets.get_mut("golden-logs").unwrap().settings.as_mut().unwrap().encryption = None;
    let plan = make(&model(STACK), &live, PlanOptions::default());
    assert_eq!(actions(&plan), vec![("Bucket/golden-logs".into(), Action::Update)]);
    let field = plan.changes[0].fields.iter().find(|f| f.field == "encryption").expect("encryption is planned");
    assert_eq!((&field.before, &field.after), (&None, &Some(json!({"algorithm": "s3"}))));
    let text = render::text(&plan, &Palette::plain());
    assert!(!text.contains("null"), "{text}");
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
    assert!(
        matches!(&plan.changes[0].steps[..], [Step::PutBucketTagging { tags, .. }] if tags.contains_key("imagectl:stack"))
    );
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
    assert_eq!(
        actions(&plan),
        vec![("InstanceProfile/build".into(), Action::Delete), ("Role/build".into(), Action::Delete)]
    );
    assert_eq!(plan.changes[1].after, vec![ResourceId::new(Kind::InstanceProfile, "build")]);
    let role_steps: Vec<String> = plan.changes[1].steps.iter().map(Step::describe).collect();
    assert_eq!(role_steps.last().unwrap(), "delete role build");
}

#[test]
fn destroy_deletes_what_the_stack_owns_except_retained_and_non_empty_buckets() {
    let retained = STACK.replace("metadata: {name: events}", "metadata: {name: events, deletionPolicy: retain}");
    let plan = make(&model(&retained), &converged(), PlanOptions { mode: Mode::Destroy, ..PlanOptions::default() });
    assert_eq!(
        actions(&plan),
        vec![("InstanceProfile/build".into(), Action::Delete), ("Role/build".into(), Action::Delete)]
    );
    let notes: Vec<String> = plan.notes.iter().map(|n| format!("{}: {}", n.resource, n.message)).collect();
    assert!(notes.iter().any(|n| n.starts_with("Topic/events: deletionPolicy: retain")), "{notes:?}");
    assert!(
        notes.iter().any(|n| n.starts_with("Bucket/golden-logs: not deleted: it still holds objects")),
        "{notes:?}"
    );
    let forced = STACK.replace("spec: {expireAfterDays: 90}", "spec: {expireAfterDays: 90, forceDestroy: true}");
    let plan = make(&model(&forced), &converged(), PlanOptions { mode: Mode::Destroy, ..PlanOptions::default() });
    let bucket = plan.changes.iter().find(|c| c.resource.kind == Kind::Bucket).expect("bucket deleted");
    assert!(matches!(&bucket.steps[..], [Step::EmptyBucket { .. }, Step::DeleteBucket { .. }]));
}

#[test]
fn a_path_change_replaces_the_role_and_the_profile_takes_it_back() {
    let moved =
        STACK.replace("  assumedBy: [ec2.amazonaws.com]", "  path: /imagectl/\n  assumedBy: [ec2.amazonaws.com]");
    let plan = make(&model(&moved), &converged(), PlanOptions::default());
    assert_eq!(
        actions(&plan),
        vec![("Role/build".into(), Action::Replace), ("InstanceProfile/build".into(), Action::Update)]
    );
    assert_eq!(plan.changes[0].reason.as_deref(), Some("path forces replacement (/ → /imagectl/)"));
    assert!(plan.changes[0].fields.iter().any(|f| f.field == "path" && f.forces_replacement));
    assert!(plan.changes[1]
        .steps
        .contains(&Step::AddRoleToInstanceProfile { profile: "build".into(), role: "build".into() }));
    assert_eq!(plan.changes[1].after, vec![ResourceId::new(Kind::Role, "build")]);
}

#[test]
fn targets_plan_a_resource_with_what_it_depends_on() {
    let options = PlanOptions {
        targets: BTreeSet::from([ResourceId::new(Kind::InstanceProfile, "build")]),
        ..PlanOptions::default()
    };
    let plan = make(&model(STACK), &empty_account(), options);
    assert_eq!(
        actions(&plan),
        vec![("Role/build".into(), Action::Create), ("InstanceProfile/build".into(), Action::Create)]
    );
}

#[test]
fn a_missing_external_reference_is_a_plan_error_naming_the_field() {
    let external = STACK.replace("spec: {role: build}", "spec: {role: \"arn:aws:iam::123456789012:role/elsewhere\"}");
    let mut live = empty_account();
    live.external.insert("arn:aws:iam::123456789012:role/elsewhere".into(), false);
    let error = plan(&model(&external), &live, &PlanOptions::default(), &[]).unwrap_err();
    let message = error.diagnostics[0].to_string();
    assert!(message.starts_with("stack.yaml:"), "{message}");
    assert!(
        message.contains("InstanceProfile/build: spec.role: `arn:aws:iam::123456789012:role/elsewhere` does not exist"),
        "{message}"
    );
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

// ---- Package groups and private images ----

const IMAGE_STACK: &str = r#"
apiVersion: imagectl/v1
kind: Stack
metadata: {name: golden}
spec: {region: us-east-1}
---
apiVersion: imagectl/v1
kind: Role
metadata: {name: automation}
spec: {assumedBy: [ssm.amazonaws.com]}
---
apiVersion: imagectl/v1
kind: Role
metadata: {name: build}
spec: {assumedBy: [ec2.amazonaws.com]}
---
apiVersion: imagectl/v1
kind: InstanceProfile
metadata: {name: build}
spec: {role: build}
---
apiVersion: imagectl/v1
kind: Bucket
metadata: {name: golden-logs}
spec: {}
---
apiVersion: imagectl/v1
kind: Bucket
metadata: {name: golden-artifacts}
spec: {}
---
apiVersion: imagectl/v1
kind: PackageGroup
metadata: {name: acme-agent-r1}
spec:
  platform: linux
  operatingSystems: [amazon-linux-2023]
  artifactsBucket: golden-artifacts
  packages:
    - path: packages/acme-agent-2.4.0.tar.gz
    - {path: packages/install.sh, installer: true}
---
apiVersion: imagectl/v1
kind: PrivateImage
metadata: {name: web-base}
spec:
  baseImage: {lookup: {owners: [amazon], name: "al2023-ami-*-x86_64"}}
  packageGroup: acme-agent-r1
  instanceProfile: build
  automationRole: automation
  logsBucket: golden-logs
  imageName: web-base
  tags: {tier: web}
"#;

/// Parsed as if it sat in examples/golden-image, so that its package paths resolve to the example's files.
fn image_model(text: &str) -> Model {
    model_in(Path::new("examples/golden-image/test.yaml"), text)
}

fn base_query(model: &Model) -> crate::live::BaseImageQuery {
    let Some(Resource::PrivateImage(image)) = model.resources.get(&ResourceId::new(Kind::PrivateImage, "web-base"))
    else {
        panic!("web-base is in the stack")
    };
    crate::live::BaseImageQuery::for_image(image).expect("a lookup")
}

fn with_base(model: &Model, id: &str, platform: Option<&str>) -> LiveState {
    let mut live = empty_account();
    live.base_images.insert(
        base_query(model).key(),
        crate::live::LiveBaseImage {
            id: AmiId::parse(id).unwrap(),
            name: "al2023-ami-2023.6-x86_64".into(),
            state: "available".into(),
            platform: platform.map(str::to_owned),
            architecture: "x86_64".into(),
            root_device_type: "ebs".into(),
        },
    );
    live
}

fn build_of(plan: &Plan) -> &crate::build::BuildPlan {
    plan.changes
        .iter()
        .find_map(|c| match &c.steps[..] {
            [Step::BuildImage { build, .. }] => Some(build.as_ref()),
            _ => None,
        })
        .expect("a build is planned")
}

/// The live image a successful build of `plan` leaves behind.
fn image_built_by(plan: &crate::build::BuildPlan, id: &str) -> crate::live::LiveImage {
    crate::live::LiveImage {
        id: id.into(),
        region: plan.region.clone(),
        name: plan.ami_name.clone(),
        state: "available".into(),
        description: None,
        creation_date: "2026-11-24T00:00:00Z".into(),
        snapshot_ids: vec!["snap-1".into()],
        tags: plan.tags.clone(),
        encrypted: false,
        kms_key_id: None,
        deprecation_time: None,
        deregistration_protection: false,
    }
}

fn bound(model: &Model, live: &mut LiveState) {
    let Some(Resource::PackageGroup(group)) =
        model.resources.get(&ResourceId::new(Kind::PackageGroup, "acme-agent-r1"))
    else {
        panic!("group")
    };
    live.package_groups.insert(
        group.name.clone(),
        Some(crate::build::PackageGroupRecord {
            name: group.name.clone(),
            content_digest: group.content_digest.clone(),
            packages: BTreeMap::new(),
            installer: "install.sh".into(),
            stack: "golden".into(),
        }),
    );
    let keys = group.packages.iter().map(|p| crate::build::package_key(&p.sha256, &p.file_name)).collect();
    live.packages_present.insert("golden-artifacts".into(), keys);
}

#[test]
fn a_new_image_uploads_its_packages_binds_the_group_and_builds_after_its_dependencies() {
    let model = image_model(IMAGE_STACK);
    let plan = make(&model, &with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None), PlanOptions::default());
    let group = plan.changes.iter().find(|c| c.resource.kind == Kind::PackageGroup).expect("group planned");
    assert!(matches!(
        &group.steps[..],
        [Step::UploadPackage { .. }, Step::UploadPackage { .. }, Step::BindPackageGroup { .. }]
    ));
    let image = plan.changes.iter().find(|c| c.resource.kind == Kind::PrivateImage).expect("image planned");
    assert_eq!(image.action, Action::Create);
    for needed in ["PackageGroup/acme-agent-r1", "InstanceProfile/build", "Role/automation", "Bucket/golden-logs"] {
        assert!(image.after.iter().any(|a| a.to_string() == needed), "{needed} in {:?}", image.after);
    }
    let build = build_of(&plan);
    assert_eq!(build.base_image.as_str(), "ami-0aaaaaaaaaaaaaaaa");
    assert_eq!(build.revision, 1);
    assert!(build.ami_name.starts_with("web-base-r0001-"), "{}", build.ami_name);
    assert_eq!(build.automation_role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/automation"));
    assert_eq!(build.tags.get("imagectl:resource").map(String::as_str), Some("PrivateImage/web-base"));
    assert_eq!(build.tags.get("tier").map(String::as_str), Some("web"));
    assert_eq!(build.tags.get("imagectl:build-id"), Some(&build.build_id));
}

#[test]
fn an_image_of_the_same_fingerprint_is_a_no_op_and_tags_change_in_place() {
    let model = image_model(IMAGE_STACK);
    let mut live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    let first = make(&model, &live, PlanOptions::default());
    live.images.push(image_built_by(build_of(&first), "ami-0bbbbbbbbbbbbbbbb"));
    bound(&model, &mut live);
    let plan = make(&model, &live, PlanOptions::default());
    assert!(
        plan.changes.iter().all(|c| c.resource.kind != Kind::PrivateImage && c.resource.kind != Kind::PackageGroup),
        "{:?}",
        actions(&plan)
    );
    let retagged = image_model(&IMAGE_STACK.replace("tags: {tier: web}", "tags: {tier: frontend}"));
    let plan = make(&retagged, &live, PlanOptions::default());
    let image = plan.changes.iter().find(|c| c.resource.kind == Kind::PrivateImage).expect("tags update");
    assert_eq!(image.action, Action::Update);
    assert!(
        matches!(&image.steps[..], [Step::TagImage { tags, .. }] if tags.get("tier").map(String::as_str) == Some("frontend"))
    );
}

#[test]
fn a_new_base_image_or_setting_plans_a_replacement_with_the_reason() {
    let model = image_model(IMAGE_STACK);
    let mut live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    let first = make(&model, &live, PlanOptions::default());
    live.images.push(image_built_by(build_of(&first), "ami-0bbbbbbbbbbbbbbbb"));
    bound(&model, &mut live);
    let mut newer = live.clone();
    newer.base_images.get_mut(&base_query(&model).key()).unwrap().id = AmiId::parse("ami-0cccccccccccccccc").unwrap();
    let plan = make(&model, &newer, PlanOptions::default());
    let image = plan.changes.iter().find(|c| c.resource.kind == Kind::PrivateImage).expect("rebuild");
    assert_eq!(image.action, Action::Replace);
    assert_eq!(image.reason.as_deref(), Some("base image changed ami-0aaaaaaaaaaaaaaaa → ami-0cccccccccccccccc"));
    assert_eq!(build_of(&plan).revision, 2);
    let base_field =
        |change: &Change| change.fields.iter().find(|f| f.field == "baseImage").cloned().expect("baseImage shown");
    assert_eq!(base_field(image).before, Some(json!("ami-0aaaaaaaaaaaaaaaa")));
    let larger =
        image_model(&IMAGE_STACK.replace("  imageName: web-base", "  imageName: web-base\n  instanceType: t3.large"));
    let plan = make(&larger, &live, PlanOptions::default());
    let image = plan.changes.iter().find(|c| c.resource.kind == Kind::PrivateImage).unwrap();
    assert_eq!(image.reason.as_deref(), Some("instanceType changed t3.medium → t3.large"));
    // The same base: shown as what the new image is built on, not as a change from itself to itself.
    assert_eq!(base_field(image).before, None);
}

#[test]
fn reusing_a_package_group_name_with_other_content_is_refused() {
    let model = image_model(IMAGE_STACK);
    let mut live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    bound(&model, &mut live);
    if let Some(Some(record)) = live.package_groups.get_mut("acme-agent-r1") {
        record.content_digest = "0".repeat(64);
    }
    let error = plan(&model, &live, &PlanOptions::default(), &[]).unwrap_err();
    let message = error.diagnostics[0].to_string();
    assert!(message.contains("PackageGroup/acme-agent-r1: metadata.name: package group `acme-agent-r1` was first used with other content"), "{message}");
    assert!(message.contains("help: bump the revision in the name, e.g. acme-agent-r2"), "{message}");
}

#[test]
fn a_build_in_progress_is_resumed_not_duplicated() {
    let model = image_model(IMAGE_STACK);
    let live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    let first = make(&model, &live, PlanOptions::default());
    let build = build_of(&first).clone();
    let mut running = live.clone();
    running.build_instances.push(crate::live::LiveBuildInstance {
        id: "i-0123".into(),
        region: build.region.clone(),
        state: "running".into(),
        launch_time: "2026-11-24T00:00:00Z".into(),
        tags: build.tags.clone(),
    });
    let plan = make(&model, &running, PlanOptions::default());
    let resumed = build_of(&plan);
    assert_eq!(resumed.build_id, build.build_id);
    let image = plan.changes.iter().find(|c| c.resource.kind == Kind::PrivateImage).unwrap();
    assert_eq!(image.reason.as_deref(), Some(format!("resumes build {}, in progress", build.build_id).as_str()));
}

#[test]
fn a_build_started_without_waiting_is_not_published_before_it_is_captured() {
    let model = image_model(
        &IMAGE_STACK
            .replace("  imageName: web-base", "  imageName: web-base\n  publish: {parameter: /golden/web-base}"),
    );
    let live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    let waiting = make(&model, &live, PlanOptions::default());
    assert!(waiting.changes.iter().any(|c| c.resource.name == "web-base/publish"), "{:?}", actions(&waiting));
    let started = make(&model, &live, PlanOptions { no_wait: true, ..PlanOptions::default() });
    assert!(matches!(&build_of(&started).build_id, id if id.starts_with("web-base-r1-")));
    // The image does not exist when this apply ends: nothing may be published from it yet.
    assert!(started.changes.iter().all(|c| c.resource.name != "web-base/publish"), "{:?}", actions(&started));
    let note = format!(
        "build {} only starts (--no-wait): its copies, shares and published ID follow on the apply that captures it",
        build_of(&started).build_id
    );
    assert!(started.notes.iter().any(|n| n.message == note), "{:?}", started.notes);
}

#[test]
fn a_build_that_found_issues_is_not_retried_until_something_changes() {
    let model = image_model(IMAGE_STACK);
    let mut live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    let build = build_of(&make(&model, &live, PlanOptions::default())).clone();
    live.build_reports.insert(
        build.build_id.clone(),
        crate::live::BuildReports {
            status: None,
            result: Some(crate::build::InstanceResult {
                build_id: build.build_id.clone(),
                exit_code: Some(3),
                timed_out: false,
                reboot_attempted: false,
                duration_seconds: 2,
                error: None,
                scan: None,
                generalized: false,
            }),
        },
    );
    let plan = make(&model, &live, PlanOptions::default());
    assert!(plan.changes.iter().all(|c| c.resource.kind != Kind::PrivateImage));
    let log =
        format!("the installer exited with 3; log: s3://golden-logs/imagectl/builds/{}/install.log;", build.build_id);
    assert!(plan.notes.iter().any(|n| n.message.contains(&format!("Issues Found: {log}"))), "{:?}", plan.notes);
    // An infrastructure failure is retried, as a new revision.
    if let Some(reports) = live.build_reports.get_mut(&build.build_id) {
        reports.result.as_mut().unwrap().timed_out = true;
    }
    let retried = make(&model, &live, PlanOptions::default());
    assert_eq!(build_of(&retried).revision, 2);
}

#[test]
fn a_base_image_of_the_other_platform_is_refused() {
    let model = image_model(IMAGE_STACK);
    let error =
        plan(&model, &with_base(&model, "ami-0aaaaaaaaaaaaaaaa", Some("windows")), &PlanOptions::default(), &[])
            .unwrap_err();
    assert!(
        error.diagnostics[0].message.contains("is a Windows image, but the package group is for Linux"),
        "{:?}",
        error.diagnostics
    );
}

// ---- Distribution: copies, shares, published IDs, retention ----

fn distribution_stack(extra: &str) -> String {
    format!(
        "{IMAGE_STACK}  publish: {{parameter: /images/web-base}}\n  retention: {{keep: 1}}\n---\n\
apiVersion: imagectl/v1\nkind: ImageCopy\nmetadata: {{name: replicas}}\nspec: {{source: web-base, regions: [eu-west-1, ap-southeast-2]}}\n---\n\
apiVersion: imagectl/v1\nkind: ImageShare\nmetadata: {{name: consumers}}\nspec:\n  image: web-base\n  accounts: [\"111122223333\", \"444455556666\"]\n{extra}"
    )
}

/// The live state once `model`'s image exists (built as `ami-0bbb…`), with nothing distributed yet.
fn built(model: &Model) -> (LiveState, crate::build::BuildPlan) {
    let mut live = with_base(model, "ami-0aaaaaaaaaaaaaaaa", None);
    let build = build_of(&make(model, &live, PlanOptions::default())).clone();
    live.images.push(image_built_by(&build, "ami-0bbbbbbbbbbbbbbbb"));
    bound(model, &mut live);
    (live, build)
}

/// Applies a distribution plan's effects to a live snapshot by hand: the copies, permissions and parameters it sets.
fn distributed(plan: &Plan, mut live: LiveState) -> LiveState {
    let mut next_id = 0xc0;
    for change in &plan.changes {
        for step in &change.steps {
            match step {
                Step::CopyImage { region, name, tags, .. } => {
                    next_id += 1;
                    live.images.push(crate::live::LiveImage {
                        id: format!("ami-0{next_id:016x}"),
                        region: region.clone(),
                        name: name.clone(),
                        state: "available".into(),
                        description: None,
                        creation_date: "2026-11-24T00:00:00Z".into(),
                        snapshot_ids: vec![],
                        tags: tags.clone(),
                        encrypted: false,
                        kms_key_id: None,
                        deprecation_time: None,
                        deregistration_protection: false,
                    });
                }
                Step::SetLaunchPermissions { image: super::step::ImageRef::Id(id), add, .. } => {
                    live.launch_permissions.insert(id.clone(), add.clone());
                }
                _ => {}
            }
        }
    }
    live
}

/// The image-related changes (the fixtures leave roles and buckets out of the live state).
fn step_kinds(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| matches!(c.resource.kind, Kind::PrivateImage | Kind::ImageCopy | Kind::ImageShare))
        .map(|c| format!("{} {:?} {}", c.resource, c.action, c.steps.len()))
        .collect()
}

#[test]
fn copies_are_planned_per_region_then_shares_then_the_published_ids() {
    let model = image_model(&distribution_stack(""));
    let (live, _) = built(&model);
    let plan = make(&model, &live, PlanOptions::default());
    assert_eq!(
        step_kinds(&plan),
        vec![
            "ImageCopy/replicas/ap-southeast-2 Create 1",
            "ImageCopy/replicas/eu-west-1 Create 1",
            "ImageShare/consumers Update 3",
            "PrivateImage/web-base/publish Create 3",
        ]
    );
    let copy = plan.changes.iter().find(|c| c.resource.kind == Kind::ImageCopy).unwrap();
    let Step::CopyImage { source, source_region, tags, .. } = &copy.steps[0] else { panic!("a copy") };
    assert_eq!(source, &super::step::ImageRef::Id("ami-0bbbbbbbbbbbbbbbb".into()));
    assert_eq!(source_region.as_str(), "us-east-1");
    assert_eq!(tags.get("imagectl:resource").map(String::as_str), Some("ImageCopy/replicas"));
    let share = plan.changes.iter().find(|c| c.resource.kind == Kind::ImageShare).unwrap();
    assert_eq!(share.after.len(), 2, "the share waits for both copies: {:?}", share.after);
    let refs: Vec<String> = share
        .steps
        .iter()
        .map(|s| match s {
            Step::SetLaunchPermissions { image, region, add, .. } => {
                assert_eq!(add.accounts.len(), 2);
                format!("{region} {image}")
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(refs[0].starts_with("us-east-1 ami-0bbb"), "{refs:?}");
    assert!(refs[1..].iter().all(|r| r.contains("the ImageCopy/replicas copy of web-base-r1-")), "{refs:?}");
    let publish = plan.changes.iter().find(|c| c.resource.to_string() == "PrivateImage/web-base/publish").unwrap();
    assert!(publish.after.contains(&ResourceId::new(Kind::ImageShare, "consumers")));
}

#[test]
fn distribution_converges_and_changes_exactly_what_changed() {
    let model = image_model(&distribution_stack(""));
    let (live, _) = built(&model);
    let live = distributed(&make(&model, &live, PlanOptions::default()), live);
    let mut live = live;
    // What the share's CopyOf steps would have granted once the copies existed.
    let copy_ids: Vec<String> =
        live.images.iter().filter(|i| i.region.as_str() != "us-east-1").map(|i| i.id.clone()).collect();
    let granted = live.launch_permissions.values().next().cloned().unwrap();
    for id in &copy_ids {
        live.launch_permissions.insert(id.clone(), granted.clone());
    }
    for image in live.images.clone() {
        live.parameters.entry(image.region.clone()).or_default().insert("/images/web-base".into(), image.id.clone());
    }
    let plan = make(&model, &live, PlanOptions::default());
    assert_eq!(step_kinds(&plan), Vec::<String>::new());

    // Adding a region creates exactly one copy (and shares and publishes it there).
    let wider = image_model(
        &distribution_stack("")
            .replace("regions: [eu-west-1, ap-southeast-2]", "regions: [eu-west-1, ap-southeast-2, ca-central-1]"),
    );
    let plan = make(&wider, &live, PlanOptions::default());
    assert_eq!(
        step_kinds(&plan),
        vec![
            "ImageCopy/replicas/ca-central-1 Create 1",
            "ImageShare/consumers Update 1",
            "PrivateImage/web-base/publish Update 1"
        ]
    );

    // Removing an account removes exactly that permission, everywhere.
    let fewer =
        image_model(&distribution_stack("").replace("[\"111122223333\", \"444455556666\"]", "[\"111122223333\"]"));
    let plan = make(&fewer, &live, PlanOptions::default());
    assert_eq!(step_kinds(&plan), vec!["ImageShare/consumers Update 3"]);
    for step in &plan.changes.iter().find(|c| c.resource.kind == Kind::ImageShare).unwrap().steps {
        let Step::SetLaunchPermissions { add, remove, .. } = step else { panic!() };
        assert!(add.is_empty());
        assert_eq!(remove.accounts, BTreeSet::from(["444455556666".to_owned()]));
    }

    // A region removed from the list deletes that region's copy.
    let narrower =
        image_model(&distribution_stack("").replace("regions: [eu-west-1, ap-southeast-2]", "regions: [eu-west-1]"));
    let plan = make(&narrower, &live, PlanOptions::default());
    let gone =
        plan.changes.iter().find(|c| c.resource.to_string() == "ImageCopy/replicas/ap-southeast-2").expect("delete");
    assert_eq!(gone.action, Action::Delete);
    assert!(matches!(&gone.steps[..], [Step::DeregisterImage { .. }]));
}

#[test]
fn a_rebuild_is_copied_shared_published_then_old_images_are_retired() {
    let model = image_model(&distribution_stack(""));
    let (live, _) = built(&model);
    let mut live = distributed(&make(&model, &live, PlanOptions::default()), live);
    live.base_images.get_mut(&base_query(&model).key()).unwrap().id = AmiId::parse("ami-0cccccccccccccccc").unwrap();
    let plan = make(&model, &live, PlanOptions::default());
    let order: Vec<String> = plan.changes.iter().map(|c| c.resource.to_string()).collect();
    let position = |name: &str| order.iter().position(|o| o == name).unwrap_or_else(|| panic!("{name} in {order:?}"));
    assert!(position("PrivateImage/web-base") < position("ImageCopy/replicas/eu-west-1"));
    assert!(position("ImageCopy/replicas/eu-west-1") < position("ImageShare/consumers"));
    assert!(position("ImageShare/consumers") < position("PrivateImage/web-base/publish"));
    assert!(position("PrivateImage/web-base/publish") < position("PrivateImage/web-base/retention"));
    let build = build_of(&plan).build_id.clone();
    let Step::CopyImage { source, .. } = &plan.changes[position("ImageCopy/replicas/eu-west-1")].steps[0] else {
        panic!()
    };
    assert_eq!(source, &super::step::ImageRef::Build { build_id: build.clone() });
    // keep: 1 and a new image coming: the old image and both its copies go, with their snapshots.
    let retention = &plan.changes[position("PrivateImage/web-base/retention")];
    let deregistered: Vec<&str> = retention
        .steps
        .iter()
        .map(|s| match s {
            Step::DeregisterImage { region, .. } => region.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(deregistered.len(), 3, "{deregistered:?}");
    assert!(retention.after.contains(&ResourceId::new(Kind::PrivateImage, "web-base")));
    // An image still in use is kept, and the plan says why.
    live.images_in_use.insert("ami-0bbbbbbbbbbbbbbbb".into(), "instance i-0abc (running)".into());
    let plan = make(&model, &live, PlanOptions::default());
    assert!(plan.changes.iter().all(|c| c.resource.to_string() != "PrivateImage/web-base/retention"));
    assert!(
        plan.notes.iter().any(|n| n.message.contains(
            "keeps ami-0bbbbbbbbbbbbbbbb beyond retention (1 kept): it is in use by instance i-0abc (running)"
        )),
        "{:?}",
        plan.notes
    );
}

#[test]
fn deprecation_and_protection_requests_are_planned_for_kept_images() {
    let model = image_model(&distribution_stack("").replace(
        "retention: {keep: 1}",
        "retention: {keep: 2, deprecateAfterDays: 30, deregistrationProtection: true}",
    ));
    let (live, _) = built(&model);
    let plan = make(&model, &live, PlanOptions::default());
    let retention =
        plan.changes.iter().find(|c| c.resource.to_string() == "PrivateImage/web-base/retention").expect("retention");
    assert!(retention.steps.contains(&Step::EnableImageDeprecation {
        image_id: "ami-0bbbbbbbbbbbbbbbb".into(),
        region: Region::parse("us-east-1").unwrap(),
        deprecate_at: "2026-12-24T00:00:00Z".into()
    }));
    assert!(retention.steps.contains(&Step::EnableDeregistrationProtection {
        image_id: "ami-0bbbbbbbbbbbbbbbb".into(),
        region: Region::parse("us-east-1").unwrap()
    }));
}

// ---- Package-group test builds ----

fn with_test_builds() -> String {
    IMAGE_STACK.replace(
        "    - {path: packages/install.sh, installer: true}\n",
        "    - {path: packages/install.sh, installer: true}\n  testBuilds:\n    instanceProfile: build\n    automationRole: automation\n    logsBucket: golden-logs\n    baseImages:\n      amazon-linux-2023: {parameter: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64}\n",
    )
}

fn test_build_query(model: &Model) -> crate::live::BaseImageQuery {
    let Some(Resource::PackageGroup(group)) =
        model.resources.get(&ResourceId::new(Kind::PackageGroup, "acme-agent-r1"))
    else {
        panic!()
    };
    let tests = group.test_builds.as_ref().unwrap();
    crate::live::BaseImageQuery::new(tests.region.clone(), &tests.base_images["amazon-linux-2023"]).unwrap()
}

#[test]
fn test_builds_run_one_build_per_operating_system_and_drop_their_images() {
    let model = image_model(&with_test_builds());
    let mut live = with_base(&model, "ami-0aaaaaaaaaaaaaaaa", None);
    let base = live.base_images.values().next().unwrap().clone();
    live.base_images.insert(test_build_query(&model).key(), base);
    let plan = make(&model, &live, PlanOptions::default());
    let test = plan
        .changes
        .iter()
        .find(|c| c.resource.to_string() == "PackageGroup/acme-agent-r1/test/amazon-linux-2023")
        .expect("test build");
    let [Step::BuildImage { build, .. }] = &test.steps[..] else { panic!("one build") };
    assert!(!build.keep_image);
    assert!(build.build_id.starts_with("acme-agent-r1-amazon-linux-2023-r1-"), "{}", build.build_id);
    assert_eq!(build.tags.get("imagectl:operating-system").map(String::as_str), Some("amazon-linux-2023"));
    assert_eq!(build.tags.get("imagectl:resource").map(String::as_str), Some("PackageGroup/acme-agent-r1"));
    assert!(test.after.contains(&ResourceId::new(Kind::PackageGroup, "acme-agent-r1")));
    // Once its report says it passed, the test build is done and not repeated.
    live.build_reports.insert(
        build.build_id.clone(),
        crate::live::BuildReports {
            status: None,
            result: Some(crate::build::InstanceResult {
                build_id: build.build_id.clone(),
                exit_code: Some(0),
                timed_out: false,
                reboot_attempted: false,
                duration_seconds: 1,
                error: None,
                scan: Some(crate::build::ScanResult { passed: true, findings: vec![] }),
                generalized: true,
            }),
        },
    );
    let plan = make(&model, &live, PlanOptions::default());
    assert!(plan.changes.iter().all(|c| !c.resource.name.contains("/test/")), "{:?}", actions(&plan));
}

#[test]
fn destroy_deregisters_the_stacks_images_except_retained_or_in_use_ones() {
    let model = image_model(&distribution_stack(""));
    let (live, _) = built(&model);
    let mut live = distributed(&make(&model, &live, PlanOptions::default()), live);
    let plan = make(&model, &live, PlanOptions { mode: Mode::Destroy, ..PlanOptions::default() });
    let image = plan
        .changes
        .iter()
        .find(|c| c.resource.to_string() == "PrivateImage/web-base/images")
        .expect("images deregistered");
    assert!(
        matches!(&image.steps[..], [Step::DeregisterImage { image_id, .. }] if image_id == "ami-0bbbbbbbbbbbbbbbb")
    );
    let copies = plan
        .changes
        .iter()
        .find(|c| c.resource.to_string() == "ImageCopy/replicas/images")
        .expect("copies deregistered");
    assert_eq!(copies.steps.len(), 2);
    live.images_in_use.insert("ami-0bbbbbbbbbbbbbbbb".into(), "instance i-1 (running)".into());
    let retained = image_model(
        &distribution_stack("")
            .replace("metadata: {name: replicas}", "metadata: {name: replicas, deletionPolicy: retain}"),
    );
    let plan = make(&retained, &live, PlanOptions { mode: Mode::Destroy, ..PlanOptions::default() });
    assert!(
        plan.changes.iter().all(|c| c.resource.kind != Kind::ImageCopy && c.resource.kind != Kind::PrivateImage),
        "{:?}",
        actions(&plan)
    );
    assert!(plan.notes.iter().any(|n| n.message.contains("in use by instance i-1")), "{:?}", plan.notes);
}
