//! Reads EC2 images and build instances: per region ONE `DescribeImages` of the images this stack owns (owner
//! `self`, filtered by the stack tag — never unfiltered: a region holds thousands of public images) and ONE
//! `DescribeInstances` of its live build instances; and the base images the manifests ask for, batched per
//! region: every AMI ID (given, or read from an SSM parameter) in one `DescribeImages` filtered by `image-id`, one
//! `GetParameters` per 10 parameters, one `DescribeImages` per lookup (owners + name filter).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, Image, Instance, Tag};
use futures::future::try_join_all;

use crate::aws::error::Context;
use crate::aws::{Aws, AwsError};
use crate::live::{BaseImageQuery, LiveBaseImage, LiveBuildInstance, LiveImage, ReadScope, STACK_TAG};
use crate::model::{AmiId, Region, Tags};

/// The states of an instance that still exists (not `terminated`): a build instance in any of them is a build in
/// progress, or one that stopped and waits to be captured.
pub(in crate::aws) const LIVE_INSTANCE_STATES: [&str; 5] =
    ["pending", "running", "stopping", "stopped", "shutting-down"];
/// `GetParameters` takes at most 10 names.
const PARAMETERS_PER_CALL: usize = 10;
/// Filter values per `DescribeImages` filter: AWS allows 200.
const IDS_PER_CALL: usize = 200;

pub(super) struct Ec2State {
    pub base_images: BTreeMap<String, LiveBaseImage>,
    pub images: Vec<LiveImage>,
    pub build_instances: Vec<LiveBuildInstance>,
}

pub(super) async fn read(aws: &Aws, scope: &ReadScope) -> Result<Ec2State, AwsError> {
    let owned = try_join_all(scope.regions.iter().map(|region| async move {
        let (images, instances) =
            tokio::try_join!(owned_images(aws, region, &scope.stack), build_instances(aws, region, &scope.stack))?;
        Ok::<_, AwsError>((images, instances))
    }));
    let mut by_region: BTreeMap<&Region, Vec<&BaseImageQuery>> = BTreeMap::new();
    for query in &scope.base_images {
        let region = match query {
            BaseImageQuery::Id { region, .. }
            | BaseImageQuery::Lookup { region, .. }
            | BaseImageQuery::Parameter { region, .. } => region,
        };
        by_region.entry(region).or_default().push(query);
    }
    let bases = try_join_all(by_region.into_iter().map(|(region, queries)| base_images(aws, region, queries)));
    let (owned, bases) = tokio::try_join!(owned, bases)?;
    let mut state = Ec2State {
        base_images: bases.into_iter().flatten().collect(),
        images: Vec::new(),
        build_instances: Vec::new(),
    };
    for (images, instances) in owned {
        state.images.extend(images);
        state.build_instances.extend(instances);
    }
    Ok(state)
}

async fn owned_images(aws: &Aws, region: &Region, stack: &str) -> Result<Vec<LiveImage>, AwsError> {
    let request =
        aws.ec2(region.as_str()).describe_images().owners("self").filters(filter(&format!("tag:{STACK_TAG}"), [stack]));
    let answer = aws.limited(request.send()).await.during(format_args!("DescribeImages {region} (stack {stack})"))?;
    Ok(answer.images().iter().filter_map(|image| live_image(image, region)).collect())
}

async fn build_instances(aws: &Aws, region: &Region, stack: &str) -> Result<Vec<LiveBuildInstance>, AwsError> {
    let request = aws
        .ec2(region.as_str())
        .describe_instances()
        .filters(filter(&format!("tag:{STACK_TAG}"), [stack]))
        .filters(filter("instance-state-name", LIVE_INSTANCE_STATES));
    let mut pages = request.into_paginator().send();
    let mut instances = Vec::new();
    while let Some(page) = aws.limited(pages.next()).await {
        let page = page.during(format_args!("DescribeInstances {region} (stack {stack})"))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            instances.extend(live_instance(instance, region));
        }
    }
    Ok(instances)
}

/// Resolves the queries of one region. Parameters are read first, so that their AMI IDs join the given ones in a
/// single `DescribeImages`.
async fn base_images(
    aws: &Aws,
    region: &Region,
    queries: Vec<&BaseImageQuery>,
) -> Result<Vec<(String, LiveBaseImage)>, AwsError> {
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new(); // AMI ID → keys of the queries it answers
    let mut parameters: BTreeMap<&str, String> = BTreeMap::new(); // parameter name → query key
    let mut lookups = Vec::new();
    for query in queries {
        match query {
            BaseImageQuery::Id { id, .. } => ids.entry(id.to_string()).or_default().push(query.key()),
            BaseImageQuery::Parameter { name, .. } => {
                parameters.insert(name, query.key());
            }
            BaseImageQuery::Lookup { owners, name, architecture, .. } => {
                lookups.push((query.key(), owners, name, architecture.as_deref()))
            }
        }
    }

    let by_lookup = try_join_all(lookups.into_iter().map(|(key, owners, name, architecture)| async move {
        let mut request = aws
            .ec2(region.as_str())
            .describe_images()
            .set_owners(Some(owners.clone()))
            .filters(filter("name", [name.as_str()]))
            .filters(filter("state", ["available"]));
        if let Some(architecture) = architecture {
            request = request.filters(filter("architecture", [architecture]));
        }
        let answer = aws.limited(request.send()).await.during(format_args!("DescribeImages {region} name={name}"))?;
        // Newest first; RFC 3339 timestamps of one format order as strings.
        let newest = answer.images().iter().filter_map(live_base_image).max_by(|a, b| a.1.cmp(&b.1));
        Ok::<_, AwsError>(newest.map(|(image, _)| (key, image)))
    }));

    let by_id = async {
        let names: Vec<&str> = parameters.keys().copied().collect();
        let answers = try_join_all(names.chunks(PARAMETERS_PER_CALL).map(|chunk| async move {
            let request = aws
                .ssm(region.as_str())
                .get_parameters()
                .set_names(Some(chunk.iter().map(|n| n.to_string()).collect()));
            let answer =
                aws.limited(request.send()).await.during(format_args!("GetParameters {region} {}", chunk.join(" ")))?;
            Ok::<_, AwsError>(answer)
        }))
        .await?;
        for parameter in answers.iter().flat_map(|a| a.parameters()) {
            let (Some(name), Some(value)) = (parameter.name(), parameter.value()) else {
                continue;
            };
            let Some(key) = parameters.get(name) else {
                continue;
            };
            match AmiId::parse(value.trim()) {
                Ok(id) => ids.entry(id.to_string()).or_default().push(key.clone()),
                Err(_) => tracing::warn!("SSM parameter {name} in {region} does not hold an AMI ID: {value:?}"),
            }
        }
        let wanted: Vec<&String> = ids.keys().collect();
        let answers = try_join_all(wanted.chunks(IDS_PER_CALL).map(|chunk| async move {
            // A filter rather than ImageIds: an ID that does not exist (or is not visible) is simply not returned,
            // where ImageIds fails the whole call.
            let request = aws
                .ec2(region.as_str())
                .describe_images()
                .filters(filter("image-id", chunk.iter().map(|s| s.as_str())));
            let answer = aws.limited(request.send()).await.during(format_args!("DescribeImages {region} image-id"))?;
            Ok::<_, AwsError>(answer)
        }))
        .await?;
        let mut found = Vec::new();
        for (image, _) in answers.iter().flat_map(|a| a.images()).filter_map(live_base_image) {
            for key in ids.get(image.id.as_str()).into_iter().flatten() {
                found.push((key.clone(), image.clone()));
            }
        }
        Ok::<_, AwsError>(found)
    };
    let (by_lookup, by_id) = tokio::try_join!(by_lookup, by_id)?;
    Ok(by_lookup.into_iter().flatten().chain(by_id).collect())
}

/// A base image and its creation date (to pick the newest).
fn live_base_image(image: &Image) -> Option<(LiveBaseImage, String)> {
    let id = AmiId::parse(image.image_id()?).ok()?;
    let live = LiveBaseImage {
        id,
        name: image.name().unwrap_or_default().to_owned(),
        state: image.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        platform: image.platform().map(|p| p.as_str().to_owned()),
        architecture: image.architecture().map(|a| a.as_str().to_owned()).unwrap_or_default(),
        root_device_type: image.root_device_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
    };
    Some((live, image.creation_date().unwrap_or_default().to_owned()))
}

fn live_image(image: &Image, region: &Region) -> Option<LiveImage> {
    Some(LiveImage {
        id: image.image_id()?.to_owned(),
        region: region.clone(),
        name: image.name().unwrap_or_default().to_owned(),
        state: image.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        description: image.description().filter(|d| !d.is_empty()).map(str::to_owned),
        creation_date: image.creation_date().unwrap_or_default().to_owned(),
        snapshot_ids: snapshot_ids(image),
        tags: tags(image.tags()),
        encrypted: image.block_device_mappings().iter().filter_map(|m| m.ebs()).any(|e| e.encrypted() == Some(true)),
        kms_key_id: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.kms_key_id())
            .next()
            .map(str::to_owned),
        deprecation_time: image.deprecation_time().map(str::to_owned),
        deregistration_protection: image.deregistration_protection().is_some_and(|p| p.starts_with("enabled")),
    })
}

pub(in crate::aws) fn snapshot_ids(image: &Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|ebs| ebs.snapshot_id()))
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn live_instance(instance: &Instance, region: &Region) -> Option<LiveBuildInstance> {
    Some(LiveBuildInstance {
        id: instance.instance_id()?.to_owned(),
        region: region.clone(),
        state: instance.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default(),
        launch_time: instance
            .launch_time()
            .and_then(|t| t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime).ok())
            .unwrap_or_default(),
        tags: tags(instance.tags()),
    })
}

pub(in crate::aws) fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::builder().name(name).set_values(Some(values.into_iter().map(str::to_owned).collect())).build()
}

pub(in crate::aws) fn tags(tags: &[Tag]) -> Tags {
    tags.iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

pub(in crate::aws) fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build()).collect()
}
