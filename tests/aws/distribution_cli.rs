//! Distribution end to end through the `imagectl` binary (issue 6, "Done when"): the full reference stack
//! (examples/golden-image, with its ImageCopy to eu-west-1 and ap-southeast-2, its ImageShare and its published
//! parameter) built, copied, shared and published; a region added and an account removed; a rebuild that copies the
//! new image, moves the parameters after the copies and shares, and then lets retention deregister the old image,
//! its copies and their snapshots; and an old image a running instance uses, which retention keeps, saying why.
//!
//! As in pipeline.rs, the instance player plays the build instances for real, and boto3 is the independent eye on
//! every region. The tests skip, saying why, where the player cannot run.
//!
//! Snapshots: tests/aws/snapshots/aws__distribution_cli__*.snap; review changes with
//! `INSTA_UPDATE=always cargo test --test aws distribution_cli` and `git diff tests/aws/snapshots`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::Deserialize;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::cli::{python, run, Run, Stack};
use crate::support::{Emulator, Player};

const IMAGE: &str = "PrivateImage/web-base";
const COPY: &str = "ImageCopy/web-base-replicas";
const SHARE: &str = "ImageShare/web-base-consumers";
const PUBLISH: &str = "PrivateImage/web-base/publish";
const RETENTION: &str = "PrivateImage/web-base/retention";
const PARAMETER: &str = "/golden-images/web-base/ami-id";
const HOME: &str = "us-east-1";
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];
const ADDED: &str = "ca-central-1";
/// The grantees of the reference ImageShare.
const ACCOUNT_A: &str = "111122223333";
const ACCOUNT_B: &str = "444455556666";
const OU: &str = "arn:aws:organizations::123456789012:ou/o-abc123/ou-ab12-cdef3456";

/// One test's world; fields drop in order, so the player stops before its emulator.
struct World {
    _player: Player,
    emulator: Emulator,
    stack: Stack,
    _scratch: TempDir,
}

impl World {
    /// The full reference stack, applied: None (the test skips) where the player cannot run.
    fn applied(test: &str) -> Option<World> {
        if !Player::available(test) {
            return None;
        }
        let emulator = Emulator::start();
        let scratch = tempfile::Builder::new().prefix("imagectl-distribution-").tempdir().expect("a scratch directory");
        let player = Player::start(&emulator, &[HOME], &scratch.path().join("player"));
        let stack = Stack::reference();
        fs::create_dir(stack.dir.path().join("packages")).expect("create the packages directory");
        for file in ["images.yaml", "packages/acme-agent-2.4.0.tar.gz", "packages/install.sh"] {
            stack.restore(file);
        }
        let world = World { _player: player, emulator, stack, _scratch: scratch };
        world.apply();
        Some(world)
    }

    /// `imagectl ARGS… STACK`.
    fn imagectl(&self, args: &[&str]) -> Run {
        run(&self.emulator, &[args, &[self.stack.path()]].concat())
    }

    #[track_caller]
    fn apply(&self) -> Run {
        self.imagectl(&["apply", "--auto-approve"]).expect(0)
    }

    /// A further plan is a no-op.
    #[track_caller]
    fn assert_converged(&self) {
        let again = self.imagectl(&["plan", "--detailed-exitcode"]).expect(0);
        assert_eq!(again.changes(), Vec::<String>::new(), "{again}");
        again.shows("No changes.");
    }

    /// What boto3 sees in every region of interest.
    fn regions(&self) -> BTreeMap<String, Region> {
        let script = format!(
            r#"
out = {{}}
for region in {regions:?}:
    ec2, ssm = ec2r(region), boto3.client('ssm', region_name=region)
    images = []
    for i in ec2.describe_images(Owners=['self'])['Images']:
        granted = ec2.describe_image_attribute(ImageId=i['ImageId'], Attribute='launchPermission')['LaunchPermissions']
        images.append({{'id': i['ImageId'], 'state': i['State'], 'tags': {{t['Key']: t['Value'] for t in i.get('Tags', [])}},
                       'snapshots': [b['Ebs']['SnapshotId'] for b in i.get('BlockDeviceMappings', []) if 'Ebs' in b],
                       'grantees': sorted(v for p in granted for v in p.values())}})
    try:
        parameter = ssm.get_parameter(Name='{PARAMETER}')['Parameter']['Value']
    except ssm.exceptions.ParameterNotFound:
        parameter = None
    snapshots = sorted(s['SnapshotId'] for s in ec2.describe_snapshots(OwnerIds=['self'])['Snapshots'])
    out[region] = {{'images': images, 'parameter': parameter, 'snapshots': snapshots}}
print(json.dumps(out))
"#,
            regions = [&REGIONS[..], &[ADDED]].concat()
        );
        serde_json::from_str(&python(&self.emulator, &script)).expect("the regions are JSON")
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Region {
    images: Vec<Image>,
    parameter: Option<String>,
    snapshots: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Image {
    id: String,
    state: String,
    tags: BTreeMap<String, String>,
    snapshots: Vec<String>,
    grantees: Vec<String>,
}

impl Region {
    /// The one image of this region; the test fails if there are more, or none.
    #[track_caller]
    fn only_image(&self) -> &Image {
        match &self.images[..] {
            [image] => image,
            _ => panic!("one image expected: {self:#?}"),
        }
    }
}

fn grantees(items: &[&str]) -> Vec<String> {
    let mut items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    items.sort();
    items
}

/// Asserts that `region`'s only image is a copy of `build` made by the reference ImageCopy, and returns it.
#[track_caller]
fn assert_copy<'r>(regions: &'r BTreeMap<String, Region>, region: &str, build: &str) -> &'r Image {
    let copy = regions[region].only_image();
    for (key, value) in [("imagectl:stack", "golden-images"), ("imagectl:resource", COPY), ("imagectl:source", build)] {
        assert_eq!(copy.tags.get(key).map(String::as_str), Some(value), "tag {key} in {region}: {copy:#?}");
    }
    assert_eq!(copy.state, "available", "{copy:#?}");
    copy
}

/// Asserts the image and every copy are delivered: copies of `build` in `copies`, shared with `shared`, and the
/// parameter holding each region's own AMI ID. Returns the AMI ID per region.
#[track_caller]
fn assert_delivered(
    regions: &BTreeMap<String, Region>,
    build: &str,
    copies: &[&str],
    shared: &[&str],
) -> BTreeMap<String, String> {
    let image = regions[HOME].only_image();
    assert_eq!(image.tags["imagectl:build-id"], build, "{image:#?}");
    let mut ids = BTreeMap::from([(HOME.to_owned(), image.id.clone())]);
    for region in copies {
        ids.insert(region.to_string(), assert_copy(regions, region, build).id.clone());
    }
    for (region, id) in &ids {
        let live = regions[region].images.iter().find(|i| &i.id == id).unwrap();
        assert_eq!(live.grantees, grantees(shared), "launch permissions of {id} in {region}");
        assert_eq!(regions[region].parameter.as_deref(), Some(id.as_str()), "{PARAMETER} in {region}");
    }
    ids
}

/// The plan's changes of `plan --output json`, by resource name, with what each waits for.
fn plan_order(plan: &Value) -> Vec<(String, Vec<String>)> {
    let changes = plan["changes"].as_array().expect("a JSON plan");
    changes
        .iter()
        .map(|c| {
            let after = c["after"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
            (c["resource"].as_str().unwrap().to_owned(), after)
        })
        .collect()
}

/// A snapshot of plan text, with what varies between runs masked: AMI, snapshot and instance IDs, hashes (build
/// IDs, fingerprints, client tokens), the emulator's port, timings and the stack's directory.
#[track_caller]
fn assert_plan_snapshot(name: &str, text: &str) {
    insta::with_settings!({
        omit_expression => true,
        filters => vec![
            (r"\bami-[0-9a-f]{8,17}\b", "[ami]"),
            (r"\bsnap-[0-9a-f]{8,17}\b", "[snapshot]"),
            (r"\bi-[0-9a-f]{8,17}\b", "[instance]"),
            (r"\b[0-9a-f]{16,}\b", "[hash]"),
            (r"(web-base-r\d+)-[0-9a-f]{8}\b", "$1-[hash]"),
            (r"127\.0\.0\.1:\d+", "[emulator]"),
            (r"\(\d+\.\ds\)", "([elapsed])"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "[time]"),
            (r"\S*imagectl-stack-[^/\s]+", "[stack]"),
        ],
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn reference_stack_is_copied_shared_and_published_in_every_region_and_converges() {
    let Some(world) = World::applied("reference_stack_is_copied_shared_and_published_in_every_region_and_converges")
    else {
        return;
    };
    let regions = world.regions();
    let image = regions[HOME].only_image().clone();
    let build = image.tags["imagectl:build-id"].clone();
    assert_eq!(image.tags["imagectl:resource"], IMAGE);
    let ids = assert_delivered(&regions, &build, &REGIONS[1..], &[ACCOUNT_A, ACCOUNT_B, OU]);
    assert_eq!(ids.len(), 3);
    assert_eq!(ids.values().collect::<BTreeSet<_>>().len(), 3, "three distinct AMIs: {ids:?}");
    assert!(regions[ADDED].images.is_empty() && regions[ADDED].parameter.is_none(), "{regions:#?}");

    let outputs = world.imagectl(&["outputs", "--output", "json"]).expect(0).json();
    let copy = |region: &str| json!({"image": "web-base", "region": region, "imageId": ids[region], "copy": COPY});
    assert_eq!(
        outputs,
        json!([
            {"image": "web-base", "region": HOME, "imageId": ids[HOME]},
            copy("ap-southeast-2"),
            copy("eu-west-1"),
        ])
    );
    world.assert_converged();
}

#[test]
fn added_region_gets_exactly_one_copy_and_a_removed_account_loses_exactly_its_permission_everywhere() {
    let Some(world) = World::applied(
        "added_region_gets_exactly_one_copy_and_a_removed_account_loses_exactly_its_permission_everywhere",
    ) else {
        return;
    };
    let before = world.regions();
    let build = before[HOME].only_image().tags["imagectl:build-id"].clone();
    let counts = |regions: &BTreeMap<String, Region>| -> Vec<usize> {
        [&REGIONS[..], &[ADDED]].concat().iter().map(|r| regions[*r].images.len()).collect()
    };
    assert_eq!(counts(&before), [1, 1, 1, 0]);

    world.stack.edit(
        "images.yaml",
        "regions: [eu-west-1, ap-southeast-2]",
        "regions: [eu-west-1, ap-southeast-2, ca-central-1]",
    );
    let plan = world.imagectl(&["plan", "--detailed-exitcode"]).expect(2);
    assert_eq!(plan.changes(), [format!("+ {COPY}/{ADDED}"), format!("~ {SHARE}"), format!("~ {PUBLISH}")], "{plan}");
    assert_plan_snapshot("added-region-plan-text", &plan.stdout);
    world.apply();
    let added = world.regions();
    assert_eq!(counts(&added), [1, 1, 1, 1], "exactly one new copy: {added:#?}");
    for region in REGIONS {
        assert_eq!(added[region].images, before[region].images, "{region} untouched");
    }
    let all = [&REGIONS[1..], &[ADDED]].concat();
    let ids = assert_delivered(&added, &build, &all, &[ACCOUNT_A, ACCOUNT_B, OU]);
    world.assert_converged();

    world.stack.edit("images.yaml", r#"accounts: ["111122223333", "444455556666"]"#, r#"accounts: ["111122223333"]"#);
    let plan = world.imagectl(&["plan", "--detailed-exitcode"]).expect(2);
    assert_eq!(plan.changes(), [format!("~ {SHARE}")], "{plan}");
    assert_plan_snapshot("removed-account-plan-text", &plan.stdout);
    world.apply();
    let removed = world.regions();
    assert_eq!(counts(&removed), [1, 1, 1, 1]);
    assert_eq!(assert_delivered(&removed, &build, &all, &[ACCOUNT_A, OU]), ids, "the same images, only unshared");
    world.assert_converged();
}

/// Rebuilds the image (a new instance type) with `retention: {keep: 1}`.
fn rebuild_keeping_one(world: &World) {
    world.stack.edit("images.yaml", "instanceType: t3.medium", "instanceType: t3.large");
    world.stack.edit("images.yaml", "retention: {keep: 3}", "retention: {keep: 1}");
}

#[test]
fn rebuild_copies_and_shares_the_new_image_then_publishes_it_then_retention_removes_the_old_with_snapshots() {
    let Some(world) = World::applied(
        "rebuild_copies_and_shares_the_new_image_then_publishes_it_then_retention_removes_the_old_with_snapshots",
    ) else {
        return;
    };
    let old = world.regions();
    let old_build = old[HOME].only_image().tags["imagectl:build-id"].clone();
    let old_ids = assert_delivered(&old, &old_build, &REGIONS[1..], &[ACCOUNT_A, ACCOUNT_B, OU]);
    let old_snapshots: BTreeMap<&str, Vec<String>> =
        REGIONS.iter().map(|r| (*r, old[*r].only_image().snapshots.clone())).collect();
    assert!(!old_snapshots[HOME].is_empty(), "the image has a snapshot: {old:#?}");
    rebuild_keeping_one(&world);

    let plan = world.imagectl(&["plan", "--detailed-exitcode"]).expect(2);
    let copies = [format!("{COPY}/ap-southeast-2"), format!("{COPY}/eu-west-1")];
    assert_eq!(
        plan.changes(),
        [
            format!("-/+ {IMAGE}"),
            format!("-/+ {}", copies[0]),
            format!("-/+ {}", copies[1]),
            format!("~ {SHARE}"),
            format!("~ {PUBLISH}"),
            format!("~ {RETENTION}"),
        ],
        "{plan}"
    );
    for region in REGIONS {
        plan.shows(&old_ids[region]);
    }
    assert_plan_snapshot("rebuild-keep-one-plan-text", &plan.stdout);
    // What each waits for: the copies for the build, the share for the copies, the parameters for the share, and
    // retention for the parameters.
    let json = world.imagectl(&["plan", "--output", "json"]).expect(0).json();
    let order: BTreeMap<String, Vec<String>> = plan_order(&json).into_iter().collect();
    for copy in &copies {
        assert_eq!(order[copy], [IMAGE], "{json:#}");
    }
    for (change, waits_for) in
        [(SHARE, &[IMAGE][..]), (PUBLISH, &[IMAGE, SHARE]), (RETENTION, &[IMAGE, PUBLISH, SHARE])]
    {
        for before in waits_for.iter().map(|s| s.to_string()).chain(copies.iter().cloned()) {
            assert!(order[change].contains(&before), "{change} waits for {before}: {:?}", order[change]);
        }
    }

    // Applied in that order: each starts only once what it waits for has finished.
    let apply = world.apply();
    let started = |resource: &str, verb: &str| apply.line_of(&format!("{resource}: {verb}…"));
    let finished = |resource: &str, verb: &str| apply.line_of(&format!("{resource}: {verb} ("));
    let built = finished(IMAGE, "replaced");
    for copy in &copies {
        assert!(built < started(copy, "replacing"), "{copy} after the build:\n{apply}");
        assert!(finished(copy, "replaced") < started(SHARE, "updating"), "the share after {copy}:\n{apply}");
    }
    assert!(finished(SHARE, "updated") < started(PUBLISH, "updating"), "{apply}");
    assert!(finished(PUBLISH, "updated") < started(RETENTION, "updating"), "{apply}");

    let new = world.regions();
    let new_build = new[HOME].only_image().tags["imagectl:build-id"].clone();
    assert_ne!(new_build, old_build);
    let new_ids = assert_delivered(&new, &new_build, &REGIONS[1..], &[ACCOUNT_A, ACCOUNT_B, OU]);
    for region in REGIONS {
        assert_ne!(new_ids[region], old_ids[region], "a new AMI in {region}");
        for snapshot in &old_snapshots[region] {
            assert!(!new[region].snapshots.contains(snapshot), "{snapshot} deleted in {region}: {new:#?}");
        }
    }
    world.assert_converged();
}

#[test]
fn old_image_a_running_instance_uses_is_kept_by_retention_and_the_plan_says_why() {
    let Some(world) = World::applied("old_image_a_running_instance_uses_is_kept_by_retention_and_the_plan_says_why")
    else {
        return;
    };
    let old = world.regions();
    let old_image = old[HOME].only_image().clone();
    let instance = python(
        &world.emulator,
        &format!(
            "print(ec2.run_instances(ImageId='{}', MinCount=1, MaxCount=1)['Instances'][0]['InstanceId'], end='')",
            old_image.id
        ),
    );
    rebuild_keeping_one(&world);

    let plan = world.imagectl(&["plan", "--detailed-exitcode"]).expect(2);
    let kept = format!("{IMAGE}: keeps {} beyond retention (1 kept): it is in use by", old_image.id);
    plan.shows(&kept);
    plan.shows(&instance);
    assert_plan_snapshot("in-use-kept-plan-text", &plan.stdout);
    assert_eq!(
        plan.changes().last().map(String::as_str),
        Some(format!("~ {PUBLISH}").as_str()),
        "retention has nothing to do: {plan}"
    );
    world.apply().shows(&kept);

    let new = world.regions();
    let images = &new[HOME].images;
    assert_eq!(images.len(), 2, "{new:#?}");
    assert!(images.contains(&old_image), "the old image is kept as it was: {new:#?}");
    let current = images.iter().find(|i| i.id != old_image.id).unwrap();
    assert_eq!(new[HOME].parameter.as_deref(), Some(current.id.as_str()));
    for snapshot in &old_image.snapshots {
        assert!(new[HOME].snapshots.contains(snapshot), "{snapshot} kept: {new:#?}");
    }
    // Its copies too: they go with it, not before it.
    for region in &REGIONS[1..] {
        assert_eq!(new[*region].images.len(), 2, "{region}: {new:#?}");
    }
    let again = world.imagectl(&["plan", "--detailed-exitcode"]).expect(0);
    again.shows(&kept);
}
