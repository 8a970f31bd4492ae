//! Plans distribution: cross-region copies, launch permissions, published AMI IDs and retention of old images.
//!
//! Each region's copy is a change of its own (`ImageCopy/<name>/<region>`), so copies to different regions run
//! concurrently; publishing (`PrivateImage/<name>/publish`) waits for the image's copies and shares, and retention
//! (`PrivateImage/<name>/retention`) for the publishing, so a parameter never points at an image not yet delivered
//! and an old image is removed only once its successor is.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::image::{revision_of, Delivered};
use super::step::ImageRef;
use super::{tag_changes, Action, Change, FieldChange, Mode, Planner, Step};
use crate::build::tags;
use crate::live::{LaunchPermissions, LiveImage, RESOURCE_TAG};
use crate::model::{ImageCopy, ImageShare, ImageSource, Kind, PrivateImage, Region, Resource, ResourceId};

/// A copy target: the image in one region, as a step can name it, and the live image if it exists.
struct Target<'a> {
    region: Region,
    image: ImageRef,
    live: Option<&'a LiveImage>,
    encrypted: bool,
    default_key: bool,
}

impl<'a> Planner<'a> {
    /// What an image source delivers: a PrivateImage's image (existing or being built), or an external AMI.
    fn source(&self, source: &ImageSource) -> Option<Delivered> {
        match source {
            ImageSource::Stack(id) => self.delivered.get(id).cloned(),
            ImageSource::External { id, region } => Some(Delivered {
                image: ImageRef::Id(id.to_string()),
                source_key: id.to_string(),
                image_id: Some(id.to_string()),
                name: id.to_string(),
                region: region.clone(),
                rebuilt: false,
                revision: 0,
                encrypted: false,
                kms_key_id: None,
            }),
        }
    }

    /// The change that produces a source image in this plan, if any.
    fn source_change(&self, source: &ImageSource) -> Option<ResourceId> {
        match source {
            ImageSource::Stack(id) if self.delivered.get(id).is_some_and(|d| d.rebuilt) => Some(id.clone()),
            _ => None,
        }
    }

    /// Live copies an ImageCopy made, in any region.
    fn copies_of(&self, copy: &ImageCopy) -> Vec<&'a LiveImage> {
        let resource = format!("ImageCopy/{}", copy.name);
        self.live
            .images
            .iter()
            .filter(|i| {
                i.tags.get(RESOURCE_TAG) == Some(&resource) && matches!(i.state.as_str(), "available" | "pending")
            })
            .collect()
    }

    pub(super) fn copies(&mut self) {
        if self.options.mode != Mode::Apply {
            return;
        }
        for (id, copy) in self.resources_of(|r| match r {
            Resource::ImageCopy(c) => Some(c),
            _ => None,
        }) {
            let Some(source) = self.source(&copy.source) else {
                self.note(id, "waits for its source image, which has none yet");
                continue;
            };
            let live_copies = self.copies_of(copy);
            for (region, settings) in &copy.regions {
                let change_id = ResourceId::new(Kind::ImageCopy, format!("{}/{region}", copy.name));
                let existing = live_copies
                    .iter()
                    .find(|i| &i.region == region && i.tags.get(tags::SOURCE) == Some(&source.source_key));
                let mut desired =
                    self.desired_tags(&ResourceId::new(Kind::ImageCopy, &copy.name), &copy.tags, copy.lifecycle);
                desired.insert(tags::SOURCE.to_owned(), source.source_key.clone());
                desired.insert(
                    tags::SOURCE_IMAGE.to_owned(),
                    format!(
                        "{}:{}",
                        source.region,
                        source.image_id.clone().unwrap_or_else(|| source.source_key.clone())
                    ),
                );
                desired.insert(tags::REVISION.to_owned(), source.revision.to_string());
                if let Some(existing) = existing {
                    self.live_digests.insert(change_id.clone(), Some(crate::live::digest(existing)));
                    // Copies carry no settings that change in place but their tags.
                    let (set, _) = tag_changes(&desired, &existing.tags);
                    let steps: Vec<Step> = if set.is_empty() {
                        Vec::new()
                    } else {
                        vec![Step::TagImage { image_id: existing.id.clone(), region: region.clone(), tags: set }]
                    };
                    let fields = super::tags_field(&desired, &existing.tags).into_iter().collect();
                    self.push(Change {
                        resource: change_id,
                        action: Action::Update,
                        reason: None,
                        fields,
                        steps,
                        after: Vec::new(),
                    });
                    continue;
                }
                self.live_digests.insert(change_id.clone(), None);
                let previous = live_copies.iter().filter(|i| &i.region == region).max_by_key(|i| revision_of(&i.tags));
                let name = settings.name.clone().unwrap_or_else(|| source.name.clone());
                let token = hex::encode(
                    &Sha256::digest(format!("{}|{}|{region}", copy.name, source.source_key).as_bytes())[..16],
                );
                let (action, reason) = match previous {
                    Some(old) => (
                        Action::Replace,
                        Some(format!(
                            "the source image changed ({} → {})",
                            old.tags.get(tags::SOURCE).cloned().unwrap_or_default(),
                            source.source_key
                        )),
                    ),
                    None => (Action::Create, None),
                };
                self.push(Change {
                    resource: change_id,
                    action,
                    reason,
                    fields: vec![
                        FieldChange::new(
                            "source",
                            previous.map(|p| json!(p.tags.get(tags::SOURCE_IMAGE))),
                            Some(json!(format!("{} in {}", source.image, source.region))),
                        ),
                        FieldChange::new("name", None, Some(json!(name))),
                        FieldChange::new("encrypted", None, Some(json!(settings.encrypted))),
                    ],
                    steps: vec![Step::CopyImage {
                        source: source.image.clone(),
                        source_region: source.region.clone(),
                        region: region.clone(),
                        name,
                        description: settings.description.clone(),
                        encrypted: settings.encrypted,
                        kms_key: settings.kms_key.clone(),
                        tags: desired,
                        client_token: token,
                    }],
                    after: self.source_change(&copy.source).into_iter().collect(),
                });
            }
            // A region that left the list: its copies go (older copies in listed regions are retention's).
            let mut gone: BTreeMap<Region, Vec<&LiveImage>> = BTreeMap::new();
            for live in live_copies.iter().filter(|i| !copy.regions.contains_key(&i.region)) {
                gone.entry(live.region.clone()).or_default().push(live);
            }
            for (region, images) in gone {
                let change_id = ResourceId::new(Kind::ImageCopy, format!("{}/{region}", copy.name));
                self.live_digests.insert(change_id.clone(), Some(crate::live::digest(&images)));
                self.push(Change {
                    resource: change_id,
                    action: Action::Delete,
                    reason: Some(format!("{region} is no longer in `regions`")),
                    fields: images.iter().map(|i| FieldChange::new("image", Some(json!(i.id)), None)).collect(),
                    steps: images
                        .iter()
                        .map(|i| Step::DeregisterImage {
                            image_id: i.id.clone(),
                            region: region.clone(),
                            snapshot_ids: i.snapshot_ids.clone(),
                        })
                        .collect(),
                    after: Vec::new(),
                });
            }
        }
    }

    /// The image of a source in its region and in every region an ImageCopy copies it to.
    fn targets(&self, source: &ImageSource, delivered: &Delivered, copies: &[ResourceId]) -> Vec<Target<'a>> {
        let live_image = |id: &Option<String>| id.as_ref().and_then(|id| self.live.images.iter().find(|i| &i.id == id));
        let mut out = vec![Target {
            region: delivered.region.clone(),
            image: delivered.image.clone(),
            live: live_image(&delivered.image_id),
            encrypted: delivered.encrypted,
            default_key: delivered.kms_key_id.is_none(),
        }];
        for copy_id in copies {
            let Some(Resource::ImageCopy(copy)) = self.model.resources.get(copy_id) else {
                continue;
            };
            if &copy.source != source {
                continue;
            }
            let live_copies = self.copies_of(copy);
            for (region, settings) in &copy.regions {
                let existing = live_copies
                    .iter()
                    .find(|i| &i.region == region && i.tags.get(tags::SOURCE) == Some(&delivered.source_key))
                    .copied();
                out.push(Target {
                    region: region.clone(),
                    image: match existing {
                        Some(e) => ImageRef::Id(e.id.clone()),
                        None => ImageRef::CopyOf { copy: copy_id.to_string(), source: delivered.source_key.clone() },
                    },
                    live: existing,
                    encrypted: settings.encrypted || delivered.encrypted,
                    default_key: settings.kms_key.is_none() && (settings.encrypted || delivered.kms_key_id.is_none()),
                });
            }
        }
        out
    }

    /// The changes of copies made from a source in this plan (shares and publishing wait for them).
    fn copy_changes_of(&self, source: &ImageSource) -> Vec<ResourceId> {
        self.changes
            .iter()
            .filter(|c| c.resource.kind == Kind::ImageCopy && c.action != Action::Delete)
            .filter(|c| {
                let name = c.resource.name.split('/').next().unwrap_or_default();
                matches!(self.model.resources.get(&ResourceId::new(Kind::ImageCopy, name)), Some(Resource::ImageCopy(copy)) if &copy.source == source)
            })
            .map(|c| c.resource.clone())
            .collect()
    }

    pub(super) fn shares(&mut self) {
        if self.options.mode != Mode::Apply {
            return;
        }
        for (id, share) in self.resources_of(|r| match r {
            Resource::ImageShare(s) => Some(s),
            _ => None,
        }) {
            let Some(delivered) = self.source(&share.image) else {
                self.note(id, "waits for its image, which has none yet");
                continue;
            };
            let desired = permissions_of(share);
            let mut fields = Vec::new();
            let mut steps = Vec::new();
            let mut digests = Vec::new();
            for target in self.targets(&share.image, &delivered, &share.copies) {
                let live =
                    target.live.and_then(|i| self.live.launch_permissions.get(&i.id)).cloned().unwrap_or_default();
                digests.push(crate::live::digest(&live));
                let add = desired.minus(&live);
                let remove = if share.additive { LaunchPermissions::default() } else { live.minus(&desired) };
                let label = format!("{} {}", target.region, target.image);
                if !add.is_empty() || !remove.is_empty() {
                    fields.push(FieldChange::new(
                        format!("launchPermissions[{label}]"),
                        Some(permission_list(&live)),
                        Some(permission_list(&live.minus(&remove).union(&add))),
                    ));
                    steps.push(Step::SetLaunchPermissions {
                        image: target.image.clone(),
                        region: target.region.clone(),
                        add,
                        remove,
                    });
                }
                if share.share_snapshots {
                    let shared: BTreeSet<String> = target
                        .live
                        .map(|i| {
                            let mut sets = i
                                .snapshot_ids
                                .iter()
                                .map(|s| self.live.snapshot_permissions.get(s).cloned().unwrap_or_default());
                            let first = sets.next().unwrap_or_default();
                            sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect())
                        })
                        .unwrap_or_default();
                    let add: Vec<String> = desired.accounts.difference(&shared).cloned().collect();
                    let remove: Vec<String> = if share.additive {
                        Vec::new()
                    } else {
                        shared.difference(&desired.accounts).cloned().collect()
                    };
                    if !add.is_empty() || !remove.is_empty() {
                        fields.push(FieldChange::new(
                            format!("snapshotPermissions[{label}]"),
                            Some(json!(shared)),
                            Some(json!(desired.accounts)),
                        ));
                        steps.push(Step::SetSnapshotPermissions {
                            image: target.image.clone(),
                            region: target.region.clone(),
                            add,
                            remove,
                        });
                    }
                }
                if target.encrypted && target.default_key && !desired.accounts.is_empty() {
                    self.note(id, format!("{label} is encrypted with the default aws/ebs key, which cannot be shared with other accounts: they cannot launch it; copy it with a customer managed key whose policy allows them"));
                }
            }
            self.live_digests.insert(id.clone(), Some(crate::live::digest(&digests)));
            let mut after: Vec<ResourceId> = self.source_change(&share.image).into_iter().collect();
            after.extend(self.copy_changes_of(&share.image));
            self.push(Change { resource: id.clone(), action: Action::Update, reason: None, fields, steps, after });
        }
    }

    pub(super) fn publications(&mut self) {
        if self.options.mode != Mode::Apply {
            return;
        }
        for (id, image) in self.resources_of(|r| match r {
            Resource::PrivateImage(i) => Some(i),
            _ => None,
        }) {
            let Some(parameter) = &image.publish_parameter else {
                continue;
            };
            let Some(delivered) = self.delivered.get(id).cloned() else {
                continue;
            };
            let source = ImageSource::Stack(id.clone());
            let copies: Vec<ResourceId> = self
                .model
                .resources
                .iter()
                .filter(|(_, r)| matches!(r, Resource::ImageCopy(c) if c.source == source))
                .map(|(c, _)| c.clone())
                .collect();
            let change_id = ResourceId::new(Kind::PrivateImage, format!("{}/publish", image.name));
            let mut fields = Vec::new();
            let mut steps = Vec::new();
            let mut current = BTreeMap::new();
            for target in self.targets(&source, &delivered, &copies) {
                let live = self.live.parameters.get(&target.region).and_then(|p| p.get(parameter));
                current.insert(target.region.to_string(), live.cloned());
                if let ImageRef::Id(id) = &target.image {
                    if live == Some(id) {
                        continue;
                    }
                }
                fields.push(FieldChange::new(
                    format!("{parameter}[{}]", target.region),
                    live.map(|v| json!(v)),
                    Some(json!(target.image.to_string())),
                ));
                steps.push(Step::PutImageParameter {
                    name: parameter.clone(),
                    region: target.region.clone(),
                    image: target.image.clone(),
                });
            }
            self.live_digests.insert(change_id.clone(), Some(crate::live::digest(&current)));
            let mut after: Vec<ResourceId> = self.source_change(&source).into_iter().collect();
            after.extend(self.copy_changes_of(&source));
            after.extend(
                self.model
                    .resources
                    .iter()
                    .filter(|(_, r)| matches!(r, Resource::ImageShare(s) if s.image == source))
                    .map(|(s, _)| s.clone()),
            );
            let action = if current.values().all(Option::is_none) { Action::Create } else { Action::Update };
            self.push(Change { resource: change_id, action, reason: None, fields, steps, after });
        }
    }

    pub(super) fn retention(&mut self) {
        self.retire_undeclared_images();
        if self.options.mode != Mode::Apply {
            return;
        }
        for (id, image) in self.resources_of(|r| match r {
            Resource::PrivateImage(i) => Some(i),
            _ => None,
        }) {
            self.retain_images(id, image);
        }
    }

    /// `destroy` deregisters every image and copy the stack owns; `apply --prune` those of resources that left the
    /// manifests. Retained and in-use images stay, and the plan says why.
    fn retire_undeclared_images(&mut self) {
        let destroying = self.options.mode == Mode::Destroy;
        if !destroying && !self.options.prune {
            return;
        }
        let mut by_resource: BTreeMap<ResourceId, Vec<&'a LiveImage>> = BTreeMap::new();
        for image in self.live.images.iter().filter(|i| crate::live::owned_by(&i.tags, self.stack())) {
            let Some(owner) = image.tags.get(RESOURCE_TAG).and_then(|r| ResourceId::parse(r).ok()) else {
                continue;
            };
            if destroying || !self.model.resources.contains_key(&owner) {
                by_resource.entry(owner).or_default().push(image);
            }
        }
        for (owner, images) in by_resource {
            if !self.in_scope(&owner) {
                continue;
            }
            let retained = match self.model.resources.get(&owner) {
                Some(declared) => declared.lifecycle().deletion_policy == crate::model::DeletionPolicy::Retain,
                None => images.iter().any(|i| i.tags.get(super::RETAIN_TAG).is_some_and(|v| v == "true")),
            };
            if retained {
                self.note(&owner, "deletionPolicy: retain: its images are not deregistered");
                continue;
            }
            let mut steps = Vec::new();
            let mut fields = Vec::new();
            for image in images {
                if let Some(why) = self.live.images_in_use.get(&image.id) {
                    self.note(&owner, format!("keeps {} in {}: it is in use by {why}", image.id, image.region));
                    continue;
                }
                fields.push(FieldChange::new(
                    format!("image[{} {}]", image.region, image.id),
                    Some(json!(image.name)),
                    None,
                ));
                steps.push(Step::DeregisterImage {
                    image_id: image.id.clone(),
                    region: image.region.clone(),
                    snapshot_ids: image.snapshot_ids.clone(),
                });
            }
            let change_id = ResourceId::new(owner.kind, format!("{}/images", owner.name));
            self.live_digests.insert(change_id.clone(), Some(crate::live::digest(&fields)));
            self.push(Change {
                resource: change_id,
                action: Action::Delete,
                reason: None,
                fields,
                steps,
                after: Vec::new(),
            });
        }
    }

    /// Keeps the newest `retention.keep` images (counting one being built), deregisters the rest with their copies
    /// and snapshots unless something still uses them, and schedules deprecation or protection of the kept ones.
    fn retain_images(&mut self, id: &ResourceId, image: &PrivateImage) {
        let resource = id.to_string();
        let mut images: Vec<&LiveImage> = self
            .live
            .images
            .iter()
            .filter(|i| i.state == "available" && i.tags.get(RESOURCE_TAG) == Some(&resource))
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(revision_of(&i.tags)));
        let building = self.delivered.get(id).is_some_and(|d| d.rebuilt);
        let keep = (image.retention.keep as usize).saturating_sub(usize::from(building));
        let change_id = ResourceId::new(Kind::PrivateImage, format!("{}/retention", image.name));
        let mut fields = Vec::new();
        let mut steps = Vec::new();
        for (index, old) in images.iter().enumerate() {
            if index < keep {
                if let (Some(days), None) = (image.retention.deprecate_after_days, &old.deprecation_time) {
                    if let Some(at) = add_days(&old.creation_date, days) {
                        fields.push(FieldChange::new(format!("deprecation[{}]", old.id), None, Some(json!(at))));
                        steps.push(Step::EnableImageDeprecation {
                            image_id: old.id.clone(),
                            region: old.region.clone(),
                            deprecate_at: at,
                        });
                    }
                }
                if image.retention.deregistration_protection && !old.deregistration_protection {
                    fields.push(FieldChange::new(
                        format!("deregistrationProtection[{}]", old.id),
                        Some(json!(false)),
                        Some(json!(true)),
                    ));
                    steps.push(Step::EnableDeregistrationProtection {
                        image_id: old.id.clone(),
                        region: old.region.clone(),
                    });
                }
                continue;
            }
            if let Some(why) = self.live.images_in_use.get(&old.id) {
                self.note(
                    id,
                    format!("keeps {} beyond retention ({} kept): it is in use by {why}", old.id, image.retention.keep),
                );
                continue;
            }
            if old.deregistration_protection {
                self.note(
                    id,
                    format!(
                        "keeps {} beyond retention: deregistration protection is on; turn it off to let it go",
                        old.id
                    ),
                );
                continue;
            }
            let source_key = old.tags.get(tags::BUILD_ID).cloned().unwrap_or_else(|| old.id.clone());
            let copies: Vec<&LiveImage> =
                self.live.images.iter().filter(|i| i.tags.get(tags::SOURCE) == Some(&source_key)).collect();
            if let Some((copy, why)) =
                copies.iter().find_map(|c| self.live.images_in_use.get(&c.id).map(|why| (c, why)))
            {
                self.note(
                    id,
                    format!(
                        "keeps {} beyond retention: its copy {} in {} is in use by {why}",
                        old.id, copy.id, copy.region
                    ),
                );
                continue;
            }
            for doomed in std::iter::once(*old).chain(copies) {
                fields.push(FieldChange::new(
                    format!("image[{} {}]", doomed.region, doomed.id),
                    Some(json!(doomed.name)),
                    None,
                ));
                steps.push(Step::DeregisterImage {
                    image_id: doomed.id.clone(),
                    region: doomed.region.clone(),
                    snapshot_ids: doomed.snapshot_ids.clone(),
                });
            }
        }
        let publish = ResourceId::new(Kind::PrivateImage, format!("{}/publish", image.name));
        let source = ImageSource::Stack(id.clone());
        let mut after: Vec<ResourceId> = vec![publish, id.clone()];
        after.extend(self.copy_changes_of(&source));
        after.extend(
            self.model
                .resources
                .iter()
                .filter(|(_, r)| matches!(r, Resource::ImageShare(s) if s.image == source))
                .map(|(s, _)| s.clone()),
        );
        self.live_digests.insert(change_id.clone(), Some(crate::live::digest(&images)));
        let reason = (!steps.is_empty()).then(|| format!("retention keeps the newest {}", image.retention.keep));
        self.push(Change { resource: change_id, action: Action::Update, reason, fields, steps, after });
    }
}

fn permissions_of(share: &ImageShare) -> LaunchPermissions {
    LaunchPermissions {
        accounts: share.accounts.iter().map(ToString::to_string).collect(),
        organizations: share.organizations.iter().map(ToString::to_string).collect(),
        organizational_units: share.organizational_units.iter().map(ToString::to_string).collect(),
        public: share.public,
    }
}

/// Permissions as one list for display: accounts, organization and OU ARNs, and `public`.
fn permission_list(p: &LaunchPermissions) -> Value {
    let mut items: Vec<String> =
        p.accounts.iter().chain(&p.organizations).chain(&p.organizational_units).cloned().collect();
    if p.public {
        items.push("public".to_owned());
    }
    json!(items)
}

impl LaunchPermissions {
    fn union(&self, other: &LaunchPermissions) -> LaunchPermissions {
        LaunchPermissions {
            accounts: self.accounts.union(&other.accounts).cloned().collect(),
            organizations: self.organizations.union(&other.organizations).cloned().collect(),
            organizational_units: self.organizational_units.union(&other.organizational_units).cloned().collect(),
            public: self.public || other.public,
        }
    }
}

/// RFC 3339 `creation_date` plus `days`, as RFC 3339 (UTC). None when the date cannot be read.
fn add_days(creation_date: &str, days: u32) -> Option<String> {
    let created = time::OffsetDateTime::parse(creation_date, &time::format_description::well_known::Rfc3339).ok()?;
    let at = created + time::Duration::days(i64::from(days));
    at.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc3339).ok()
}
