//! imagectl: a declarative reconciler for private machine images on AWS.
//!
//! Data flows one way: `manifest` parses YAML into raw shapes, `validate` turns them into the typed `model`,
//! `graph` orders it, the pure `plan`ner compares it with a `live` snapshot read by `aws`, and `apply` executes
//! the plan through `aws`.

pub mod apply;
pub mod aws;
pub mod build;
pub mod diagnostics;
pub mod graph;
pub mod installer_lint;
pub mod live;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod status;
pub mod validate;

use std::path::PathBuf;

use diagnostics::InvalidManifests;

/// Finds, parses and validates the manifests under `paths`: the one way every command reads a stack.
pub fn load_stack(paths: &[PathBuf]) -> Result<validate::Validated, InvalidManifests> {
    let files = manifest::discover(paths).map_err(|d| InvalidManifests { diagnostics: vec![d] })?;
    let (documents, problems) = manifest::load(&files);
    validate::validate(&documents, problems)
}
