//! Reads what distribution needs: the SSM parameters the stack publishes AMI IDs to, the launch permissions of the
//! stack's images and the create-volume permissions of their snapshots, and which of the stack's images are still
//! in use.
//!
//! | read                  | requests                                                                       |
//! |-----------------------|--------------------------------------------------------------------------------|
//! | parameters            | per region, one `GetParameters` per 10 names (missing names come back as `InvalidParameters`) |
//! | launch permissions    | one `DescribeImageAttribute launchPermission` per image (EC2 has no batched read) |
//! | snapshot permissions  | one `DescribeSnapshotAttribute createVolumePermission` per snapshot (same)     |
//! | usage: instances      | per region with stack images, one `DescribeInstances` filtered by `image-id` and live state (paginated; 200 IDs a filter) |
//! | usage: templates      | per region with stack images, one `DescribeLaunchTemplateVersions` of every template's `$Default` and `$Latest` version at once (omitting the template is AWS's documented account-wide form; paginated) |
//!
//! Every request goes through `Aws::limited`, so a stack with hundreds of images fans out without exceeding the
//! read concurrency.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{ImageAttributeName, PermissionGroup, SnapshotAttributeName};
use futures::future::try_join_all;

use super::ec2::filter;
use crate::aws::error::{Absent, Context};
use crate::aws::{Aws, AwsError};
use crate::live::{LaunchPermissions, LiveImage, ReadScope};
use crate::model::Region;

/// `GetParameters` takes at most 10 names.
const PARAMETERS_PER_CALL: usize = 10;
/// Values per EC2 filter: AWS allows 200.
const IDS_PER_FILTER: usize = 200;
/// The largest page `DescribeLaunchTemplateVersions` returns.
const TEMPLATE_VERSIONS_PER_PAGE: i32 = 200;
/// An instance in any of these states runs (or can be started again from) its image. `shutting-down` is on its way
/// out and does not hold the image.
const USING_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];
/// Listed a moment ago, gone now: nothing to read.
const IMAGE_GONE: &[&str] = &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"];
const SNAPSHOT_GONE: &[&str] = &["InvalidSnapshot.NotFound"];

#[derive(Default)]
pub(super) struct DistributionState {
    pub launch_permissions: BTreeMap<String, LaunchPermissions>,
    pub snapshot_permissions: BTreeMap<String, BTreeSet<String>>,
    pub images_in_use: BTreeMap<String, String>,
}

/// The parameters of `scope.parameters` that exist: region → name → value.
pub(super) async fn parameters(
    aws: &Aws,
    scope: &ReadScope,
) -> Result<BTreeMap<Region, BTreeMap<String, String>>, AwsError> {
    let batches = scope.parameters.iter().flat_map(|(region, names)| {
        let names: Vec<&String> = names.iter().collect();
        names.chunks(PARAMETERS_PER_CALL).map(|chunk| (region, chunk.to_vec())).collect::<Vec<_>>()
    });
    let answers = try_join_all(batches.map(|(region, names)| async move {
        let request =
            aws.ssm(region.as_str()).get_parameters().set_names(Some(names.iter().map(|n| n.to_string()).collect()));
        let answer = aws.limited(request.send()).await.during(format_args!(
            "GetParameters {region} {}",
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" ")
        ))?;
        // Names that do not exist are listed in InvalidParameters, not an error: they are simply absent.
        let found: Vec<(String, String)> =
            answer.parameters().iter().filter_map(|p| Some((p.name()?.to_owned(), p.value()?.to_owned()))).collect();
        Ok::<_, AwsError>((region, found))
    }))
    .await?;
    let mut parameters: BTreeMap<Region, BTreeMap<String, String>> = BTreeMap::new();
    for (region, found) in answers {
        if !found.is_empty() {
            parameters.entry(region.clone()).or_default().extend(found);
        }
    }
    Ok(parameters)
}

/// Permissions and usage of the stack's images, as far as the scope asks.
pub(super) async fn read(aws: &Aws, scope: &ReadScope, images: &[LiveImage]) -> Result<DistributionState, AwsError> {
    let permissions = async {
        if scope.image_permissions {
            permissions(aws, images).await
        } else {
            Ok((BTreeMap::new(), BTreeMap::new()))
        }
    };
    let usage = async {
        if scope.image_usage {
            usage(aws, images).await
        } else {
            Ok(BTreeMap::new())
        }
    };
    let ((launch_permissions, snapshot_permissions), images_in_use) = tokio::try_join!(permissions, usage)?;
    Ok(DistributionState { launch_permissions, snapshot_permissions, images_in_use })
}

type Permissions = (BTreeMap<String, LaunchPermissions>, BTreeMap<String, BTreeSet<String>>);

/// One request per image and one per snapshot, all at once under the read semaphore.
async fn permissions(aws: &Aws, images: &[LiveImage]) -> Result<Permissions, AwsError> {
    let launch = try_join_all(images.iter().map(|image| async move {
        let request = aws
            .ec2(image.region.as_str())
            .describe_image_attribute()
            .image_id(&image.id)
            .attribute(ImageAttributeName::LaunchPermission);
        let answer = aws
            .limited(request.send())
            .await
            .during(format_args!("DescribeImageAttribute {} launchPermission", image.id))
            .absent_on(IMAGE_GONE)?;
        let Some(answer) = answer else {
            return Ok(None);
        };
        let mut permissions = LaunchPermissions::default();
        for permission in answer.launch_permissions() {
            if let Some(account) = permission.user_id() {
                permissions.accounts.insert(account.to_owned());
            }
            if permission.group() == Some(&PermissionGroup::All) {
                permissions.public = true;
            }
            if let Some(arn) = permission.organization_arn() {
                permissions.organizations.insert(arn.to_owned());
            }
            if let Some(arn) = permission.organizational_unit_arn() {
                permissions.organizational_units.insert(arn.to_owned());
            }
        }
        Ok::<_, AwsError>(Some((image.id.clone(), permissions)))
    }));
    let snapshots =
        try_join_all(images.iter().flat_map(|image| image.snapshot_ids.iter().map(move |s| (image, s))).map(
            |(image, snapshot)| async move {
                let request = aws
                    .ec2(image.region.as_str())
                    .describe_snapshot_attribute()
                    .snapshot_id(snapshot)
                    .attribute(SnapshotAttributeName::CreateVolumePermission);
                let answer = aws
                    .limited(request.send())
                    .await
                    .during(format_args!("DescribeSnapshotAttribute {snapshot} createVolumePermission"))
                    .absent_on(SNAPSHOT_GONE)?;
                let Some(answer) = answer else {
                    return Ok(None);
                };
                // Accounts only: a public snapshot (group `all`) is not something imagectl shares.
                let accounts =
                    answer.create_volume_permissions().iter().filter_map(|p| p.user_id()).map(str::to_owned).collect();
                Ok::<_, AwsError>(Some((snapshot.clone(), accounts)))
            },
        ));
    let (launch, snapshots) = tokio::try_join!(launch, snapshots)?;
    Ok((launch.into_iter().flatten().collect(), snapshots.into_iter().flatten().collect()))
}

/// Which of the stack's images a live instance or a launch template's default or latest version names, per region
/// where the stack has images.
async fn usage(aws: &Aws, images: &[LiveImage]) -> Result<BTreeMap<String, String>, AwsError> {
    let mut by_region: BTreeMap<&Region, BTreeSet<&str>> = BTreeMap::new();
    for image in images {
        by_region.entry(&image.region).or_default().insert(&image.id);
    }
    let per_region = try_join_all(by_region.into_iter().map(|(region, ids)| async move {
        let (instances, templates) =
            tokio::try_join!(instances_using(aws, region, &ids), templates_using(aws, region, &ids))?;
        Ok::<_, AwsError>((instances, templates))
    }))
    .await?;
    let mut in_use = BTreeMap::new();
    // An instance is the stronger reason: it is named when both apply.
    for (instances, templates) in per_region {
        for (image, reason) in instances.into_iter().chain(templates) {
            in_use.entry(image).or_insert(reason);
        }
    }
    Ok(in_use)
}

async fn instances_using(aws: &Aws, region: &Region, ids: &BTreeSet<&str>) -> Result<Vec<(String, String)>, AwsError> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let found = try_join_all(ids.chunks(IDS_PER_FILTER).map(|chunk| async move {
        let request = aws
            .ec2(region.as_str())
            .describe_instances()
            .filters(filter("image-id", chunk.iter().copied()))
            .filters(filter("instance-state-name", USING_STATES));
        let mut pages = request.into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = aws.limited(pages.next()).await {
            let page = page.during(format_args!("DescribeInstances {region} image-id"))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let (Some(image), Some(id)) = (instance.image_id(), instance.instance_id()) else {
                    continue;
                };
                if !chunk.contains(&image) {
                    continue;
                }
                let state = instance.state().and_then(|s| s.name()).map_or("unknown", |n| n.as_str());
                found.push((image.to_owned(), format!("instance {id} ({state})")));
            }
        }
        Ok::<_, AwsError>(found)
    }))
    .await?;
    let mut found: Vec<(String, String)> = found.into_iter().flatten().collect();
    found.sort();
    Ok(found)
}

/// Every launch template's `$Default` and `$Latest` version in one paginated listing: omitting the template is the
/// account-wide form of `DescribeLaunchTemplateVersions`, one call instead of one per template. The `image-id`
/// filter narrows it where AWS applies it; the answer is matched again here either way.
async fn templates_using(aws: &Aws, region: &Region, ids: &BTreeSet<&str>) -> Result<Vec<(String, String)>, AwsError> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let found = try_join_all(ids.chunks(IDS_PER_FILTER).map(|chunk| async move {
        let request = aws
            .ec2(region.as_str())
            .describe_launch_template_versions()
            .versions("$Default")
            .versions("$Latest")
            .filters(filter("image-id", chunk.iter().copied()))
            .max_results(TEMPLATE_VERSIONS_PER_PAGE);
        let mut pages = request.into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = aws.limited(pages.next()).await {
            let page = page.during(format_args!("DescribeLaunchTemplateVersions {region} $Default $Latest"))?;
            for version in page.launch_template_versions() {
                let Some(image) = version.launch_template_data().and_then(|d| d.image_id()) else {
                    continue;
                };
                if !chunk.contains(&image) {
                    continue;
                }
                let name = version.launch_template_name().or(version.launch_template_id()).unwrap_or("(unnamed)");
                let number = version.version_number().map_or_else(|| "?".to_owned(), |n| n.to_string());
                found.push((image.to_owned(), format!("launch template {name} version {number}")));
            }
        }
        Ok::<_, AwsError>(found)
    }))
    .await?;
    let mut found: Vec<(String, String)> = found.into_iter().flatten().collect();
    found.sort();
    found.dedup();
    Ok(found)
}
