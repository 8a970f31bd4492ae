//! Build status for people and scripts: each image's current AMI and the state of its latest build, from the live
//! state alone (instance tags and the reports the instance wrote), so it works while no apply is running.

use serde::Serialize;

use crate::build::{self, tags, BuildState, ReportKeys};
use crate::live::{LiveState, RESOURCE_TAG};
use crate::model::{BucketName, Model, Ref, Resource};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    pub resource: String,
    pub region: String,
    /// The newest available image.
    pub current: Option<CurrentImage>,
    /// The latest build that has not produced the current image (running, or failed).
    pub latest_build: Option<BuildStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentImage {
    pub image_id: String,
    pub name: String,
    pub revision: u32,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    pub build_id: String,
    pub state: BuildState,
    pub detail: String,
    pub instance: Option<String>,
    pub logs: Option<String>,
}

fn revision(tags: &crate::model::Tags) -> u32 {
    tags.get(tags::REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// A package group's test builds: the group state and each operating system's, as in the seller guide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub resource: String,
    /// None until a test build has started.
    pub state: Option<BuildState>,
    pub builds: Vec<OsBuild>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OsBuild {
    pub operating_system: String,
    pub build_id: Option<String>,
    pub state: Option<BuildState>,
    pub detail: String,
}

/// The group state from its builds' states: any Issues Found is the seller's to fix; otherwise any Investigating,
/// then any still Building or Scanning; Successful only when every build is.
fn group_state(states: &[Option<BuildState>]) -> Option<BuildState> {
    let has = |s: BuildState| states.contains(&Some(s));
    if states.iter().all(Option::is_none) {
        None
    } else if has(BuildState::IssuesFound) {
        Some(BuildState::IssuesFound)
    } else if has(BuildState::Investigating) {
        Some(BuildState::Investigating)
    } else if has(BuildState::Building) || states.contains(&None) {
        Some(BuildState::Building)
    } else if has(BuildState::Scanning) {
        Some(BuildState::Scanning)
    } else {
        Some(BuildState::Successful)
    }
}

/// The test-build status of every package group that has test builds.
pub fn package_groups(model: &Model, live: &LiveState) -> Vec<GroupStatus> {
    let mut out = Vec::new();
    for (id, resource) in &model.resources {
        let Resource::PackageGroup(group) = resource else {
            continue;
        };
        let Some(tests) = &group.test_builds else {
            continue;
        };
        let resource = id.to_string();
        let mut builds = Vec::new();
        for os in tests.base_images.keys() {
            let running = live.build_instances.iter().find(|i| {
                i.tags.get(RESOURCE_TAG) == Some(&resource)
                    && i.tags.get(tags::OPERATING_SYSTEM).map(String::as_str) == Some(os.as_str())
            });
            let prefix = format!("{}-{os}-r", group.name);
            let (build_id, reports) = match running {
                Some(instance) => {
                    let build_id = instance.tags.get(tags::BUILD_ID).cloned().unwrap_or_default();
                    let reports = live.build_reports.get(&build_id);
                    (Some(build_id), reports)
                }
                None => live
                    .build_reports
                    .iter()
                    .filter_map(|(b, r)| Some((b.strip_prefix(&prefix)?.split('-').next()?.parse::<u32>().ok()?, b, r)))
                    .max_by_key(|(revision, _, _)| *revision)
                    .map(|(_, b, r)| (Some(b.clone()), Some(r)))
                    .unwrap_or((None, None)),
            };
            let (state, detail) =
                match (reports.and_then(|r| r.result.as_ref()), reports.and_then(|r| r.status.as_ref())) {
                    (Some(result), _) => {
                        // The full S3 location, as for images: the log is where a seller starts.
                        let log = ReportKeys::for_build(build_id.as_deref().unwrap_or("")).log;
                        let (state, verdict) =
                            build::judge(result, &format!("s3://{}/{log}", logs_bucket(&tests.logs_bucket)));
                        match state {
                            // As for images: nothing may be capturing it (`apply --no-wait`), so say where it stands.
                            BuildState::Scanning if running.is_some() => {
                                let instance = running.map_or("", |i| i.state.as_str());
                                (
                                    Some(BuildState::Scanning),
                                    format!("installed and scanned; instance {instance}, waiting to be captured"),
                                )
                            }
                            BuildState::Scanning => (Some(BuildState::Successful), "built and scanned".to_owned()),
                            other => (Some(other), verdict),
                        }
                    }
                    (None, Some(status)) => (Some(status.state), format!("since {}", status.at)),
                    (None, None) if running.is_some() => (Some(BuildState::Building), "instance launched".to_owned()),
                    (None, None) => (None, "not built yet".to_owned()),
                };
            builds.push(OsBuild { operating_system: os.clone(), build_id, state, detail });
        }
        let states: Vec<Option<BuildState>> = builds.iter().map(|b| b.state).collect();
        out.push(GroupStatus { resource, state: group_state(&states), builds });
    }
    out
}

/// Text lines for the terminal.
pub fn render_groups(groups: &[GroupStatus]) -> String {
    let mut out = String::new();
    for g in groups {
        let state = g.state.map(|s| s.to_string()).unwrap_or_else(|| "not built yet".to_owned());
        out.push_str(&format!("{}: {state}\n", g.resource));
        for b in &g.builds {
            let state = b.state.map(|s| s.to_string()).unwrap_or_else(|| "-".to_owned());
            let build = b.build_id.as_deref().map(|id| format!(" (build {id})")).unwrap_or_default();
            out.push_str(&format!("  {}: {state}{build} — {}\n", b.operating_system, b.detail));
        }
    }
    out
}

/// The status of every PrivateImage of the model.
pub fn images(model: &Model, live: &LiveState) -> Vec<ImageStatus> {
    let mut out = Vec::new();
    for (id, resource) in &model.resources {
        let Resource::PrivateImage(image) = resource else {
            continue;
        };
        let resource = id.to_string();
        let ours = |t: &crate::model::Tags| t.get(RESOURCE_TAG) == Some(&resource);
        let current = live
            .images
            .iter()
            .filter(|i| ours(&i.tags) && i.state == "available" && i.region == image.region)
            .max_by_key(|i| revision(&i.tags))
            .map(|i| CurrentImage {
                image_id: i.id.clone(),
                name: i.name.clone(),
                revision: revision(&i.tags),
                created: i.creation_date.clone(),
            });
        let current_revision = current.as_ref().map(|c| c.revision).unwrap_or(0);
        let running = live.build_instances.iter().filter(|i| ours(&i.tags)).max_by_key(|i| revision(&i.tags));
        let latest_build = match running {
            Some(instance) => {
                let build_id = instance.tags.get(tags::BUILD_ID).cloned().unwrap_or_default();
                let bucket = instance.tags.get(tags::LOGS_BUCKET).cloned();
                let logs = bucket.as_ref().map(|b| format!("s3://{b}/imagectl/builds/{build_id}/"));
                let reports = live.build_reports.get(&build_id);
                let (state, detail) = match reports {
                    Some(r) if r.result.is_some() => {
                        let log = bucket
                            .as_ref()
                            .map(|b| format!("s3://{b}/{}", ReportKeys::for_build(&build_id).log))
                            .unwrap_or_default();
                        let (state, verdict) = build::judge(r.result.as_ref().expect("checked"), &log);
                        if state == BuildState::Scanning {
                            (
                                BuildState::Scanning,
                                format!("installed and scanned; instance {}, waiting to be captured", instance.state),
                            )
                        } else {
                            (state, verdict)
                        }
                    }
                    Some(r) if r.status.is_some() => {
                        let status = r.status.as_ref().expect("checked");
                        (status.state, format!("since {}", status.at))
                    }
                    _ => (
                        BuildState::Building,
                        format!("instance {} {}, launched {}", instance.id, instance.state, instance.launch_time),
                    ),
                };
                Some(BuildStatus { build_id, state, detail, instance: Some(instance.id.clone()), logs })
            }
            None => failed_build(live, &image.name, current_revision, &logs_bucket(&image.logs_bucket)),
        };
        out.push(ImageStatus { resource, region: image.region.to_string(), current, latest_build });
    }
    out
}

/// The bucket's name, whether the stack manages it or not.
fn logs_bucket(bucket: &Ref<BucketName>) -> String {
    match bucket {
        Ref::Stack(id) => id.name.clone(),
        Ref::External(name) => name.to_string(),
    }
}

/// The newest finished build newer than the current image, if its verdict was a failure. Its instance is gone, so
/// the logs bucket comes from the manifest: a failure is only useful with the log's full S3 location.
fn failed_build(live: &LiveState, name: &str, current_revision: u32, logs_bucket: &str) -> Option<BuildStatus> {
    let prefix = format!("{name}-r");
    live.build_reports
        .iter()
        .filter_map(|(build_id, reports)| {
            let revision: u32 = build_id.strip_prefix(&prefix)?.split('-').next()?.parse().ok()?;
            (revision > current_revision).then_some((revision, build_id, reports))
        })
        .max_by_key(|(revision, _, _)| *revision)
        .and_then(|(_, build_id, reports)| {
            let result = reports.result.as_ref()?;
            let keys = ReportKeys::for_build(build_id);
            let (state, detail) = build::judge(result, &format!("s3://{logs_bucket}/{}", keys.log));
            let logs = Some(format!("s3://{logs_bucket}/imagectl/builds/{build_id}/"));
            (state != BuildState::Scanning).then(|| BuildStatus {
                build_id: build_id.clone(),
                state,
                detail,
                instance: None,
                logs,
            })
        })
}

/// Text lines for the terminal.
pub fn render(statuses: &[ImageStatus]) -> String {
    let mut out = String::new();
    for s in statuses {
        let current = match &s.current {
            Some(c) => format!("{} ({}, revision {})", c.image_id, c.name, c.revision),
            None => "no image yet".to_owned(),
        };
        out.push_str(&format!("{} [{}]: {current}\n", s.resource, s.region));
        if let Some(b) = &s.latest_build {
            out.push_str(&format!("  build {}: {} — {}\n", b.build_id, b.state, b.detail));
            if let Some(logs) = &b.logs {
                out.push_str(&format!("  logs: {logs}\n"));
            }
        }
    }
    if statuses.is_empty() {
        out.push_str("The stack has no PrivateImage.\n");
    }
    out
}

/// An image's AMI in one region: the PrivateImage's own, or a copy's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    pub image: String,
    pub region: String,
    pub image_id: String,
    /// `ImageCopy/<name>` for a copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
}

/// The AMI IDs each PrivateImage currently delivers, per region: its newest available image and the copies of it.
pub fn outputs(model: &Model, live: &LiveState) -> Vec<Output> {
    let mut out = Vec::new();
    for (id, resource) in &model.resources {
        let Resource::PrivateImage(image) = resource else {
            continue;
        };
        let resource = id.to_string();
        let Some(current) = live
            .images
            .iter()
            .filter(|i| {
                i.tags.get(RESOURCE_TAG) == Some(&resource) && i.state == "available" && i.region == image.region
            })
            .max_by_key(|i| revision(&i.tags))
        else {
            continue;
        };
        out.push(Output {
            image: image.name.clone(),
            region: current.region.to_string(),
            image_id: current.id.clone(),
            copy: None,
        });
        let source = current.tags.get(tags::BUILD_ID).unwrap_or(&current.id);
        let mut copies: Vec<_> = live
            .images
            .iter()
            .filter(|i| i.state == "available" && i.tags.get(tags::SOURCE) == Some(source))
            .filter(|i| i.tags.get(RESOURCE_TAG).is_some_and(|r| r.starts_with("ImageCopy/")))
            .collect();
        copies.sort_by(|a, b| a.region.cmp(&b.region));
        for copy in copies {
            out.push(Output {
                image: image.name.clone(),
                region: copy.region.to_string(),
                image_id: copy.id.clone(),
                copy: copy.tags.get(RESOURCE_TAG).cloned(),
            });
        }
    }
    out
}

/// `image  region  ami-…` lines.
pub fn render_outputs(outputs: &[Output]) -> String {
    let width = outputs.iter().map(|o| o.image.len()).max().unwrap_or(0);
    outputs
        .iter()
        .map(|o| {
            format!(
                "{:<width$}  {:<15} {}{}\n",
                o.image,
                o.region,
                o.image_id,
                o.copy.as_ref().map(|c| format!("  ({c})")).unwrap_or_default()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use BuildState::*;

    #[test]
    fn the_group_state_follows_the_seller_guide() {
        assert_eq!(group_state(&[None, None]), None);
        assert_eq!(group_state(&[Some(Successful), Some(Successful)]), Some(Successful));
        assert_eq!(group_state(&[Some(Successful), Some(Building)]), Some(Building));
        assert_eq!(group_state(&[Some(Successful), None]), Some(Building));
        assert_eq!(group_state(&[Some(Scanning), Some(Successful)]), Some(Scanning));
        assert_eq!(group_state(&[Some(Investigating), Some(Building)]), Some(Investigating));
        assert_eq!(group_state(&[Some(IssuesFound), Some(Investigating)]), Some(IssuesFound));
    }
}
