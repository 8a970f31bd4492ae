//! Plans package groups (uploads and the name binding) and private images (builds, identified by fingerprint).

use serde_json::json;

use super::step::ImageRef;
use super::{partition, tag_changes, Action, Change, FieldChange, Planner, Step};
use crate::build::{self, tags, BuildPackage, BuildPlan, BuildSettings, BuildState, PackageGroupRecord};
use crate::diagnostics::Diagnostic;
use crate::live::{BaseImageQuery, LiveImage};
use crate::model::{
    AmiId, BaseImage, BucketName, Kind, PackageGroup, Platform, PrivateImage, Ref, Region, Resource, ResourceId, Tags,
};

/// The image a PrivateImage delivers to its copies, shares and parameters: the one that exists, or the one a build
/// of this plan produces.
#[derive(Debug, Clone)]
pub(super) struct Delivered {
    pub image: ImageRef,
    /// What copies record as their source (tag `imagectl:source`): the build ID, or the AMI ID of an image without one.
    pub source_key: String,
    pub image_id: Option<String>,
    pub name: String,
    pub region: Region,
    /// A build is planned: the image does not exist yet.
    pub rebuilt: bool,
    pub revision: u32,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
}

impl Delivered {
    pub fn existing(image: &LiveImage) -> Self {
        Delivered {
            image: ImageRef::Id(image.id.clone()),
            source_key: image.tags.get(tags::BUILD_ID).cloned().unwrap_or_else(|| image.id.clone()),
            image_id: Some(image.id.clone()),
            name: image.name.clone(),
            region: image.region.clone(),
            rebuilt: false,
            revision: revision_of(&image.tags),
            encrypted: image.encrypted,
            kms_key_id: image.kms_key_id.clone(),
        }
    }
}

/// Builds of one PrivateImage found in AWS, newest revision first.
struct History<'a> {
    images: Vec<&'a LiveImage>,
}

pub(super) fn revision_of(tags: &Tags) -> u32 {
    tags.get(tags::REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

impl<'a> Planner<'a> {
    pub(super) fn package_groups(&mut self) {
        if self.options.mode != super::Mode::Apply {
            return;
        }
        for (id, group) in self.resources_of(|r| match r {
            Resource::PackageGroup(g) => Some(g),
            _ => None,
        }) {
            let (bucket, region) = self.bucket_location(&group.artifacts_bucket);
            let record = self.live.package_groups.get(&group.name).cloned().flatten();
            if let Some(record) = &record {
                if record.content_digest != group.content_digest {
                    self.refuse(
                        id,
                        "metadata.name",
                        format!(
                            "package group `{}` was first used with other content (digest {}…, this content {}…); a name can never be used again, even after a failed build",
                            group.name,
                            &record.content_digest[..12.min(record.content_digest.len())],
                            &group.content_digest[..12]
                        ),
                        format!("bump the revision in the name, e.g. {}", next_revision_name(&group.name)),
                    );
                    continue;
                }
            }
            let present = self.live.packages_present.get(&bucket);
            let mut steps: Vec<Step> = group
                .packages
                .iter()
                .map(|p| (p, build::package_key(&p.sha256, &p.file_name)))
                .filter(|(_, key)| !present.is_some_and(|keys| keys.contains(key)))
                .map(|(p, key)| Step::UploadPackage {
                    bucket: bucket.clone(),
                    region: region.clone(),
                    key,
                    source: p.source.clone(),
                    sha256: p.sha256.clone(),
                })
                .collect();
            let mut fields = Vec::new();
            for step in &steps {
                if let Step::UploadPackage { key, .. } = step {
                    fields.push(FieldChange::new("packages", None, Some(json!(format!("s3://{bucket}/{key}")))));
                }
            }
            if record.is_none() {
                fields.push(FieldChange::new("contentDigest", None, Some(json!(group.content_digest))));
                steps.push(Step::BindPackageGroup {
                    bucket: bucket.clone(),
                    region: region.clone(),
                    key: build::package_group_key(&group.name),
                    record: PackageGroupRecord {
                        name: group.name.clone(),
                        content_digest: group.content_digest.clone(),
                        packages: group.packages.iter().map(|p| (p.file_name.clone(), p.sha256.clone())).collect(),
                        installer: group.installer().file_name.clone(),
                        stack: self.stack().to_owned(),
                    },
                });
            }
            let action = if record.is_none() { Action::Create } else { Action::Update };
            self.push(Change { resource: id.clone(), action, reason: None, fields, steps, after: Vec::new() });
        }
    }

    /// The seller's test builds: per operating system, a build and scan of the group on a base image of that
    /// system. Their images are deregistered once scanned; the reports say how each ended.
    pub(super) fn test_builds(&mut self) {
        if self.options.mode != super::Mode::Apply {
            return;
        }
        for (id, group) in self.resources_of(|r| match r {
            Resource::PackageGroup(g) if g.test_builds.is_some() => Some(g),
            _ => None,
        }) {
            let tests = group.test_builds.as_ref().expect("filtered");
            for (os, base) in &tests.base_images {
                self.test_build(id, group, os, base);
            }
            for os in group.operating_systems.iter().filter(|os| !tests.base_images.contains_key(*os)) {
                self.note(id, format!("no test build for {os}: give it a base image in testBuilds.baseImages"));
            }
        }
    }

    fn test_build(&mut self, id: &ResourceId, group: &PackageGroup, os: &str, base: &BaseImage) {
        let tests = group.test_builds.as_ref().expect("caller checked");
        let change_id = ResourceId::new(Kind::PackageGroup, format!("{}/test/{os}", group.name));
        let build_name = format!("{}-{os}", group.name);
        // The build is described as the PrivateImage it would be, so that it runs through the same pipeline.
        let image = PrivateImage {
            name: build_name.clone(),
            region: tests.region.clone(),
            base_image: base.clone(),
            package_group: id.clone(),
            instance_profile: tests.instance_profile.clone(),
            automation_role: tests.automation_role.clone(),
            logs_bucket: tests.logs_bucket.clone(),
            image_name: build_name.chars().take(100).collect(),
            description: Some(format!("imagectl test build of package group {} on {os}", group.name)),
            instance_type: tests.instance_type.clone(),
            network: None,
            notifications: None,
            delivery: crate::model::Delivery::Ssm,
            scan: crate::model::Scan { command: None, builtin: true },
            generalize: true,
            no_reboot: false,
            block_devices: Vec::new(),
            retention: crate::model::Retention {
                keep: 1,
                deprecate_after_days: None,
                deregistration_protection: false,
            },
            publish_parameter: None,
            tags: group.tags.clone(),
            lifecycle: group.lifecycle,
        };
        let Some(ami) = self.resolve_base(id, &image, group.platform) else {
            return;
        };
        let settings = build_settings(group, &image);
        // The operating system is part of the identity: two systems may share a base image.
        let fingerprint = build::fingerprint(&ami, &format!("{}:{os}", group.content_digest), &settings);
        let resource = id.to_string();
        let (logs_bucket, _) = self.bucket_location(&tests.logs_bucket);
        let history = History { images: Vec::new() };
        let in_progress = self
            .live
            .build_instances
            .iter()
            .filter(|i| {
                i.tags.get(tags::FINGERPRINT) == Some(&fingerprint)
                    && i.tags.get(crate::live::RESOURCE_TAG) == Some(&resource)
            })
            .find_map(|i| Some((i.tags.get(tags::BUILD_ID)?.clone(), revision_of(&i.tags))));
        let finished = self.last_finished_build(&build_name, &fingerprint, &logs_bucket);
        self.live_digests.insert(change_id.clone(), Some(crate::live::digest(&(&in_progress, &finished))));
        if in_progress.is_none() {
            match &finished {
                Some((_, BuildState::Scanning, _)) => {
                    self.unchanged += 1;
                    return;
                }
                Some((build_id, BuildState::IssuesFound, verdict)) => {
                    self.note(id, format!("test build {build_id} on {os} ended Issues Found: {verdict}; publish a new revision of the group to test again"));
                    return;
                }
                _ => {}
            }
        }
        let revision = in_progress
            .as_ref()
            .map(|(_, r)| *r)
            .unwrap_or_else(|| self.next_revision(&resource, &build_name, &history));
        let build_id = in_progress
            .as_ref()
            .map(|(b, _)| b.clone())
            .unwrap_or_else(|| build::build_id(&build_name, revision, &fingerprint));
        let mut plan = self.build_plan(id, &image, group, &ami, settings, &fingerprint, revision, &build_id);
        plan.keep_image = false;
        plan.tags.insert(tags::OPERATING_SYSTEM.to_owned(), os.to_owned());
        let reason = in_progress.as_ref().map(|(b, _)| format!("resumes test build {b}, in progress"));
        let mut after = vec![id.clone()];
        after.extend(
            self.model.resources.get(id).map(|r| r.dependencies().into_iter().map(|d| d.on)).into_iter().flatten(),
        );
        self.push(Change {
            resource: change_id,
            action: Action::Create,
            reason,
            fields: vec![
                FieldChange::new("operatingSystem", None, Some(json!(os))),
                FieldChange::new("baseImage", None, Some(json!(ami))),
                FieldChange::new("build", None, Some(json!(build_id))),
            ],
            steps: vec![Step::BuildImage { build: Box::new(plan), wait: !self.options.no_wait }],
            after,
        });
    }

    /// A bucket's name and region: from the manifests, else from the account's listing, else the stack's region.
    fn bucket_location(&self, bucket: &Ref<BucketName>) -> (String, Region) {
        let name = match bucket {
            Ref::Stack(id) => id.name.clone(),
            Ref::External(name) => name.to_string(),
        };
        let region = match self.model.resources.get(&ResourceId::new(Kind::Bucket, &name)) {
            Some(Resource::Bucket(b)) => b.region.clone(),
            _ => self
                .live
                .buckets
                .get(&name)
                .map(|b| b.region.clone())
                .unwrap_or_else(|| self.model.stack.region.clone()),
        };
        (name, region)
    }

    fn refuse(&mut self, id: &ResourceId, field: &str, message: String, help: String) {
        let mut diagnostic = Diagnostic::error(message).resource(id).field(field).help(help);
        if let Some(origin) = self.model.origins.get(id) {
            diagnostic = diagnostic.at(origin.locate(field));
        }
        self.refusals.push(diagnostic);
    }

    pub(super) fn private_images(&mut self) {
        if self.options.mode != super::Mode::Apply {
            return;
        }
        let images = self.resources_of(|r| match r {
            Resource::PrivateImage(i) => Some(i),
            _ => None,
        });
        // Layered images come after their bases, so a base's rebuild is known when its dependents are planned.
        let order = crate::graph::DependencyGraph::build(self.model).order().unwrap_or_default();
        let mut images: Vec<_> = images;
        images.sort_by_key(|(id, _)| order.iter().position(|o| o == *id));
        for (id, image) in images {
            self.private_image(id, image);
        }
    }

    fn private_image(&mut self, id: &ResourceId, image: &PrivateImage) {
        // Until a build of the current configuration succeeds, the newest available image is the one delivered.
        let resource = id.to_string();
        if let Some(newest) = self
            .live
            .images
            .iter()
            .filter(|i| {
                i.region == image.region
                    && i.state == "available"
                    && i.tags.get(crate::live::RESOURCE_TAG) == Some(&resource)
            })
            .max_by_key(|i| revision_of(&i.tags))
        {
            self.delivered.insert(id.clone(), Delivered::existing(newest));
        }
        let Some(Resource::PackageGroup(group)) = self.model.resources.get(&image.package_group) else {
            return;
        };
        let Some(base) = self.resolve_base(id, image, group.platform) else {
            return;
        };
        let settings = build_settings(group, image);
        let fingerprint = build::fingerprint(&base, &group.content_digest, &settings);
        let mut history = History {
            images: self
                .live
                .images
                .iter()
                .filter(|i| i.region == image.region && i.tags.get(crate::live::RESOURCE_TAG) == Some(&resource))
                .collect(),
        };
        history.images.sort_by_key(|i| std::cmp::Reverse(revision_of(&i.tags)));
        self.live_digests.insert(id.clone(), Some(crate::live::digest(&history.images)));

        let current = history
            .images
            .iter()
            .find(|i| i.state == "available" && i.tags.get(tags::FINGERPRINT) == Some(&fingerprint))
            .copied();
        if let Some(current) = current {
            self.delivered.insert(id.clone(), Delivered::existing(current));
            let change = self.converge_image(id, image, current);
            self.push(change);
            return;
        }
        if let Some(base_id) = self.base_being_rebuilt(image) {
            self.note(
                id,
                format!("waits for its base {base_id} to be rebuilt; the next apply builds it on the new base"),
            );
            return;
        }
        let in_progress = self.build_in_progress(&resource, &fingerprint, &history);
        let failed = self
            .last_finished_build(&image.name, &fingerprint, &self.bucket_location(&image.logs_bucket).0)
            .filter(|(_, state, _)| *state != BuildState::Scanning);
        if in_progress.is_none() {
            if let Some((build_id, state, verdict)) = failed {
                if state == BuildState::IssuesFound {
                    self.note(
                        id,
                        format!("build {build_id} of this exact configuration ended {state}: {verdict}; change the package group (new revision) or a build setting to build again"),
                    );
                    return;
                }
            }
        }
        let revision = match &in_progress {
            Some((_, revision)) => *revision,
            None => self.next_revision(&resource, &image.name, &history),
        };
        let build_id = in_progress
            .as_ref()
            .map(|(b, _)| b.clone())
            .unwrap_or_else(|| build::build_id(&image.name, revision, &fingerprint));
        let plan = self.build_plan(id, image, group, &base, settings, &fingerprint, revision, &build_id);
        let newest = history.images.iter().find(|i| i.state == "available").copied();
        let (action, reason) = match (&in_progress, newest) {
            (Some(_), _) => (
                if newest.is_some() { Action::Replace } else { Action::Create },
                Some(format!("resumes build {build_id}, in progress")),
            ),
            (None, None) => (Action::Create, None),
            (None, Some(previous)) => (Action::Replace, Some(rebuild_reason(previous, &plan))),
        };
        let fields = vec![
            // The newest image's base only when it changed: an unchanged base is no change to show.
            FieldChange::new(
                "baseImage",
                newest
                    .and_then(|n| n.tags.get(tags::BASE_IMAGE))
                    .filter(|b| b.as_str() != base.as_str())
                    .map(|b| json!(b)),
                Some(json!(base)),
            ),
            FieldChange::new("imageName", None, Some(json!(plan.ami_name))),
            FieldChange::new("build", None, Some(json!(build_id))),
            FieldChange::new("region", None, Some(json!(image.region))),
        ];
        // With --no-wait the build only starts: its image does not exist when this apply ends, so copies, shares and
        // the published ID stay with the current image (steps waiting for the new one would fail); the apply that
        // captures the build moves them.
        if self.options.no_wait {
            let source = crate::model::ImageSource::Stack(id.clone());
            let distributed = image.publish_parameter.is_some()
                || self.model.resources.values().any(|r| match r {
                    Resource::ImageCopy(c) => c.source == source,
                    Resource::ImageShare(s) => s.image == source,
                    _ => false,
                });
            if distributed {
                self.note(id, format!("build {build_id} only starts (--no-wait): its copies, shares and published ID follow on the apply that captures it"));
            }
        } else {
            self.delivered.insert(
                id.clone(),
                Delivered {
                    image: ImageRef::Build { build_id: build_id.clone() },
                    source_key: build_id.clone(),
                    image_id: None,
                    name: plan.ami_name.clone(),
                    region: image.region.clone(),
                    rebuilt: true,
                    revision,
                    encrypted: image.block_devices.iter().any(|d| d.encrypted == Some(true)),
                    kms_key_id: image.block_devices.iter().find_map(|d| d.kms_key.clone()),
                },
            );
        }
        let wait = !self.options.no_wait;
        self.push(Change {
            resource: id.clone(),
            action,
            reason,
            fields,
            steps: vec![Step::BuildImage { build: Box::new(plan), wait }],
            after: Vec::new(),
        });
    }

    /// Resolves the base image and checks what the seeds require of it.
    fn resolve_base(&mut self, id: &ResourceId, image: &PrivateImage, platform: Platform) -> Option<AmiId> {
        if let BaseImage::Image(base_id) = &image.base_image {
            return match self.current_image_of(base_id) {
                Some(ami) => Some(ami),
                None => {
                    self.note(
                        id,
                        format!("waits for its base {base_id}, which has no image yet; the next apply builds it"),
                    );
                    None
                }
            };
        }
        let query = BaseImageQuery::for_image(image)?;
        let Some(found) = self.live.base_images.get(&query.key()) else {
            let what = match &query {
                BaseImageQuery::Id { id, region } => {
                    format!("image {id} does not exist in {region} (or is not shared with this account)")
                }
                BaseImageQuery::Lookup { owners, name, region, .. } => {
                    format!("no image of {} named like `{name}` in {region}", owners.join(", "))
                }
                BaseImageQuery::Parameter { name, region } => {
                    format!("SSM parameter {name} does not exist in {region} or does not hold an AMI ID")
                }
            };
            self.refuse(id, "spec.baseImage", what, "check the base image; it must exist in the image's region".into());
            return None;
        };
        let is_windows = found.platform.as_deref() == Some("windows");
        if is_windows != (platform == Platform::Windows) {
            self.refuse(
                id,
                "spec.baseImage",
                format!(
                    "base image {} is a {} image, but the package group is for {platform:?}",
                    found.id,
                    if is_windows { "Windows" } else { "Linux" }
                ),
                "choose a base image of the package group's platform".into(),
            );
            return None;
        }
        if found.root_device_type != "ebs" {
            self.refuse(
                id,
                "spec.baseImage",
                format!(
                    "base image {} is {}-backed; only EBS-backed images can be captured",
                    found.id, found.root_device_type
                ),
                "choose an EBS-backed base image".into(),
            );
            return None;
        }
        if found.state != "available" {
            self.refuse(
                id,
                "spec.baseImage",
                format!("base image {} is {}, not available", found.id, found.state),
                "wait for it or choose another".into(),
            );
            return None;
        }
        Some(found.id.clone())
    }

    /// The AMI a PrivateImage of the stack currently delivers: its newest available image.
    fn current_image_of(&self, id: &ResourceId) -> Option<AmiId> {
        let resource = id.to_string();
        self.live
            .images
            .iter()
            .filter(|i| i.state == "available" && i.tags.get(crate::live::RESOURCE_TAG) == Some(&resource))
            .max_by_key(|i| revision_of(&i.tags))
            .and_then(|i| AmiId::parse(&i.id).ok())
    }

    fn base_being_rebuilt(&self, image: &PrivateImage) -> Option<ResourceId> {
        let BaseImage::Image(base) = &image.base_image else {
            return None;
        };
        self.changes
            .iter()
            .any(|c| &c.resource == base && matches!(c.action, Action::Create | Action::Replace))
            .then(|| base.clone())
    }

    /// A build of this fingerprint still running (an instance) or being captured (a pending image).
    fn build_in_progress(&self, resource: &str, fingerprint: &str, history: &History<'_>) -> Option<(String, u32)> {
        let ours = |t: &Tags| {
            t.get(crate::live::RESOURCE_TAG).map(String::as_str) == Some(resource)
                && t.get(tags::FINGERPRINT).map(String::as_str) == Some(fingerprint)
        };
        let from_tags = |t: &Tags| Some((t.get(tags::BUILD_ID)?.clone(), revision_of(t)));
        self.live.build_instances.iter().filter(|i| ours(&i.tags)).find_map(|i| from_tags(&i.tags)).or_else(|| {
            history.images.iter().filter(|i| i.state == "pending" && ours(&i.tags)).find_map(|i| from_tags(&i.tags))
        })
    }

    /// The verdict of the newest finished build of this name and fingerprint that left no image, with the log's
    /// S3 location (what the user reads first to know what to change). `Scanning` means it passed.
    fn last_finished_build(
        &self,
        build_name: &str,
        fingerprint: &str,
        logs_bucket: &str,
    ) -> Option<(String, BuildState, String)> {
        let prefix = format!("{build_name}-r");
        let suffix = format!("-{}", &fingerprint[..8]);
        self.live
            .build_reports
            .iter()
            .filter(|(build_id, _)| build_id.ends_with(&suffix))
            .filter_map(|(build_id, reports)| {
                let revision: u32 = build_id.strip_prefix(&prefix)?.split('-').next()?.parse().ok()?;
                let result = reports.result.as_ref()?;
                let log = format!("s3://{logs_bucket}/{}", build::ReportKeys::for_build(build_id).log);
                let (state, verdict) = build::judge(result, &log);
                Some((revision, build_id.clone(), state, verdict))
            })
            .max_by_key(|(revision, ..)| *revision)
            .map(|(_, build_id, state, verdict)| (build_id, state, verdict))
    }

    /// One more than any revision seen: images, running builds and finished build reports.
    fn next_revision(&self, resource: &str, build_name: &str, history: &History<'_>) -> u32 {
        let prefix = format!("{build_name}-r");
        let from_reports = self
            .live
            .build_reports
            .keys()
            .filter_map(|b| b.strip_prefix(&prefix)?.split('-').next()?.parse::<u32>().ok());
        let from_instances = self
            .live
            .build_instances
            .iter()
            .filter(|i| i.tags.get(crate::live::RESOURCE_TAG).map(String::as_str) == Some(resource))
            .filter(|i| i.tags.get(tags::BUILD_ID).is_some_and(|b| b.starts_with(&prefix)))
            .map(|i| revision_of(&i.tags));
        history.images.iter().map(|i| revision_of(&i.tags)).chain(from_instances).chain(from_reports).max().unwrap_or(0)
            + 1
    }

    #[allow(clippy::too_many_arguments)]
    fn build_plan(
        &self,
        id: &ResourceId,
        image: &PrivateImage,
        group: &PackageGroup,
        base: &AmiId,
        settings: BuildSettings,
        fingerprint: &str,
        revision: u32,
        build_id: &str,
    ) -> BuildPlan {
        let account = self.account.clone().unwrap_or_default();
        let (artifacts_bucket, _) = self.bucket_location(&group.artifacts_bucket);
        let (logs_bucket, _) = self.bucket_location(&image.logs_bucket);
        let instance_profile = match &image.instance_profile {
            Ref::Stack(p) => p.name.clone(),
            Ref::External(arn) => arn.resource_name().to_owned(),
        };
        let automation_role_arn = Some(match &image.automation_role {
            Ref::External(arn) => arn.to_string(),
            Ref::Stack(role) => self.live.roles.get(&role.name).map(|r| r.arn.clone()).unwrap_or_else(|| {
                let path = match self.model.resources.get(role) {
                    Some(Resource::Role(r)) => r.path.clone(),
                    _ => "/".to_owned(),
                };
                format!("arn:{}:iam::{account}:role{path}{}", partition(&image.region), role.name)
            }),
        });
        let topic_arn = image.notifications.as_ref().map(|topic| match topic {
            Ref::External(arn) => arn.to_string(),
            Ref::Stack(t) => {
                let region = match self.model.resources.get(t) {
                    Some(Resource::Topic(topic)) => topic.region.clone(),
                    _ => image.region.clone(),
                };
                format!("arn:{}:sns:{region}:{account}:{}", partition(&region), t.name)
            }
        });
        let settings_digest = build::fingerprint(base, "", &settings);
        let mut build_tags = self.desired_tags(id, &image.tags, image.lifecycle);
        for (key, value) in [
            (tags::BUILD_ID, build_id.to_owned()),
            (tags::REVISION, revision.to_string()),
            (tags::FINGERPRINT, fingerprint.to_owned()),
            (tags::BASE_IMAGE, base.to_string()),
            (tags::PACKAGE_GROUP, group.name.clone()),
            (tags::PACKAGE_DIGEST, group.content_digest.clone()),
            (tags::INSTANCE_TYPE, settings.instance_type.clone()),
            (tags::SETTINGS_DIGEST, settings_digest),
        ] {
            build_tags.insert(key.to_owned(), value);
        }
        BuildPlan {
            build_id: build_id.to_owned(),
            stack: self.stack().to_owned(),
            resource: id.to_string(),
            region: image.region.clone(),
            revision,
            fingerprint: fingerprint.to_owned(),
            base_image: base.clone(),
            ami_name: build::ami_name(&image.image_name, revision, fingerprint),
            description: image.description.clone(),
            settings,
            instance_profile,
            automation_role_arn,
            subnet: image.network.as_ref().map(|n| n.subnet.clone()),
            security_groups: image.network.as_ref().map(|n| n.security_groups.clone()).unwrap_or_default(),
            associate_public_ip: image.network.as_ref().is_some_and(|n| n.associate_public_ip),
            artifacts_bucket,
            packages: group
                .packages
                .iter()
                .map(|p| BuildPackage {
                    file_name: p.file_name.clone(),
                    key: build::package_key(&p.sha256, &p.file_name),
                    sha256: p.sha256.clone(),
                })
                .collect(),
            installer: group.installer().file_name.clone(),
            logs_bucket,
            topic_arn,
            tags: build_tags,
            keep_image: true,
        }
    }

    /// An image of the right fingerprint exists: only its tags and description can drift, and both change in place.
    fn converge_image(&self, id: &ResourceId, image: &PrivateImage, live: &LiveImage) -> Change {
        let mut desired = self.desired_tags(id, &image.tags, image.lifecycle);
        // The build's own tags are facts about the image, not settings: keep them as they are.
        for (key, value) in live.tags.iter().filter(|(k, _)| k.starts_with("imagectl:")) {
            desired.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let mut fields = Vec::new();
        let mut steps = Vec::new();
        if let Some(field) = super::tags_field(&desired, &live.tags) {
            fields.push(field);
        }
        let (set, remove) = tag_changes(&desired, &live.tags);
        if !set.is_empty() {
            steps.push(Step::TagImage { image_id: live.id.clone(), region: live.region.clone(), tags: set });
        }
        if !remove.is_empty() {
            steps.push(Step::UntagImage { image_id: live.id.clone(), region: live.region.clone(), keys: remove });
        }
        let description = image.description.clone().unwrap_or_default();
        if live.description.clone().unwrap_or_default() != description {
            fields.push(FieldChange::new(
                "description",
                live.description.as_ref().map(|d| json!(d)),
                Some(json!(description)),
            ));
            steps.push(Step::SetImageDescription {
                image_id: live.id.clone(),
                region: live.region.clone(),
                description,
            });
        }
        Change { resource: id.clone(), action: Action::Update, reason: None, fields, steps, after: Vec::new() }
    }
}

/// Every setting of a build of `group` as `image` describes it: what the fingerprint covers.
fn build_settings(group: &PackageGroup, image: &PrivateImage) -> BuildSettings {
    BuildSettings {
        platform: group.platform,
        instance_type: image.instance_type.clone(),
        delivery: image.delivery,
        installer_arguments: group.installer_arguments.clone(),
        timeout_minutes: group.timeout_minutes,
        scan_command: image.scan.command.clone(),
        builtin_scan: image.scan.builtin,
        generalize: image.generalize,
        no_reboot: image.no_reboot,
        block_devices: image.block_devices.clone(),
    }
}

/// Why a new build is needed, compared with the newest image: which inputs changed.
fn rebuild_reason(previous: &LiveImage, plan: &BuildPlan) -> String {
    let tag = |key: &str| previous.tags.get(key).cloned().unwrap_or_default();
    let mut reasons = Vec::new();
    if tag(tags::BASE_IMAGE) != plan.base_image.as_str() {
        reasons.push(format!("base image changed {} → {}", tag(tags::BASE_IMAGE), plan.base_image));
    }
    if tag(tags::PACKAGE_DIGEST) != plan.tags[tags::PACKAGE_DIGEST] {
        reasons.push(if tag(tags::PACKAGE_GROUP) != plan.tags[tags::PACKAGE_GROUP] {
            format!("package group changed {} → {}", tag(tags::PACKAGE_GROUP), plan.tags[tags::PACKAGE_GROUP])
        } else {
            "package group content changed".to_owned()
        });
    }
    if tag(tags::INSTANCE_TYPE) != plan.settings.instance_type {
        reasons.push(format!("instanceType changed {} → {}", tag(tags::INSTANCE_TYPE), plan.settings.instance_type));
    }
    if reasons.is_empty() {
        reasons.push("build settings changed".to_owned());
    }
    reasons.join(", ")
}

/// `acme-agent-r1` → `acme-agent-r2`; a name without a revision gets `-r2`.
fn next_revision_name(name: &str) -> String {
    if let Some((stem, revision)) = name.rsplit_once("-r") {
        if let Ok(n) = revision.parse::<u32>() {
            return format!("{stem}-r{}", n + 1);
        }
    }
    format!("{name}-r2")
}
