//! The commands that talk to AWS — plan, apply, destroy — from validated manifests to printed results.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use imagectl::apply::{self, Event, Outcome};
use imagectl::aws::{Aws, ConnectOptions};
use imagectl::live::ReadScope;
use imagectl::model::ResourceId;
use imagectl::plan::render::{self, Palette};
use imagectl::plan::{self, Action, Mode, Plan, PlanOptions, FORMAT_VERSION};

use crate::exit;

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

pub fn options(mode: Mode, prune: bool, targets: Vec<ResourceId>, no_wait: bool) -> PlanOptions {
    PlanOptions { mode, prune, targets: targets.into_iter().collect::<BTreeSet<_>>(), no_wait }
}

/// Manifests to plan from, and how.
pub struct PlanRequest {
    pub paths: Vec<PathBuf>,
    pub options: PlanOptions,
}

pub enum PlanSource {
    Fresh(PlanRequest),
    Saved(PathBuf),
}

/// Validates the manifests, reads the live state and plans.
async fn make_plan(aws: &Aws, request: &PlanRequest) -> Result<Plan> {
    let validated = imagectl::load_stack(&request.paths)?;
    for warning in &validated.warnings {
        eprintln!("{warning}");
    }
    for target in &request.options.targets {
        // A target that left the manifests can still name an owned resource (for --prune or destroy).
        if !validated.model.resources.contains_key(target)
            && request.options.mode == Mode::Apply
            && !request.options.prune
        {
            bail!("--target {target}: no such resource in the manifests");
        }
    }
    let deleting = request.options.prune || request.options.mode == Mode::Destroy;
    let scope = ReadScope::for_model(&validated.model, deleting);
    let live = aws.read_live(&scope).await.context("cannot read the live state")?;
    Ok(plan::plan(&validated.model, &live, &request.options, &request.paths)?)
}

fn palette() -> Palette {
    Palette::for_terminal(std::io::stdout().is_terminal())
}

pub async fn plan(
    connect: &ConnectOptions,
    request: PlanRequest,
    json: bool,
    out: Option<PathBuf>,
    detailed_exitcode: bool,
) -> Result<u8> {
    let aws = Aws::connect(connect).await?;
    let plan = make_plan(&aws, &request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&render::json(&plan))?);
    } else {
        print!("{}", render::text(&plan, &palette()));
    }
    if let Some(file) = out {
        save(&plan, &file)?;
        if !json {
            println!(
                "\nSaved the plan to {}. Apply exactly this plan with: imagectl apply --plan {}",
                file.display(),
                file.display()
            );
        }
    }
    if plan.blocked() {
        bail!("{} conflict(s): imagectl will not apply this plan until they are resolved", plan.conflicts.len());
    }
    Ok(if detailed_exitcode && plan.has_changes() { exit::CHANGES } else { exit::OK })
}

fn save(plan: &Plan, file: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(plan)?;
    std::fs::write(file, json).with_context(|| format!("cannot write the plan to {}", file.display()))
}

/// Loads a saved plan and checks it still describes the world: same manifests, same live objects.
async fn saved_plan(aws: &Aws, file: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the plan {}", file.display()))?;
    let saved: Plan =
        serde_json::from_str(&text).with_context(|| format!("{} is not an imagectl plan", file.display()))?;
    if saved.format_version != FORMAT_VERSION {
        bail!(
            "{} was written in plan format {}; this imagectl reads format {FORMAT_VERSION}",
            file.display(),
            saved.format_version
        );
    }
    let request = PlanRequest { paths: saved.inputs.paths.clone(), options: saved.options.clone() };
    let validated = imagectl::load_stack(&request.paths)?;
    if plan::model_digest(&validated.model) != saved.inputs.manifest_digest {
        bail!(
            "refusing the saved plan {}: the manifests changed since it was made; run `imagectl plan` again",
            file.display()
        );
    }
    let current = make_plan(aws, &request).await?;
    if current.account != saved.account {
        bail!(
            "refusing the saved plan {}: it was made for account {}, these credentials are for {}",
            file.display(),
            saved.account.as_deref().unwrap_or("?"),
            current.account.as_deref().unwrap_or("?")
        );
    }
    let changed: Vec<String> = saved
        .inputs
        .live
        .iter()
        .filter(|(id, digest)| current.inputs.live.get(*id) != Some(*digest))
        .map(|(id, _)| id.to_string())
        .chain(current.inputs.live.keys().filter(|id| !saved.inputs.live.contains_key(*id)).map(ToString::to_string))
        .collect();
    if !changed.is_empty() {
        bail!(
            "refusing the saved plan {}: the live state changed since it was made ({} changed in AWS); run `imagectl plan` again",
            file.display(),
            changed.join(", ")
        );
    }
    Ok(saved)
}

/// Asks on a terminal; refuses when nobody can answer.
fn confirm(plan: &Plan) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to change AWS without confirmation: stdin is not a terminal; pass --auto-approve to run unattended");
    }
    let verb = if plan.options.mode == Mode::Destroy { "destroy these resources" } else { "perform these actions" };
    print!("\nDo you want to {verb}? Only 'yes' is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

pub async fn apply(connect: &ConnectOptions, source: PlanSource, auto_approve: bool, parallelism: usize) -> Result<u8> {
    let aws = Aws::connect(connect).await?;
    let plan = match &source {
        PlanSource::Fresh(request) => make_plan(&aws, request).await?,
        PlanSource::Saved(file) => saved_plan(&aws, file).await?,
    };
    print!("{}", render::text(&plan, &palette()));
    if plan.blocked() {
        bail!("{} conflict(s): nothing was changed", plan.conflicts.len());
    }
    if !plan.has_changes() {
        return Ok(exit::OK);
    }
    if !auto_approve && !confirm(&plan)? {
        println!("Cancelled: nothing was changed.");
        return Ok(exit::ERROR);
    }
    println!();
    let running: RefCell<BTreeSet<ResourceId>> = RefCell::new(BTreeSet::new());
    let execution = apply::execute(&plan, &aws, parallelism, |event| {
        match &event {
            Event::Started { change } => running.borrow_mut().insert(change.resource.clone()),
            Event::Finished { change, .. } => running.borrow_mut().remove(&change.resource),
        };
        print_progress(event)
    });
    let report = tokio::select! {
        report = execution => Some(report),
        signal = interrupted() => {
            println!("\nInterrupted by {signal}.");
            None
        }
    };
    let Some(report) = report else {
        cancel_builds(&aws, &plan, &running.borrow()).await;
        return Ok(exit::ERROR);
    };
    let done = report.count(|o| matches!(o, Outcome::Done { .. }));
    let failed = report.count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = report.count(|o| matches!(o, Outcome::Skipped { .. }));
    println!();
    if report.succeeded() {
        println!("Apply complete: {done} done.");
        return Ok(exit::OK);
    }
    println!("Apply failed: {done} done, {failed} failed, {skipped} skipped.");
    for (resource, _, outcome) in &report.outcomes {
        match outcome {
            Outcome::Failed { step, error, .. } => {
                println!("  failed  {resource}: {step}: {error}")
            }
            Outcome::Skipped { because } => {
                println!("  skipped {resource}: waits for {because}, which did not succeed")
            }
            Outcome::Done { .. } => {}
        }
    }
    println!("Fix the cause and run apply again: finished work is not repeated.");
    Ok(exit::ERROR)
}

/// Waits for Ctrl-C or SIGTERM (a CI job cancelled, a pod evicted) and names it.
async fn interrupted() -> &'static str {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// On interruption, the builds that were running are stopped and their instances terminated (a killed process
/// cannot do this; then the next apply resumes the build instead). Other changes were single AWS calls: whatever
/// finished is kept, and a re-run converges.
async fn cancel_builds(aws: &Aws, plan: &Plan, running: &BTreeSet<ResourceId>) {
    for change in plan.changes.iter().filter(|c| running.contains(&c.resource)) {
        for step in &change.steps {
            if let imagectl::plan::Step::BuildImage { build, .. } = step {
                println!("{}: stopping build {} and terminating its instance…", change.resource, build.build_id);
                match aws.cancel_build(build, "the apply running the build was interrupted").await {
                    Ok(()) => println!("{}: build {} stopped.", change.resource, build.build_id),
                    Err(e) => println!("{}: could not stop build {}: {e}", change.resource, build.build_id),
                }
            }
        }
    }
    println!("Nothing else is undone; run apply again to converge.");
}

/// Whether a change only starts builds (`apply --no-wait`): done means started, not built.
fn starts_builds_only(change: &imagectl::plan::Change) -> bool {
    change.steps.iter().any(|s| matches!(s, imagectl::plan::Step::BuildImage { wait: false, .. }))
}

/// The progressive and past forms of an action, for progress lines.
fn verbs(action: Action) -> (&'static str, &'static str) {
    match action {
        Action::Create => ("creating", "created"),
        Action::Update => ("updating", "updated"),
        Action::Replace => ("replacing", "replaced"),
        Action::Delete => ("deleting", "deleted"),
    }
}

fn print_progress(event: Event<'_>) {
    let (Event::Started { change } | Event::Finished { change, .. }) = &event;
    let (doing, done) = verbs(change.action);
    match event {
        Event::Started { change } => println!("{}: {doing}…", change.resource),
        Event::Finished { change, outcome } => match outcome {
            Outcome::Done { elapsed } if starts_builds_only(change) => println!(
                "{}: build started ({:.1}s); `imagectl status` follows it and a later apply captures the image",
                change.resource,
                elapsed.as_secs_f64()
            ),
            Outcome::Done { elapsed } => println!("{}: {done} ({:.1}s)", change.resource, elapsed.as_secs_f64()),
            Outcome::Failed { step, error, elapsed } => {
                println!("{}: failed after {:.1}s: {step}: {error}", change.resource, elapsed.as_secs_f64())
            }
            Outcome::Skipped { because } => println!("{}: skipped ({because} did not succeed)", change.resource),
        },
    }
}

/// Reads what `status` and `outputs` report on: the stack's images and builds.
async fn read_images(
    connect: &ConnectOptions,
    paths: &[PathBuf],
) -> Result<(imagectl::model::Model, imagectl::live::LiveState)> {
    let validated = imagectl::load_stack(paths)?;
    let aws = Aws::connect(connect).await?;
    let scope =
        ReadScope { image_permissions: false, image_usage: false, ..ReadScope::for_model(&validated.model, false) };
    let live = aws.read_live(&scope).await.context("cannot read the live state")?;
    Ok((validated.model, live))
}

pub async fn outputs(connect: &ConnectOptions, paths: &[PathBuf], json: bool) -> Result<u8> {
    let (model, live) = read_images(connect, paths).await?;
    let outputs = imagectl::status::outputs(&model, &live);
    if json {
        println!("{}", serde_json::to_string_pretty(&outputs)?);
    } else {
        print!("{}", imagectl::status::render_outputs(&outputs));
    }
    Ok(exit::OK)
}

pub async fn status(connect: &ConnectOptions, paths: &[PathBuf], json: bool) -> Result<u8> {
    let (model, live) = read_images(connect, paths).await?;
    let statuses = imagectl::status::images(&model, &live);
    let groups = imagectl::status::package_groups(&model, &live);
    if json {
        let report = serde_json::json!({ "images": statuses, "packageGroups": groups });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", imagectl::status::render(&statuses));
        print!("{}", imagectl::status::render_groups(&groups));
    }
    Ok(exit::OK)
}
