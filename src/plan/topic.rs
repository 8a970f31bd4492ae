//! Plans SNS topics: attributes, subscriptions and tags. A topic is identified by region and name.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{partition, tag_changes, tags_field, Action, Change, Decision, FieldChange, Planner, Step};
use crate::live::{owned_by, LiveTopic};
use crate::model::{Kind, Region, Resource, ResourceId, Topic};

/// SNS's answer for a subscription an endpoint has not confirmed; such a subscription cannot be removed.
const PENDING: &str = "PendingConfirmation";

impl Planner<'_> {
    pub(super) fn topics(&mut self) {
        // The same name may be owned in several regions (after a region change); each is planned.
        let mut keys: BTreeSet<(String, Option<Region>)> = BTreeSet::new();
        for resource in self.model.resources.values() {
            if let Resource::Topic(t) = resource {
                keys.insert((t.name.clone(), None));
            }
        }
        for (region, topics) in &self.live.topics {
            for topic in topics.values().filter(|t| owned_by(&t.tags, self.stack())) {
                keys.insert((topic.name.clone(), Some(region.clone())));
            }
        }
        let names: BTreeSet<String> = keys.into_iter().map(|(name, _)| name).collect();
        for name in names {
            let id = ResourceId::new(Kind::Topic, &name);
            let declared = match self.declared(&id) {
                Some(Resource::Topic(t)) => Some(t),
                _ => None,
            };
            let owned_elsewhere: Vec<&LiveTopic> = self
                .live
                .topics
                .iter()
                .filter(|(region, _)| declared.is_none_or(|d| d.region != **region))
                .filter_map(|(_, topics)| topics.get(&name))
                .filter(|t| owned_by(&t.tags, self.stack()))
                .collect();
            let live_here = declared.and_then(|d| self.live.topics.get(&d.region)?.get(&name));
            // The live topic the decision is about: in the declared region, else one the stack owns elsewhere.
            let live = live_here.or_else(|| owned_elsewhere.first().copied()).map(|l| (l, &l.tags));
            let decision = self.decide(&id, declared.map(|t| (t, t.lifecycle)), live);
            let change = match decision {
                Decision::Skip => continue,
                Decision::Create(desired) => self.create_topic(&id, desired),
                Decision::Converge(desired, live) if live.region != desired.region => {
                    // A topic name is per region: create the new topic before deleting the old one.
                    let mut change = self.create_topic(&id, desired);
                    change.action = Action::Replace;
                    change.reason = Some(format!("region forces replacement ({} → {})", live.region, desired.region));
                    change.fields[0] = FieldChange {
                        forces_replacement: true,
                        ..FieldChange::new("region", Some(json!(live.region)), Some(json!(desired.region)))
                    };
                    change.steps.extend(owned_elsewhere.iter().map(|t| delete_topic_step(t)));
                    change
                }
                Decision::Converge(desired, live) => self.update_topic(&id, desired, live),
                Decision::Delete(live) => Change {
                    resource: id.clone(),
                    action: Action::Delete,
                    reason: None,
                    fields: Vec::new(),
                    steps: std::iter::once(live)
                        .chain(owned_elsewhere.into_iter().filter(|t| t.arn != live.arn))
                        .map(delete_topic_step)
                        .collect(),
                    after: Vec::new(),
                },
            };
            self.push(change);
        }
    }

    fn topic_arn(&self, topic: &Topic) -> String {
        format!(
            "arn:{}:sns:{}:{}:{}",
            partition(&topic.region),
            topic.region,
            self.account.as_deref().unwrap_or("<account>"),
            topic.name
        )
    }

    fn create_topic(&self, id: &ResourceId, topic: &Topic) -> Change {
        let tags = self.desired_tags(id, &topic.tags, topic.lifecycle);
        let arn = self.topic_arn(topic);
        let mut attributes = BTreeMap::new();
        let mut fields = vec![FieldChange::new("region", None, Some(json!(topic.region)))];
        if let Some(display_name) = &topic.display_name {
            attributes.insert("DisplayName".to_owned(), display_name.clone());
            fields.push(FieldChange::new("displayName", None, Some(json!(display_name))));
        }
        if let Some(key) = &topic.kms_key {
            attributes.insert("KmsMasterKeyId".to_owned(), key.clone());
            fields.push(FieldChange::new("kmsKey", None, Some(json!(key))));
        }
        let mut steps = vec![Step::CreateTopic {
            name: topic.name.clone(),
            region: topic.region.clone(),
            attributes,
            tags: tags.clone(),
        }];
        if !topic.subscriptions.is_empty() {
            fields.push(FieldChange::new(
                "subscriptions",
                None,
                Some(json!(subscription_labels(topic.subscriptions.iter()))),
            ));
        }
        for s in &topic.subscriptions {
            steps.push(Step::Subscribe {
                topic_arn: arn.clone(),
                region: topic.region.clone(),
                protocol: s.protocol.clone(),
                endpoint: s.endpoint.clone(),
            });
        }
        fields.push(FieldChange::new("tags", None, Some(json!(tags))));
        Change { resource: id.clone(), action: Action::Create, reason: None, fields, steps, after: Vec::new() }
    }

    fn update_topic(&mut self, id: &ResourceId, topic: &Topic, live: &LiveTopic) -> Change {
        let region = topic.region.clone();
        let arn = live.arn.clone();
        let mut fields = Vec::new();
        let mut steps = Vec::new();
        for (field, attribute, desired, current) in [
            ("displayName", "DisplayName", &topic.display_name, &live.display_name),
            ("kmsKey", "KmsMasterKeyId", &topic.kms_key, &live.kms_key),
        ] {
            if desired.as_deref().unwrap_or("") != current.as_deref().unwrap_or("") {
                fields.push(FieldChange::new(
                    field,
                    current.as_ref().map(|v| json!(v)),
                    desired.as_ref().map(|v| json!(v)),
                ));
                steps.push(Step::SetTopicAttribute {
                    topic_arn: arn.clone(),
                    region: region.clone(),
                    attribute: attribute.to_owned(),
                    value: desired.clone().unwrap_or_default(),
                });
            }
        }
        let live_set: BTreeSet<_> = live.subscriptions.keys().cloned().collect();
        if live_set != topic.subscriptions {
            fields.push(FieldChange::new(
                "subscriptions",
                Some(json!(subscription_labels(live_set.iter()))),
                Some(json!(subscription_labels(topic.subscriptions.iter()))),
            ));
            for s in topic.subscriptions.difference(&live_set) {
                steps.push(Step::Subscribe {
                    topic_arn: arn.clone(),
                    region: region.clone(),
                    protocol: s.protocol.clone(),
                    endpoint: s.endpoint.clone(),
                });
            }
            for s in live_set.difference(&topic.subscriptions) {
                let subscription_arn = &live.subscriptions[s];
                if subscription_arn == PENDING {
                    self.note(id, format!("subscription {}:{} is pending confirmation and cannot be removed; SNS drops it after 3 days unconfirmed", s.protocol, s.endpoint));
                } else {
                    steps
                        .push(Step::Unsubscribe { subscription_arn: subscription_arn.clone(), region: region.clone() });
                }
            }
        }
        let tags = self.desired_tags(id, &topic.tags, topic.lifecycle);
        fields.extend(tags_field(&tags, &live.tags));
        let (set, remove) = tag_changes(&tags, &live.tags);
        if !set.is_empty() {
            steps.push(Step::TagTopic { topic_arn: arn.clone(), region: region.clone(), tags: set });
        }
        if !remove.is_empty() {
            steps.push(Step::UntagTopic { topic_arn: arn, region, keys: remove });
        }
        Change { resource: id.clone(), action: Action::Update, reason: None, fields, steps, after: Vec::new() }
    }
}

fn delete_topic_step(live: &LiveTopic) -> Step {
    Step::DeleteTopic { topic_arn: live.arn.clone(), region: live.region.clone() }
}

fn subscription_labels<'a>(subscriptions: impl Iterator<Item = &'a crate::model::Subscription>) -> Vec<String> {
    subscriptions.map(|s| format!("{}:{}", s.protocol, s.endpoint)).collect()
}
