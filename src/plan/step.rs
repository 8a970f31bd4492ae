//! The concrete AWS operations a plan is made of. The executor runs them as written and decides nothing.
//!
//! Every value a step needs is in it (names, regions, documents as JSON text, ARNs derived from the account), so a
//! saved plan applies exactly what it showed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use crate::build::{BuildPlan, PackageGroupRecord};
use crate::live::LaunchPermissions;
use crate::model::{BucketEncryption, Region, Tags};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Step {
    // IAM roles.
    /// Creates the role with its ownership tags; an existing role carrying the same ownership tags counts as
    /// created (a retried call), any other existing role fails the step.
    CreateRole {
        name: String,
        path: String,
        trust_policy: String,
        description: Option<String>,
        max_session_duration: Option<u32>,
        tags: Tags,
    },
    UpdateTrustPolicy {
        role: String,
        document: String,
    },
    UpdateRole {
        role: String,
        description: Option<String>,
        max_session_duration: Option<u32>,
    },
    PutRolePolicy {
        role: String,
        policy: String,
        document: String,
    },
    DeleteRolePolicy {
        role: String,
        policy: String,
    },
    AttachRolePolicy {
        role: String,
        policy_arn: String,
    },
    DetachRolePolicy {
        role: String,
        policy_arn: String,
    },
    TagRole {
        role: String,
        tags: Tags,
    },
    UntagRole {
        role: String,
        keys: Vec<String>,
    },
    DeleteRole {
        role: String,
    },

    // IAM instance profiles.
    CreateInstanceProfile {
        name: String,
        path: String,
        tags: Tags,
    },
    AddRoleToInstanceProfile {
        profile: String,
        role: String,
    },
    RemoveRoleFromInstanceProfile {
        profile: String,
        role: String,
    },
    TagInstanceProfile {
        profile: String,
        tags: Tags,
    },
    UntagInstanceProfile {
        profile: String,
        keys: Vec<String>,
    },
    DeleteInstanceProfile {
        profile: String,
    },

    // S3 buckets.
    /// Creates the bucket and tags it; if tagging fails the new, empty bucket is deleted again, so that a re-run
    /// never finds an untagged bucket it cannot prove it owns.
    CreateBucket {
        name: String,
        region: Region,
        tags: Tags,
    },
    PutBucketTagging {
        name: String,
        region: Region,
        tags: Tags,
    },
    /// All four public-access-block settings on (`block: true`) or the configuration removed.
    SetPublicAccessBlock {
        name: String,
        region: Region,
        block: bool,
    },
    PutBucketEncryption {
        name: String,
        region: Region,
        encryption: BucketEncryption,
    },
    PutBucketVersioning {
        name: String,
        region: Region,
        enabled: bool,
    },
    /// Writes the lifecycle configuration: imagectl's one expiration rule, or none.
    PutBucketLifecycle {
        name: String,
        region: Region,
        expire_after_days: Option<u32>,
    },
    /// Deletes every object and object version (only planned with `forceDestroy: true`).
    EmptyBucket {
        name: String,
        region: Region,
    },
    DeleteBucket {
        name: String,
        region: Region,
    },

    // SNS topics.
    CreateTopic {
        name: String,
        region: Region,
        attributes: BTreeMap<String, String>,
        tags: Tags,
    },
    SetTopicAttribute {
        topic_arn: String,
        region: Region,
        attribute: String,
        value: String,
    },
    Subscribe {
        topic_arn: String,
        region: Region,
        protocol: String,
        endpoint: String,
    },
    Unsubscribe {
        subscription_arn: String,
        region: Region,
    },
    TagTopic {
        topic_arn: String,
        region: Region,
        tags: Tags,
    },
    UntagTopic {
        topic_arn: String,
        region: Region,
        keys: Vec<String>,
    },
    DeleteTopic {
        topic_arn: String,
        region: Region,
    },

    // Package groups.
    /// Uploads a package file to its content-addressed key; an object already there with the same checksum counts
    /// as uploaded.
    UploadPackage {
        bucket: String,
        region: Region,
        key: String,
        source: PathBuf,
        sha256: String,
    },
    /// Writes the record binding a package-group name to its content with a conditional write (`If-None-Match`):
    /// an existing record with the same digest counts as written; one with another digest fails the step.
    BindPackageGroup {
        bucket: String,
        region: Region,
        key: String,
        record: PackageGroupRecord,
    },

    // Images.
    /// Runs or resumes one build, found by its build ID: launch, install, scan, capture, terminate.
    BuildImage {
        build: Box<BuildPlan>,
        wait: bool,
    },
    TagImage {
        image_id: String,
        region: Region,
        tags: Tags,
    },
    UntagImage {
        image_id: String,
        region: Region,
        keys: Vec<String>,
    },
    SetImageDescription {
        image_id: String,
        region: Region,
        description: String,
    },

    // Distribution.
    /// Copies an image to a region (`ClientToken` = `client_token`, so a retried copy is the same copy) and tags
    /// the copy itself: CopyImage's tag propagation is not dependable.
    CopyImage {
        source: ImageRef,
        source_region: Region,
        region: Region,
        name: String,
        description: Option<String>,
        encrypted: bool,
        kms_key: Option<String>,
        tags: Tags,
        client_token: String,
    },
    /// Adds and removes launch permissions of one image.
    SetLaunchPermissions {
        image: ImageRef,
        region: Region,
        add: LaunchPermissions,
        remove: LaunchPermissions,
    },
    /// Adds and removes create-volume permission on the image's snapshots.
    SetSnapshotPermissions {
        image: ImageRef,
        region: Region,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Writes an AMI ID to an SSM parameter (data type `aws:ec2:image`, so CloudFormation can take it as
    /// `AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`).
    PutImageParameter {
        name: String,
        region: Region,
        image: ImageRef,
    },
    /// Deregisters an image and deletes its snapshots (deregistering alone leaves them, and their cost, behind).
    DeregisterImage {
        image_id: String,
        region: Region,
        snapshot_ids: Vec<String>,
    },
    /// Schedules the image's deprecation (RFC 3339 time).
    EnableImageDeprecation {
        image_id: String,
        region: Region,
        deprecate_at: String,
    },
    EnableDeregistrationProtection {
        image_id: String,
        region: Region,
    },
}

/// An image named by a step: one that exists, or one this apply produces, found by its tags when the step runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageRef {
    Id(String),
    /// The image a build captures (tag `imagectl:build-id`).
    Build {
        build_id: String,
    },
    /// The copy made by an ImageCopy (tag `imagectl:resource`) of a source (tag `imagectl:source`: the source's
    /// build ID, or its AMI ID for an external source), in the step's region.
    CopyOf {
        copy: String,
        source: String,
    },
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Id(id) => f.write_str(id),
            ImageRef::Build { build_id } => write!(f, "the image of build {build_id}"),
            ImageRef::CopyOf { copy, source } => write!(f, "the {copy} copy of {source}"),
        }
    }
}

impl Step {
    /// A short description for progress lines and errors.
    pub fn describe(&self) -> String {
        match self {
            Step::CreateRole { name, .. } => format!("create role {name}"),
            Step::UpdateTrustPolicy { role, .. } => format!("update trust policy of {role}"),
            Step::UpdateRole { role, .. } => format!("update role {role}"),
            Step::PutRolePolicy { role, policy, .. } => {
                format!("put inline policy {policy} on {role}")
            }
            Step::DeleteRolePolicy { role, policy } => {
                format!("delete inline policy {policy} of {role}")
            }
            Step::AttachRolePolicy { role, policy_arn } => format!("attach {policy_arn} to {role}"),
            Step::DetachRolePolicy { role, policy_arn } => {
                format!("detach {policy_arn} from {role}")
            }
            Step::TagRole { role, .. } => format!("tag role {role}"),
            Step::UntagRole { role, .. } => format!("untag role {role}"),
            Step::DeleteRole { role } => format!("delete role {role}"),
            Step::CreateInstanceProfile { name, .. } => format!("create instance profile {name}"),
            Step::AddRoleToInstanceProfile { profile, role } => {
                format!("add role {role} to {profile}")
            }
            Step::RemoveRoleFromInstanceProfile { profile, role } => {
                format!("remove role {role} from {profile}")
            }
            Step::TagInstanceProfile { profile, .. } => format!("tag instance profile {profile}"),
            Step::UntagInstanceProfile { profile, .. } => {
                format!("untag instance profile {profile}")
            }
            Step::DeleteInstanceProfile { profile } => format!("delete instance profile {profile}"),
            Step::CreateBucket { name, region, .. } => format!("create bucket {name} in {region}"),
            Step::PutBucketTagging { name, .. } => format!("tag bucket {name}"),
            Step::SetPublicAccessBlock { name, block, .. } => {
                format!("{} public access to {name}", if *block { "block" } else { "unblock" })
            }
            Step::PutBucketEncryption { name, .. } => format!("set default encryption of {name}"),
            Step::PutBucketVersioning { name, enabled, .. } => {
                format!("{} versioning of {name}", if *enabled { "enable" } else { "suspend" })
            }
            Step::PutBucketLifecycle { name, .. } => format!("set lifecycle of {name}"),
            Step::EmptyBucket { name, .. } => format!("empty bucket {name}"),
            Step::DeleteBucket { name, .. } => format!("delete bucket {name}"),
            Step::CreateTopic { name, region, .. } => format!("create topic {name} in {region}"),
            Step::SetTopicAttribute { topic_arn, attribute, .. } => format!("set {attribute} of {topic_arn}"),
            Step::Subscribe { protocol, endpoint, .. } => format!("subscribe {protocol}:{endpoint}"),
            Step::Unsubscribe { subscription_arn, .. } => format!("unsubscribe {subscription_arn}"),
            Step::TagTopic { topic_arn, .. } => format!("tag topic {topic_arn}"),
            Step::UntagTopic { topic_arn, .. } => format!("untag topic {topic_arn}"),
            Step::DeleteTopic { topic_arn, .. } => format!("delete topic {topic_arn}"),
            Step::UploadPackage { bucket, key, .. } => format!("upload s3://{bucket}/{key}"),
            Step::BindPackageGroup { record, .. } => {
                format!("bind package group {} to its content", record.name)
            }
            Step::BuildImage { build, .. } => {
                format!("build {} ({})", build.build_id, build.ami_name)
            }
            Step::TagImage { image_id, .. } => format!("tag image {image_id}"),
            Step::UntagImage { image_id, .. } => format!("untag image {image_id}"),
            Step::SetImageDescription { image_id, .. } => format!("set description of {image_id}"),
            Step::CopyImage { source, region, .. } => format!("copy {source} to {region}"),
            Step::SetLaunchPermissions { image, region, .. } => {
                format!("set launch permissions of {image} in {region}")
            }
            Step::SetSnapshotPermissions { image, region, .. } => {
                format!("share the snapshots of {image} in {region}")
            }
            Step::PutImageParameter { name, region, image } => format!("publish {image} to {name} in {region}"),
            Step::DeregisterImage { image_id, region, .. } => {
                format!("deregister {image_id} in {region} and delete its snapshots")
            }
            Step::EnableImageDeprecation { image_id, deprecate_at, .. } => {
                format!("deprecate {image_id} at {deprecate_at}")
            }
            Step::EnableDeregistrationProtection { image_id, .. } => {
                format!("protect {image_id} from deregistration")
            }
        }
    }
}
