//! The live state of an AWS account as far as a stack is concerned: plain data read by `aws`, compared by `plan`.
//!
//! Values are stored as AWS returns them, decoded (policy documents parsed from their URL-encoded JSON) but not
//! normalized: the planner decides what counts as equal.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::build::{InstanceResult, InstanceStatus, PackageGroupRecord};
use crate::model::{
    AccountId, AmiId, BaseImage, BucketEncryption, Model, PrivateImage, Ref, Region, Resource, ResourceId,
    Subscription, Tags,
};

/// Tag keys that mark what imagectl owns.
pub const STACK_TAG: &str = "imagectl:stack";
pub const RESOURCE_TAG: &str = "imagectl:resource";

/// What must be read for a stack: computed from the model, executed by `aws::read_live`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadScope {
    pub stack: String,
    /// Regions whose regional resources (topics) are listed: the stack's and every region a resource names.
    pub regions: BTreeSet<Region>,
    /// Names the manifests give, read whether or not the stack owns them (to report conflicts).
    pub roles: BTreeSet<String>,
    pub instance_profiles: BTreeSet<String>,
    pub buckets: BTreeSet<String>,
    pub topics: BTreeMap<Region, BTreeSet<String>>,
    /// External resources referenced by the manifests, whose existence the plan checks.
    pub external_roles: BTreeSet<String>,
    pub external_instance_profiles: BTreeSet<String>,
    pub external_buckets: BTreeSet<String>,
    pub external_topics: BTreeSet<String>,
    /// Count objects of the stack's buckets (needed only when a bucket may be deleted).
    pub count_bucket_objects: bool,
    /// Base images of the stack's PrivateImages, resolved to AMI IDs.
    pub base_images: BTreeSet<BaseImageQuery>,
    /// SSM parameters the stack publishes AMI IDs to, per region.
    pub parameters: BTreeMap<Region, BTreeSet<String>>,
    /// Read launch permissions of the stack's images and create-volume permissions of their snapshots.
    pub image_permissions: bool,
    /// Find which of the stack's images running instances or launch templates still use (before retention).
    pub image_usage: bool,
    /// Package groups (name → artifacts bucket) whose name records and uploaded packages are read.
    pub package_groups: BTreeMap<String, String>,
    /// Logs buckets of the stack's PrivateImages: their `imagectl/builds/` listing finds finished builds (whose
    /// instances are gone) for `LiveState::build_reports`.
    #[serde(default)]
    pub logs_buckets: BTreeSet<String>,
}

impl ReadScope {
    pub fn for_model(model: &Model, count_bucket_objects: bool) -> Self {
        let mut scope = ReadScope { stack: model.stack.name.clone(), count_bucket_objects, ..ReadScope::default() };
        scope.regions.insert(model.stack.region.clone());
        for resource in model.resources.values() {
            match resource {
                Resource::Role(r) => {
                    scope.roles.insert(r.name.clone());
                }
                Resource::Bucket(b) => {
                    scope.regions.insert(b.region.clone());
                    scope.buckets.insert(b.name.to_string());
                }
                Resource::Topic(t) => {
                    scope.regions.insert(t.region.clone());
                    scope.topics.entry(t.region.clone()).or_default().insert(t.name.clone());
                }
                Resource::InstanceProfile(p) => {
                    scope.instance_profiles.insert(p.name.clone());
                    if let Ref::External(arn) = &p.role {
                        scope.external_roles.insert(arn.to_string());
                    }
                }
                Resource::PackageGroup(g) => {
                    let bucket = match &g.artifacts_bucket {
                        Ref::External(bucket) => {
                            scope.external_buckets.insert(bucket.to_string());
                            bucket.to_string()
                        }
                        Ref::Stack(id) => id.name.clone(),
                    };
                    scope.package_groups.insert(g.name.clone(), bucket);
                    if let Some(t) = &g.test_builds {
                        scope.regions.insert(t.region.clone());
                        scope.logs_buckets.insert(match &t.logs_bucket {
                            Ref::External(bucket) => bucket.to_string(),
                            Ref::Stack(id) => id.name.clone(),
                        });
                        scope
                            .base_images
                            .extend(t.base_images.values().filter_map(|b| BaseImageQuery::new(t.region.clone(), b)));
                    }
                }
                Resource::PrivateImage(i) => {
                    scope.regions.insert(i.region.clone());
                    if let Some(query) = BaseImageQuery::for_image(i) {
                        scope.base_images.insert(query);
                    }
                    if let Ref::External(arn) = &i.instance_profile {
                        scope.external_instance_profiles.insert(arn.to_string());
                    }
                    if let Ref::External(arn) = &i.automation_role {
                        scope.external_roles.insert(arn.to_string());
                    }
                    match &i.logs_bucket {
                        Ref::External(bucket) => {
                            scope.external_buckets.insert(bucket.to_string());
                            scope.logs_buckets.insert(bucket.to_string());
                        }
                        Ref::Stack(id) => {
                            scope.logs_buckets.insert(id.name.clone());
                        }
                    }
                    if let Some(Ref::External(arn)) = &i.notifications {
                        scope.external_topics.insert(arn.to_string());
                    }
                }
                Resource::ImageCopy(c) => scope.regions.extend(c.regions.keys().cloned()),
                Resource::ImageShare(s) => {
                    scope.image_permissions = true;
                    if let crate::model::ImageSource::External { region, .. } = &s.image {
                        scope.regions.insert(region.clone());
                    }
                }
            }
        }
        // Images are deregistered by retention, and by `destroy` or `--prune`: only when nothing uses them.
        scope.image_usage = count_bucket_objects;
        for resource in model.resources.values() {
            let Resource::PrivateImage(image) = resource else {
                continue;
            };
            scope.image_usage = true;
            let Some(parameter) = &image.publish_parameter else {
                continue;
            };
            let source =
                crate::model::ImageSource::Stack(ResourceId::new(crate::model::Kind::PrivateImage, &image.name));
            let mut regions = vec![image.region.clone()];
            for other in model.resources.values() {
                if let Resource::ImageCopy(copy) = other {
                    if copy.source == source {
                        regions.extend(copy.regions.keys().cloned());
                    }
                }
            }
            for region in regions {
                scope.parameters.entry(region).or_default().insert(parameter.clone());
            }
        }
        scope
    }
}

/// Everything read for one stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    pub account: Option<AccountId>,
    /// Roles by name: those the manifests name and those this stack owns.
    pub roles: BTreeMap<String, LiveRole>,
    pub instance_profiles: BTreeMap<String, LiveInstanceProfile>,
    pub buckets: BTreeMap<String, LiveBucket>,
    /// Topics by region, then name.
    pub topics: BTreeMap<Region, BTreeMap<String, LiveTopic>>,
    /// External references and whether they exist, keyed as written (ARN or bucket name).
    pub external: BTreeMap<String, bool>,
    /// Base images resolved, by `BaseImageQuery::key()`; absent when nothing matched.
    pub base_images: BTreeMap<String, LiveBaseImage>,
    /// Images this stack owns (tag `imagectl:stack`), in every region of the scope.
    pub images: Vec<LiveImage>,
    /// Build instances this stack owns that are not terminated.
    pub build_instances: Vec<LiveBuildInstance>,
    /// Package-group records by group name (None: the name was never used).
    pub package_groups: BTreeMap<String, Option<PackageGroupRecord>>,
    /// Content-addressed package keys already present, per artifacts bucket.
    pub packages_present: BTreeMap<String, BTreeSet<String>>,
    /// Reports of builds that have no image yet, by build ID.
    pub build_reports: BTreeMap<String, BuildReports>,
    /// Launch permissions of the stack's images (`images`), by image ID.
    pub launch_permissions: BTreeMap<String, LaunchPermissions>,
    /// Accounts with create-volume permission, by snapshot ID of the stack's images.
    pub snapshot_permissions: BTreeMap<String, BTreeSet<String>>,
    /// SSM parameters named in `ReadScope::parameters` that exist: region → name → value.
    pub parameters: BTreeMap<Region, BTreeMap<String, String>>,
    /// Images of the stack still in use, with why: `instance i-… (running)`, `launch template lt-… version 3`.
    pub images_in_use: BTreeMap<String, String>,
}

/// How to find a base image; resolved at plan time, so the plan names the exact AMI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BaseImageQuery {
    Id {
        region: Region,
        id: AmiId,
    },
    /// The newest image of these owners whose name matches the pattern.
    Lookup {
        region: Region,
        owners: Vec<String>,
        name: String,
        architecture: Option<String>,
    },
    /// An SSM parameter holding an AMI ID.
    Parameter {
        region: Region,
        name: String,
    },
}

impl BaseImageQuery {
    /// The query for a PrivateImage's base; None when the base is another PrivateImage of the stack.
    pub fn for_image(image: &PrivateImage) -> Option<Self> {
        Self::new(image.region.clone(), &image.base_image)
    }

    /// The query for a base image in a region; None for another PrivateImage of the stack.
    pub fn new(region: Region, base: &BaseImage) -> Option<Self> {
        match base {
            BaseImage::Id(id) => Some(BaseImageQuery::Id { region, id: id.clone() }),
            BaseImage::Lookup { owners, name, architecture } => Some(BaseImageQuery::Lookup {
                region,
                owners: owners.clone(),
                name: name.clone(),
                architecture: architecture.clone(),
            }),
            BaseImage::Parameter(name) => Some(BaseImageQuery::Parameter { region, name: name.clone() }),
            BaseImage::Image(_) => None,
        }
    }

    /// The key in `LiveState::base_images`.
    pub fn key(&self) -> String {
        serde_json::to_string(self).expect("queries serialize")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveBaseImage {
    pub id: AmiId,
    pub name: String,
    /// `available`, `pending`, `deprecated`…
    pub state: String,
    /// `windows`, or None for Linux/UNIX.
    pub platform: Option<String>,
    pub architecture: String,
    pub root_device_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveImage {
    pub id: String,
    pub region: Region,
    pub name: String,
    pub state: String,
    pub description: Option<String>,
    /// RFC 3339.
    pub creation_date: String,
    pub snapshot_ids: Vec<String>,
    pub tags: Tags,
    /// Whether its EBS snapshots are encrypted, and with which key (None: the default `aws/ebs` key).
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// RFC 3339, when deprecation is scheduled.
    #[serde(default)]
    pub deprecation_time: Option<String>,
    #[serde(default)]
    pub deregistration_protection: bool,
}

/// Who may launch an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchPermissions {
    pub accounts: BTreeSet<String>,
    pub organizations: BTreeSet<String>,
    pub organizational_units: BTreeSet<String>,
    pub public: bool,
}

impl LaunchPermissions {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.organizations.is_empty()
            && self.organizational_units.is_empty()
            && !self.public
    }

    /// What `self` has that `other` lacks.
    pub fn minus(&self, other: &LaunchPermissions) -> LaunchPermissions {
        LaunchPermissions {
            accounts: self.accounts.difference(&other.accounts).cloned().collect(),
            organizations: self.organizations.difference(&other.organizations).cloned().collect(),
            organizational_units: self.organizational_units.difference(&other.organizational_units).cloned().collect(),
            public: self.public && !other.public,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveBuildInstance {
    pub id: String,
    pub region: Region,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`.
    pub state: String,
    pub launch_time: String,
    pub tags: Tags,
}

/// What a build's instance has written to the logs bucket so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReports {
    pub status: Option<InstanceStatus>,
    pub result: Option<InstanceResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRole {
    pub name: String,
    pub arn: String,
    pub path: String,
    pub description: Option<String>,
    pub trust_policy: serde_json::Value,
    pub managed_policies: BTreeSet<String>,
    pub inline_policies: BTreeMap<String, serde_json::Value>,
    pub max_session_duration: Option<u32>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveInstanceProfile {
    pub name: String,
    pub arn: String,
    pub path: String,
    /// Role names (an instance profile holds at most one).
    pub roles: Vec<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveBucket {
    pub name: String,
    pub region: Region,
    pub tags: Tags,
    /// Read only for buckets the stack owns or names; None for other buckets of the account.
    pub settings: Option<BucketSettings>,
    /// Whether it holds any object; read only when the scope asks.
    pub has_objects: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketSettings {
    /// Days of the expiration rule imagectl manages, if present.
    pub expire_after_days: Option<u32>,
    /// Lifecycle rules other than imagectl's (they are replaced when imagectl writes its rule).
    pub other_lifecycle_rules: usize,
    pub versioning: bool,
    /// True when all four public-access-block settings are on.
    pub block_public_access: bool,
    pub encryption: Option<BucketEncryption>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveTopic {
    pub name: String,
    pub arn: String,
    pub region: Region,
    pub tags: Tags,
    pub display_name: Option<String>,
    pub kms_key: Option<String>,
    /// Subscriptions with their ARN (`PendingConfirmation` until an endpoint confirms).
    #[serde(with = "as_pairs")]
    pub subscriptions: BTreeMap<Subscription, String>,
}

/// Whether `tags` say that `stack` owns the resource.
pub fn owned_by(tags: &Tags, stack: &str) -> bool {
    tags.get(STACK_TAG).is_some_and(|s| s == stack)
}

impl LiveState {
    /// The resource a live object belongs to, by its ownership tag, if this stack owns it.
    pub fn owner_of(tags: &Tags, stack: &str) -> Option<ResourceId> {
        if !owned_by(tags, stack) {
            return None;
        }
        tags.get(RESOURCE_TAG).and_then(|r| ResourceId::parse(r).ok())
    }
}

/// A stable digest of a live object, to tell whether it changed since a plan was made.
pub fn digest<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("live state serializes");
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// JSON objects need string keys; maps keyed by structs are written as a list of [key, value] pairs.
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
