//! The AWS side of distribution against the emulator: copies to other regions, launch and snapshot permissions,
//! published AMI IDs, deregistration with snapshots, usage by instances and launch templates, and the requests
//! the emulator does not implement (deprecation, deregistration protection).
//!
//! Source images are captured with boto3 (RunInstances + CreateImage), tagged as a build of stack `web` would tag
//! them; everything else goes through the product's own steps and `read_live`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imagectl::aws::Aws;
use imagectl::build::tags as build_tags;
use imagectl::live::{LaunchPermissions, ReadScope, RESOURCE_TAG, STACK_TAG};
use imagectl::model::{Region, Tags};
use imagectl::plan::step::{ImageRef, Step};
use serde_json::Value;

use crate::support::boto3::python_async;
use crate::support::sdk::{region, tags, with_emulator};
use crate::support::Emulator;

const STACK: &str = "web";
const BUILD: &str = "base-r1-aaaaaaaa";
const COPY: &str = "ImageCopy/base-copies";
const COPY_NAME: &str = "base-r0001-aaaaaaaa";
const ACCOUNT_A: &str = "111111111111";
const ACCOUNT_B: &str = "222222222222";
const ORG: &str = "arn:aws:organizations::999999999999:organization/o-abcdefghij";
const OU: &str = "arn:aws:organizations::999999999999:ou/o-abcdefghij/ou-ab12-cdefghij";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn python_json(emulator: &Arc<Emulator>, script: String) -> Value {
    serde_json::from_str(python_async(emulator, script).await.trim()).unwrap()
}

async fn run(aws: &Aws, step: &Step) {
    aws.execute(step).await.unwrap_or_else(|e| panic!("{}: {e}", step.describe()));
}

/// An image of stack `web` in us-east-1, captured from an instance as a build does, tagged with `build_id`.
/// Returns its ID and its snapshot's.
async fn stack_image(emulator: &Arc<Emulator>, build_id: &str, name: &str) -> (String, String) {
    let out = python_json(
        emulator,
        format!(
            "base = ec2.register_image(Name='base-{name}', RootDeviceName='/dev/xvda')['ImageId']\n\
             i = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)['Instances'][0]['InstanceId']\n\
             tags = [{{'Key': '{STACK_TAG}', 'Value': '{STACK}'}}, {{'Key': '{RESOURCE_TAG}', 'Value': 'PrivateImage/base'}}, {{'Key': '{}', 'Value': '{build_id}'}}]\n\
             image = ec2.create_image(InstanceId=i, Name='{name}', TagSpecifications=[{{'ResourceType': 'image', 'Tags': tags}}])['ImageId']\n\
             ec2.terminate_instances(InstanceIds=[i])\n\
             snapshot = ec2.describe_images(ImageIds=[image])['Images'][0]['BlockDeviceMappings'][0]['Ebs']['SnapshotId']\n\
             print(json.dumps([image, snapshot]))",
            build_tags::BUILD_ID
        ),
    )
    .await;
    (out[0].as_str().unwrap().to_owned(), out[1].as_str().unwrap().to_owned())
}

/// The tags the planner puts on a copy of build `BUILD`.
fn copy_tags() -> Tags {
    tags(&[
        (STACK_TAG, STACK),
        (RESOURCE_TAG, COPY),
        (build_tags::SOURCE, BUILD),
        (build_tags::SOURCE_IMAGE, &format!("us-east-1:{BUILD}")),
        (build_tags::REVISION, "1"),
        ("team", "platform"),
    ])
}

fn copy_step(to: &str) -> Step {
    Step::CopyImage {
        source: ImageRef::Build { build_id: BUILD.into() },
        source_region: region("us-east-1"),
        region: region(to),
        name: COPY_NAME.into(),
        description: Some("Base image".into()),
        encrypted: false,
        kms_key: None,
        tags: copy_tags(),
        client_token: format!("copy-{BUILD}-{to}"),
    }
}

/// Our images in a region, as boto3 sees them.
async fn images_in(emulator: &Arc<Emulator>, region: &str) -> Vec<Value> {
    let value = python_json(
        emulator,
        format!("print(json.dumps(ec2r('{region}').describe_images(Owners=['self'])['Images'], default=str))"),
    )
    .await;
    value.as_array().unwrap().clone()
}

async fn snapshot_tags(emulator: &Arc<Emulator>, region: &str, snapshot: &str) -> Tags {
    let value = python_json(
        emulator,
        format!("print(json.dumps(ec2r('{region}').describe_snapshots(SnapshotIds=['{snapshot}'])['Snapshots'][0].get('Tags', [])))"),
    )
    .await;
    tag_map(&value)
}

fn tag_map(tags: &Value) -> Tags {
    tags.as_array()
        .map(|a| {
            a.iter().map(|t| (t["Key"].as_str().unwrap().to_owned(), t["Value"].as_str().unwrap().to_owned())).collect()
        })
        .unwrap_or_default()
}

fn scope(regions: &[&str]) -> ReadScope {
    ReadScope { stack: STACK.into(), regions: regions.iter().map(|r| region(r)).collect(), ..ReadScope::default() }
}

#[test]
fn copies_are_tagged_by_imagectl_and_made_once() {
    with_emulator(|emulator, aws| async move {
        let (source, _) = stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        // Both regions at once, as the executor runs copies to different regions.
        let (to_euw1, to_apse2) = (copy_step("eu-west-1"), copy_step("ap-southeast-2"));
        let (a, b) = tokio::join!(aws.execute(&to_euw1), aws.execute(&to_apse2));
        a.unwrap();
        b.unwrap();

        let mut expected = copy_tags();
        // The planner could only name the build; the copy names the AMI it was made from.
        expected.insert(build_tags::SOURCE_IMAGE.into(), format!("us-east-1:{source}"));
        let mut copies = BTreeMap::new();
        for target in ["eu-west-1", "ap-southeast-2"] {
            let images = images_in(&emulator, target).await;
            assert_eq!(images.len(), 1, "one copy in {target}: {images:?}");
            let copy = &images[0];
            assert_eq!(copy["Name"], COPY_NAME);
            assert_eq!(copy["Description"], "Base image");
            // The emulator ignores CopyImage's tag specifications: these are imagectl's own CreateTags.
            assert_eq!(tag_map(&copy["Tags"]), expected, "copy in {target}");
            let snapshot = copy["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"].as_str().unwrap();
            assert_eq!(snapshot_tags(&emulator, target, snapshot).await, expected, "snapshot of the copy in {target}");
            copies.insert(target, copy["ImageId"].as_str().unwrap().to_owned());
        }

        // Again: found by its tags, tags ensured, no second copy. One DescribeImages and one CreateTags.
        let before = emulator.request_count();
        run(&aws, &copy_step("eu-west-1")).await;
        assert_eq!(emulator.request_count() - before, 2, "a copy that exists costs a lookup and a CreateTags");
        assert_eq!(images_in(&emulator, "eu-west-1").await.len(), 1);

        // A copy whose tagging never happened (a run stopped between CopyImage and CreateTags, where tag
        // specifications are not honoured) is found by its name, adopted and tagged: still no second copy.
        let id = &copies["ap-southeast-2"];
        python_async(
            &emulator,
            format!(
                "ec2r('ap-southeast-2').delete_tags(Resources=['{id}'], Tags=[{{'Key': k}} for k in {:?}])",
                copy_tags().keys().collect::<Vec<_>>()
            ),
        )
        .await;
        assert!(tag_map(&images_in(&emulator, "ap-southeast-2").await[0]["Tags"]).is_empty());
        run(&aws, &copy_step("ap-southeast-2")).await;
        let images = images_in(&emulator, "ap-southeast-2").await;
        assert_eq!(images.len(), 1);
        assert_eq!(images[0]["ImageId"].as_str(), Some(id.as_str()));
        assert_eq!(tag_map(&images[0]["Tags"]), expected);

        // read_live finds the source and both copies as the stack's images.
        let live = aws.read_live(&scope(&["us-east-1", "eu-west-1", "ap-southeast-2"])).await.unwrap();
        let found: BTreeSet<&str> = live.images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(found, [source.as_str(), copies["eu-west-1"].as_str(), copies["ap-southeast-2"].as_str()].into());

        // A source that was never built fails the step, saying what was looked for.
        let mut missing = copy_step("eu-west-2");
        if let Step::CopyImage { source, tags, .. } = &mut missing {
            *source = ImageRef::Build { build_id: "base-r9-ffffffff".into() };
            tags.insert(build_tags::SOURCE.into(), "base-r9-ffffffff".into());
        }
        let error = aws.execute(&missing).await.unwrap_err();
        assert!(error.operation.starts_with("CopyImage the image of build base-r9-ffffffff"), "{error}");
        assert!(error.message.contains("does not exist in us-east-1"), "{error}");
        assert!(error.message.contains("imagectl:build-id=base-r9-ffffffff"), "{error}");
        assert!(images_in(&emulator, "eu-west-2").await.is_empty());
    });
}

#[test]
fn a_copy_name_taken_by_another_stack_fails_the_step() {
    with_emulator(|emulator, aws| async move {
        stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        python_async(
            &emulator,
            format!(
                "e = ec2r('eu-west-1')\n\
                 i = e.register_image(Name='{COPY_NAME}')['ImageId']\n\
                 e.create_tags(Resources=[i], Tags=[{{'Key': '{STACK_TAG}', 'Value': 'db'}}])"
            ),
        )
        .await;
        let error = aws.execute(&copy_step("eu-west-1")).await.unwrap_err();
        assert!(error.message.contains("imagectl:stack=db"), "{error}");
        assert_eq!(images_in(&emulator, "eu-west-1").await.len(), 1, "no copy made beside it");
    });
}

#[test]
fn launch_and_snapshot_permissions_change_exactly_as_asked() {
    with_emulator(|emulator, aws| async move {
        let (image, snapshot) = stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        let use1 = region("us-east-1");
        let read_scope = ReadScope { image_permissions: true, ..scope(&["us-east-1"]) };
        let permissions =
            |live: &imagectl::live::LiveState| live.launch_permissions.get(&image).cloned().unwrap_or_default();

        let live = aws.read_live(&read_scope).await.unwrap();
        assert_eq!(permissions(&live), LaunchPermissions::default());
        assert_eq!(live.snapshot_permissions.get(&snapshot), Some(&BTreeSet::new()));

        let shared = LaunchPermissions {
            accounts: set(&[ACCOUNT_A, ACCOUNT_B]),
            organizations: set(&[ORG]),
            organizational_units: set(&[OU]),
            public: false,
        };
        // Named by its build, as a share of an image built in the same apply is.
        run(
            &aws,
            &Step::SetLaunchPermissions {
                image: ImageRef::Build { build_id: BUILD.into() },
                region: use1.clone(),
                add: shared.clone(),
                remove: LaunchPermissions::default(),
            },
        )
        .await;
        assert_eq!(permissions(&aws.read_live(&read_scope).await.unwrap()), shared);

        // Removing one account removes exactly that one.
        let one = LaunchPermissions { accounts: set(&[ACCOUNT_A]), ..LaunchPermissions::default() };
        let step = Step::SetLaunchPermissions {
            image: ImageRef::Id(image.clone()),
            region: use1.clone(),
            add: LaunchPermissions::default(),
            remove: one.clone(),
        };
        run(&aws, &step).await;
        run(&aws, &step).await; // idempotent
        assert_eq!(permissions(&aws.read_live(&read_scope).await.unwrap()), shared.minus(&one));

        // Public, on and off; adding and removing in one step.
        let public = LaunchPermissions { public: true, ..LaunchPermissions::default() };
        run(
            &aws,
            &Step::SetLaunchPermissions {
                image: ImageRef::Id(image.clone()),
                region: use1.clone(),
                add: public.clone(),
                remove: LaunchPermissions::default(),
            },
        )
        .await;
        assert!(permissions(&aws.read_live(&read_scope).await.unwrap()).public);
        run(
            &aws,
            &Step::SetLaunchPermissions {
                image: ImageRef::Id(image.clone()),
                region: use1.clone(),
                add: one.clone(),
                remove: public,
            },
        )
        .await;
        assert_eq!(permissions(&aws.read_live(&read_scope).await.unwrap()), shared);

        // Snapshots: create-volume permission for two accounts, then one less.
        let snapshots = |add: &[&str], remove: &[&str]| Step::SetSnapshotPermissions {
            image: ImageRef::Build { build_id: BUILD.into() },
            region: use1.clone(),
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        };
        run(&aws, &snapshots(&[ACCOUNT_A, ACCOUNT_B], &[])).await;
        let live = aws.read_live(&read_scope).await.unwrap();
        assert_eq!(live.snapshot_permissions.get(&snapshot), Some(&set(&[ACCOUNT_A, ACCOUNT_B])));
        run(&aws, &snapshots(&[], &[ACCOUNT_A])).await;
        let live = aws.read_live(&read_scope).await.unwrap();
        assert_eq!(live.snapshot_permissions.get(&snapshot), Some(&set(&[ACCOUNT_B])));
        // Sharing the snapshots leaves the launch permissions alone.
        assert_eq!(permissions(&live), shared);

        // A reference to an image that does not exist fails clearly, and changes nothing.
        let error = aws
            .execute(&Step::SetLaunchPermissions {
                image: ImageRef::CopyOf { copy: COPY.into(), source: BUILD.into() },
                region: region("eu-west-1"),
                add: shared.clone(),
                remove: LaunchPermissions::default(),
            })
            .await
            .unwrap_err();
        assert!(error.message.contains(&format!("the {COPY} copy of {BUILD} does not exist in eu-west-1")), "{error}");
    });
}

#[test]
fn permission_reads_cost_one_request_per_image_and_per_snapshot() {
    with_emulator(|emulator, aws| async move {
        stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        stack_image(&emulator, "base-r2-bbbbbbbb", "base-r0002-bbbbbbbb").await;
        run(&aws, &copy_step("eu-west-1")).await;
        // Another stack's image: not read.
        python_async(
            &emulator,
            format!("i = ec2.register_image(Name='other')['ImageId']\nec2.create_tags(Resources=[i], Tags=[{{'Key': '{STACK_TAG}', 'Value': 'db'}}])"),
        )
        .await;
        aws.account_id().await.unwrap();
        let plain = scope(&["us-east-1", "eu-west-1"]);

        let before = emulator.request_count();
        let live = aws.read_live(&plain).await.unwrap();
        let baseline = emulator.request_count() - before;
        assert_eq!(live.images.len(), 3);
        assert!(live.launch_permissions.is_empty() && live.snapshot_permissions.is_empty());
        let snapshots: usize = live.images.iter().map(|i| i.snapshot_ids.len()).sum();
        assert_eq!(snapshots, 3);

        let before = emulator.request_count();
        let live = aws.read_live(&ReadScope { image_permissions: true, ..plain }).await.unwrap();
        let requests = emulator.request_count() - before;
        // EC2 has no batched read of either attribute: one DescribeImageAttribute per image (3) and one
        // DescribeSnapshotAttribute per snapshot (3), under the read semaphore; nothing for other stacks' images.
        assert_eq!(requests - baseline, 3 + 3, "permission reads made {} requests", requests - baseline);
        assert_eq!(live.launch_permissions.len(), 3);
        assert_eq!(live.snapshot_permissions.len(), 3);
    });
}

#[test]
fn parameters_publish_the_ids_that_references_resolve_to() {
    with_emulator(|emulator, aws| async move {
        let (source, _) = stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        run(&aws, &copy_step("eu-west-1")).await;
        let copy = images_in(&emulator, "eu-west-1").await[0]["ImageId"].as_str().unwrap().to_owned();
        let (use1, euw1) = (region("us-east-1"), region("eu-west-1"));
        run(
            &aws,
            &Step::PutImageParameter {
                name: "/web/base/ami".into(),
                region: use1.clone(),
                image: ImageRef::Build { build_id: BUILD.into() },
            },
        )
        .await;
        let to_copy = Step::PutImageParameter {
            name: "/web/base/ami".into(),
            region: euw1.clone(),
            image: ImageRef::CopyOf { copy: COPY.into(), source: BUILD.into() },
        };
        run(&aws, &to_copy).await;
        run(&aws, &to_copy).await; // overwritten with the same value
        run(
            &aws,
            &Step::PutImageParameter {
                name: "/web/pinned".into(),
                region: use1.clone(),
                image: ImageRef::Id(source.clone()),
            },
        )
        .await;

        // The data type that lets CloudFormation take it as AWS::EC2::Image::Id (the emulator accepts it).
        let described = python_json(
            &emulator,
            "print(json.dumps(ssm.get_parameter(Name='/web/base/ami')['Parameter'], default=str))".into(),
        )
        .await;
        assert_eq!(described["DataType"], "aws:ec2:image");
        assert_eq!(described["Type"], "String");

        // Twelve names in us-east-1 (two GetParameters of at most 10), one in eu-west-1, one in a region without
        // any: one request per batch, and missing names are simply absent.
        aws.account_id().await.unwrap();
        let plain = scope(&["us-east-1", "eu-west-1"]);
        let before = emulator.request_count();
        aws.read_live(&plain).await.unwrap();
        let baseline = emulator.request_count() - before;
        let mut names: BTreeSet<String> = (0..10).map(|n| format!("/web/missing/{n}")).collect();
        names.extend(["/web/base/ami".to_owned(), "/web/pinned".to_owned()]);
        let with_parameters = ReadScope {
            parameters: [
                (use1.clone(), names),
                (euw1.clone(), set(&["/web/base/ami"])),
                (region("eu-central-1"), set(&["/web/base/ami"])),
            ]
            .into(),
            ..plain
        };
        let before = emulator.request_count();
        let live = aws.read_live(&with_parameters).await.unwrap();
        assert_eq!(emulator.request_count() - before - baseline, 2 + 1 + 1);
        let expected: BTreeMap<Region, BTreeMap<String, String>> = [
            (
                use1.clone(),
                [("/web/base/ami".to_owned(), source.clone()), ("/web/pinned".to_owned(), source.clone())].into(),
            ),
            (euw1.clone(), [("/web/base/ami".to_owned(), copy.clone())].into()),
        ]
        .into();
        assert_eq!(live.parameters, expected);

        // A reference that resolves to nothing fails the step and leaves the parameter as it was.
        let error = aws
            .execute(&Step::PutImageParameter {
                name: "/web/base/ami".into(),
                region: use1.clone(),
                image: ImageRef::Build { build_id: "base-r9-ffffffff".into() },
            })
            .await
            .unwrap_err();
        assert!(error.operation.starts_with("PutParameter /web/base/ami in us-east-1"), "{error}");
        assert!(error.message.contains("the image of build base-r9-ffffffff does not exist in us-east-1"), "{error}");
        let live = aws.read_live(&with_parameters).await.unwrap();
        assert_eq!(live.parameters[&use1]["/web/base/ami"], source);
    });
}

#[test]
fn deregistering_removes_the_image_and_its_snapshots_and_is_idempotent() {
    with_emulator(|emulator, aws| async move {
        let (image, snapshot) = stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        let (kept, kept_snapshot) = stack_image(&emulator, "base-r2-bbbbbbbb", "base-r0002-bbbbbbbb").await;
        let step = Step::DeregisterImage {
            image_id: image.clone(),
            region: region("us-east-1"),
            snapshot_ids: vec![snapshot.clone()],
        };
        run(&aws, &step).await;
        let images: Vec<String> =
            images_in(&emulator, "us-east-1").await.iter().map(|i| i["ImageId"].as_str().unwrap().to_owned()).collect();
        assert!(!images.contains(&image) && images.contains(&kept), "{images:?}");
        let snapshots = python_json(
            &emulator,
            format!("print(json.dumps([s['SnapshotId'] for s in ec2.describe_snapshots(OwnerIds=['self'])['Snapshots'] if s['SnapshotId'] in ('{snapshot}', '{kept_snapshot}')]))"),
        )
        .await;
        assert_eq!(snapshots, serde_json::json!([kept_snapshot]), "the snapshot went with the image");
        // Again: the image is gone (InvalidAMIID.Unavailable) and so is the snapshot (InvalidSnapshot.NotFound).
        run(&aws, &step).await;
        // And an image that never existed.
        run(
            &aws,
            &Step::DeregisterImage {
                image_id: "ami-0123456789abcdef0".into(),
                region: region("us-east-1"),
                snapshot_ids: vec!["snap-0123456789abcdef0".into()],
            },
        )
        .await;
    });
}

#[test]
fn images_in_use_by_instances_and_launch_templates_are_reported() {
    with_emulator(|emulator, aws| async move {
        let (running, _) = stack_image(&emulator, "base-r1-aaaaaaaa", "base-r0001-aaaaaaaa").await;
        let (stopped, _) = stack_image(&emulator, "base-r2-bbbbbbbb", "base-r0002-bbbbbbbb").await;
        let (by_default, _) = stack_image(&emulator, "base-r3-cccccccc", "base-r0003-cccccccc").await;
        let (by_latest, _) = stack_image(&emulator, "base-r4-dddddddd", "base-r0004-dddddddd").await;
        let (terminated, _) = stack_image(&emulator, "base-r5-eeeeeeee", "base-r0005-eeeeeeee").await;
        let (unused, _) = stack_image(&emulator, "base-r6-ffffffff", "base-r0006-ffffffff").await;
        let (older, _) = stack_image(&emulator, "base-r7-abababab", "base-r0007-abababab").await;
        let ids = python_json(
            &emulator,
            format!(
                "run = lambda image: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)['Instances'][0]['InstanceId']\n\
                 a, b, c = run('{running}'), run('{stopped}'), run('{terminated}')\n\
                 ec2.stop_instances(InstanceIds=[b])\n\
                 ec2.terminate_instances(InstanceIds=[c])\n\
                 ec2.create_launch_template(LaunchTemplateName='web-servers', LaunchTemplateData={{'ImageId': '{older}'}})\n\
                 ec2.create_launch_template_version(LaunchTemplateName='web-servers', LaunchTemplateData={{'ImageId': '{by_default}'}})\n\
                 ec2.create_launch_template_version(LaunchTemplateName='web-servers', LaunchTemplateData={{'ImageId': '{by_latest}'}})\n\
                 ec2.modify_launch_template(LaunchTemplateName='web-servers', DefaultVersion='2')\n\
                 ec2.create_launch_template(LaunchTemplateName='someone-elses', LaunchTemplateData={{'ImageId': 'ami-0123456789abcdef0'}})\n\
                 print(json.dumps([a, b]))"
            ),
        )
        .await;
        let (a, b) = (ids[0].as_str().unwrap(), ids[1].as_str().unwrap());
        aws.account_id().await.unwrap();

        // eu-west-1 has none of the stack's images: nothing is asked there.
        let plain = scope(&["us-east-1", "eu-west-1"]);
        let before = emulator.request_count();
        aws.read_live(&plain).await.unwrap();
        let baseline = emulator.request_count() - before;
        let before = emulator.request_count();
        let live = aws.read_live(&ReadScope { image_usage: true, ..plain }).await.unwrap();
        // One DescribeInstances and one DescribeLaunchTemplateVersions ($Default and $Latest of every template at
        // once) in the one region with stack images.
        assert_eq!(emulator.request_count() - before - baseline, 2);
        let expected: BTreeMap<String, String> = [
            (running.clone(), format!("instance {a} (running)")),
            (stopped.clone(), format!("instance {b} (stopped)")),
            (by_default.clone(), "launch template web-servers version 2".to_owned()),
            (by_latest.clone(), "launch template web-servers version 3".to_owned()),
        ]
        .into();
        assert_eq!(
            live.images_in_use, expected,
            "version 1 ({older}) is neither default nor latest; {unused} and {terminated} are free"
        );
    });
}

#[test]
fn deprecation_and_protection_are_requested_and_their_errors_name_the_operation() {
    with_emulator(|emulator, aws| async move {
        let (image, _) = stack_image(&emulator, BUILD, "base-r0001-aaaaaaaa").await;
        let use1 = region("us-east-1");

        // A time that is not RFC 3339 never reaches AWS.
        let before = emulator.request_count();
        let error = aws
            .execute(&Step::EnableImageDeprecation {
                image_id: image.clone(),
                region: use1.clone(),
                deprecate_at: "next tuesday".into(),
            })
            .await
            .unwrap_err();
        assert!(error.message.contains("not an RFC 3339 time"), "{error}");
        assert_eq!(emulator.request_count(), before);

        // The emulator does not implement either API (HTTP 500): the requests are made, and the errors say which
        // operation on which image failed. Both at once: the SDK retries a 500 with backoff.
        let before = emulator.request_count();
        let deprecate = Step::EnableImageDeprecation {
            image_id: image.clone(),
            region: use1.clone(),
            deprecate_at: "2031-01-01T00:00:00Z".into(),
        };
        let protect = Step::EnableDeregistrationProtection { image_id: image.clone(), region: use1.clone() };
        let (deprecation, protection) = tokio::join!(aws.execute(&deprecate), aws.execute(&protect));
        let deprecation = deprecation.unwrap_err();
        assert!(
            deprecation
                .operation
                .starts_with(&format!("EnableImageDeprecation {image} in us-east-1 at 2031-01-01T00:00:00Z")),
            "{deprecation}"
        );
        let protection = protection.unwrap_err();
        assert!(
            protection.operation.starts_with(&format!("EnableImageDeregistrationProtection {image} in us-east-1")),
            "{protection}"
        );
        assert!(
            deprecation.message.contains("500") && protection.message.contains("500"),
            "{deprecation} / {protection}"
        );
        assert!(emulator.request_count() - before >= 2, "both requests reached the emulator");
    });
}
