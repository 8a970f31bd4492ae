//! The planner: compares the desired model with a live snapshot and decides every change. Pure and synchronous.
//!
//! A plan leaves no choice to execution: each change lists the exact steps to run and the changes it must wait
//! for. Resources are matched to live objects by their AWS name; ownership is proven by the `imagectl:stack` tag.

mod bucket;
mod distribution;
mod iam;
mod image;
pub mod policy;
pub mod render;
pub mod step;
mod topic;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostics::{Diagnostic, Location};
use crate::graph::DependencyGraph;
use crate::live::{self, LiveState, RESOURCE_TAG, STACK_TAG};
use crate::model::{DeletionPolicy, Kind, Lifecycle, Model, Region, Resource, ResourceId, Tags};
pub use step::Step;

/// Version of the saved-plan file format; a plan of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// Tag that makes `deletionPolicy: retain` survive the resource's removal from the manifests.
pub const RETAIN_TAG: &str = "imagectl:retain";

/// What the plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Converge on the manifests (`plan`, `apply`).
    Apply,
    /// Delete everything the stack owns (`destroy`).
    Destroy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOptions {
    pub mode: Mode,
    /// Delete owned resources that left the manifests.
    pub prune: bool,
    /// Only these resources (with their dependencies; with their dependents for destroy).
    pub targets: BTreeSet<ResourceId>,
    /// Start image builds and return without waiting for them (`apply --no-wait`); a later apply finishes them.
    #[serde(default)]
    pub no_wait: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { mode: Mode::Apply, prune: false, targets: BTreeSet::new(), no_wait: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

/// One field that differs, for people to read; `before`/`after` are absent on create/delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replacement: bool,
}

impl FieldChange {
    fn new(field: impl Into<String>, before: Option<Value>, after: Option<Value>) -> Self {
        FieldChange { field: field.into(), before, after, forces_replacement: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub resource: ResourceId,
    pub action: Action,
    /// Why: the field that forces a replacement, or what a delete is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub fields: Vec<FieldChange>,
    pub steps: Vec<Step>,
    /// Changes that must succeed before this one starts.
    pub after: Vec<ResourceId>,
}

/// Something the plan will not do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub resource: ResourceId,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub format_version: u32,
    pub stack: String,
    pub account: Option<String>,
    pub options: PlanOptions,
    /// In an order that respects `after`.
    pub changes: Vec<Change>,
    /// Same-named resources this stack does not own: never modified or deleted.
    pub conflicts: Vec<Note>,
    /// Deletions not done (retained, bucket not empty, no --prune) and kinds not planned yet.
    pub notes: Vec<Note>,
    pub unchanged: usize,
    /// What the plan was computed from, to refuse applying it once either changed.
    pub inputs: PlanInputs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanInputs {
    /// The manifest paths as given on the command line.
    pub paths: Vec<PathBuf>,
    pub manifest_digest: String,
    /// Digest of each live object the plan looked at (None: it did not exist).
    pub live: BTreeMap<ResourceId, Option<String>>,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Conflicts block `apply`; `destroy` only leaves the conflicting resources alone.
    pub fn blocked(&self) -> bool {
        self.options.mode == Mode::Apply && !self.conflicts.is_empty()
    }
}

/// References to AWS resources outside the stack that do not exist: the plan cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("the plan cannot be made: {} problem(s) found in AWS", .diagnostics.len())]
pub struct PlanError {
    pub diagnostics: Vec<Diagnostic>,
}

/// Digest of what the model means, independent of formatting and file layout.
pub fn model_digest(model: &Model) -> String {
    let value = serde_json::json!({ "stack": model.stack, "resources": model.resources.values().collect::<Vec<_>>() });
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

/// Makes the plan.
pub fn plan(model: &Model, live: &LiveState, options: &PlanOptions, paths: &[PathBuf]) -> Result<Plan, PlanError> {
    check_external_references(model, live)?;
    let graph = DependencyGraph::build(model);
    let included = match (options.mode, options.targets.is_empty()) {
        (_, true) => None,
        (Mode::Apply, false) => Some(graph.with_dependencies(&options.targets)),
        (Mode::Destroy, false) => Some(graph.with_dependents(&options.targets)),
    };
    let mut planner = Planner {
        model,
        live,
        options,
        included,
        account: live.account.as_ref().map(|a| a.to_string()),
        changes: Vec::new(),
        conflicts: Vec::new(),
        notes: Vec::new(),
        unchanged: 0,
        live_digests: BTreeMap::new(),
        refusals: Vec::new(),
        delivered: BTreeMap::new(),
    };
    planner.roles();
    planner.instance_profiles();
    planner.buckets();
    planner.topics();
    planner.package_groups();
    planner.test_builds();
    planner.private_images();
    planner.copies();
    planner.shares();
    planner.publications();
    planner.retention();
    if !planner.refusals.is_empty() {
        return Err(PlanError { diagnostics: planner.refusals });
    }
    planner.link_dependencies(&graph);
    let changes = execution_order(planner.changes);
    Ok(Plan {
        format_version: FORMAT_VERSION,
        stack: model.stack.name.clone(),
        account: planner.account,
        options: options.clone(),
        changes,
        conflicts: planner.conflicts,
        notes: planner.notes,
        unchanged: planner.unchanged,
        inputs: PlanInputs { paths: paths.to_vec(), manifest_digest: model_digest(model), live: planner.live_digests },
    })
}

/// External references (ARNs, bucket names) must exist before anything is changed.
fn check_external_references(model: &Model, live: &LiveState) -> Result<(), PlanError> {
    let mut diagnostics = Vec::new();
    for (id, resource) in &model.resources {
        for (field, reference) in external_references(resource) {
            if live.external.get(&reference) == Some(&false) {
                let location: Option<Location> = model.origins.get(id).map(|o| o.locate(field));
                let mut diagnostic = Diagnostic::error(format!("`{reference}` does not exist in AWS"))
                    .resource(id)
                    .field(field)
                    .help("create it first, or define it in the stack and reference it by name");
                if let Some(location) = location {
                    diagnostic = diagnostic.at(location);
                }
                diagnostics.push(diagnostic);
            }
        }
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(PlanError { diagnostics })
    }
}

fn external_references(resource: &Resource) -> Vec<(&'static str, String)> {
    use crate::model::Ref::External;
    let mut out = Vec::new();
    match resource {
        Resource::InstanceProfile(p) => {
            if let External(arn) = &p.role {
                out.push(("spec.role", arn.to_string()));
            }
        }
        Resource::PackageGroup(g) => {
            if let External(bucket) = &g.artifacts_bucket {
                out.push(("spec.artifactsBucket", bucket.to_string()));
            }
        }
        Resource::PrivateImage(i) => {
            if let External(arn) = &i.instance_profile {
                out.push(("spec.instanceProfile", arn.to_string()));
            }
            if let External(arn) = &i.automation_role {
                out.push(("spec.automationRole", arn.to_string()));
            }
            if let External(bucket) = &i.logs_bucket {
                out.push(("spec.logsBucket", bucket.to_string()));
            }
            if let Some(External(arn)) = &i.notifications {
                out.push(("spec.notifications", arn.to_string()));
            }
        }
        _ => {}
    }
    out
}

/// Sorts changes so that each comes after the ones it waits for (stable by resource otherwise).
fn execution_order(changes: Vec<Change>) -> Vec<Change> {
    let mut graph = DependencyGraph::default();
    for change in &changes {
        graph.add_node(change.resource.clone());
    }
    for change in &changes {
        for before in &change.after {
            graph.add_edge(before, &change.resource, String::new());
        }
    }
    let order = graph.order().expect("the planner only adds edges that follow the acyclic model or live ownership");
    let mut by_id: BTreeMap<ResourceId, Change> = changes.into_iter().map(|c| (c.resource.clone(), c)).collect();
    order.into_iter().filter_map(|id| by_id.remove(&id)).collect()
}

/// Whose a live resource is, according to its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ownership {
    Ours,
    /// Another imagectl stack's.
    OtherStack(String),
    Untagged,
}

fn ownership(tags: &Tags, stack: &str) -> Ownership {
    match tags.get(STACK_TAG) {
        Some(owner) if owner == stack => Ownership::Ours,
        Some(owner) => Ownership::OtherStack(owner.clone()),
        None => Ownership::Untagged,
    }
}

/// What the planner decided for one resource, before it is turned into a change.
enum Decision<'a, D, L> {
    /// Nothing to plan: not in scope, or not ours and not named.
    Skip,
    Create(&'a D),
    /// Compare and update; the live object is ours (or adopted).
    Converge(&'a D, &'a L),
    Delete(&'a L),
}

struct Planner<'a> {
    model: &'a Model,
    live: &'a LiveState,
    options: &'a PlanOptions,
    /// Resources in scope when targets are given.
    included: Option<BTreeSet<ResourceId>>,
    account: Option<String>,
    changes: Vec<Change>,
    conflicts: Vec<Note>,
    notes: Vec<Note>,
    unchanged: usize,
    live_digests: BTreeMap<ResourceId, Option<String>>,
    /// Problems that make the plan impossible (a reused package-group name, a base image that does not exist).
    refusals: Vec<Diagnostic>,
    /// What each PrivateImage delivers to its copies, shares and published parameters.
    delivered: BTreeMap<ResourceId, image::Delivered>,
}

impl<'a> Planner<'a> {
    fn stack(&self) -> &str {
        &self.model.stack.name
    }

    /// Without targets everything is in scope; with targets, their closure and the targets themselves (a target
    /// may name an owned resource that left the manifests).
    fn in_scope(&self, id: &ResourceId) -> bool {
        self.included.as_ref().is_none_or(|set| set.contains(id)) || self.options.targets.contains(id)
    }

    /// The declared resources of one kind that are in scope, picked by `pick`.
    fn resources_of<T>(&self, pick: impl Fn(&'a Resource) -> Option<&'a T>) -> Vec<(&'a ResourceId, &'a T)> {
        self.model
            .resources
            .iter()
            .filter_map(|(id, r)| pick(r).map(|t| (id, t)))
            .filter(|(id, _)| self.in_scope(id))
            .collect()
    }

    /// The model's resource of this id, if it is declared.
    fn declared(&self, id: &ResourceId) -> Option<&'a Resource> {
        self.model.resources.get(id)
    }

    /// The tags a resource should carry: its own, the stack's, and the ownership tags.
    fn desired_tags(&self, id: &ResourceId, tags: &Tags, lifecycle: Lifecycle) -> Tags {
        let mut out = tags.clone();
        out.insert(STACK_TAG.to_owned(), self.stack().to_owned());
        out.insert(RESOURCE_TAG.to_owned(), id.to_string());
        if lifecycle.deletion_policy == DeletionPolicy::Retain {
            out.insert(RETAIN_TAG.to_owned(), "true".to_owned());
        }
        out
    }

    /// Decides create / converge / delete / conflict for one resource, from its declaration and its live object.
    fn decide<D, L: Serialize>(
        &mut self,
        id: &ResourceId,
        declared: Option<(&'a D, Lifecycle)>,
        live: Option<(&'a L, &'a Tags)>,
    ) -> Decision<'a, D, L> {
        if !self.in_scope(id) {
            return Decision::Skip;
        }
        self.live_digests.insert(id.clone(), live.map(|(l, _)| live::digest(l)));
        let owner = live.map(|(_, tags)| ownership(tags, self.stack()));
        match (self.options.mode, declared, live) {
            (Mode::Apply, Some((desired, lifecycle)), live) => match (live, owner) {
                (None, _) => Decision::Create(desired),
                (Some((l, _)), Some(Ownership::Ours)) => Decision::Converge(desired, l),
                (Some((l, _)), Some(Ownership::Untagged)) if lifecycle.adopt => Decision::Converge(desired, l),
                (Some(_), owner) => {
                    let whose = match &owner {
                        Some(Ownership::OtherStack(other)) => {
                            format!("it belongs to imagectl stack `{other}`")
                        }
                        _ => "it has no imagectl:stack tag".to_owned(),
                    };
                    let help = if matches!(owner, Some(Ownership::Untagged)) {
                        "; to manage it, set `metadata.adopt: true`"
                    } else {
                        ""
                    };
                    self.conflicts.push(Note {
                        resource: id.clone(),
                        message: format!(
                            "a {} named `{}` already exists and {whose}; imagectl leaves it untouched{help}",
                            id.kind, id.name
                        ),
                    });
                    Decision::Skip
                }
            },
            (_, declared, Some((l, tags))) => {
                if owner != Some(Ownership::Ours) {
                    if declared.is_some() {
                        self.conflicts.push(Note {
                            resource: id.clone(),
                            message: format!("`{}` exists but this stack does not own it; left untouched", id.name),
                        });
                    }
                    return Decision::Skip;
                }
                let retained = declared
                    .map(|(_, lc)| lc.deletion_policy == DeletionPolicy::Retain)
                    .unwrap_or_else(|| tags.get(RETAIN_TAG).is_some_and(|v| v == "true"));
                if retained {
                    self.note(id, "deletionPolicy: retain: not deleted");
                    return Decision::Skip;
                }
                if self.options.mode == Mode::Apply && !self.options.prune {
                    self.note(id, "owned by this stack but no longer in the manifests: run with --prune to delete it");
                    return Decision::Skip;
                }
                Decision::Delete(l)
            }
            (_, _, None) => Decision::Skip,
        }
    }

    fn note(&mut self, id: &ResourceId, message: impl Into<String>) {
        self.notes.push(Note { resource: id.clone(), message: message.into() });
    }

    /// Records a change, or counts the resource unchanged when there is nothing to do.
    fn push(&mut self, change: Change) {
        if change.steps.is_empty() {
            self.unchanged += 1;
        } else {
            self.changes.push(change);
        }
    }

    /// Creates and updates wait for their dependencies' changes; deletes wait for their dependents' deletes.
    fn link_dependencies(&mut self, graph: &DependencyGraph) {
        let planned: BTreeMap<ResourceId, Action> =
            self.changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
        for change in &mut self.changes {
            let mut after: BTreeSet<ResourceId> = change.after.iter().cloned().collect();
            if change.action != Action::Delete {
                after.extend(
                    graph
                        .dependencies(&change.resource)
                        .into_iter()
                        .filter(|d| planned.get(d).is_some_and(|a| *a != Action::Delete)),
                );
            }
            if change.action == Action::Delete && change.resource.kind == Kind::Role {
                // Reverse order: a profile that held the role goes first.
                after.extend(
                    self.live
                        .instance_profiles
                        .values()
                        .filter(|p| p.roles.contains(&change.resource.name))
                        .map(|p| ResourceId::new(Kind::InstanceProfile, &p.name))
                        .filter(|p| planned.get(p) == Some(&Action::Delete)),
                );
            }
            after.remove(&change.resource);
            // Only changes of this plan can be waited for: an unchanged resource is already done.
            after.retain(|a| planned.contains_key(a));
            change.after = after.into_iter().collect();
        }
    }
}

/// Tag differences as (keys to set with values, keys to remove).
fn tag_changes(desired: &Tags, live: &Tags) -> (Tags, Vec<String>) {
    let set: Tags =
        desired.iter().filter(|(k, v)| live.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let remove: Vec<String> =
        live.keys().filter(|k| !desired.contains_key(*k) && !k.starts_with("aws:")).cloned().collect();
    (set, remove)
}

fn tags_field(desired: &Tags, live: &Tags) -> Option<FieldChange> {
    let (set, remove) = tag_changes(desired, live);
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    let before: Tags =
        live.iter().filter(|(k, _)| !k.starts_with("aws:")).map(|(k, v)| (k.clone(), v.clone())).collect();
    Some(FieldChange::new("tags", Some(serde_json::to_value(before).ok()?), Some(serde_json::to_value(desired).ok()?)))
}

/// `arn:<partition>` for a region: the partition decides every ARN imagectl derives.
fn partition(region: &Region) -> &'static str {
    let r = region.as_str();
    if r.starts_with("cn-") {
        "aws-cn"
    } else if r.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests;
