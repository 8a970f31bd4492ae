//! Plans IAM roles and instance profiles.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::policy::{equivalent, normalize};
use super::{tag_changes, tags_field, Action, Change, Decision, FieldChange, Planner, Step};
use crate::live::{owned_by, LiveInstanceProfile, LiveRole};
use crate::model::{InstanceProfile, Kind, Ref, Resource, ResourceId, Role};

/// IAM's default when a role sets no maximum session duration.
const DEFAULT_MAX_SESSION: u32 = 3600;

impl Planner<'_> {
    pub(super) fn roles(&mut self) {
        let mut names: BTreeSet<String> = self
            .model
            .resources
            .values()
            .filter_map(|r| match r {
                Resource::Role(role) => Some(role.name.clone()),
                _ => None,
            })
            .collect();
        names.extend(self.live.roles.values().filter(|l| owned_by(&l.tags, self.stack())).map(|l| l.name.clone()));
        for name in names {
            let id = ResourceId::new(Kind::Role, &name);
            let declared = match self.declared(&id) {
                Some(Resource::Role(role)) => Some((role, role.lifecycle)),
                _ => None,
            };
            let live = self.live.roles.get(&name).map(|l| (l, &l.tags));
            let change = match self.decide(&id, declared, live) {
                Decision::Skip => continue,
                Decision::Create(desired) => self.create_role(&id, desired),
                Decision::Converge(desired, live) => self.update_role(&id, desired, live),
                Decision::Delete(live) => Change {
                    resource: id.clone(),
                    action: Action::Delete,
                    reason: None,
                    fields: Vec::new(),
                    steps: self.delete_role_steps(live),
                    after: Vec::new(),
                },
            };
            self.push(change);
        }
    }

    fn create_role(&self, id: &ResourceId, role: &Role) -> Change {
        let tags = self.desired_tags(id, &role.tags, role.lifecycle);
        let mut fields = vec![
            FieldChange::new("path", None, Some(json!(role.path))),
            FieldChange::new("assumeRolePolicy", None, Some(normalize(&role.trust_policy))),
        ];
        if let Some(description) = &role.description {
            fields.push(FieldChange::new("description", None, Some(json!(description))));
        }
        if let Some(duration) = role.max_session_duration {
            fields.push(FieldChange::new("maxSessionDuration", None, Some(json!(duration))));
        }
        let mut steps = vec![Step::CreateRole {
            name: role.name.clone(),
            path: role.path.clone(),
            trust_policy: role.trust_policy.to_string(),
            description: role.description.clone(),
            max_session_duration: role.max_session_duration,
            tags: tags.clone(),
        }];
        for (name, document) in &role.inline_policies {
            fields.push(FieldChange::new(format!("inlinePolicies.{name}"), None, Some(normalize(document))));
            steps.push(Step::PutRolePolicy {
                role: role.name.clone(),
                policy: name.clone(),
                document: document.to_string(),
            });
        }
        if !role.managed_policies.is_empty() {
            fields.push(FieldChange::new("managedPolicies", None, Some(json!(role.managed_policies))));
        }
        for arn in &role.managed_policies {
            steps.push(Step::AttachRolePolicy { role: role.name.clone(), policy_arn: arn.to_string() });
        }
        fields.push(FieldChange::new("tags", None, Some(json!(tags))));
        Change { resource: id.clone(), action: Action::Create, reason: None, fields, steps, after: Vec::new() }
    }

    fn update_role(&self, id: &ResourceId, role: &Role, live: &LiveRole) -> Change {
        if live.path != role.path {
            let mut replacement = self.create_role(id, role);
            let mut steps = self.delete_role_steps(live);
            steps.append(&mut replacement.steps);
            let mut path = FieldChange::new("path", Some(json!(live.path)), Some(json!(role.path)));
            path.forces_replacement = true;
            replacement.fields[0] = path;
            return Change {
                action: Action::Replace,
                reason: Some(format!("path forces replacement ({} → {})", live.path, role.path)),
                steps,
                ..replacement
            };
        }
        let name = &role.name;
        let mut fields = Vec::new();
        let mut steps = Vec::new();
        if !equivalent(&role.trust_policy, &live.trust_policy) {
            fields.push(FieldChange::new(
                "assumeRolePolicy",
                Some(normalize(&live.trust_policy)),
                Some(normalize(&role.trust_policy)),
            ));
            steps.push(Step::UpdateTrustPolicy { role: name.clone(), document: role.trust_policy.to_string() });
        }
        let description_changed =
            role.description.as_deref().unwrap_or("") != live.description.as_deref().unwrap_or("");
        let duration_changed = role.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION)
            != live.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION);
        if description_changed {
            let before = live.description.as_ref().filter(|d| !d.is_empty()).map(|d| json!(d));
            fields.push(FieldChange::new("description", before, role.description.as_ref().map(|d| json!(d))));
        }
        if duration_changed {
            fields.push(FieldChange::new(
                "maxSessionDuration",
                Some(json!(live.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION))),
                Some(json!(role.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION))),
            ));
        }
        if description_changed || duration_changed {
            steps.push(Step::UpdateRole {
                role: name.clone(),
                description: description_changed.then(|| role.description.clone().unwrap_or_default()),
                max_session_duration: duration_changed
                    .then(|| role.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION)),
            });
        }
        for (policy, document) in &role.inline_policies {
            match live.inline_policies.get(policy) {
                Some(current) if equivalent(document, current) => {}
                current => {
                    fields.push(FieldChange::new(
                        format!("inlinePolicies.{policy}"),
                        current.map(normalize),
                        Some(normalize(document)),
                    ));
                    steps.push(Step::PutRolePolicy {
                        role: name.clone(),
                        policy: policy.clone(),
                        document: document.to_string(),
                    });
                }
            }
        }
        for (policy, current) in &live.inline_policies {
            if !role.inline_policies.contains_key(policy) {
                fields.push(FieldChange::new(format!("inlinePolicies.{policy}"), Some(normalize(current)), None));
                steps.push(Step::DeleteRolePolicy { role: name.clone(), policy: policy.clone() });
            }
        }
        let desired: BTreeSet<String> = role.managed_policies.iter().map(ToString::to_string).collect();
        if desired != live.managed_policies {
            fields.push(FieldChange::new("managedPolicies", Some(json!(live.managed_policies)), Some(json!(desired))));
            for arn in desired.difference(&live.managed_policies) {
                steps.push(Step::AttachRolePolicy { role: name.clone(), policy_arn: arn.clone() });
            }
            for arn in live.managed_policies.difference(&desired) {
                steps.push(Step::DetachRolePolicy { role: name.clone(), policy_arn: arn.clone() });
            }
        }
        let tags = self.desired_tags(id, &role.tags, role.lifecycle);
        fields.extend(tags_field(&tags, &live.tags));
        let (set, remove) = tag_changes(&tags, &live.tags);
        if !set.is_empty() {
            steps.push(Step::TagRole { role: name.clone(), tags: set });
        }
        if !remove.is_empty() {
            steps.push(Step::UntagRole { role: name.clone(), keys: remove });
        }
        Change { resource: id.clone(), action: Action::Update, reason: None, fields, steps, after: Vec::new() }
    }

    /// A role can be deleted only once it has no policies and is in no instance profile.
    fn delete_role_steps(&self, live: &LiveRole) -> Vec<Step> {
        let role = &live.name;
        let mut steps: Vec<Step> = live
            .inline_policies
            .keys()
            .map(|policy| Step::DeleteRolePolicy { role: role.clone(), policy: policy.clone() })
            .collect();
        steps.extend(
            live.managed_policies
                .iter()
                .map(|arn| Step::DetachRolePolicy { role: role.clone(), policy_arn: arn.clone() }),
        );
        steps.extend(
            self.live
                .instance_profiles
                .values()
                .filter(|p| p.roles.contains(role))
                .map(|p| Step::RemoveRoleFromInstanceProfile { profile: p.name.clone(), role: role.clone() }),
        );
        steps.push(Step::DeleteRole { role: role.clone() });
        steps
    }

    pub(super) fn instance_profiles(&mut self) {
        let mut names: BTreeSet<String> = self
            .model
            .resources
            .values()
            .filter_map(|r| match r {
                Resource::InstanceProfile(p) => Some(p.name.clone()),
                _ => None,
            })
            .collect();
        names.extend(
            self.live.instance_profiles.values().filter(|l| owned_by(&l.tags, self.stack())).map(|l| l.name.clone()),
        );
        // A replaced role leaves every profile that held it; those profiles must take it back.
        let replaced_roles: BTreeSet<String> = self
            .changes
            .iter()
            .filter(|c| c.resource.kind == Kind::Role && c.action == Action::Replace)
            .map(|c| c.resource.name.clone())
            .collect();
        for name in names {
            let id = ResourceId::new(Kind::InstanceProfile, &name);
            let declared = match self.declared(&id) {
                Some(Resource::InstanceProfile(p)) => Some((p, p.lifecycle)),
                _ => None,
            };
            let live = self.live.instance_profiles.get(&name).map(|l| (l, &l.tags));
            let change = match self.decide(&id, declared, live) {
                Decision::Skip => continue,
                Decision::Create(desired) => self.create_profile(&id, desired),
                Decision::Converge(desired, live) => self.update_profile(&id, desired, live, &replaced_roles),
                Decision::Delete(live) => Change {
                    resource: id.clone(),
                    action: Action::Delete,
                    reason: None,
                    fields: Vec::new(),
                    steps: delete_profile_steps(live),
                    after: Vec::new(),
                },
            };
            self.push(change);
        }
    }

    fn create_profile(&self, id: &ResourceId, profile: &InstanceProfile) -> Change {
        let tags = self.desired_tags(id, &profile.tags, profile.lifecycle);
        let role = role_name(&profile.role);
        Change {
            resource: id.clone(),
            action: Action::Create,
            reason: None,
            fields: vec![
                FieldChange::new("path", None, Some(json!(profile.path))),
                FieldChange::new("role", None, Some(json!(role))),
                FieldChange::new("tags", None, Some(json!(tags))),
            ],
            steps: vec![
                Step::CreateInstanceProfile { name: profile.name.clone(), path: profile.path.clone(), tags },
                Step::AddRoleToInstanceProfile { profile: profile.name.clone(), role },
            ],
            after: Vec::new(),
        }
    }

    fn update_profile(
        &self,
        id: &ResourceId,
        profile: &InstanceProfile,
        live: &LiveInstanceProfile,
        replaced_roles: &BTreeSet<String>,
    ) -> Change {
        if live.path != profile.path {
            let replacement = self.create_profile(id, profile);
            let mut steps = delete_profile_steps(live);
            steps.extend(replacement.steps);
            let mut fields = replacement.fields;
            fields[0] = FieldChange {
                forces_replacement: true,
                ..FieldChange::new("path", Some(json!(live.path)), Some(json!(profile.path)))
            };
            return Change {
                resource: id.clone(),
                action: Action::Replace,
                reason: Some(format!("path forces replacement ({} → {})", live.path, profile.path)),
                fields,
                steps,
                after: Vec::new(),
            };
        }
        let role = role_name(&profile.role);
        let mut fields = Vec::new();
        let mut steps = Vec::new();
        let holds = live.roles.contains(&role) && !replaced_roles.contains(&role);
        if !holds || live.roles.len() > 1 {
            // A replaced role left the profile when it was deleted: the profile takes it back, from nothing.
            let before: Value = if holds || !live.roles.contains(&role) {
                live.roles.first().map(|r| json!(r)).unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            fields.push(FieldChange::new("role", Some(before), Some(json!(role))));
            for other in live.roles.iter().filter(|r| **r != role) {
                steps.push(Step::RemoveRoleFromInstanceProfile { profile: profile.name.clone(), role: other.clone() });
            }
            if !holds {
                steps.push(Step::AddRoleToInstanceProfile { profile: profile.name.clone(), role: role.clone() });
            }
        }
        let tags = self.desired_tags(id, &profile.tags, profile.lifecycle);
        fields.extend(tags_field(&tags, &live.tags));
        let (set, remove) = tag_changes(&tags, &live.tags);
        if !set.is_empty() {
            steps.push(Step::TagInstanceProfile { profile: profile.name.clone(), tags: set });
        }
        if !remove.is_empty() {
            steps.push(Step::UntagInstanceProfile { profile: profile.name.clone(), keys: remove });
        }
        Change { resource: id.clone(), action: Action::Update, reason: None, fields, steps, after: Vec::new() }
    }
}

fn delete_profile_steps(live: &LiveInstanceProfile) -> Vec<Step> {
    let mut steps: Vec<Step> = live
        .roles
        .iter()
        .map(|role| Step::RemoveRoleFromInstanceProfile { profile: live.name.clone(), role: role.clone() })
        .collect();
    steps.push(Step::DeleteInstanceProfile { profile: live.name.clone() });
    steps
}

/// The IAM name of the role a profile holds.
fn role_name(role: &Ref<crate::model::Arn>) -> String {
    match role {
        Ref::Stack(id) => id.name.clone(),
        Ref::External(arn) => arn.resource_name().to_owned(),
    }
}
