//! The validated, typed desired state: what the manifests mean, with every reference resolved to a kind.

pub mod ids;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::diagnostics::Location;
pub use ids::{AccountId, AmiId, Arn, BucketName, OrganizationArn, OuArn, Region};

pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Stack,
    Role,
    InstanceProfile,
    Bucket,
    Topic,
    PackageGroup,
    PrivateImage,
    ImageCopy,
    ImageShare,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Stack,
        Kind::Role,
        Kind::InstanceProfile,
        Kind::Bucket,
        Kind::Topic,
        Kind::PackageGroup,
        Kind::PrivateImage,
        Kind::ImageCopy,
        Kind::ImageShare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stack => "Stack",
            Kind::Role => "Role",
            Kind::InstanceProfile => "InstanceProfile",
            Kind::Bucket => "Bucket",
            Kind::Topic => "Topic",
            Kind::PackageGroup => "PackageGroup",
            Kind::PrivateImage => "PrivateImage",
            Kind::ImageCopy => "ImageCopy",
            Kind::ImageShare => "ImageShare",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource of the stack: its kind and `metadata.name`. Displayed and parsed as `Kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ResourceId {
    pub kind: Kind,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        ResourceId { kind, name: name.into() }
    }

    /// Parses `Kind/name`, as written on the command line (`--target Role/build`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = s.split_once('/').ok_or_else(|| format!("`{s}` is not KIND/NAME"))?;
        let kind = Kind::parse(kind).ok_or_else(|| {
            let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            format!("`{kind}` is not a kind; expected one of {}", kinds.join(", "))
        })?;
        Ok(ResourceId::new(kind, name))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl From<ResourceId> for String {
    fn from(id: ResourceId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for ResourceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ResourceId::parse(&s)
    }
}

/// A reference from one resource to another: a resource of this stack, or one outside it by its AWS identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ref<External> {
    Stack(ResourceId),
    External(External),
}

impl<E> Ref<E> {
    pub fn stack_resource(&self) -> Option<&ResourceId> {
        match self {
            Ref::Stack(id) => Some(id),
            Ref::External(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// How imagectl may treat the AWS resource itself, beyond its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub deletion_policy: DeletionPolicy,
    /// Take over a same-named resource that lacks this stack's ownership tags.
    pub adopt: bool,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub stack: Stack,
    pub resources: BTreeMap<ResourceId, Resource>,
    /// Where each resource (and the stack) is written, for messages found after validation.
    pub origins: BTreeMap<ResourceId, Origin>,
}

/// The document a resource came from; `field` locates a field path inside it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: PathBuf,
    pub positions: crate::manifest::positions::PositionIndex,
}

impl Origin {
    pub fn locate(&self, field: &str) -> Location {
        Location { file: self.file.clone(), position: self.positions.locate(field) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stack {
    pub name: String,
    pub region: Region,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Resource {
    Role(Role),
    InstanceProfile(InstanceProfile),
    Bucket(Bucket),
    Topic(Topic),
    PackageGroup(PackageGroup),
    PrivateImage(PrivateImage),
    ImageCopy(ImageCopy),
    ImageShare(ImageShare),
}

/// A dependency of a resource: the resource it needs and the field that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub on: ResourceId,
    pub field: String,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Role(_) => Kind::Role,
            Resource::InstanceProfile(_) => Kind::InstanceProfile,
            Resource::Bucket(_) => Kind::Bucket,
            Resource::Topic(_) => Kind::Topic,
            Resource::PackageGroup(_) => Kind::PackageGroup,
            Resource::PrivateImage(_) => Kind::PrivateImage,
            Resource::ImageCopy(_) => Kind::ImageCopy,
            Resource::ImageShare(_) => Kind::ImageShare,
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        match self {
            Resource::Role(r) => r.lifecycle,
            Resource::InstanceProfile(r) => r.lifecycle,
            Resource::Bucket(r) => r.lifecycle,
            Resource::Topic(r) => r.lifecycle,
            Resource::PackageGroup(r) => r.lifecycle,
            Resource::PrivateImage(r) => r.lifecycle,
            Resource::ImageCopy(r) => r.lifecycle,
            Resource::ImageShare(r) => r.lifecycle,
        }
    }

    /// The stack resources this one needs before it can be created, with the field naming each.
    pub fn dependencies(&self) -> Vec<Dependency> {
        fn on<E>(reference: &Ref<E>, field: &str, out: &mut Vec<Dependency>) {
            if let Ref::Stack(id) = reference {
                out.push(Dependency { on: id.clone(), field: field.to_owned() });
            }
        }
        let mut out = Vec::new();
        match self {
            Resource::Role(_) | Resource::Bucket(_) | Resource::Topic(_) => {}
            Resource::InstanceProfile(p) => on(&p.role, "spec.role", &mut out),
            Resource::PackageGroup(g) => {
                on(&g.artifacts_bucket, "spec.artifactsBucket", &mut out);
                if let Some(t) = &g.test_builds {
                    on(&t.instance_profile, "spec.testBuilds.instanceProfile", &mut out);
                    on(&t.automation_role, "spec.testBuilds.automationRole", &mut out);
                    on(&t.logs_bucket, "spec.testBuilds.logsBucket", &mut out);
                }
            }
            Resource::PrivateImage(i) => {
                if let BaseImage::Image(id) = &i.base_image {
                    out.push(Dependency { on: id.clone(), field: "spec.baseImage.image".to_owned() });
                }
                out.push(Dependency { on: i.package_group.clone(), field: "spec.packageGroup".to_owned() });
                on(&i.instance_profile, "spec.instanceProfile", &mut out);
                on(&i.automation_role, "spec.automationRole", &mut out);
                on(&i.logs_bucket, "spec.logsBucket", &mut out);
                if let Some(topic) = &i.notifications {
                    on(topic, "spec.notifications", &mut out);
                }
            }
            Resource::ImageCopy(c) => {
                if let ImageSource::Stack(id) = &c.source {
                    out.push(Dependency { on: id.clone(), field: "spec.source".to_owned() });
                }
            }
            Resource::ImageShare(s) => {
                if let ImageSource::Stack(id) = &s.image {
                    out.push(Dependency { on: id.clone(), field: "spec.image".to_owned() });
                }
                // Copies must exist before their launch permissions can be set.
                for copy in &s.copies {
                    out.push(Dependency { on: copy.clone(), field: "spec.image".to_owned() });
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Role {
    pub name: String,
    pub path: String,
    pub description: Option<String>,
    /// The trust policy, from `assumedBy` or `assumeRolePolicy`.
    pub trust_policy: serde_json::Value,
    pub managed_policies: BTreeSet<Arn>,
    pub inline_policies: BTreeMap<String, serde_json::Value>,
    pub max_session_duration: Option<u32>,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceProfile {
    pub name: String,
    pub path: String,
    pub role: Ref<Arn>,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "algorithm")]
pub enum BucketEncryption {
    /// SSE-S3 (AES256).
    S3,
    /// SSE-KMS with this key, or the AWS managed key.
    Kms { key: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub name: BucketName,
    pub region: Region,
    pub expire_after_days: Option<u32>,
    pub versioning: bool,
    pub block_public_access: bool,
    pub encryption: BucketEncryption,
    pub force_destroy: bool,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subscription {
    pub protocol: String,
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topic {
    pub name: String,
    pub region: Region,
    pub display_name: Option<String>,
    pub kms_key: Option<String>,
    pub subscriptions: BTreeSet<Subscription>,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Platform {
    Linux,
    Windows,
}

/// A package file, read and hashed when the manifests were loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageFile {
    /// As written in the manifest.
    pub path: String,
    /// Where it is on disk.
    pub source: PathBuf,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub installer: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageGroup {
    pub name: String,
    pub platform: Platform,
    pub operating_systems: Vec<String>,
    pub artifacts_bucket: Ref<BucketName>,
    pub packages: Vec<PackageFile>,
    pub installer_arguments: Vec<String>,
    pub timeout_minutes: u32,
    /// SHA-256 over every package's name and content: the group's identity.
    pub content_digest: String,
    pub test_builds: Option<TestBuilds>,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

impl PackageGroup {
    pub fn installer(&self) -> &PackageFile {
        self.packages.iter().find(|p| p.installer).expect("validation guarantees exactly one installer")
    }
}

/// The seller's test builds of a package group: one per operating system, each on its own base image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestBuilds {
    pub region: Region,
    pub instance_profile: Ref<Arn>,
    pub automation_role: Ref<Arn>,
    pub logs_bucket: Ref<BucketName>,
    pub instance_type: String,
    /// Operating system → base image (never another PrivateImage).
    pub base_images: BTreeMap<String, BaseImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BaseImage {
    Id(AmiId),
    Lookup { owners: Vec<String>, name: String, architecture: Option<String> },
    Parameter(String),
    Image(ResourceId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub associate_public_ip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    Ssm,
    UserData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scan {
    pub command: Option<String>,
    pub builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDevice {
    pub device_name: String,
    pub volume_size: Option<u32>,
    pub volume_type: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key: Option<String>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub keep: u32,
    pub deprecate_after_days: Option<u32>,
    pub deregistration_protection: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivateImage {
    pub name: String,
    pub region: Region,
    pub base_image: BaseImage,
    pub package_group: ResourceId,
    pub instance_profile: Ref<Arn>,
    pub automation_role: Ref<Arn>,
    pub logs_bucket: Ref<BucketName>,
    pub image_name: String,
    pub description: Option<String>,
    pub instance_type: String,
    pub network: Option<Network>,
    pub notifications: Option<Ref<Arn>>,
    pub delivery: Delivery,
    pub scan: Scan,
    pub generalize: bool,
    pub no_reboot: bool,
    pub block_devices: Vec<BlockDevice>,
    pub retention: Retention,
    pub publish_parameter: Option<String>,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

/// An image named by a copy or a share: a PrivateImage of the stack, or an external AMI in a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageSource {
    Stack(ResourceId),
    External { id: AmiId, region: Region },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopySettings {
    pub name: Option<String>,
    pub description: Option<String>,
    pub encrypted: bool,
    pub kms_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageCopy {
    pub name: String,
    pub source: ImageSource,
    /// Each target region with its settings.
    pub regions: BTreeMap<Region, CopySettings>,
    pub tags: Tags,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageShare {
    pub name: String,
    pub image: ImageSource,
    /// The ImageCopy resources of the same image: the share covers their copies too.
    pub copies: Vec<ResourceId>,
    pub accounts: BTreeSet<AccountId>,
    pub organizations: BTreeSet<OrganizationArn>,
    pub organizational_units: BTreeSet<OuArn>,
    pub public: bool,
    pub additive: bool,
    pub share_snapshots: bool,
    pub lifecycle: Lifecycle,
}
