//! Distribution steps: copies of an image to other regions, its launch permissions and its snapshots'
//! create-volume permissions, its AMI ID published to SSM, and its retirement (deregistration with its snapshots,
//! deprecation, deregistration protection).
//!
//! A step may name an image that only exists once an earlier step of the same apply has run (`ImageRef`): it is
//! found by its tags when the step runs, and a reference that finds nothing fails the step.
//!
//! A copy is found again by its tags (`imagectl:resource` and `imagectl:source`) and, should its tagging never
//! have happened, by its name; the `ClientToken` makes a retried `CopyImage` return the same copy on AWS besides.
//! Where tag specifications are honoured (AWS), the copy and its snapshots are tagged as they are created; the
//! copy is tagged again with `CreateTags` at once, and its snapshots once the copy is available and they are known,
//! since neither tag propagation nor tag specifications are dependable everywhere.

use std::time::{Duration, Instant};

use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{
    Filter, Image, ImageState, LaunchPermission, LaunchPermissionModifications, OperationType, PermissionGroup,
    ResourceType, SnapshotAttributeName, TagSpecification,
};
use aws_sdk_ssm::types::ParameterType;

use super::check_owner;
use crate::aws::error::{Absent, Context};
use crate::aws::read::{ec2_filter, ec2_sdk_tags, ec2_tags, snapshot_ids};
use crate::aws::{Aws, AwsError};
use crate::build::tags;
use crate::live::{LaunchPermissions, RESOURCE_TAG, STACK_TAG};
use crate::model::{Region, Tags};
use crate::plan::step::ImageRef;

const IMAGE_GONE: &[&str] = &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"];
const SNAPSHOT_GONE: &[&str] = &["InvalidSnapshot.NotFound"];
/// What AWS answers for a resource created a moment ago that it does not know everywhere yet.
const NOT_YET_KNOWN: &[&str] = &["InvalidAMIID.NotFound", "InvalidSnapshot.NotFound"];
/// `DataType` of a parameter holding an AMI ID: SSM checks the ID, and CloudFormation takes it as
/// `AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`.
const IMAGE_DATA_TYPE: &str = "aws:ec2:image";
/// How long a copy may take to become available: a cross-region copy of large snapshots takes hours.
const COPY_WINDOW: Duration = Duration::from_secs(6 * 60 * 60);
/// Polling of a copy's state: from 2 s, doubling, up to 30 s.
const POLL_FIRST: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_secs(30);
/// Attempts at a call that AWS may refuse for a moment after the resource changed (tagging a just-created copy,
/// deleting the snapshot of a just-deregistered image), 1 s apart and doubling.
const SETTLE_ATTEMPTS: u32 = 5;

/// A `CopyImage` step's fields.
pub(super) struct Copy<'a> {
    pub source: &'a ImageRef,
    pub source_region: &'a Region,
    pub region: &'a Region,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub encrypted: bool,
    pub kms_key: Option<&'a str>,
    pub tags: &'a Tags,
    pub client_token: &'a str,
}

pub(super) async fn copy_image(aws: &Aws, copy: &Copy<'_>) -> Result<(), AwsError> {
    let operation = format!("CopyImage {} from {} to {}", copy.source, copy.source_region, copy.region);
    let region = copy.region.as_str();
    let mut source_id = None;
    if let Some(existing) = find_copy(aws, copy, &mut source_id, &operation).await? {
        return finish_copy(aws, copy, existing, source_id.as_deref(), &operation).await;
    }
    let source_id = match source_id {
        Some(id) => id,
        None => resolve_id(aws, copy.source, copy.source_region, &operation).await?,
    };
    let tags = copy_tags(copy, Some(&source_id), None);
    let mut request = aws
        .ec2(region)
        .copy_image()
        .source_image_id(&source_id)
        .source_region(copy.source_region.as_str())
        .name(copy.name)
        .set_description(copy.description.map(str::to_owned))
        .encrypted(copy.encrypted)
        .set_kms_key_id(copy.kms_key.map(str::to_owned))
        .client_token(copy.client_token);
    if !tags.is_empty() {
        for resource_type in [ResourceType::Image, ResourceType::Snapshot] {
            let spec =
                TagSpecification::builder().resource_type(resource_type).set_tags(Some(ec2_sdk_tags(&tags))).build();
            request = request.tag_specifications(spec);
        }
    }
    let image_id = match request.send().await.during(&operation) {
        Ok(answer) => answer.image_id().unwrap_or_default().to_owned(),
        // Made meanwhile by another apply, or an image of someone else's by that name.
        Err(e) if e.has_code("InvalidAMIName.Duplicate") => {
            let mut source_id = Some(source_id);
            return match find_named(aws, copy, &mut source_id, &operation).await? {
                Some(existing) => finish_copy(aws, copy, existing, source_id.as_deref(), &operation).await,
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    if image_id.is_empty() {
        return Err(AwsError::new(operation, None, "CopyImage answered without an image ID"));
    }
    if !tags.is_empty() {
        create_tags(aws, region, vec![image_id.clone()], &tags, &format!("CreateTags {image_id} (copy)")).await?;
    }
    let image = wait_available(aws, region, &image_id, &operation).await?;
    let snapshots = snapshot_ids(&image);
    if !tags.is_empty() && !snapshots.is_empty() {
        create_tags(aws, region, snapshots, &tags, &format!("CreateTags snapshots of {image_id}")).await?;
    }
    Ok(())
}

/// The copy an earlier run made, by its tags or else by its name.
async fn find_copy(
    aws: &Aws,
    copy: &Copy<'_>,
    source_id: &mut Option<String>,
    operation: &str,
) -> Result<Option<Image>, AwsError> {
    if let (Some(resource), Some(source)) = (copy.tags.get(RESOURCE_TAG), copy.tags.get(tags::SOURCE)) {
        let filters = vec![
            ec2_filter(&format!("tag:{RESOURCE_TAG}"), [resource.as_str()]),
            ec2_filter(&format!("tag:{}", tags::SOURCE), [source.as_str()]),
        ];
        let what = format!("{RESOURCE_TAG}={resource}, {}={source}", tags::SOURCE);
        let found = owned_images(aws, copy.region.as_str(), filters, &what).await?;
        let found = remove_failed(aws, copy, found).await?;
        if let Some(image) = single(found, &format!("the copy {what}"), copy.region, operation)? {
            let existing = ec2_tags(image.tags());
            check_owner(&format!("the copy {}", image.image_id().unwrap_or_default()), copy.tags, &existing)
                .map_err(|message| AwsError::new(operation, None, message))?;
            return Ok(Some(image));
        }
    }
    find_named(aws, copy, source_id, operation).await
}

/// An image of the copy's name: this step's copy if its tags say so, or — untagged — if it is a copy of the source
/// (AWS reports the source of a copy; where that is not reported, the name, which carries the source's revision
/// and fingerprint, is taken as the sign). Any other image of that name fails the step.
async fn find_named(
    aws: &Aws,
    copy: &Copy<'_>,
    source_id: &mut Option<String>,
    operation: &str,
) -> Result<Option<Image>, AwsError> {
    let region = copy.region.as_str();
    let found =
        owned_images(aws, region, vec![ec2_filter("name", [copy.name])], &format!("name={}", copy.name)).await?;
    let found = remove_failed(aws, copy, found).await?;
    let Some(image) = single(found, &format!("the image named {}", copy.name), copy.region, operation)? else {
        return Ok(None);
    };
    let id = image.image_id().unwrap_or_default().to_owned();
    let existing = ec2_tags(image.tags());
    if existing.contains_key(STACK_TAG) {
        check_owner(&format!("an image named {} ({id})", copy.name), copy.tags, &existing)
            .map_err(|message| AwsError::new(operation, None, message))?;
        if let (Some(theirs), Some(ours)) = (existing.get(tags::SOURCE), copy.tags.get(tags::SOURCE)) {
            if theirs != ours {
                return Err(AwsError::new(
                    operation,
                    None,
                    format!(
                        "the image named {} in {region} ({id}) is this resource's copy of another source ({theirs}, not {ours}): give copies of different sources different names",
                        copy.name
                    ),
                ));
            }
        }
        return Ok(Some(image));
    }
    // Untagged: resolve the source, to compare it and to name it in the tags about to be written.
    if source_id.is_none() {
        *source_id = Some(resolve_id(aws, copy.source, copy.source_region, operation).await?);
    }
    if let Some(copied_from) = image.source_image_id() {
        if source_id.as_deref() != Some(copied_from) {
            return Err(AwsError::new(
                operation,
                None,
                format!(
                    "an image named {} already exists in {region} ({id}, a copy of {copied_from}) and is not a copy of {}: rename the copy or deregister that image",
                    copy.name, copy.source
                ),
            ));
        }
    }
    Ok(Some(image))
}

/// A copy that exists: waits until it is available and tags it and its snapshots (one `CreateTags`).
async fn finish_copy(
    aws: &Aws,
    copy: &Copy<'_>,
    image: Image,
    source_id: Option<&str>,
    operation: &str,
) -> Result<(), AwsError> {
    let region = copy.region.as_str();
    let id = image.image_id().unwrap_or_default().to_owned();
    let image = match image.state() {
        Some(ImageState::Available) => image,
        _ => wait_available(aws, region, &id, operation).await?,
    };
    let tags = copy_tags(copy, source_id, Some(&ec2_tags(image.tags())));
    if tags.is_empty() {
        return Ok(());
    }
    let resources = std::iter::once(id.clone()).chain(snapshot_ids(&image)).collect();
    create_tags(aws, region, resources, &tags, &format!("CreateTags {id} and its snapshots (copy)")).await
}

/// The step's tags, with `imagectl:source-image` naming the source's AMI ID once it is known: the planner writes
/// the source's build ID there when the source is built in the same apply.
fn copy_tags(copy: &Copy<'_>, source_id: Option<&str>, existing: Option<&Tags>) -> Tags {
    let mut tags = copy.tags.clone();
    if tags.contains_key(tags::SOURCE_IMAGE) {
        let known = source_id
            .map(|id| format!("{}:{id}", copy.source_region))
            .or_else(|| existing.and_then(|e| e.get(tags::SOURCE_IMAGE)).cloned());
        if let Some(value) = known {
            tags.insert(tags::SOURCE_IMAGE.to_owned(), value);
        }
    }
    tags
}

/// Waits until an image is available. A failed copy is removed (it would stand in the next attempt's way) and
/// fails the step with AWS's reason.
async fn wait_available(aws: &Aws, region: &str, image_id: &str, operation: &str) -> Result<Image, AwsError> {
    let started = Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        let answer = aws.ec2(region).describe_images().image_ids(image_id).send().await;
        // Right after CopyImage, AWS may not know the ID yet for a moment.
        let answer = answer.during(format_args!("DescribeImages {image_id}")).absent_on(&["InvalidAMIID.NotFound"])?;
        if let Some(image) = answer.as_ref().and_then(|a| a.images().first()) {
            match image.state() {
                Some(ImageState::Available) => return Ok(image.clone()),
                Some(ImageState::Pending) | None => {}
                Some(state) => {
                    let reason = image.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                    let message = format!("image {image_id} in {region} is {}: {reason}", state.as_str());
                    if let Err(e) = delete_image(aws, region, image_id, &snapshot_ids(image)).await {
                        tracing::warn!("{operation}: could not remove failed image {image_id}: {e}");
                    }
                    return Err(AwsError::new(operation, None, message));
                }
            }
        }
        if started.elapsed() > COPY_WINDOW {
            return Err(AwsError::new(
                operation,
                None,
                format!(
                    "image {image_id} in {region} was not available within {} hours; apply again to keep waiting",
                    COPY_WINDOW.as_secs() / 3600
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Drops failed images from what was found, and removes those that are this step's copy: a failed copy would
/// stand in a new copy's way (its name is taken). A failed image of anyone else's is left alone.
async fn remove_failed(aws: &Aws, copy: &Copy<'_>, images: Vec<Image>) -> Result<Vec<Image>, AwsError> {
    let mut kept = Vec::new();
    for image in images {
        if is_usable(&image) {
            kept.push(image);
        } else if image.state() != Some(&ImageState::Deregistered)
            && check_owner("", copy.tags, &ec2_tags(image.tags())).is_ok()
        {
            let id = image.image_id().unwrap_or_default();
            tracing::info!("removing failed copy {id} in {}", copy.region);
            delete_image(aws, copy.region.as_str(), id, &snapshot_ids(&image)).await?;
        }
    }
    Ok(kept)
}

pub(super) async fn set_launch_permissions(
    aws: &Aws,
    image: &ImageRef,
    region: &Region,
    add: &LaunchPermissions,
    remove: &LaunchPermissions,
) -> Result<(), AwsError> {
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let operation = format!("ModifyImageAttribute {image} in {region} launchPermission");
    let image_id = resolve_id(aws, image, region, &operation).await?;
    let mut changes = LaunchPermissionModifications::builder();
    if !add.is_empty() {
        changes = changes.set_add(Some(launch_permissions(add)));
    }
    if !remove.is_empty() {
        changes = changes.set_remove(Some(launch_permissions(remove)));
    }
    let request =
        aws.ec2(region.as_str()).modify_image_attribute().image_id(&image_id).launch_permission(changes.build());
    request.send().await.during(format_args!("ModifyImageAttribute {image_id} launchPermission")).map(drop)
}

fn launch_permissions(set: &LaunchPermissions) -> Vec<LaunchPermission> {
    let accounts = set.accounts.iter().map(|a| LaunchPermission::builder().user_id(a).build());
    let organizations = set.organizations.iter().map(|arn| LaunchPermission::builder().organization_arn(arn).build());
    let units =
        set.organizational_units.iter().map(|arn| LaunchPermission::builder().organizational_unit_arn(arn).build());
    let public = set.public.then(|| LaunchPermission::builder().group(PermissionGroup::All).build());
    accounts.chain(organizations).chain(units).chain(public).collect()
}

/// Adds and removes accounts' create-volume permission on every snapshot of the image: per snapshot one
/// `ModifySnapshotAttribute` per operation (`OperationType` with `UserIds`, the form every EC2 endpoint takes).
pub(super) async fn set_snapshot_permissions(
    aws: &Aws,
    image: &ImageRef,
    region: &Region,
    add: &[String],
    remove: &[String],
) -> Result<(), AwsError> {
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let operation = format!("ModifySnapshotAttribute of {image} in {region}");
    let found = resolve_image(aws, image, region, &operation).await?;
    let image_id = found.image_id().unwrap_or_default();
    for snapshot in snapshot_ids(&found) {
        for (operation_type, accounts) in [(OperationType::Add, add), (OperationType::Remove, remove)] {
            if accounts.is_empty() {
                continue;
            }
            let request = aws
                .ec2(region.as_str())
                .modify_snapshot_attribute()
                .snapshot_id(&snapshot)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .operation_type(operation_type.clone())
                .set_user_ids(Some(accounts.to_vec()));
            request.send().await.during(format_args!(
                "ModifySnapshotAttribute {snapshot} ({image_id}) createVolumePermission {}",
                operation_type.as_str()
            ))?;
        }
    }
    Ok(())
}

pub(super) async fn put_image_parameter(
    aws: &Aws,
    name: &str,
    region: &Region,
    image: &ImageRef,
) -> Result<(), AwsError> {
    let operation = format!("PutParameter {name} in {region}");
    let image_id = resolve_id(aws, image, region, &operation).await?;
    let request = aws
        .ssm(region.as_str())
        .put_parameter()
        .name(name)
        .value(&image_id)
        .r#type(ParameterType::String)
        .data_type(IMAGE_DATA_TYPE)
        .overwrite(true);
    request.send().await.during(format_args!("{operation} = {image_id}")).map(drop)
}

pub(super) async fn deregister_image(
    aws: &Aws,
    image_id: &str,
    region: &Region,
    snapshot_ids: &[String],
) -> Result<(), AwsError> {
    delete_image(aws, region.as_str(), image_id, snapshot_ids).await
}

/// Deregisters an image (gone already counts as done) and deletes its snapshots: deregistering alone leaves them,
/// and their cost, behind.
async fn delete_image(aws: &Aws, region: &str, image_id: &str, snapshots: &[String]) -> Result<(), AwsError> {
    let ec2 = aws.ec2(region);
    let request = ec2.deregister_image().image_id(image_id);
    request.send().await.during(format_args!("DeregisterImage {image_id} in {region}")).absent_on(IMAGE_GONE)?;
    for snapshot in snapshots {
        let mut pause = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            let request = ec2.delete_snapshot().snapshot_id(snapshot);
            let answer =
                request.send().await.during(format_args!("DeleteSnapshot {snapshot} (of {image_id}) in {region}"));
            match answer.absent_on(SNAPSHOT_GONE) {
                Ok(_) => break,
                // The image's deregistration takes a moment to release its snapshots.
                Err(e) if e.has_code("InvalidSnapshot.InUse") && attempt < SETTLE_ATTEMPTS => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

pub(super) async fn enable_image_deprecation(
    aws: &Aws,
    image_id: &str,
    region: &Region,
    deprecate_at: &str,
) -> Result<(), AwsError> {
    let operation = format!("EnableImageDeprecation {image_id} in {region} at {deprecate_at}");
    let at = DateTime::from_str(deprecate_at, DateTimeFormat::DateTime).map_err(|e| {
        AwsError::new(&operation, None, format!("invalid request: {deprecate_at:?} is not an RFC 3339 time: {e}"))
    })?;
    let request = aws.ec2(region.as_str()).enable_image_deprecation().image_id(image_id).deprecate_at(at);
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn enable_deregistration_protection(
    aws: &Aws,
    image_id: &str,
    region: &Region,
) -> Result<(), AwsError> {
    // Without the 24-hour cooldown: retention turns protection off before it deregisters, and plans that itself.
    let request =
        aws.ec2(region.as_str()).enable_image_deregistration_protection().image_id(image_id).with_cooldown(false);
    request.send().await.during(format_args!("EnableImageDeregistrationProtection {image_id} in {region}")).map(drop)
}

// Resolving image references.

/// The AMI ID a reference names in `region`; an `Id` is taken as it is (the call using it fails if it is gone).
async fn resolve_id(aws: &Aws, image: &ImageRef, region: &Region, operation: &str) -> Result<String, AwsError> {
    match image {
        ImageRef::Id(id) => Ok(id.clone()),
        _ => Ok(resolve_image(aws, image, region, operation).await?.image_id().unwrap_or_default().to_owned()),
    }
}

/// The image a reference names in `region`: exactly one, or the step fails saying why.
async fn resolve_image(aws: &Aws, image: &ImageRef, region: &Region, operation: &str) -> Result<Image, AwsError> {
    let name = region.as_str();
    let (found, looked_for) = match image {
        ImageRef::Id(id) => {
            let request = aws.ec2(name).describe_images().image_ids(id);
            let answer =
                request.send().await.during(format_args!("DescribeImages {id} in {region}")).absent_on(IMAGE_GONE)?;
            (answer.map(|a| a.images().to_vec()).unwrap_or_default(), format!("image {id}"))
        }
        ImageRef::Build { build_id } => {
            let what = format!("{}={build_id}", tags::BUILD_ID);
            let filters = vec![ec2_filter(&format!("tag:{}", tags::BUILD_ID), [build_id.as_str()])];
            (owned_images(aws, name, filters, &what).await?, format!("an image of this account tagged {what}"))
        }
        ImageRef::CopyOf { copy, source } => {
            let what = format!("{RESOURCE_TAG}={copy}, {}={source}", tags::SOURCE);
            let filters = vec![
                ec2_filter(&format!("tag:{RESOURCE_TAG}"), [copy.as_str()]),
                ec2_filter(&format!("tag:{}", tags::SOURCE), [source.as_str()]),
            ];
            (owned_images(aws, name, filters, &what).await?, format!("an image of this account tagged {what}"))
        }
    };
    let usable = found.into_iter().filter(is_usable).collect();
    single(usable, &image.to_string(), region, operation)?.ok_or_else(|| {
        AwsError::new(
            operation,
            None,
            format!("{image} does not exist in {region}: found no {looked_for} that is available or pending (has the step that makes it run?)"),
        )
    })
}

/// Images of this account (owner `self`, never unfiltered) matching the filters.
async fn owned_images(aws: &Aws, region: &str, filters: Vec<Filter>, what: &str) -> Result<Vec<Image>, AwsError> {
    let request = aws.ec2(region).describe_images().owners("self").set_filters(Some(filters));
    let answer = request.send().await.during(format_args!("DescribeImages {region} {what}"))?;
    Ok(answer.images().to_vec())
}

/// At most one image, or the step fails: two images with the same identifying tags are a mistake to be cleaned up
/// by hand, not a choice to make silently.
fn single(mut images: Vec<Image>, what: &str, region: &Region, operation: &str) -> Result<Option<Image>, AwsError> {
    if images.len() > 1 {
        let mut ids: Vec<&str> = images.iter().filter_map(|i| i.image_id()).collect();
        ids.sort_unstable();
        return Err(AwsError::new(
            operation,
            None,
            format!("{what} is ambiguous in {region}: {} all match; deregister the extra images", ids.join(", ")),
        ));
    }
    Ok(images.pop())
}

/// An image that exists or is on its way (not failed, not deregistered).
fn is_usable(image: &Image) -> bool {
    matches!(image.state(), Some(ImageState::Available | ImageState::Pending | ImageState::Disabled) | None)
}

/// Tags resources just made, retrying while AWS does not know them yet.
async fn create_tags(
    aws: &Aws,
    region: &str,
    resources: Vec<String>,
    tags: &Tags,
    operation: &str,
) -> Result<(), AwsError> {
    let mut pause = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        let request =
            aws.ec2(region).create_tags().set_resources(Some(resources.clone())).set_tags(Some(ec2_sdk_tags(tags)));
        let answer = request.send().await.during(operation);
        match answer {
            Ok(_) => return Ok(()),
            Err(e) if NOT_YET_KNOWN.iter().any(|c| e.has_code(c)) && attempt < SETTLE_ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy<'a>(source: &'a ImageRef, regions: &'a (Region, Region), tags: &'a Tags) -> Copy<'a> {
        Copy {
            source,
            source_region: &regions.0,
            region: &regions.1,
            name: "web-r0001-aaaaaaaa",
            description: None,
            encrypted: false,
            kms_key: None,
            tags,
            client_token: "t",
        }
    }

    #[test]
    fn source_image_tag_names_the_resolved_ami() {
        let source = ImageRef::Build { build_id: "web-r1-aaaaaaaa".into() };
        let regions = (Region::parse("us-east-1").unwrap(), Region::parse("eu-west-1").unwrap());
        let step_tags: Tags = [
            (tags::SOURCE_IMAGE.to_owned(), "us-east-1:web-r1-aaaaaaaa".to_owned()),
            ("team".to_owned(), "a".to_owned()),
        ]
        .into();
        let c = copy(&source, &regions, &step_tags);
        assert_eq!(copy_tags(&c, Some("ami-1"), None)[tags::SOURCE_IMAGE], "us-east-1:ami-1");
        let existing: Tags = [(tags::SOURCE_IMAGE.to_owned(), "us-east-1:ami-0".to_owned())].into();
        assert_eq!(copy_tags(&c, None, Some(&existing))[tags::SOURCE_IMAGE], "us-east-1:ami-0", "kept from the copy");
        assert_eq!(copy_tags(&c, None, None)[tags::SOURCE_IMAGE], "us-east-1:web-r1-aaaaaaaa", "as written");
        let plain: Tags = [("team".to_owned(), "a".to_owned())].into();
        assert!(!copy_tags(&copy(&source, &regions, &plain), Some("ami-1"), None).contains_key(tags::SOURCE_IMAGE));
    }

    #[test]
    fn launch_permissions_become_one_entry_each() {
        let set = LaunchPermissions {
            accounts: ["111111111111".to_owned(), "222222222222".to_owned()].into(),
            organizations: ["arn:aws:organizations::111111111111:organization/o-abc".to_owned()].into(),
            organizational_units: ["arn:aws:organizations::111111111111:ou/o-abc/ou-ab-1".to_owned()].into(),
            public: true,
        };
        let entries = launch_permissions(&set);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries.iter().filter(|p| p.group() == Some(&PermissionGroup::All)).count(), 1);
        assert!(launch_permissions(&LaunchPermissions::default()).is_empty());
    }
}
