//! Reads what package groups and builds keep in S3: per package group ONE `GetObject` of its name record, per
//! artifacts bucket ONE `ListObjectsV2` of the uploaded packages, and the reports of builds that have no available
//! image — those of live build instances (bucket from the instance's `imagectl:logs-bucket` tag) and, from ONE
//! delimited `ListObjectsV2` of `imagectl/builds/` per logs bucket, the newest build of each image name, whose
//! instance may be gone (a failed build is terminated): two `GetObject`s each (status and result).
//!
//! Buckets are read through a client of their own region: from the bucket listing when the account lists them,
//! else from one `GetBucketLocation`.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::try_join_all;
use serde::de::DeserializeOwned;

use super::ec2::Ec2State;
use crate::aws::error::{Absent, Context};
use crate::aws::read::bucket_region;
use crate::aws::{Aws, AwsError};
use crate::build::{tags, InstanceResult, InstanceStatus, PackageGroupRecord, ReportKeys};
use crate::live::{BuildReports, ReadScope};

/// User metadata holding a package's SHA-256 (`x-amz-meta-sha256`).
pub(in crate::aws) const SHA256_METADATA: &str = "sha256";
const PACKAGES_PREFIX: &str = "imagectl/packages/";
const BUILDS_PREFIX: &str = "imagectl/builds/";

pub(super) struct PackagesState {
    pub package_groups: BTreeMap<String, Option<PackageGroupRecord>>,
    pub packages_present: BTreeMap<String, BTreeSet<String>>,
    pub build_reports: BTreeMap<String, BuildReports>,
}

pub(super) async fn read(
    aws: &Aws,
    scope: &ReadScope,
    ec2: &Ec2State,
    listed_regions: &BTreeMap<String, String>,
) -> Result<PackagesState, AwsError> {
    // Builds whose instance is alive, with the bucket their instance reports to.
    let live_builds: BTreeMap<&str, &str> = ec2
        .build_instances
        .iter()
        .filter_map(|i| Some((i.tags.get(tags::BUILD_ID)?.as_str(), i.tags.get(tags::LOGS_BUCKET)?.as_str())))
        .collect();
    let captured: BTreeSet<&str> = ec2
        .images
        .iter()
        .filter(|i| i.state == "available")
        .filter_map(|i| i.tags.get(tags::BUILD_ID).map(String::as_str))
        .collect();

    let buckets: BTreeSet<&str> = scope
        .package_groups
        .values()
        .map(String::as_str)
        .chain(scope.logs_buckets.iter().map(String::as_str))
        .chain(live_builds.values().copied())
        .collect();
    let located = try_join_all(
        buckets
            .iter()
            .filter(|b| !listed_regions.contains_key(**b))
            .map(|bucket| async move { Ok::<_, AwsError>((bucket.to_string(), bucket_region(aws, bucket).await?)) }),
    )
    .await?;
    let mut regions: BTreeMap<String, Option<String>> =
        listed_regions.iter().map(|(name, region)| (name.clone(), Some(region.clone()))).collect();
    regions.extend(located);
    let region_of = |bucket: &str| regions.get(bucket).cloned().flatten();

    let groups = try_join_all(scope.package_groups.iter().map(|(name, bucket)| {
        let region = region_of(bucket);
        async move {
            let Some(region) = region else {
                return Ok((name.clone(), None));
            };
            let key = crate::build::package_group_key(name);
            let bytes = aws.limited(get_object(aws, &region, bucket, &key)).await?;
            let record = match bytes {
                None => None,
                Some(bytes) => Some(serde_json::from_slice::<PackageGroupRecord>(&bytes).map_err(|e| {
                    AwsError::new(
                        format!("GetObject s3://{bucket}/{key}"),
                        None,
                        format!("not a package-group record: {e}"),
                    )
                })?),
            };
            Ok::<_, AwsError>((name.clone(), record))
        }
    }));

    let artifacts: BTreeSet<&String> = scope.package_groups.values().collect();
    let present = try_join_all(artifacts.into_iter().map(|bucket| {
        let region = region_of(bucket);
        async move {
            let Some(region) = region else {
                return Ok((bucket.clone(), BTreeSet::new()));
            };
            let keys = list_keys(aws, &region, bucket, PACKAGES_PREFIX, None).await?.0;
            Ok::<_, AwsError>((bucket.clone(), keys.into_iter().collect()))
        }
    }));

    let finished = try_join_all(scope.logs_buckets.iter().map(|bucket| {
        let region = region_of(bucket);
        async move {
            let Some(region) = region else {
                return Ok(Vec::new());
            };
            let prefixes = list_keys(aws, &region, bucket, BUILDS_PREFIX, Some("/")).await?.1;
            let builds = prefixes.iter().filter_map(|p| p.strip_prefix(BUILDS_PREFIX)?.strip_suffix('/'));
            // The newest build of each image name: all the planner needs (the next revision, and whether the last
            // attempt of a configuration failed).
            let mut newest: BTreeMap<&str, (u32, &str)> = BTreeMap::new();
            for build_id in builds {
                let Some((name, revision)) = parse_build_id(build_id) else {
                    continue;
                };
                let entry = newest.entry(name).or_insert((revision, build_id));
                if revision > entry.0 {
                    *entry = (revision, build_id);
                }
            }
            Ok::<_, AwsError>(newest.into_values().map(|(_, id)| (id.to_owned(), bucket.clone())).collect())
        }
    }));

    let (groups, present, finished) = tokio::try_join!(groups, present, finished)?;

    let mut candidates: BTreeMap<String, String> =
        live_builds.iter().map(|(id, bucket)| (id.to_string(), bucket.to_string())).collect();
    for (build_id, bucket) in finished.into_iter().flatten() {
        candidates.entry(build_id).or_insert(bucket);
    }
    candidates.retain(|build_id, _| !captured.contains(build_id.as_str()));
    let reports = try_join_all(candidates.iter().map(|(build_id, bucket)| {
        let region = region_of(bucket);
        async move {
            let Some(region) = region else {
                return Ok(None);
            };
            let keys = ReportKeys::for_build(build_id);
            let (status, result) = tokio::try_join!(
                aws.limited(get_json::<InstanceStatus>(aws, &region, bucket, &keys.status)),
                aws.limited(get_json::<InstanceResult>(aws, &region, bucket, &keys.result)),
            )?;
            Ok::<_, AwsError>(Some((build_id.clone(), BuildReports { status, result })))
        }
    }))
    .await?;

    Ok(PackagesState {
        package_groups: groups.into_iter().collect(),
        packages_present: present.into_iter().collect(),
        build_reports: reports.into_iter().flatten().collect(),
    })
}

/// `<name>-r<revision>-<fingerprint>` (see `build::build_id`) → (name, revision).
fn parse_build_id(build_id: &str) -> Option<(&str, u32)> {
    let (rest, _fingerprint) = build_id.rsplit_once('-')?;
    let (name, revision) = rest.rsplit_once("-r")?;
    Some((name, revision.parse().ok()?))
}

/// Every key under `prefix` (and, with a delimiter, the common prefixes), all pages.
async fn list_keys(
    aws: &Aws,
    region: &str,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Result<(Vec<String>, Vec<String>), AwsError> {
    let request =
        aws.s3(region).list_objects_v2().bucket(bucket).prefix(prefix).set_delimiter(delimiter.map(str::to_owned));
    let mut pages = request.into_paginator().send();
    let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
    while let Some(page) = aws.limited(pages.next()).await {
        let Some(page) =
            page.during(format_args!("ListObjectsV2 s3://{bucket}/{prefix}")).absent_on(&["NoSuchBucket"])?
        else {
            break;
        };
        keys.extend(page.contents().iter().filter_map(|o| o.key()).map(str::to_owned));
        prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix()).map(str::to_owned));
    }
    Ok((keys, prefixes))
}

/// An object's bytes through a client of `region` made from the connection's own credentials; None when the object
/// (or the bucket) does not exist.
pub(in crate::aws) async fn get_object(
    aws: &Aws,
    region: &str,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, AwsError> {
    get_object_with(&aws.s3(region), bucket, key).await
}

pub(in crate::aws) async fn get_object_with(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, AwsError> {
    let operation = format!("GetObject s3://{bucket}/{key}");
    let Some(answer) = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .during(&operation)
        .absent_on(&["NoSuchKey", "NoSuchBucket"])?
    else {
        return Ok(None);
    };
    let body =
        answer.body.collect().await.map_err(|e| AwsError::new(&operation, None, format!("reading the body: {e}")))?;
    Ok(Some(body.into_bytes().to_vec()))
}

/// A JSON report; one that does not parse (a half-written or foreign object) reads as absent, with a warning.
pub(in crate::aws) async fn get_json<T: DeserializeOwned>(
    aws: &Aws,
    region: &str,
    bucket: &str,
    key: &str,
) -> Result<Option<T>, AwsError> {
    Ok(get_object(aws, region, bucket, key).await?.and_then(|bytes| parse_report(bucket, key, &bytes)))
}

pub(in crate::aws) fn parse_report<T: DeserializeOwned>(bucket: &str, key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!("ignoring s3://{bucket}/{key}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_build_id;

    #[test]
    fn build_ids_parse_from_the_right() {
        assert_eq!(parse_build_id("web-base-r12-0123abcd"), Some(("web-base", 12)));
        assert_eq!(parse_build_id("my-role-r-r3-0123abcd"), Some(("my-role-r", 3)));
        assert_eq!(parse_build_id("web-rx-0123abcd"), None);
        assert_eq!(parse_build_id("nothing"), None);
    }
}
