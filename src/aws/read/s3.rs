//! Reads buckets. S3 has no batched read of bucket settings: one `ListBuckets`, then per bucket its region (unless
//! the listing carries it) and tags (ownership lives there), then the four settings only for buckets the stack
//! names or owns — each through a client of the bucket's own region, which S3 requires.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::types::{BucketVersioningStatus, ExpirationStatus, ServerSideEncryption, Tag};
use futures::future::try_join_all;

use crate::aws::error::{Absent, Context};
use crate::aws::{Aws, AwsError};
use crate::live::{owned_by, BucketSettings, LiveBucket, ReadScope};
use crate::model::{BucketEncryption, Region, Tags};

/// The ID of the one lifecycle rule imagectl writes.
pub(in crate::aws) const EXPIRE_RULE_ID: &str = "imagectl-expire";

pub(super) struct S3State {
    pub buckets: BTreeMap<String, LiveBucket>,
    pub external: BTreeMap<String, bool>,
}

pub(super) async fn read(aws: &Aws, scope: &ReadScope) -> Result<S3State, AwsError> {
    let mut listed = Vec::new();
    let mut pages = aws.s3(aws.region()).list_buckets().into_paginator().send();
    while let Some(page) = aws.limited(pages.next()).await {
        for bucket in page.during("ListBuckets")?.buckets() {
            if let Some(name) = bucket.name() {
                listed.push((name.to_owned(), bucket.bucket_region().map(str::to_owned)));
            }
        }
    }
    let names: BTreeSet<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
    let buckets = try_join_all(listed.iter().map(|(name, region)| read_bucket(aws, scope, name, region.as_deref())));
    let external = try_join_all(scope.external_buckets.iter().map(|name| async {
        let exists = names.contains(name.as_str()) || bucket_exists(aws, name).await?;
        Ok::<_, AwsError>((name.clone(), exists))
    }));
    let (buckets, external) = tokio::try_join!(buckets, external)?;
    Ok(S3State {
        buckets: buckets.into_iter().flatten().map(|b| (b.name.clone(), b)).collect(),
        external: external.into_iter().collect(),
    })
}

async fn read_bucket(
    aws: &Aws,
    scope: &ReadScope,
    name: &str,
    listed_region: Option<&str>,
) -> Result<Option<LiveBucket>, AwsError> {
    let named = scope.buckets.contains(name);
    // A bucket deleted since the listing is simply gone. One hidden from us by its bucket policy cannot be one
    // imagectl manages for this stack unless the manifests name it, in which case the denial is an error.
    let gone: &[&str] = if named { &["NoSuchBucket"] } else { &["NoSuchBucket", "AccessDenied"] };

    let region = match listed_region {
        Some(region) => region.to_owned(),
        None => {
            let request = aws.s3(aws.region()).get_bucket_location().bucket(name);
            let answer =
                aws.limited(request.send()).await.during(format_args!("GetBucketLocation {name}")).absent_on(gone)?;
            let Some(answer) = answer else {
                return Ok(None);
            };
            location_region(answer.location_constraint().map(|c| c.as_str())).to_owned()
        }
    };
    let region = match Region::parse(&region) {
        Ok(region) => region,
        Err(e) if named => return Err(AwsError::new(format!("GetBucketLocation {name}"), None, e.reason)),
        // A region newer than this imagectl: no manifest can name it, so the bucket cannot be the stack's.
        Err(_) => return Ok(None),
    };
    let client = aws.s3(region.as_str());

    let tagging = aws.limited(client.get_bucket_tagging().bucket(name).send()).await;
    let tags = match tagging.during(format_args!("GetBucketTagging {name}")) {
        Ok(answer) => tags(answer.tag_set()),
        Err(e) if e.has_code("NoSuchTagSet") => Tags::new(),
        Err(e) if gone.iter().any(|code| e.has_code(code)) => {
            tracing::warn!("skipping bucket {name}: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let owned = owned_by(&tags, &scope.stack);
    if !named && !owned {
        return Ok(Some(LiveBucket { name: name.to_owned(), region, tags, settings: None, has_objects: None }));
    }

    let versioning = async {
        let answer = aws.limited(client.get_bucket_versioning().bucket(name).send()).await;
        let answer = answer.during(format_args!("GetBucketVersioning {name}"))?;
        Ok(answer.status() == Some(&BucketVersioningStatus::Enabled))
    };
    let encryption = async {
        let answer = aws.limited(client.get_bucket_encryption().bucket(name).send()).await;
        let answer = answer
            .during(format_args!("GetBucketEncryption {name}"))
            .absent_on(&["ServerSideEncryptionConfigurationNotFoundError"])?;
        let default = answer
            .as_ref()
            .and_then(|a| a.server_side_encryption_configuration())
            .and_then(|c| c.rules().iter().find_map(|rule| rule.apply_server_side_encryption_by_default()));
        Ok(default.and_then(|d| match d.sse_algorithm() {
            ServerSideEncryption::Aes256 => Some(BucketEncryption::S3),
            ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse => {
                Some(BucketEncryption::Kms { key: d.kms_master_key_id().map(str::to_owned) })
            }
            _ => None,
        }))
    };
    let public_access_block = async {
        let answer = aws.limited(client.get_public_access_block().bucket(name).send()).await;
        let answer = answer
            .during(format_args!("GetPublicAccessBlock {name}"))
            .absent_on(&["NoSuchPublicAccessBlockConfiguration"])?;
        Ok(answer.as_ref().and_then(|a| a.public_access_block_configuration()).is_some_and(|c| {
            [c.block_public_acls(), c.ignore_public_acls(), c.block_public_policy(), c.restrict_public_buckets()]
                .iter()
                .all(|setting| *setting == Some(true))
        }))
    };
    let lifecycle = async {
        let answer = aws.limited(client.get_bucket_lifecycle_configuration().bucket(name).send()).await;
        let answer = answer
            .during(format_args!("GetBucketLifecycleConfiguration {name}"))
            .absent_on(&["NoSuchLifecycleConfiguration"])?;
        let rules = answer.as_ref().map(|a| a.rules()).unwrap_or_default();
        let ours = rules.iter().find(|rule| rule.id() == Some(EXPIRE_RULE_ID));
        // A disabled rule of ours expires nothing: read it as absent, so the plan writes it enabled.
        let expire_after_days = ours
            .filter(|rule| rule.status() == &ExpirationStatus::Enabled)
            .and_then(|rule| rule.expiration())
            .and_then(|e| e.days())
            .and_then(|days| u32::try_from(days).ok());
        let others = rules.iter().filter(|rule| rule.id() != Some(EXPIRE_RULE_ID)).count();
        Ok((expire_after_days, others))
    };
    // Versions and delete markers count too: S3 refuses to delete a bucket that holds any.
    let has_objects = async {
        if !(scope.count_bucket_objects && owned) {
            return Ok(None);
        }
        let answer = aws.limited(client.list_object_versions().bucket(name).max_keys(1).send()).await;
        let answer = answer.during(format_args!("ListObjectVersions {name}"))?;
        Ok(Some(!answer.versions().is_empty() || !answer.delete_markers().is_empty()))
    };
    let (versioning, encryption, block_public_access, (expire_after_days, other_lifecycle_rules), has_objects) =
        tokio::try_join!(versioning, encryption, public_access_block, lifecycle, has_objects)?;
    Ok(Some(LiveBucket {
        name: name.to_owned(),
        region,
        tags,
        settings: Some(BucketSettings {
            expire_after_days,
            other_lifecycle_rules,
            versioning,
            block_public_access,
            encryption,
        }),
        has_objects,
    }))
}

/// Whether a bucket outside this account's listing exists: S3 answers 404 only for a name nobody holds; 403
/// (another account's) and 301 (another region's) mean it exists.
async fn bucket_exists(aws: &Aws, name: &str) -> Result<bool, AwsError> {
    match aws.limited(aws.s3(aws.region()).head_bucket().bucket(name).send()).await {
        Ok(_) => Ok(true),
        Err(err) => match err.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => Ok(false),
            Some(301 | 403) => Ok(true),
            _ => Err(err).during(format_args!("HeadBucket {name}")),
        },
    }
}

/// A bucket's region (`GetBucketLocation`, through the home region's client); None when the bucket does not exist.
pub(in crate::aws) async fn bucket_region(aws: &Aws, name: &str) -> Result<Option<String>, AwsError> {
    let request = aws.s3(aws.region()).get_bucket_location().bucket(name);
    let answer = aws
        .limited(request.send())
        .await
        .during(format_args!("GetBucketLocation {name}"))
        .absent_on(&["NoSuchBucket"])?;
    Ok(answer.map(|a| location_region(a.location_constraint().map(|c| c.as_str())).to_owned()))
}

/// `GetBucketLocation` names us-east-1 by no constraint at all and eu-west-1 by its legacy name `EU`.
fn location_region(constraint: Option<&str>) -> &str {
    match constraint {
        None | Some("") => "us-east-1",
        Some("EU") => "eu-west-1",
        Some(region) => region,
    }
}

pub(in crate::aws) fn tags(tags: &[Tag]) -> Tags {
    tags.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::location_region;

    #[test]
    fn legacy_location_constraints() {
        assert_eq!(location_region(None), "us-east-1");
        assert_eq!(location_region(Some("")), "us-east-1");
        assert_eq!(location_region(Some("EU")), "eu-west-1");
        assert_eq!(location_region(Some("eu-central-1")), "eu-central-1");
    }
}
