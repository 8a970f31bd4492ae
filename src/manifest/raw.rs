//! The manifest language as written: serde shapes of every kind, strict (`deny_unknown_fields`), and the JSON Schema.
//!
//! Nothing outside `manifest` and `validate` sees these types; `validate` turns them into the typed model.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one API version this release reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "imagectl/v1")]
    V1,
}

/// Tags as key → value.
pub type Tags = BTreeMap<String, String>;

/// Every manifest document: `apiVersion`, `kind`, `metadata`, `spec`.
///
/// The loader reads `kind` first and then the rest as the kind's `Envelope`, so that errors keep their field path;
/// this enum is the union of those envelopes and is what `imagectl schema` describes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
#[schemars(title = "imagectl manifest")]
pub enum Manifest {
    Stack(Envelope<StackSpec>),
    Role(Envelope<RoleSpec>),
    InstanceProfile(Envelope<InstanceProfileSpec>),
    Bucket(Envelope<BucketSpec>),
    Topic(Envelope<TopicSpec>),
    PackageGroup(Envelope<PackageGroupSpec>),
    PrivateImage(Envelope<PrivateImageSpec>),
    ImageCopy(Envelope<ImageCopySpec>),
    ImageShare(Envelope<ImageShareSpec>),
}

/// The document around a kind's spec.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope<S> {
    pub api_version: ApiVersion,
    pub metadata: Metadata,
    pub spec: S,
}

/// Identity and lifecycle settings of a resource.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique within the kind. For Role, InstanceProfile, Bucket and Topic it is also the AWS name.
    pub name: String,
    /// `retain` keeps the AWS resource when it leaves the manifests, on `--prune` and on `destroy`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Take over a same-named resource that exists without this stack's ownership tags. Never implicit.
    #[serde(default)]
    pub adopt: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// The stack: defaults and tags shared by every resource.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StackSpec {
    /// Default region of regional resources (buckets, topics, images).
    pub region: String,
    /// Added to everything the stack creates.
    #[serde(default)]
    pub tags: Tags,
}

/// An IAM role.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// IAM path; `/` when absent. Changing it replaces the role.
    #[serde(default)]
    pub path: Option<String>,
    /// Service principals allowed to assume the role (e.g. `ec2.amazonaws.com`). Or give `assumeRolePolicy`.
    #[serde(default)]
    pub assumed_by: Option<Vec<String>>,
    /// A full trust policy document. Or give `assumedBy`.
    #[serde(default)]
    pub assume_role_policy: Option<PolicyDocument>,
    /// ARNs of managed policies to attach.
    #[serde(default)]
    pub managed_policies: Vec<String>,
    /// Inline policies by name.
    #[serde(default)]
    pub inline_policies: BTreeMap<String, PolicyDocument>,
    /// Maximum session duration in seconds (3600–43200).
    #[serde(default)]
    pub max_session_duration: Option<u32>,
    #[serde(default)]
    pub tags: Tags,
}

/// An IAM policy document, written as YAML or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("type" = "object"))]
pub struct PolicyDocument(pub serde_json::Value);

/// An IAM instance profile holding one role.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceProfileSpec {
    /// A Role of this stack, or an external role ARN.
    pub role: String,
    /// IAM path; `/` when absent. Changing it replaces the profile.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub tags: Tags,
}

/// An S3 bucket.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BucketSpec {
    /// The stack's region when absent. Changing it replaces the bucket.
    #[serde(default)]
    pub region: Option<String>,
    /// Objects expire this many days after creation.
    #[serde(default)]
    pub expire_after_days: Option<u32>,
    #[serde(default)]
    pub versioning: bool,
    /// Blocks every form of public access (default true).
    #[serde(default = "yes")]
    pub block_public_access: bool,
    /// Default encryption; SSE-S3 when absent.
    #[serde(default)]
    pub encryption: Option<BucketEncryption>,
    /// Delete the bucket even when it still holds objects (they are deleted first).
    #[serde(default)]
    pub force_destroy: bool,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BucketEncryption {
    /// `kms` to use a KMS key, `s3` for SSE-S3.
    pub algorithm: EncryptionAlgorithm,
    /// KMS key ID or ARN, with `algorithm: kms`; the AWS managed key when absent.
    #[serde(default)]
    pub kms_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EncryptionAlgorithm {
    S3,
    Kms,
}

/// An SNS topic for build-status notifications.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopicSpec {
    /// The stack's region when absent. Changing it replaces the topic.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    /// KMS key for server-side encryption of messages.
    #[serde(default)]
    pub kms_key: Option<String>,
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subscription {
    /// email, email-json, http, https, sqs, lambda, sms, application or firehose.
    pub protocol: String,
    pub endpoint: String,
}

/// A seller's installable package group: files plus exactly one installer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageGroupSpec {
    pub platform: Platform,
    /// Operating systems the group supports (e.g. amazon-linux-2023, ubuntu-22.04, windows-server-2022).
    pub operating_systems: Vec<String>,
    /// A Bucket of this stack, or `arn:aws:s3:::name`: packages are uploaded there, content-addressed.
    pub artifacts_bucket: String,
    pub packages: Vec<Package>,
    /// Arguments passed to the installer (silent switches for .msi/.exe installers).
    #[serde(default)]
    pub installer_arguments: Vec<String>,
    /// The installer is stopped and the build fails after this many minutes (default 60).
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
    /// The seller's test builds: one build and scan per operating system, on a base image of that system.
    #[serde(default)]
    pub test_builds: Option<TestBuilds>,
    #[serde(default)]
    pub tags: Tags,
}

/// Where and how the test builds of a package group run; their images are scanned, then deregistered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestBuilds {
    /// The stack's region when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// An InstanceProfile of this stack, or an instance-profile ARN.
    pub instance_profile: String,
    /// A Role of this stack, or a role ARN.
    pub automation_role: String,
    /// A Bucket of this stack in the test builds' region, or `arn:aws:s3:::name`.
    pub logs_bucket: String,
    /// Build instance type (default t3.medium).
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Operating system (one of `operatingSystems`) → its base image: exactly one of id, lookup or parameter.
    pub base_images: BTreeMap<String, BaseImage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Platform {
    Linux,
    Windows,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Package {
    /// File path relative to the manifest file.
    pub path: String,
    /// Marks the one package that runs the installation.
    #[serde(default)]
    pub installer: bool,
}

/// A private image: a package group installed on a base image, scanned and captured as a new AMI.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrivateImageSpec {
    /// The stack's region when absent.
    #[serde(default)]
    pub region: Option<String>,
    pub base_image: BaseImage,
    /// A PackageGroup of this stack.
    pub package_group: String,
    /// An InstanceProfile of this stack, or an instance-profile ARN.
    pub instance_profile: String,
    /// A Role of this stack, or a role ARN: the build's AWS calls are made with it.
    pub automation_role: String,
    /// A Bucket of this stack in the image's region, or `arn:aws:s3:::name`.
    pub logs_bucket: String,
    /// Base of the AMI name; imagectl appends `-r<revision>-<fingerprint>`.
    pub image_name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Build instance type (default t3.medium).
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Subnet and security groups of the build instance; the default VPC when absent.
    #[serde(default)]
    pub network: Option<Network>,
    /// A Topic of this stack, or a topic ARN, told of every build-state change.
    #[serde(default)]
    pub notifications: Option<String>,
    /// How the installer reaches the instance: `ssm` (Run Command) or `userData` (for images without the agent).
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// The scan run after the installation; the built-in hygiene scan when absent.
    #[serde(default)]
    pub scan: Option<Scan>,
    /// Generalize the image before capture (default true); false keeps a specialized image.
    #[serde(default = "yes")]
    pub generalize: bool,
    /// Capture without stopping the instance (not recommended: file systems may be inconsistent).
    #[serde(default)]
    pub no_reboot: bool,
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    /// How many images of this PrivateImage to keep (default 3).
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Publish the current AMI ID to this SSM parameter in every region the image is in.
    #[serde(default)]
    pub publish: Option<Publish>,
    #[serde(default)]
    pub tags: Tags,
}

/// Exactly one of `id`, `lookup`, `parameter` or `image`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaseImage {
    /// An AMI ID.
    #[serde(default)]
    pub id: Option<String>,
    /// The newest image of these owners whose name matches the pattern.
    #[serde(default)]
    pub lookup: Option<ImageLookup>,
    /// An SSM parameter holding an AMI ID, e.g. `/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`.
    #[serde(default)]
    pub parameter: Option<String>,
    /// Another PrivateImage of this stack (layered gold images).
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageLookup {
    /// Account IDs, `self`, `amazon` or `aws-marketplace`.
    pub owners: Vec<String>,
    /// Name pattern (`*` and `?` wildcards).
    pub name: String,
    #[serde(default)]
    pub architecture: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    pub subnet: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Give the build instance a public IP (default false).
    #[serde(default)]
    pub associate_public_ip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    Ssm,
    UserData,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scan {
    /// A shell (Linux) or PowerShell (Windows) command; a non-zero exit is a finding.
    #[serde(default)]
    pub command: Option<String>,
    /// Run the built-in hygiene scan as well (default true).
    #[serde(default = "yes")]
    pub builtin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlockDevice {
    /// e.g. /dev/xvda
    pub device_name: String,
    /// GiB
    #[serde(default)]
    pub volume_size: Option<u32>,
    /// gp3, gp2, io1, io2, st1, sc1, standard
    #[serde(default)]
    pub volume_type: Option<String>,
    #[serde(default)]
    pub encrypted: Option<bool>,
    #[serde(default)]
    pub kms_key: Option<String>,
    #[serde(default)]
    pub iops: Option<u32>,
    #[serde(default)]
    pub throughput: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retention {
    /// Newest images kept; older ones are deregistered with their snapshots, unless still in use.
    pub keep: u32,
    /// Mark images deprecated this many days after creation.
    #[serde(default)]
    pub deprecate_after_days: Option<u32>,
    /// Turn on deregistration protection for kept images.
    #[serde(default)]
    pub deregistration_protection: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Publish {
    /// SSM parameter name, e.g. `/images/web-base/ami-id`.
    pub parameter: String,
}

/// Copies of an image to other regions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageCopySpec {
    /// A PrivateImage of this stack, or an external `ami-…` (then `sourceRegion` is required).
    pub source: String,
    #[serde(default)]
    pub source_region: Option<String>,
    pub regions: Vec<String>,
    /// Name of the copies; the source image's name when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub kms_key: Option<String>,
    /// Settings for one region that differ from the ones above.
    #[serde(default)]
    pub per_region: BTreeMap<String, CopyOverride>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CopyOverride {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub encrypted: Option<bool>,
    #[serde(default)]
    pub kms_key: Option<String>,
}

/// Launch permissions of an image, in its region and every region it is copied to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageShareSpec {
    /// A PrivateImage of this stack, or an external `ami-…` (then `region` is required).
    pub image: String,
    #[serde(default)]
    pub region: Option<String>,
    /// 12-digit account IDs.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Organization ARNs.
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Organizational unit ARNs.
    #[serde(default)]
    pub organizational_units: Vec<String>,
    /// Share with everyone. Only when written explicitly.
    #[serde(default)]
    pub public: bool,
    /// `authoritative` (default) makes the live permissions exactly these; `additive` only adds.
    #[serde(default)]
    pub mode: ShareMode,
    /// Also grant create-volume permission on the backing snapshots to the same accounts.
    #[serde(default)]
    pub share_snapshots: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ShareMode {
    #[default]
    Authoritative,
    Additive,
}

fn yes() -> bool {
    true
}
