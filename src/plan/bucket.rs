//! Plans S3 buckets: region, tags, public access, default encryption, versioning and expiry.

use std::collections::BTreeSet;

use serde_json::json;

use super::{tags_field, Action, Change, Decision, FieldChange, Planner, Step};
use crate::live::{owned_by, BucketSettings, LiveBucket};
use crate::model::{Bucket, Kind, Resource, ResourceId};

impl Planner<'_> {
    pub(super) fn buckets(&mut self) {
        let mut names: BTreeSet<String> = self
            .model
            .resources
            .values()
            .filter_map(|r| match r {
                Resource::Bucket(b) => Some(b.name.to_string()),
                _ => None,
            })
            .collect();
        names.extend(self.live.buckets.values().filter(|l| owned_by(&l.tags, self.stack())).map(|l| l.name.clone()));
        for name in names {
            let id = ResourceId::new(Kind::Bucket, &name);
            let declared = match self.declared(&id) {
                Some(Resource::Bucket(b)) => Some((b, b.lifecycle)),
                _ => None,
            };
            let live = self.live.buckets.get(&name).map(|l| (l, &l.tags));
            let change = match self.decide(&id, declared, live) {
                Decision::Skip => continue,
                Decision::Create(desired) => self.create_bucket(&id, desired),
                Decision::Converge(desired, live) => match self.update_bucket(&id, desired, live) {
                    Some(change) => change,
                    None => continue,
                },
                Decision::Delete(live) => {
                    let force = declared.is_some_and(|(b, _)| b.force_destroy);
                    match self.delete_bucket_steps(&id, live, force) {
                        Some(steps) => Change {
                            resource: id.clone(),
                            action: Action::Delete,
                            reason: None,
                            fields: Vec::new(),
                            steps,
                            after: Vec::new(),
                        },
                        None => continue,
                    }
                }
            };
            self.push(change);
        }
    }

    fn create_bucket(&self, id: &ResourceId, bucket: &Bucket) -> Change {
        let tags = self.desired_tags(id, &bucket.tags, bucket.lifecycle);
        let name = bucket.name.to_string();
        let region = bucket.region.clone();
        let mut fields = vec![FieldChange::new("region", None, Some(json!(region)))];
        let mut steps = vec![Step::CreateBucket { name: name.clone(), region: region.clone(), tags: tags.clone() }];
        let defaults = BucketSettings {
            expire_after_days: None,
            other_lifecycle_rules: 0,
            versioning: false,
            block_public_access: false,
            encryption: None,
        };
        let (mut setting_fields, mut setting_steps) = settings_changes(bucket, &defaults);
        for field in &mut setting_fields {
            field.before = None;
        }
        fields.append(&mut setting_fields);
        steps.append(&mut setting_steps);
        fields.push(FieldChange::new("tags", None, Some(json!(tags))));
        Change { resource: id.clone(), action: Action::Create, reason: None, fields, steps, after: Vec::new() }
    }

    fn update_bucket(&mut self, id: &ResourceId, bucket: &Bucket, live: &LiveBucket) -> Option<Change> {
        if live.region != bucket.region {
            // Bucket names are global: the old bucket must go before the new one can take the name.
            let force = bucket.force_destroy;
            let mut steps = self.delete_bucket_steps(id, live, force)?;
            let replacement = self.create_bucket(id, bucket);
            steps.extend(replacement.steps);
            let mut fields = replacement.fields;
            fields[0] = FieldChange {
                forces_replacement: true,
                ..FieldChange::new("region", Some(json!(live.region)), Some(json!(bucket.region)))
            };
            return Some(Change {
                resource: id.clone(),
                action: Action::Replace,
                reason: Some(format!("region forces replacement ({} → {})", live.region, bucket.region)),
                fields,
                steps,
                after: Vec::new(),
            });
        }
        let current = live.settings.clone().unwrap_or(BucketSettings {
            expire_after_days: None,
            other_lifecycle_rules: 0,
            versioning: false,
            block_public_access: false,
            encryption: None,
        });
        let (mut fields, mut steps) = settings_changes(bucket, &current);
        let tags = self.desired_tags(id, &bucket.tags, bucket.lifecycle);
        if let Some(field) = tags_field(&tags, &live.tags) {
            fields.push(field);
            // PutBucketTagging replaces the whole set, so one step covers additions and removals.
            steps.push(Step::PutBucketTagging { name: bucket.name.to_string(), region: bucket.region.clone(), tags });
        }
        Some(Change { resource: id.clone(), action: Action::Update, reason: None, fields, steps, after: Vec::new() })
    }

    /// Steps to delete a bucket, or None (with a note) when it holds objects and may not be emptied.
    fn delete_bucket_steps(&mut self, id: &ResourceId, live: &LiveBucket, force: bool) -> Option<Vec<Step>> {
        let name = live.name.clone();
        let region = live.region.clone();
        let has_objects = live.has_objects.unwrap_or(true);
        if has_objects && !force {
            let why = if live.has_objects.is_some() { "it still holds objects" } else { "its contents were not read" };
            self.note(
                id,
                format!("not deleted: {why}; set `forceDestroy: true` to delete the bucket with its objects"),
            );
            return None;
        }
        let mut steps = Vec::new();
        if has_objects {
            steps.push(Step::EmptyBucket { name: name.clone(), region: region.clone() });
        }
        steps.push(Step::DeleteBucket { name, region });
        Some(steps)
    }
}

/// Field changes and steps that bring a bucket's settings from `live` to what the manifest says.
fn settings_changes(bucket: &Bucket, live: &BucketSettings) -> (Vec<FieldChange>, Vec<Step>) {
    let name = bucket.name.to_string();
    let region = bucket.region.clone();
    let mut fields = Vec::new();
    let mut steps = Vec::new();
    if live.block_public_access != bucket.block_public_access {
        fields.push(FieldChange::new(
            "blockPublicAccess",
            Some(json!(live.block_public_access)),
            Some(json!(bucket.block_public_access)),
        ));
        steps.push(Step::SetPublicAccessBlock {
            name: name.clone(),
            region: region.clone(),
            block: bucket.block_public_access,
        });
    }
    if live.encryption.as_ref() != Some(&bucket.encryption) {
        // No default encryption is no value, not a JSON null to diff the new configuration against.
        let before = live.encryption.as_ref().map(|e| json!(e));
        fields.push(FieldChange::new("encryption", before, Some(json!(bucket.encryption))));
        steps.push(Step::PutBucketEncryption {
            name: name.clone(),
            region: region.clone(),
            encryption: bucket.encryption.clone(),
        });
    }
    if live.versioning != bucket.versioning {
        fields.push(FieldChange::new("versioning", Some(json!(live.versioning)), Some(json!(bucket.versioning))));
        steps.push(Step::PutBucketVersioning {
            name: name.clone(),
            region: region.clone(),
            enabled: bucket.versioning,
        });
    }
    // Rules imagectl did not write are replaced too: the manifest is the whole lifecycle configuration.
    if live.expire_after_days != bucket.expire_after_days || live.other_lifecycle_rules > 0 {
        let before = match (live.expire_after_days, live.other_lifecycle_rules) {
            (days, 0) => json!(days),
            (days, others) => json!({"expireAfterDays": days, "otherRules": others}),
        };
        fields.push(FieldChange::new("expireAfterDays", Some(before), Some(json!(bucket.expire_after_days))));
        steps.push(Step::PutBucketLifecycle { name, region, expire_after_days: bucket.expire_after_days });
    }
    (fields, steps)
}
