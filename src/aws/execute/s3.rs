//! S3 bucket steps. Every call goes through a client of the bucket's region, as S3 requires.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, ObjectIdentifier,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};

use super::check_owner;
use crate::aws::error::{Absent, Context};
use crate::aws::read::{s3_tags, EXPIRE_RULE_ID};
use crate::aws::{Aws, AwsError};
use crate::model::{BucketEncryption, Tags};

/// The region whose buckets take no `LocationConstraint` and where re-creating one's own bucket answers 200.
const US_EAST_1: &str = "us-east-1";
/// The most keys `DeleteObjects` takes at once (and `ListObjectVersions` returns).
const BATCH: i32 = 1000;

/// Creates and tags the bucket. S3 answers `BucketAlreadyOwnedByYou` to a retried create — except in us-east-1,
/// which answers 200 — so a bucket that may have existed before is checked by its ownership tags before tagging.
pub(super) async fn create_bucket(aws: &Aws, name: &str, region: &str, tags: &Tags) -> Result<(), AwsError> {
    let client = aws.s3(region);
    let operation = format!("CreateBucket {name}");
    let mut request = client.create_bucket().bucket(name);
    if region != US_EAST_1 {
        let location = CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region));
        request = request.create_bucket_configuration(location.build());
    }
    let created = match request.send().await.during(&operation) {
        Ok(_) => true,
        Err(e) if e.has_code("BucketAlreadyOwnedByYou") => false,
        Err(e) if e.has_code("BucketAlreadyExists") => {
            return Err(AwsError {
                message: format!(
                "the bucket name {name} is taken by another AWS account (bucket names are global): choose another name"
            ),
                ..e
            })
        }
        Err(e) => return Err(e),
    };
    if !created || region == US_EAST_1 {
        let existing =
            client.get_bucket_tagging().bucket(name).send().await.during(format_args!("GetBucketTagging {name}"));
        // Right after a create, S3 may not know the bucket everywhere yet.
        let gone: &[&str] = if created { &["NoSuchTagSet", "NoSuchBucket"] } else { &["NoSuchTagSet"] };
        let existing = existing.absent_on(gone)?.map(|answer| s3_tags(answer.tag_set())).unwrap_or_default();
        // A bucket that was there before must carry this resource's tags; an untagged one was made by someone else
        // (this step deletes a bucket it created and could not tag). Only a us-east-1 200 may be a bucket created
        // just now, which has no tags yet: there an untagged bucket cannot be told from a new one.
        if !created || !existing.is_empty() {
            check_owner(&format!("bucket {name}"), tags, &existing)
                .map_err(|message| AwsError::new(&operation, Some("BucketAlreadyOwnedByYou"), message))?;
        }
    }
    let tagged = put_bucket_tagging(aws, name, region, tags).await;
    if let (Err(_), true) = (&tagged, created) {
        // An untagged bucket would look like someone else's to the next run, which could then never manage it.
        if let Err(e) = client.delete_bucket().bucket(name).send().await.during(format_args!("DeleteBucket {name}")) {
            tracing::warn!("could not delete bucket {name} after tagging it failed: {e}");
        }
    }
    tagged
}

pub(super) async fn put_bucket_tagging(aws: &Aws, name: &str, region: &str, tags: &Tags) -> Result<(), AwsError> {
    let operation = format!("PutBucketTagging {name}");
    let tag_set = tags
        .iter()
        .map(|(key, value)| Tag::builder().key(key).value(value).build().during(&operation))
        .collect::<Result<Vec<_>, _>>()?;
    let tagging = Tagging::builder().set_tag_set(Some(tag_set)).build().during(&operation)?;
    let request = aws.s3(region).put_bucket_tagging().bucket(name).tagging(tagging);
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn set_public_access_block(aws: &Aws, name: &str, region: &str, block: bool) -> Result<(), AwsError> {
    let client = aws.s3(region);
    if block {
        let configuration = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        let request = client.put_public_access_block().bucket(name).public_access_block_configuration(configuration);
        request.send().await.during(format_args!("PutPublicAccessBlock {name}")).map(drop)
    } else {
        let request = client.delete_public_access_block().bucket(name);
        let result = request.send().await.during(format_args!("DeletePublicAccessBlock {name}"));
        result.absent_on(&["NoSuchPublicAccessBlockConfiguration"]).map(drop)
    }
}

pub(super) async fn put_bucket_encryption(
    aws: &Aws,
    name: &str,
    region: &str,
    encryption: &BucketEncryption,
) -> Result<(), AwsError> {
    let operation = format!("PutBucketEncryption {name}");
    let default = match encryption {
        BucketEncryption::S3 => ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256),
        BucketEncryption::Kms { key } => ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .set_kms_master_key_id(key.clone()),
    };
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(default.build().during(&operation)?)
        .build();
    let configuration = ServerSideEncryptionConfiguration::builder().rules(rule).build().during(&operation)?;
    let request =
        aws.s3(region).put_bucket_encryption().bucket(name).server_side_encryption_configuration(configuration);
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn put_bucket_versioning(aws: &Aws, name: &str, region: &str, enabled: bool) -> Result<(), AwsError> {
    // A bucket that was versioned can only be suspended, never return to unversioned.
    let status = if enabled { BucketVersioningStatus::Enabled } else { BucketVersioningStatus::Suspended };
    let configuration = VersioningConfiguration::builder().status(status).build();
    let request = aws.s3(region).put_bucket_versioning().bucket(name).versioning_configuration(configuration);
    request.send().await.during(format_args!("PutBucketVersioning {name}")).map(drop)
}

/// Writes imagectl's single expiration rule, replacing the whole configuration, or removes the configuration.
pub(super) async fn put_bucket_lifecycle(
    aws: &Aws,
    name: &str,
    region: &str,
    expire_after_days: Option<u32>,
) -> Result<(), AwsError> {
    let client = aws.s3(region);
    let Some(days) = expire_after_days else {
        let request = client.delete_bucket_lifecycle().bucket(name);
        return request.send().await.during(format_args!("DeleteBucketLifecycle {name}")).map(drop);
    };
    let operation = format!("PutBucketLifecycleConfiguration {name}");
    let rule = LifecycleRule::builder()
        .id(EXPIRE_RULE_ID)
        // An empty prefix: every object. S3 requires a filter (or the deprecated top-level prefix).
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(i32::try_from(days).unwrap_or(i32::MAX)).build())
        .build()
        .during(&operation)?;
    let configuration = BucketLifecycleConfiguration::builder().rules(rule).build().during(&operation)?;
    let request = client.put_bucket_lifecycle_configuration().bucket(name).lifecycle_configuration(configuration);
    request.send().await.during(&operation).map(drop)
}

/// Deletes every object version and delete marker, a listing page (at most 1,000 keys) per `DeleteObjects`.
/// Listing again from the start after each batch needs no markers and cannot skip keys.
pub(super) async fn empty_bucket(aws: &Aws, name: &str, region: &str) -> Result<(), AwsError> {
    let client = aws.s3(region);
    loop {
        let listing = client.list_object_versions().bucket(name).max_keys(BATCH).send().await;
        let Some(listing) = listing.during(format_args!("ListObjectVersions {name}")).absent_on(&["NoSuchBucket"])?
        else {
            return Ok(());
        };
        let operation = format!("DeleteObjects {name}");
        let versions = listing.versions().iter().map(|v| (v.key(), v.version_id()));
        let markers = listing.delete_markers().iter().map(|m| (m.key(), m.version_id()));
        let objects = versions
            .chain(markers)
            .filter_map(|(key, version)| {
                Some(ObjectIdentifier::builder().key(key?).set_version_id(version.map(str::to_owned)))
            })
            .map(|object| object.build().during(&operation))
            .collect::<Result<Vec<_>, _>>()?;
        if objects.is_empty() {
            return Ok(());
        }
        let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().during(&operation)?;
        let answer = client.delete_objects().bucket(name).delete(delete).send().await.during(&operation)?;
        if let Some(failed) = answer.errors().first() {
            return Err(AwsError::new(
                operation,
                failed.code(),
                format!(
                    "{} ({} of {} keys not deleted, first: {})",
                    failed.message().unwrap_or("an object could not be deleted"),
                    answer.errors().len(),
                    answer.errors().len() + answer.deleted().len(),
                    failed.key().unwrap_or_default()
                ),
            ));
        }
    }
}

pub(super) async fn delete_bucket(aws: &Aws, name: &str, region: &str) -> Result<(), AwsError> {
    let request = aws.s3(region).delete_bucket().bucket(name);
    request.send().await.during(format_args!("DeleteBucket {name}")).absent_on(&["NoSuchBucket"]).map(drop)
}
